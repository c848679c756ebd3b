"""The reference pages generated from the code's declarations, never copied by hand.

Directives (each renders one table or listing at build time):

- ``tailscope-options``: every analysis option of ``tailscope.engine.options.OPTIONS`` (name,
  default, meaning, flag, the commands that take it), one table per option group;
- ``tailscope-columns``: every per-layer column of ``tailscope.engine.columns.COLUMNS`` (name,
  type, meaning, when present);
- ``tailscope-formats``: every file format of ``tailscope.sources.registry.READERS``;
- ``tailscope-extras``: every optional import of ``tailscope.util.optional.EXTRAS``;
- ``tailscope-commands``: every command of ``tailscope.cli.COMMANDS`` with its ``--help``.

A declaration without a description is a build warning (an error under ``-W``). The API pages:
``reference/api/index.rst`` is written at ``config-inited`` from ``tailscope.__all__`` and the
``__all__`` of ``tailscope.fit``, ``tailscope.train`` and ``tailscope.compat``, so a new public
name gets its page without an edit here; autosummary then writes one page per name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import textwrap
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.directives.other import TocTree
from sphinx.util import docname_join, logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

# the modules whose ``__all__`` the API reference covers, in the order the page lists them
API_MODULES = {
    "tailscope": "The top-level functions and results",
    "tailscope.fit": "Fitting power laws and other tail models (``tailscope.fit``)",
    "tailscope.train": "Training with the spectra (``tailscope.train``)",
    "tailscope.compat": "The WeightWatcher facade (``tailscope.compat``)",
}
SKIP = {"__version__"}


def public_names(module: str) -> list[str]:
    """The public names of ``module`` (its ``__all__``, without ``__version__``), sorted."""
    import importlib

    mod = importlib.import_module(module)
    return sorted(n for n in mod.__all__ if n not in SKIP)


def _cell(text: str) -> str:
    """One list-table cell: the text, or an empty comment (an empty cell is not allowed)."""
    text = " ".join(str(text).split())
    return text if text else ".."


def _list_table(title: str, header: list[str], rows: list[list[str]], widths: str = "") -> list:
    lines = [f".. list-table:: {title}", "   :header-rows: 1", "   :class: tailscope-reference"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lines.append(f"   {'*' if i == 0 else ' '} - {_cell(cell)}")
    lines.append("")
    return lines


def _lit(text: str) -> str:
    """Inline literal text in reStructuredText (backquotes that could close it are dropped)."""
    text = str(text).replace("`", "'")
    return f"``{text}``" if text else ""


def _no_warning(what: str) -> None:
    return None


def options_rst(missing=_no_warning, options=None) -> list[str]:
    """The options tables, one per option group. ``missing(what)`` is told of an option without a
    description."""
    from tailscope.cli import COMMANDS
    from tailscope.engine.options import GROUPS, OPTIONS

    out: list[str] = []
    for group, title in GROUPS.items():
        rows = []
        for o in (o for o in (OPTIONS if options is None else options) if o.group == group):
            if not o.doc.strip():
                missing(f"option {o.name!r}")
            flag = ", ".join(_lit(n) for n in o.flag.names) if o.flag else f"none: {o.api_only}"
            names = " ".join(_lit(a) for a in o.aliases)
            commands = ", ".join(c.name for c in COMMANDS if o.name in c.options)
            ww = _lit(o.ww) if o.ww else "tailscope's own"
            rows.append([f"{_lit(o.name)} {('(also ' + names + ')') if names else ''}",
                         _lit(repr(o.default)), f"*{o.type}*. {o.doc}", flag,
                         commands or "API only", ww])
        heading = title[0].upper() + title[1:]
        out += [f".. _option-group-{group}:", "", heading, "-" * len(heading), ""]
        out += _list_table("", ["option", "default", "meaning", "flag", "commands",
                                "WeightWatcher"], rows, "14 8 44 12 12 10")
    return out


def columns_rst(missing=_no_warning, columns=None) -> list[str]:
    """The columns table. ``missing(what)`` is told of a column without a description."""
    from tailscope.engine.columns import COLUMNS, CORE_GROUPS
    from tailscope.engine.diagnostics import DIAGNOSTICS

    added_by = {g: d for d in DIAGNOSTICS for g in d.groups}
    rows = []
    for c in COLUMNS if columns is None else columns:
        if not c.doc.strip():
            missing(f"column {c.name!r}")
        if c.group in CORE_GROUPS:
            when = "always"
        elif c.group in added_by:
            when = f"option {_lit(added_by[c.group].option)}"
        else:
            when = {"slice": "``pool=False``", "tpl": "``fit='TPL'`` or ``'E_TPL'``",
                    "fingers": "``fix_fingers='clip_xmax'``"}.get(c.group, _lit(c.group))
        flags = [w for w, on in (("summary", c.summary), ("table", c.table)) if on]
        rows.append([_lit(c.name), c.dtype, c.doc, when, ", ".join(flags)])
    return _list_table("", ["column", "type", "meaning", "present with", "in the summary / table"],
                       rows, "16 6 48 18 12")


def formats_rst(missing=_no_warning, readers=None) -> list[str]:
    """The file formats table."""
    from tailscope.sources.registry import READERS

    rows = []
    for r in READERS if readers is None else readers:
        if not r.phrase.strip():
            missing(f"format {r.name!r}")
        extra = f"``pip install 'tailscope[{r.extra}]'``" if r.extra else "none"
        rows.append([_lit(r.name), r.phrase, " ".join(_lit(s) for s in r.suffixes),
                     " ".join(_lit(p) for p in r.patterns), extra])
    return _list_table("", ["format", "what is read", "file suffixes", "files picked in a folder",
                            "extra"], rows, "10 30 18 24 18")


def extras_rst(missing=_no_warning) -> list[str]:
    """The optional imports and the extras that install them."""
    from tailscope.util.optional import EXTRAS

    rows = [[_lit(module), _lit(package), f"``pip install 'tailscope[{extra}]'``"]
            for module, (package, extra) in EXTRAS.items()]
    return _list_table("", ["import", "package", "install"], rows)


def command_help(name: str | None) -> str:
    """``tailscope [name] --help`` as printed at 100 columns."""
    from tailscope.cli import build_parser

    parser = build_parser()
    target = parser.commands[name] if name else parser
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            target.print_help()
        return buf.getvalue()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def commands_rst(missing=_no_warning, commands=None) -> list[str]:
    """Every command with its ``--help``."""
    from tailscope.cli import COMMANDS

    out = ["``tailscope --help``", "-" * 20, "", ".. code-block:: text", ""]
    out += textwrap.indent(command_help(None), "   ").splitlines() + [""]
    for c in COMMANDS if commands is None else commands:
        if not c.help.strip() or not c.description.strip():
            missing(f"command {c.name!r}")
        title = f"``tailscope {c.name}``"
        out += [f".. _command-{c.name}:", "", title, "-" * len(title), "", c.help, "",
                ".. code-block:: text", ""]
        out += textwrap.indent(command_help(c.name), "   ").splitlines() + [""]
    return out


GENERATORS = {"tailscope-options": options_rst, "tailscope-columns": columns_rst,
              "tailscope-formats": formats_rst, "tailscope-extras": extras_rst,
              "tailscope-commands": commands_rst}


class Generated(SphinxDirective):
    """``.. tailscope-options::`` and the others of ``GENERATORS``: the generated
    reStructuredText, parsed with titles (the reference pages are .rst files)."""

    has_content = False

    def missing(self, what: str) -> None:
        logger.warning(f"{what} has no description: declare one where it is declared",
                       location=(self.env.docname, self.lineno))

    def run(self) -> list:
        lines = GENERATORS[self.name](self.missing)
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="<generated>"), node)
        return list(node.children)


class OrderedToctree(TocTree):
    """A toctree whose entries with ``*`` list, in name order, the documents they match that no
    entry names, and nothing (no warning) when there are none: the folders other changes add
    pages to (``guide/*``, ``switching/*``) after this page's own order."""

    def run(self) -> list:
        entries = [line.strip() for line in self.content if line.strip()]
        named = {docname_join(self.env.docname, e) for e in entries if "*" not in e}
        out = []
        for e in entries:
            if "*" not in e:
                out.append(e)
                continue
            pattern = docname_join(self.env.docname, e)
            found = sorted(d for d in self.env.found_docs
                           if fnmatch.fnmatchcase(d, pattern) and d not in named
                           and d != self.env.docname)
            out += ["/" + d for d in found]
        self.content = StringList(out, source=self.content.source(0) if self.content else "")
        self.options.pop("glob", None)
        if not hasattr(self.env, "tailscope_globbing"):
            self.env.tailscope_globbing = set()
        self.env.tailscope_globbing.add(self.env.docname)
        return super().run()


def reread_globbing(app, env, added, changed, removed) -> list[str]:
    """A page added or removed: the pages with ordered globs are read again (an incremental
    build lists the new page in its section)."""
    return sorted(getattr(env, "tailscope_globbing", ())) if added or removed else []


def api_index_rst() -> tuple[str, set[str]]:
    """``reference/api/index.rst``: an autosummary per module of ``API_MODULES`` (an object
    re-exported by a later module is named there and documented once), and the full names that
    get a page."""
    import importlib

    lines = ["API reference", "=============", "",
             "Every public name, one page each, generated from the docstrings "
             "(numpydoc sections). The lists are read from each module's ``__all__``.", ""]
    seen: dict[int, str] = {}  # id of an object already listed -> its documented name
    pages: set[str] = set()
    for module, title in API_MODULES.items():
        mod = importlib.import_module(module)
        names, also = [], []
        for n in public_names(module):
            obj = getattr(mod, n)
            if isinstance(obj, type) or callable(obj):
                if id(obj) in seen:  # re-exported: one page, named where it is listed first
                    also.append(f":obj:`{module}.{n} <{seen[id(obj)]}>`")
                    continue
                seen[id(obj)] = f"{module}.{n}"
            names.append(n)
        lines += [title, "-" * len(title), "", f".. currentmodule:: {module}", "",
                  ".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in names] + [""]
        pages |= {f"{module}.{n}" for n in names}
        if also:
            lines += ["Also here, documented above: " + ", ".join(also) + ".", ""]
    return "\n".join(lines), pages


def write_api_index(app, config) -> None:
    """Write ``reference/api/index.rst`` (rewritten only when it changes) and drop the pages of
    names no longer public."""
    text, pages = api_index_rst()
    folder = Path(app.srcdir) / "reference" / "api"
    path = folder / "index.rst"
    if not path.exists() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for stub in (folder / "generated").glob("*.rst"):
        if stub.stem not in pages:
            stub.unlink()


def _ours(obj) -> bool:
    obj = getattr(obj, "fget", obj)  # a property: its getter
    return (getattr(obj, "__module__", None) or "").startswith("tailscope")


def check_docstring(app, what, name, obj, options, lines) -> None:
    """A public object of tailscope's documented without a docstring is a warning."""
    if _ours(obj) and not any(line.strip() for line in lines):
        logger.warning(f"{name} has no docstring", type="tailscope", subtype="docstring")


def check_member(app, what, name, obj, skip, options):
    """A public member skipped because it has no docstring is a warning (autodoc would drop it
    from its class's page without a word)."""
    if (skip and not name.startswith("_") and _ours(obj)
            and (callable(obj) or isinstance(obj, property))
            and not (getattr(obj, "__doc__", None) or "").strip()):
        logger.warning(f"{what} member {name!r} ({getattr(obj, '__qualname__', name)}) has no "
                       "docstring", type="tailscope", subtype="docstring")
    return None


def setup(app):
    app.connect("autodoc-process-docstring", check_docstring)
    app.connect("autodoc-skip-member", check_member)
    app.add_directive("tailscope-toctree", OrderedToctree)
    for name in GENERATORS:
        app.add_directive(name, Generated)
    app.connect("config-inited", write_api_index)
    app.connect("env-get-outdated", reread_globbing)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
