"""The documentation site, tested like code: the reference pages generated from the declarations
list every option, column, format and command (and report one without a description); every
public name has an API page and a docstring; the README is a front page whose links resolve; the
site builds with warnings as errors; the guides' ```python blocks run; a few built pages open in
headless Chromium with their navigation and search working and no console error.

The slow tests build the site once (into a temporary folder, the notebooks rendered without being
executed: tests/test_notebooks.py runs them) and share it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import tailscope_docs as gen  # noqa: E402 - docs/_ext, the generators of the reference pages

from tailscope.cli import COMMANDS, build_parser  # noqa: E402
from tailscope.engine import columns as cols  # noqa: E402
from tailscope.engine import options as opts  # noqa: E402
from tailscope.sources.registry import READERS  # noqa: E402

GENERATED = ("_build", "examples", "reference/api")  # written by the build, not by hand
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _pages() -> list[Path]:
    """The hand-written pages of the site."""
    return sorted(p for p in [*DOCS.rglob("*.md"), *DOCS.rglob("*.rst")]
                  if not any(p.relative_to(DOCS).as_posix().startswith(g) for g in GENERATED))


def _code_pages() -> list[Path]:
    """The pages whose ```python blocks are examples to run (the guides, getting started, the
    switching pages; not the design document's sketches)."""
    return [p for p in _pages() if p.suffix == ".md" and p.name != "DESIGN.md"
            and FENCE.search(p.read_text())]


# --- the generated reference ----------------------------------------------------------------------
def test_the_options_reference_lists_every_option_with_its_default_flag_and_commands():
    text = "\n".join(gen.options_rst())
    for o in opts.OPTIONS:
        row = text[text.index(f"* - ``{o.name}``"):]
        row = row[:row.find("\n   * - ", 1)]
        assert f"``{o.default!r}``".replace("`", "") in row.replace("`", ""), o.name
        assert " ".join(o.doc.split())[:40].replace("`", "") in row.replace("`", ""), o.name
        for flag in (o.flag.names if o.flag else ()):
            assert f"``{flag}``" in row, (o.name, flag)
        taking = ", ".join(c.name for c in COMMANDS if o.name in c.options) or "API only"
        assert f"  - {taking}\n" in row + "\n", (o.name, taking)


def test_the_columns_formats_and_commands_references_list_every_declaration():
    columns = "\n".join(gen.columns_rst())
    assert all(f"* - ``{c.name}``" in columns for c in cols.COLUMNS)
    formats = "\n".join(gen.formats_rst())
    for r in READERS:
        assert f"* - ``{r.name}``" in formats and r.phrase in formats
        assert all(f"``{s}``" in formats for s in r.suffixes)
    commands = "\n".join(gen.commands_rst())
    parser = build_parser()
    for c in COMMANDS:
        assert f"``tailscope {c.name}``" in commands
        for flag in parser.commands[c.name].option_strings():
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", commands), (c.name, flag)


def test_a_declaration_without_a_description_is_reported():
    said: list[str] = []
    bare = dataclasses.replace(opts.OPTIONS[3], doc="")
    gen.options_rst(said.append, options=(*opts.OPTIONS[:3], bare, *opts.OPTIONS[4:]))
    assert said == [f"option {bare.name!r}"]
    said.clear()
    gen.columns_rst(said.append, columns=(dataclasses.replace(cols.COLUMNS[0], doc=""),))
    assert said == [f"column {cols.COLUMNS[0].name!r}"]
    said.clear()
    gen.options_rst(said.append), gen.columns_rst(said.append), gen.formats_rst(said.append)
    gen.commands_rst(said.append)
    assert said == []  # every declaration has one today


# --- the API reference ------------------------------------------------------------------------------
def _public() -> list[tuple[str, str, object]]:
    import importlib

    return [(m, n, getattr(importlib.import_module(m), n))
            for m in gen.API_MODULES for n in gen.public_names(m)]


def test_every_public_name_has_an_api_page():
    import importlib

    assert set(gen.API_MODULES) == {"tailscope", "tailscope.fit", "tailscope.train",
                                    "tailscope.compat"}
    text, pages = gen.api_index_rst()
    for module in gen.API_MODULES:
        names = set(importlib.import_module(module).__all__) - {"__version__"}
        for n in names:
            assert f"{module}.{n}" in pages or f":obj:`{module}.{n} <" in text, f"{module}.{n}"


