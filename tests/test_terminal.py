"""The terminal: compact tables that fit the width, --columns, colour for the rows that warn (only
on a terminal, never with NO_COLOR, never in a pipe)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from oracles import minilm_path, mtcnn_path

from tailscope.cli import main
from tailscope.cli.common import InputError, pick_columns
from tailscope.engine.columns import (
    BRIEF_COLUMNS,
    COLUMNS,
    CORE_GROUPS,
    TABLE_COLUMNS,
    brief_columns,
)
from tailscope.util.console import ROW_STYLES, Progress, is_terminal, print_table, row_style

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# an SGR sequence that sets a foreground colour (30-37, 90-97, 38;...)
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|9[0-7])(?:;[0-9;]*)?m")
CLEAN = {k: v for k, v in os.environ.items()
         if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS", "TERM")}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def cli(*args, **env):
    """The real entry point in a fresh process, its stdout and stderr pipes."""
    return subprocess.run([sys.executable, "-m", "tailscope", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env={**CLEAN, **env})


@pytest.fixture
def run(monkeypatch):
    """The command line in this process, with these environment variables (only), stdout and
    stderr captured in StringIOs (not terminals: FORCE_COLOR makes them one, as for a user)."""
    def go(*args, **env):
        for key in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS", "TERM"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    return go


def _frame(rows: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    names = [f"model.layers.{i}.self_attention.query_key_value_projection.weight"
             for i in range(rows)]
    alpha = rng.uniform(1.2, 8.0, rows)
    frame = pd.DataFrame({c: rng.uniform(0, 100, rows) for c in TABLE_COLUMNS})
    frame["module"] = [n.removesuffix(".weight") for n in names]
    frame["alpha"] = alpha
    frame["status"] = ["failed" if i == 3 else "success" for i in range(rows)]
    frame["warning"] = ["" if i == 3 else "over-trained" if a < 2 else
                        "under-trained" if a > 6 else "" for i, a in enumerate(alpha)]
    frame["reason"] = ["the matrix is all zeros, and so on and on" if i == 3 else ""
                       for i in range(rows)]
    return frame


def test_brief_columns_are_declared_table_columns():
    assert set(BRIEF_COLUMNS) <= set(TABLE_COLUMNS)
    core = [c.name for c in COLUMNS if c.group in CORE_GROUPS]
    assert brief_columns(core) == [c for c in core if c in BRIEF_COLUMNS]  # default options
    with_mp = brief_columns([*core, "num_spikes", "sigma_mp", "mp_reason"])
    assert with_mp == [*BRIEF_COLUMNS[:-1], "num_spikes", "sigma_mp", "warning"]


@pytest.mark.parametrize("columns", [None, list(TABLE_COLUMNS)])
def test_a_table_on_a_100_column_terminal_fits(columns):
    term = _Terminal()
    print_table(_frame(), columns or list(BRIEF_COLUMNS), title="a title " * 20, stream=term,
                width=100)
    lines = ANSI.sub("", term.getvalue()).splitlines()
    assert len(lines) > 12 and max(len(line) for line in lines) <= 100
    if columns is None:  # the brief table: the module names fold, no number or warning is cut
        text = "\n".join(lines)
        assert all(f" {a:.4g} " in text for a in _frame()["alpha"])
        assert sum("under-trained" in line for line in lines) == sum(
            _frame()["warning"] == "under-trained")


def test_rows_that_warn_are_coloured_on_a_terminal_only(monkeypatch):
    for key in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TERM"):
        monkeypatch.delenv(key, raising=False)
    frame = _frame()
    styles = {row_style(r) for r in frame[["status", "warning"]].to_dict("records")}
    assert styles == {None, *ROW_STYLES.values()}  # every kind of row is in the frame
    term = _Terminal()
    print_table(frame, ["module", "alpha"], stream=term, width=100)  # status/warning not shown
    text = term.getvalue()
    assert "\x1b[31m" in text and "\x1b[33m" in text and "\x1b[36m" in text  # red, yellow, cyan
    piped = io.StringIO()
    print_table(frame, ["module", "alpha"], stream=piped)
    assert "\x1b[" not in piped.getvalue() and not is_terminal(piped)
    monkeypatch.setenv("NO_COLOR", "1")
    term = _Terminal()
    print_table(frame, ["module", "alpha"], stream=term, width=100)
    assert not COLOUR.search(term.getvalue())
    assert ANSI.sub("", term.getvalue()) == ANSI.sub("", text)  # the same table, uncoloured


def test_progress_and_tables_follow_the_environment(monkeypatch):
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert is_terminal(io.StringIO()) and Progress(stream=io.StringIO()).tty
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert not is_terminal(_Terminal()) and not Progress(stream=_Terminal()).tty


def test_pick_columns():
    a = pd.DataFrame(columns=["name", "alpha", "D"])
    b = pd.DataFrame(columns=["metric", "n"])
    given = lambda text: SimpleNamespace(columns=text)  # noqa: E731
    assert pick_columns(given(None), [a, b], ["alpha", "n", "absent"]) == [["alpha"], ["n"]]
    assert pick_columns(given("all"), [a, b], []) == [["name", "alpha", "D"], ["metric", "n"]]
    assert pick_columns(given(" D, name ,n"), [a, b], []) == [["D", "name"], ["n"]]
    for bad in ("alpha,nope", ",", ""):
        with pytest.raises(InputError, match="--columns") as exc:
            pick_columns(given(bad), [a, b], [])
        assert "have: name, alpha, D, metric, n" in str(exc.value)


# --- the commands, as a user runs them -------------------------------------------------------------
def test_analyze_in_a_pipe_is_compact_and_plain():
    res = cli("analyze", mtcnn_path("onet"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == list(BRIEF_COLUMNS)
    assert "\x1b[" not in res.stdout + res.stderr
    table = lines[: lines.index("")]
    assert max(map(len, table)) <= 100 and any("over-trained" in line for line in table)


def test_analyze_on_a_terminal_fits_100_columns_and_colours_warnings(run):
    res = run("analyze", mtcnn_path("onet"), FORCE_COLOR="1", COLUMNS="100")
    assert res.returncode == 0, res.stderr
    assert "\x1b[33m" in res.stdout  # the over-trained row in yellow
    plain = ANSI.sub("", res.stdout).splitlines()
    assert max(map(len, plain)) <= 100 and plain[0].split() == list(BRIEF_COLUMNS)
    no_colour = run("analyze", mtcnn_path("onet"), FORCE_COLOR="1", COLUMNS="100", NO_COLOR="1")
    assert not COLOUR.search(no_colour.stdout + no_colour.stderr)
    assert ANSI.sub("", no_colour.stdout) == ANSI.sub("", res.stdout)


def test_analyze_columns_selects_and_checks_before_the_work(run):
    path = mtcnn_path("onet")
    res = run("analyze", path, "--columns", "alpha,layer_id,xmin")
    assert res.returncode == 0, res.stderr
    header = res.stdout.splitlines()[0].split()
    assert header == ["alpha", "layer_id", "xmin"]
    d = pd.read_csv(io.StringIO(res.stdout.split("\n\n")[0]), sep=r"\s{2,}", engine="python",
                    skiprows=[1])
    assert len(d) == 6
    res = run("analyze", path, "--columns", "all")
    header = res.stdout.splitlines()[0].split()
    assert res.returncode == 0 and {"reason", "lambda_max", "entropy", "dtype"} <= set(header)
    bad = run("analyze", path, "--columns", "alpha,bogus")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "--columns" in bad.stderr and "'bogus'" in bad.stderr


def test_describe_of_a_real_model_brief_and_all(run):
    path = minilm_path()
    res = run("describe", path, FORCE_COLOR="1", COLUMNS="100")
    assert res.returncode == 0, res.stderr
    plain = ANSI.sub("", res.stdout).splitlines()
    assert max(map(len, plain)) <= 100
    assert plain[1].split() == ["layer_id", "name", "shape", "analyze", "reason"]
    res = run("describe", path, "--columns", "name,num_evals")
    assert res.returncode == 0 and res.stdout.splitlines()[1].split() == ["name", "num_evals"]
    assert "\x1b[" not in res.stdout
    assert "embeddings.word_embeddings.weight" in res.stdout  # piped: never cut


def test_rank_columns(tmp_path, run):
    path = tmp_path / "m.npy"
    np.save(path, np.random.default_rng(0).standard_normal((120, 60)))
    res = run("rank", path, "--columns", "K")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[2].split() == ["K"] and "note" not in res.stdout
    bad = run("rank", path, "--columns", "alpha")
    assert bad.returncode == 2 and "have: other rules, K, note" in bad.stderr


def _recorder(calls: list):
    return lambda done, total, name: calls.append((done, total, name))


def test_every_layer_by_layer_command_reports_progress(tmp_path):
    """smooth, sharpen, traps, remove_traps and prune call the progress hook as analyze does:
    (done, total, name) after each analysed layer, done counting up to total."""
    from tailscope import analyze, prune, remove_traps, traps
    from tailscope.edit import sharpen, smooth

    path = mtcnn_path("pnet")
    analysed = [n for n, s in analyze(path).details[["name", "status"]].itertuples(index=False)]
    for run_it in (lambda p: smooth(path, progress=p), lambda p: sharpen(path, progress=p),
                   lambda p: traps(path, progress=p), lambda p: remove_traps(path, progress=p),
                   lambda p: prune(path, 0.5, progress=p)):
        calls: list = []
        run_it(_recorder(calls))
        n = len(analysed)
        assert calls == [(i + 1, n, name) for i, name in enumerate(analysed)]
