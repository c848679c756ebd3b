"""Rule 2 of docs/DESIGN.md: every vocabulary is declared once and every consumer follows the
declaration — options (docstrings, CLI, compat), diagnostics (their options and column groups),
columns (details, summary, store, report), extras (pyproject, the optional-import messages)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import tailscope
from tailscope.compat import watcher as compat
from tailscope.engine import columns as cols
from tailscope.engine import diagnostics as diag
from tailscope.engine import options as opts

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tailscope"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


# --- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("option", opts.OPTIONS, ids=lambda o: o.name)
def test_every_option_is_documented_reachable_and_checked(option):
    assert re.search(rf"^\s+{re.escape(option.name)} : ", tailscope.analyze.__doc__, re.M), \
        f"{option.name} is not in analyze's docstring"
    assert option.group in opts.GROUPS
    assert option.doc and option.type
    # a CLI flag, or the reason it has none
    assert option.flag is not None or option.api_only, f"{option.name}: no flag and no reason"
    # compat: under its own name, an alias, or WeightWatcher's name translated
    assert option.name in compat.PASSED
    if option.ww and option.ww != option.name:
        assert option.ww in compat.TRANSLATED, f"{option.ww} (-> {option.name}) not translated"
    if option.field:
        assert option.name in opts.Options.__dataclass_fields__
        assert getattr(opts.Options(), option.name) == option.default
        assert option.check is None or option.check(option.default) == "", option.name


def test_options_value_is_exactly_the_declared_fields():
    assert list(opts.Options.__dataclass_fields__) == [o.name for o in opts.OPTIONS if o.field]


@pytest.mark.parametrize("bad", [{"min_evals": -1}, {"fit": "XX"}, {"jobs": 0}, {"pool": "no"},
                                 {"compare": ["gamma"]}, {"xmax": 0}, {"seed": -3},
                                 {"layers": [True]}, {"min_evls": 3}, {"gof": 1.5}])
def test_bad_options_are_one_line_value_errors_naming_the_option(bad):
    with pytest.raises(ValueError) as err:
        opts.make_options(**bad)
    (name,) = bad
    assert name in str(err.value) and "\n" not in str(err.value)


def test_the_erg_alias_is_detx_everywhere():
    assert opts.make_options(ERG=True).detX is True
    with pytest.raises(ValueError, match="disagree"):
        opts.make_options(ERG=True, detX=False)


# --- diagnostics: each its option, its column groups, its computation -------------------------
def test_every_diagnostic_is_an_option_and_column_groups():
    groups = {c.group for c in cols.COLUMNS}
    for d in diag.DIAGNOSTICS:
        assert d.option in opts.BY_NAME, f"{d.name}: no option {d.option!r}"
        assert opts.BY_NAME[d.option].group == "diagnostics", d.name
        assert d.groups and set(d.groups) <= groups, f"{d.name}: groups not in COLUMNS"
        assert set(d.params) <= set(opts.BY_NAME), d.name
        assert d.stage in diag.STAGES and callable(d.compute), d.name
    declared = [g for d in diag.DIAGNOSTICS for g in d.groups]
    assert len(declared) == len(set(declared)), "a column group of two diagnostics"
    assert len({d.option for d in diag.DIAGNOSTICS}) == len(diag.DIAGNOSTICS)


def test_every_column_group_that_an_option_adds_is_a_diagnostics_or_the_fits():
    groups = {c.group for c in cols.COLUMNS}
    declared = {g for d in diag.DIAGNOSTICS for g in d.groups}
    assert not declared & set(cols.FIT_GROUPS) and not declared & set(cols.CORE_GROUPS)
    assert groups == set(cols.CORE_GROUPS) | set(cols.FIT_GROUPS) | declared
    assert set(cols.GROUP_WHEN) == groups


def test_every_diagnostics_option_is_a_diagnostic_or_a_parameter_of_one():
    used = {d.option for d in diag.DIAGNOSTICS} | {p for d in diag.DIAGNOSTICS for p in d.params}
    assert {o.name for o in opts.OPTIONS if o.group == "diagnostics"} == used


@pytest.mark.parametrize("d", diag.DIAGNOSTICS, ids=lambda d: d.name)
def test_a_diagnostics_option_adds_exactly_its_column_groups(d):
    plain = set(cols.columns_for(opts.make_options()))
    on = opts.make_options(**{d.option: _ON.get(d.option, True)})
    assert {cols.BY_NAME[c].group for c in set(cols.columns_for(on)) - plain} == set(d.groups)
    assert diag.asked(on, d.stage) == (d,)
    assert diag.needs_matrices(on) == d.needs_matrices and diag.draws(on) == d.draws
    assert all(diag.GROUP_OPTION[g] == d.option for g in d.groups)


@pytest.mark.parametrize("d", [d for d in diag.DIAGNOSTICS if len(d.groups) == 1],
                         ids=lambda d: d.name)
def test_an_options_doc_that_lists_its_columns_lists_them_all(d):
    doc = opts.BY_NAME[d.option].doc
    mine = [c.name for c in cols.COLUMNS if c.group == d.groups[0]]
    named = [c for c in mine if re.search(rf"\b{re.escape(c)}\b", doc)]
    assert not named or named == mine, f"{d.option}'s doc lists {named}, not {mine}"


# --- columns: every declared column reaches details, the summary, the store, the report ---------
def _model(tmp_path) -> Path:
    from tailscope.sources.safetensors import write_safetensors

    rng = np.random.default_rng(0)
    tensors = {"embed.weight": rng.standard_t(3, (120, 40)).astype(np.float32),
               "conv.weight": rng.standard_t(3, (24, 12, 3, 3)).astype(np.float32),
               "fc.weight": rng.standard_t(3, (60, 50)).astype(np.float32),
               "fc.bias": np.zeros(60, np.float32)}
    path = tmp_path / "m.safetensors"
    write_safetensors(path, tensors)
    return path


# the value that turns on each diagnostic that is not a plain switch
_ON = {"compare": "all", "gof": 2, "seed": 0, "alpha_ci": 20, "alpha_ci_level": 0.8}


def _every_diagnostic() -> dict:
    """Every diagnostics option on: switches True, the others as ``_ON`` says (a new one that is
    not a switch must be added there)."""
    out = {}
    for o in opts.OPTIONS:
        if o.group == "diagnostics":
            out[o.name] = _ON[o.name] if o.name in _ON or not isinstance(o.default, bool) \
                else True
    return out


@pytest.fixture(scope="module")
def analyses(tmp_path_factory):
    path = _model(tmp_path_factory.mktemp("vocab"))
    everything = dict(_every_diagnostic(), pool=False)
    return path, [tailscope.analyze(path, fit="TPL", **everything),
                  tailscope.analyze(path, fix_fingers="clip_xmax", **everything)]


def test_every_declared_column_reaches_details(analyses):
    _, runs = analyses
    seen = set()
    for a in runs:
        o = opts.make_options(**{k: v for k, v in a.options.items()
                                 if k in opts.Options.__dataclass_fields__})
        assert list(a.details.columns) == cols.columns_for(o)
        seen |= set(a.details.columns)
    assert seen == {c.name for c in cols.COLUMNS}


def test_every_summary_column_is_summarised(analyses):
    _, runs = analyses
    for a in runs:
        s = a.summary()
        assert [k for k in s if k in cols.BY_NAME] == cols.summary_columns(a.details.columns)


def test_every_declared_column_reaches_the_store(analyses, tmp_path):
    pytest.importorskip("sqlalchemy")
    from tailscope.zoo import open_store

    _, runs = analyses
    store = open_store(tmp_path / "r.db")
    for i, a in enumerate(runs):
        store.write_model("k", 1, {"name": f"m{i}", "source": "m", "group": "", "quality": {}},
                          {"status": "success", "summary": a.summary(), "details": a.details})
        back = store.details(f"m{i}", "k")
        assert list(back.columns) == list(a.details.columns)
    store.close()


def test_every_declared_column_reaches_the_report(analyses, tmp_path):
    pytest.importorskip("matplotlib")
    import base64
    import io

    import pandas as pd

    _, runs = analyses
    for a in runs:
        page = a.to_html(tmp_path / "r.html", layer_figures=False).read_text()
        table = re.search(r'href="data:text/csv;base64,([^"]+)"', page)
        assert table, "the report offers the whole per-layer table"
        back = pd.read_csv(io.BytesIO(base64.b64decode(table[1])))
        assert list(back.columns) == list(a.details.columns)
        for c in cols.TABLE_COLUMNS:
            if c in a.details.columns:
                assert f">{c}</th>" in page


def test_an_undeclared_column_is_an_error_not_a_silent_drop():
    from tailscope.engine.layer import LayerResult, RowResult
    from tailscope.engine.result import details_frame

    with pytest.raises(RuntimeError, match="undeclared column"):
        details_frame([LayerResult((RowResult({"layer_id": 0, "surprise": 1.0}),))],
                      opts.make_options())


# --- extras ----------------------------------------------------------------------------------
def test_every_extra_named_in_messages_exists_in_pyproject():
    from tailscope.util.optional import EXTRAS

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for module, (package, extra) in EXTRAS.items():
        assert extra in declared, f"{module}: extra {extra!r} is not in pyproject.toml"
        wanted = package.split("[")[0].lower().replace("_", "-")
        assert any(req.lower().replace("_", "-").startswith(wanted) for req in declared[extra]), \
            f"{package} is not in the {extra!r} extra"


def test_optional_imports_go_through_require():
    """No hand-written ``try: import x / except ImportError`` guard outside util/optional.py."""
    bad = []
    for path in SRC.rglob("*.py"):
        if path.name == "optional.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                    "ModuleNotFoundError")
                    for h in node.handlers):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "hand-written optional-import guards: " + ", ".join(bad)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    from tailscope.util.optional import MissingExtra, require

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingExtra, match=r"pip install 'tailscope\[rank\]'") as err:
        require("sklearn", "choosing K")
    assert isinstance(err.value, ValueError) and isinstance(err.value, ImportError)


# --- prose that lists a vocabulary: generated, or pinned here -----------------------------------
# The reference tables (options, columns, formats, commands) are generated from the declarations
# by docs/_ext/tailscope_docs.py (tests/test_docs.py holds them to it); the prose below still names
# a vocabulary, in the README (the front page) and in the guides under docs/.
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
GENERATED = ("_build", "examples", "reference/api")  # written by the build, not by hand


def _doc_files() -> list[Path]:
    return sorted(p for p in [*DOCS.rglob("*.md"), *DOCS.rglob("*.rst")]
                  if not any(p.relative_to(DOCS).as_posix().startswith(g) for g in GENERATED))


def _written() -> str:
    """The README, the CHANGELOG and every hand-written page of the site."""
    return "\n\n".join([README, (ROOT / "CHANGELOG.md").read_text(),
                         *(p.read_text() for p in _doc_files())])


# mentions of another WeightWatcher version: what that version did, not the oracle
OLDER_WEIGHTWATCHER = (
    "(0.7.5.5 matched class names)",  # 0.7.7 changed layer names (docs/switching/weightwatcher.md)
    "| WeightWatcher 0.7.5.5 | tailscope |",  # bench/analyze_speed.py, before 0.7.7 (benchmarks)
    "from weightwatcher 0.7.5.5 to 0.7.7",  # the CHANGELOG
)


def _paragraph(text: str, start: str) -> str:
    """The paragraph of ``text`` that begins with ``start``."""
    i = text.index(start)
    end = text.find("\n\n", i)
    return " ".join(text[i:None if end < 0 else end].split())


def _pins() -> dict:
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    return dict(re.match(r"([\w-]+)==([\w.]+)", d).groups() for d in dev
                if d.split("==")[0] in ("weightwatcher", "powerlaw"))


def test_the_docs_name_the_pinned_oracles_and_no_other_weightwatcher_as_one():
    pins = _pins()
    assert set(pins) == {"weightwatcher", "powerlaw"}
    for package, version in pins.items():
        assert f"{package}=={version}" in README, f"{package}=={version}"
    assert f"WeightWatcher {pins['weightwatcher']}'s and `powerlaw` {pins['powerlaw']}'s" in README
    text = _written()
    for allowed in OLDER_WEIGHTWATCHER:
        assert allowed in text, f"the docs no longer say {allowed!r}: drop it here"
        text = text.replace(allowed, "")
    other = sorted({v for v in re.findall(r"\b0\.7\.\d+(?:\.\d+)?\b", text)
                    if v != pins["weightwatcher"]})
    assert not other, f"WeightWatcher {other} named as if the oracle (it is " \
                      f"{pins['weightwatcher']}); a sentence about an older release goes in " \
                      "OLDER_WEIGHTWATCHER"


def test_the_format_lists_name_every_reader():
    from tailscope.sources.registry import READERS

    for text, start in ((README, "For every weight matrix W"),
                        ((DOCS / "guide" / "analyse.md").read_text(),
                         "Sources, detected from the content")):
        text = _paragraph(text, start).lower()
        missing = [r.name for r in READERS if r.name not in text]
        assert not missing, f"the paragraph {start!r}... omits {missing}"


def test_open_sources_docstring_lists_every_format():
    from tailscope.sources import open_source
    from tailscope.sources.registry import READERS

    assert all(r.phrase in open_source.__doc__ for r in READERS)


def test_the_layer_types_are_layer_types():
    assert all(t in opts.BY_NAME["layers"].doc and t in opts.BY_NAME["layers"].flag.help
               for t in opts.LAYER_TYPES)


def test_no_page_hand_copies_the_options_table():
    """The options are listed in the generated reference (docs/reference/options.rst); a
    hand-written page with a table of them (rows led by option names) is a copy that drifts."""
    for path in [ROOT / "README.md", *_doc_files()]:
        rows = re.findall(r"^\|\s*`(\w+)`", path.read_text(), flags=re.M)
        copied = [r for r in rows if r in opts.BY_NAME]
        assert len(copied) < 5, f"{path.relative_to(ROOT)} lists options by hand: {copied}"


def test_the_cli_guides_flag_groups_per_command_are_the_commands():
    from tailscope.cli import COMMANDS

    words = {"source": "source", "layer-selection": "select", "eigenvalue": "esd", "fit": "fit",
             "diagnostics": "diagnostics"}
    flagged = [o for o in opts.OPTIONS if o.flag is not None]
    taken = {c.name: set(c.options) for c in COMMANDS}

    def whole_groups(command: str) -> set:
        return {g for g in opts.GROUPS
                if all(o.name in taken[command] for o in flagged if o.group == g)}

    text = _paragraph((DOCS / "guide" / "cli.md").read_text(), "Every command that analyses a model")
    claims = 0
    for a, b in re.findall(r"`(\w+)` and `(\w+)` take all of them", text):
        for command in (a, b):
            assert whole_groups(command) == set(opts.GROUPS), command
            claims += 1
    for command, flags in re.findall(r"`(\w+)` all but the source flags ((?:`--[\w-]+`(?: and )?)+)",
                                     text):
        missing = {f for o in flagged if o.name not in taken[command] for f in o.flag.names}
        assert missing == set(re.findall(r"`(--[\w-]+)`", flags)), command
        claims += 1
    for command, groups in re.findall(r"`(\w+)` the ([a-z ,-]+?) flags", text):
        assert whole_groups(command) == {words[w] for w in re.split(r", | and ", groups)}, command
        claims += 1
    assert claims >= 6
