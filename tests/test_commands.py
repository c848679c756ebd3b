"""The command registry: every command that analyses takes the analysis flags of its option groups,
generated from ``engine.options.OPTIONS``, with one meaning everywhere; the terminal's progress
facility and table printer."""

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from oracles import mtcnn_path, pareto

import tailscope
from tailscope.cli import COMMANDS, build_parser, main
from tailscope.cli.common import Command, InputError, given_options
from tailscope.engine.options import COMPARE_DEFAULT, COMPARE_TAGS, OPTIONS
from tailscope.util.console import Progress, hms, print_table


def run(*args):
    """The command line in this process (``main`` as the entry point calls it): the subprocess
    tests of tests/test_cli.py cover the real entry point; these check meanings."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def flags(*groups, plus=(), minus=()):
    return {n for o in OPTIONS if o.flag and (o.group in groups or o.name in plus)
            and o.name not in minus for n in o.flag.names}


ALL_GROUPS = ("source", "select", "esd", "fit", "diagnostics")
ANALYSIS_FLAGS = flags(*ALL_GROUPS)


# --- the registry ---------------------------------------------------------------------------------
def test_the_registry_builds_the_parser():
    names = [c.name for c in COMMANDS]
    assert names == ["fit", "analyze", "smooth", "traps", "prune", "quantize-plan", "zoo",
                     "validate", "report", "describe", "rank", "demo"]
    assert all(isinstance(c, Command) and c.help and c.description for c in COMMANDS)
    parser = build_parser()
    assert list(parser.commands) == names
    text = run("--help").stdout
    assert all(re.search(rf"^\s+{n}\s", text, re.M) for n in names)


@pytest.mark.parametrize("command,expected", [
    ("analyze", ANALYSIS_FLAGS),
    ("report", ANALYSIS_FLAGS),
    ("zoo", flags(*ALL_GROUPS, minus=("base_model", "peft"))),
    ("describe", flags("source", "select")),
    ("smooth", flags("source", "select", "fit", plus=("jobs",))),
    ("traps", flags("source", "select", "esd", plus=("seed",), minus=("device", "tolerance"))),
    ("prune", flags("source", "select", plus=("jobs",))),
])
def test_each_command_takes_the_flags_of_its_option_groups(command, expected):
    accepted = build_parser().commands[command].option_strings()
    assert expected <= accepted, sorted(expected - accepted)
    # and no analysis flag of another group (smooth's hidden --method is its own old --keep)
    assert not (ANALYSIS_FLAGS - expected) & accepted - {"--method"}, \
        sorted((ANALYSIS_FLAGS - expected) & accepted)


def test_only_given_flags_reach_the_call():
    parser = build_parser()
    analyze = next(c for c in COMMANDS if c.name == "analyze")
    zoo = next(c for c in COMMANDS if c.name == "zoo")
    assert given_options(parser.parse_args(["analyze", "m.safetensors"]), analyze.options) == {}
    args = parser.parse_args(["analyze", "m", "--no-pool", "--layers", "1,dense",
                              "--layers=attn.*", "--compare", "--xmax", "-2", "--ERG", "--base", "b"])
    assert given_options(args, analyze.options) == {
        "pool": False, "layers": [1, "dense", "attn.*"], "compare": True, "xmax": -2,
        "detX": True, "base_model": "b"}
    skip = parser.parse_args(["analyze", "m", "--layers=-*.bias,-2"])
    assert given_options(skip, analyze.options) == {"layers": ["-*.bias", -2]}
    mixed = parser.parse_args(["analyze", "m", "--layers", "1", "--layers=-*.bias"])
    with pytest.raises(InputError, match="^--layers: layers: give either"):
        given_options(mixed, analyze.options)  # the option's own check, naming the flag
    # zoo passes --jobs (layers at once within a model task) through to each analysis
    args = parser.parse_args(["zoo", "m.csv", "--jobs", "2", "--trust-pickle"])
    assert given_options(args, zoo.options) == {"jobs": 2, "trust_pickle": True}


@pytest.mark.parametrize("args,message", [
    (["analyze", "M", "--min-evals", "x"], "--min-evals"),
    (["analyze", "M", "--seed", "-3", "--randomize"], "seed"),
    (["report", "M", "--heads", "0"], "heads"),
    (["report", "M", "--fit", "gamma"], "--fit"),
    (["describe", "M", "--max-evals", "many"], "--max-evals"),
    (["describe", "M", "--min-evals", "-1"], "min_evals"),
    (["smooth", "M", "-o", "@s.safetensors", "--xmax", "zz"], "--xmax"),
    (["smooth", "M", "-o", "@s.safetensors", "--max-fingers", "0"], "max_fingers"),
    (["zoo", "@missing.csv", "--gof", "-1"], "gof"),  # before the manifest is read
    (["zoo", "@missing.csv", "--compare", "gamma"], "compare"),
])
def test_a_bad_flag_value_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    from safetensors.numpy import save_file

    model = tmp_path / "m.safetensors"
    save_file({"a.weight": np.ones((20, 10), np.float32)}, str(model))
    args = [str(model) if a == "M" else str(tmp_path / a[1:]) if a[0] == "@" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tailscope: error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "s.safetensors").exists()


def test_a_bad_flag_value_in_a_subprocess():
    res = subprocess.run([sys.executable, "-m", "tailscope", "analyze", "x.safetensors",
                          "--max-N", "-"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("tailscope: error: analyze: argument --max-N")
    assert len(res.stderr.strip().splitlines()) == 1


# --- every choice list is the library's own --------------------------------------------------------
def _declared_choices() -> dict:
    """(command, flag) -> the library constant its values are."""
    from tailscope.edit.decisions import QUANTIZE_FORMATS
    from tailscope.edit.smooth import SMOOTH_METHODS
    from tailscope.edit.traps import NOISE
    from tailscope.engine.options import ESD_METHODS, FINGER_FIXES, FITS, PEFT_MODES

    out = {("smooth", "--keep"): SMOOTH_METHODS, ("smooth", "--method"): SMOOTH_METHODS,
           ("traps", "--noise"): NOISE, ("quantize-plan", "--format"): QUANTIZE_FORMATS}
    for command in build_parser().commands:
        for flag, values in (("--fit", tuple(FITS)), ("--method", ESD_METHODS),
                             ("--fix-fingers", FINGER_FIXES),
                             ("--peft", tuple(m for m in PEFT_MODES if isinstance(m, str)))):
            out.setdefault((command, flag), values)
    return out


def _choice_actions():
    for command, parser in build_parser().commands.items():
        for action in parser._actions:
            if action.choices is not None and not isinstance(action.choices, dict):
                yield command, action


def test_each_commands_choices_are_the_library_constant():
    declared = _declared_choices()
    seen = 0
    for command, action in _choice_actions():
        flag = action.option_strings[0]
        assert (command, flag) in declared, f"{command} {flag}: choices not drawn from the library"
        assert list(action.choices) == list(declared[command, flag]), (command, flag)
        seen += 1
    assert seen >= 10


def test_each_commands_own_choice_help_names_every_choice():
    options = {o.name for o in OPTIONS}
    for command, action in _choice_actions():
        if action.help not in (None, argparse.SUPPRESS) and action.dest not in options:
            missing = [c for c in action.choices if not re.search(rf"\b{c}\b", action.help)]
            assert not missing, f"{command} {action.option_strings[0]}: help omits {missing}"


def test_building_the_parser_loads_no_editing_code():
    code = ("import sys\n"
            "from tailscope.cli import build_parser\n"
            "build_parser()\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('scipy', 'pandas', 'torch')\n"
            "         or m.startswith('tailscope.edit')]\n"
            "assert not heavy, heavy\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_analyze_out_formats_are_those_analysis_save_writes(tmp_path):
    from tailscope.cli.analyze import OUT_FORMATS

    analysis = tailscope.analyze(np.random.default_rng(0).standard_t(3, (60, 40)))
    for suffix in OUT_FORMATS:
        if suffix == ".parquet":
            pytest.importorskip("pyarrow")
        assert analysis.save(tmp_path / f"d{suffix}").exists()
    with pytest.raises(ValueError, match="unknown output format"):
        analysis.save(tmp_path / "d.xlsx")


# --- one meaning everywhere --------------------------------------------------------------------------
def test_report_takes_the_diagnostics_and_shows_mp_fits(tmp_path):
    path = mtcnn_path("pnet")
    out = tmp_path / "r.html"
    res = run("report", str(path), "-o", str(out), "--mp-fit", "--quiet")
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    ref = tailscope.analyze(path, mp_fit=True).details
    assert html.count('"mp": {"W_scale"') == len(ref) == 3  # each layer's MP figure data
    sigmas = [float(s) for s in re.findall(r'"mp": \{"W_scale": [^,]+, "sigma": ([^,]+)', html)]
    np.testing.assert_allclose(sigmas, ref["sigma_mp"].astype(float), rtol=1e-12)
    assert "mean mp_softrank" in html


def test_describe_takes_the_selection_flags():
    path = mtcnn_path("onet")

    def analysed(*extra):
        res = run("describe", str(path), *extra)
        assert res.returncode == 0, res.stderr
        return int(re.search(r"(\d+) of \d+ tensors would be analysed", res.stdout).group(1))

    assert analysed() == 6
    assert analysed("--min-evals", "50") == int(
        tailscope.describe(path, min_evals=50)["analyze"].sum()) == 4


def test_smooth_keep_and_its_old_name_method(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(2)
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((90, 60)).astype(np.float32)}, str(model))
    want = tailscope.smooth(model, method="svd", percent=0.2).weights["a.weight"]
    for i, keep in enumerate((["--keep", "svd"], ["--method", "svd"])):
        out = tmp_path / f"s{i}.safetensors"
        res = run("smooth", str(model), "-o", str(out), *keep, "--percent", "0.2")
        assert res.returncode == 0, res.stderr
        got = {r.name: r.load() for r in tailscope.open_source(out)}["a.weight"]
        np.testing.assert_array_equal(got, want)
        assert np.linalg.matrix_rank(got) == 12
    assert "--method" not in run("smooth", "--help").stdout  # the old name is hidden
    res = run("smooth", str(model), "-o", str(tmp_path / "g.safetensors"), "--method", "gram")
    assert res.returncode == 2 and "invalid choice" in res.stderr


@pytest.fixture
def values(tmp_path):
    x = pareto(800, 2.5, seed=5)
    path = tmp_path / "values.txt"
    path.write_text("\n".join(repr(float(v)) for v in x))
    return path, x


def _fit_alternatives(path, *compare):
    res = run("fit", str(path), "--json", "--compare", *compare)
    assert res.returncode == 0, res.stderr
    return {COMPARE_TAGS[c["distribution"]] for c in json.loads(res.stdout)["compare"]}


def _analyze_alternatives(path, tmp_path, *compare):
    out = tmp_path / "d.csv"
    res = run("analyze", str(path), "--quiet", "--out", str(out), "--compare", *compare)
    assert res.returncode == 0, res.stderr
    return {c[2:] for c in pd.read_csv(out).columns if c.startswith("R_")}


def test_compare_means_the_same_in_fit_and_analyze(values, tmp_path):
    path, _ = values
    model = mtcnn_path("pnet")
    default = {COMPARE_TAGS[n] for n in COMPARE_DEFAULT}
    assert _fit_alternatives(path) == _analyze_alternatives(model, tmp_path) == default
    every = set(COMPARE_TAGS.values())
    assert _fit_alternatives(path, "all") == _analyze_alternatives(model, tmp_path, "all") == every
    # either vocabulary, in either command
    assert _fit_alternatives(path, "TPL", "lognormal") == {"TPL", "lognormal"}
    assert _analyze_alternatives(model, tmp_path, "truncated_power_law") == {"TPL"}
    assert run("fit", str(path), "--compare", "gamma").returncode == 2


def test_fit_xmax_minus_k_drops_the_k_largest_values(values, tmp_path):
    path, x = values
    rest = tmp_path / "rest.txt"
    rest.write_text("\n".join(repr(float(v)) for v in np.sort(x)[:-2]))
    got = json.loads(run("fit", str(path), "--xmax", "-2", "--json").stdout)
    want = json.loads(run("fit", str(rest), "--json").stdout)
    for key in ("alpha", "xmin", "D", "sigma", "n_tail", "n"):
        assert got[key] == want[key], key
    assert got["dropped_largest"] == 2
    assert want["n"] == x.size - 2
    # 'force' and 'max' are the same truncation at the largest value
    force, top = (json.loads(run("fit", str(path), "--xmax", v, "--json").stdout)
                  for v in ("force", "max"))
    assert force == top and force["xmax"] == x.max()
    bad = run("fit", str(path), "--xmax", "-2.5")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    many = run("fit", str(path), "--xmax", "-500")  # 500 of 800: more than half
    assert many.returncode == 2 and "drops more than half of the 800 values" in many.stderr


def test_rank_without_scikit_learn_names_the_extra(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, np.random.default_rng(0).standard_normal((50, 40)))
    code = ("import sys\n"
            "sys.modules['sklearn'] = None\n"
            "from tailscope.cli import main\n"
            f"sys.exit(main(['rank', {str(path)!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert "tailscope[rank]" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "internal error" not in res.stderr and res.stdout == ""


def test_analyze_table_and_summary(tmp_path):
    res = run("analyze", str(mtcnn_path("pnet")), "--mp-fit", "--seed", "1")
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[0].split()
    assert header[:3] == ["layer_id", "module", "N"]  # the brief columns, then those asked for
    assert "sigma_mp" in header and "mp_reason" not in header and "reason" not in header
    mean = next(line for line in res.stdout.splitlines() if line.startswith("mean  alpha"))
    assert "mp_softrank" in mean
    assert "\x1b[" not in res.stdout


# --- the terminal ---------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_is_a_line_every_interval(monkeypatch):
    clock = iter([0.0, 1.0, 11.0, 12.0, 15.0])
    monkeypatch.setattr("tailscope.util.console.time.monotonic", lambda: next(clock))
    log = io.StringIO()
    p = Progress("layers", stream=log)  # starts at 0 s
    p(1, 4, "a")  # 1 s: too soon
    p(2, 4, "b")  # 11 s: a line
    p(3, 4, "c")  # 12 s: too soon
    p(4, 4, "d")  # 15 s: too soon, but the last of a run that took long: a final line
    p.note("a note")
    assert log.getvalue().splitlines() == [
        "2/4 layers, 0:00:11 elapsed, ETA 0:00:11  b",
        "4/4 layers, 0:00:15 elapsed, ETA 0:00:00  d",
        "a note"]


def test_progress_quiet_and_short_runs_print_nothing():
    log = io.StringIO()
    with Progress("models", quiet=True, stream=_Terminal()) as p:
        p(1, 1, "x", failed=1)
        p.note("nothing")
    with Progress("models", stream=log) as p:
        p(1, 2, "x", failed=0)
        p(2, 2, "y", failed=1)
    assert log.getvalue() == ""


def test_progress_on_a_terminal_is_a_bar():
    term = _Terminal()
    with Progress("models", stream=term) as p:
        p.note("before")
        p(1, 3, "first-model", failed=0)
        p.note("during")
        p(3, 3, "last-model", failed=1)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", term.getvalue())
    assert "before" in text and "during" in text
    assert "3/3" in text and "1 failed" in text and "last-model" in text and "ETA" in text


def test_hms():
    assert [hms(s) for s in (0, 59.6, 3600 + 61, float("nan"))] == [
        "0:00:00", "0:01:00", "1:01:01", "0:00:00"]


def test_tables_in_a_log_are_never_cut():
    long = "encoder.layers.0.attention.self.query.weight" * 4
    frame = pd.DataFrame({"layer_id": [0, 12], "name": [long, "x[bold]y"],
                          "alpha": [2.3456789, np.nan], "N": pd.array([3, None], dtype="Int64"),
                          "ok": [True, False]})
    out = io.StringIO()
    print_table(frame, ["layer_id", "name", "alpha", "N", "absent"], title="a title", stream=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "a title" and lines[1].split() == ["layer_id", "name", "alpha", "N"]
    assert long in lines[3] and lines[3].split()[2:] == ["2.346", "3"]
    assert lines[4].split() == ["12", "x[bold]y", "nan", "nan"]
    assert "\x1b[" not in out.getvalue() and all(line == line.rstrip() for line in lines)


# --- the demo (make demo runs it whole) -----------------------------------------------------------
def test_the_demo_steps_on_a_slice_of_their_data():
    """tailscope demo's fit and rank steps on one CSN dataset and 300 articles: what they print is
    fit_power_law's and select_rank's numbers (the MiniLM step is analyze, tested elsewhere)."""
    from tailscope.cli.demo_run import run_fits, run_rank
    from tailscope.datasets import clauset, news_articles
    from tailscope.rank import tfidf

    lines = []
    rows = run_fits(names=["quakes"], out=lines.append)
    x = clauset("quakes")
    ref = tailscope.fit_power_law(x[x > 0])
    assert [r["dataset"] for r in rows] == ["quakes"]
    assert (rows[0]["alpha"], rows[0]["xmin"], rows[0]["n_tail"]) == (ref.alpha, ref.xmin, ref.n_tail)
    assert lines[2].split()[:3] == ["quakes", str(ref.n), f"{ref.alpha:.4f}"]
    assert lines[-1].startswith("  bootstrap (200 replicates): p = ")
    lines.clear()
    sel = run_rank(out=lines.append, n_docs=300)
    X, _ = tfidf(news_articles()["text"].fillna("").astype(str).tolist()[:300])
    assert sel.k == tailscope.select_rank(X).k
    assert lines[1].startswith(f"K = {sel.k}: the power-law tail")