def test_every_public_object_and_method_has_a_docstring():
    missing = []
    for module, name, obj in _public():
        if not (inspect.isclass(obj) or callable(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{module}.{name}")
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                value = getattr(value, "__func__", value)
                if attr.startswith("_") or not (callable(value) or isinstance(value, property)):
                    continue
                if not (getattr(value, "__doc__", None) or "").strip():
                    missing.append(f"{module}.{name}.{attr}")
    assert not missing, missing


# --- the README and the pages' sources ------------------------------------------------------------
def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text
    links = _links(text)
    assert len([t for t in links if t.startswith("docs/")]) >= 15
    for target in links:
        assert (ROOT / target.split("#")[0]).exists(), target


def test_the_pages_relative_links_resolve():
    for page in _pages():
        for target in _links(page.read_text()):
            path = target.split("#")[0]
            if path and not path.startswith(("/", "mailto:")):
                assert (page.parent / path).resolve().exists(), (page.name, target)


def test_the_guides_python_blocks_compile():
    blocks = 0
    for page in _code_pages():
        for i, block in enumerate(FENCE.findall(page.read_text())):
            compile(block, f"{page.relative_to(ROOT)} block {i + 1}", "exec")
            blocks += 1
    assert blocks >= 2


# --- the built site ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "TAILSCOPE_DOCS_NB": "off", "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
                          "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
                         capture_output=True, text=True, env=env, timeout=900)
    return res, out / "html"


@pytest.mark.slow  # the whole site (about 30 s)
def test_the_site_builds_with_warnings_as_errors(site):
    res, html = site
    assert res.returncode == 0, res.stderr[-4000:]
    assert "WARNING" not in res.stderr and "ERROR" not in res.stderr, res.stderr[-4000:]
    assert (html / "index.html").exists()


@pytest.mark.slow
def test_every_page_public_name_and_readme_link_is_built_offline(site):
    res, html = site
    assert res.returncode == 0, res.stderr[-4000:]
    _, pages = gen.api_index_rst()
    for name in pages:
        assert (html / "reference" / "api" / "generated" / f"{name}.html").exists(), name
    for target in _links((ROOT / "README.md").read_text()):
        if target.startswith("docs/") and target.endswith((".md", ".rst")):
            built = html / Path(target).relative_to("docs").with_suffix(".html")
            assert built.exists(), target
    assert (html / "changelog.html").exists() and (html / "DESIGN.html").exists()
    for nb in (ROOT / "examples").glob("*.ipynb"):
        assert (html / "examples" / f"{nb.stem}.html").exists(), nb.name
    options = (html / "reference" / "options.html").read_text()
    assert all(f">{o.name}<" in options for o in opts.OPTIONS)
    for page in html.rglob("*.html"):  # no script, style, font or image from another site
        text = page.read_text()
        assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["'](https?:)?//""",
                             text), page
    for css in html.rglob("*.css"):
        assert not re.search(r"url\(['\"]?(https?:)?//", css.read_text()), css
    index = (html / "searchindex.js").read_text()
    assert "powerlaw" in index and "select_rank" in index


@pytest.mark.slow  # each page's blocks, in order, as one script
@pytest.mark.parametrize("page", _code_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_the_guides_python_blocks_run(page, tmp_path):
    script = "\n\n".join(FENCE.findall(page.read_text()))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, f"{page.name}:\n{res.stderr[-3000:]}"


@pytest.fixture
def served(site):
    """The built site over HTTP on a free local port, as a browser would read it (the search
    fetches the pages it finds, which a file:// page may not)."""
    import functools
    import http.server
    import threading

    res, html = site
    assert res.returncode == 0, res.stderr[-4000:]

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # headless Chromium on three built pages and a search
def test_the_site_opens_in_chromium(served, tmp_path):
    from test_report import chromium

    html, base = served

    def url(path: Path) -> str:
        return base + path.relative_to(html).as_posix()

    logs = []
    guide = html / "guide" / "alpha.html"
    api = html / "reference" / "api" / "generated" / "tailscope.analyze.html"
    sections = {html / s for s in ("getting-started.html", "guide/index.html",
                                   "switching/index.html", "reference/index.html",
                                   "benchmarks.html", "DESIGN.html", "changelog.html")}
    sidebar = {guide: {guide.parent / f"{p.stem}.html" for p in (DOCS / "guide").glob("*.md")
                       if p.stem != "index"},
               api: {api.parent / f"{n}.html" for n in gen.api_index_rst()[1]}}
    for page in (html / "index.html", guide, api):
        dom = chromium(tmp_path, url(page), "--virtual-time-budget=5000", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        logs.append(dom.stderr)
        start = dom.stdout.index('class="bd-header ')
        header = dom.stdout[start:dom.stdout.index("</header>", start)]
        links = {(page.parent / h).resolve() for h in
                 re.findall(r'class="nav-link[^"]*nav-internal" href="([^"#]+)"', header)}
        assert sections <= links, sorted(map(str, sections - links))  # the navigation bar
        assert "bd-search" in dom.stdout  # the search box
        if page in sidebar:  # the section's pages in the side navigation
            start = dom.stdout.index('class="bd-docs-nav')
            side = dom.stdout[start:dom.stdout.index("</nav>", start)]
            listed = {(page.parent / h).resolve() for h in re.findall(r'href="([^"#]+)"', side)}
            listed.add(page)  # the page itself is linked as '#'

            assert sidebar[page] <= listed, sorted(map(str, sidebar[page] - listed))[:5]
    page = api.read_text()
    assert "Parameters" in page and "min_evals" in page and "Returns" in page
    search = url(html / "search.html") + "?q=select_rank"
    dom = chromium(tmp_path, search, "--virtual-time-budget=8000", "--dump-dom")
    logs.append(dom.stderr)
    found = re.findall(r'<li[^>]*>\s*<a[^>]+href="([^"]+)"', dom.stdout.split('id="search-results"')[-1])
    assert any("select_rank" in f for f in found), dom.stdout[-3000:]
    shot = tmp_path / "guide.png"
    res = chromium(tmp_path, url(guide), "--virtual-time-budget=5000",
                   f"--screenshot={shot}", "--window-size=1280,1400")
    logs.append(res.stderr)
    assert res.returncode == 0 and shot.stat().st_size > 20_000
    log = "\n".join(logs)
    assert "net::ERR" not in log  # no failed request
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", log), log[-3000:]
