"""Hostile input, classes of the second campaign: an output that is the input, discrete fits of
non-integers or with a non-finite D, '$' in names drawn by matplotlib, validate's options and
outputs checked before any work, a bad bootstrap seed. Inputs are generated here."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import cli, user_error
from safetensors.numpy import save_file

from tailscope.fit import fit_power_law

RNG = np.random.default_rng(151)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()




def sh(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tailscope", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a.weight": RNG.standard_normal((64, 48)).astype(np.float32),
               "b.weight": RNG.standard_normal((80, 40)).astype(np.float32)}, str(path))
    return path


@pytest.fixture
def sharded(tmp_path):
    """A sharded safetensors folder: an index and two shards."""
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file({"a.weight": RNG.standard_normal((64, 48)).astype(np.float32)},
              str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b.weight": RNG.standard_normal((80, 40)).astype(np.float32)},
              str(folder / "model-00002-of-00002.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors"}}))
    return folder


# --- 1. the output is never the input ---------------------------------------------------------
EDITS = {"smooth": [], "prune": ["--sparsity", "0.5"], "traps": ["--remove"]}


@pytest.mark.parametrize("command", sorted(EDITS))
def test_edit_onto_its_own_input_is_refused_in_a_subprocess(model, command):
    before = digest(model)
    res = sh(command, model, *EDITS[command], "-o", model)
    assert res.returncode == 2, res
    assert len(res.stderr.strip().splitlines()) == 1 and "input" in res.stderr, res.stderr
    assert digest(model) == before


@pytest.mark.parametrize("command", sorted(EDITS))
@pytest.mark.parametrize("route", ["relative", "hardlink", "symlink", "dotdot"])
def test_every_route_to_the_input_is_refused(tmp_path, capsys, monkeypatch, model, command,
                                             route):
    before = digest(model)
    if route == "relative":
        monkeypatch.chdir(model.parent)
        out = model.name
    elif route == "dotdot":
        (tmp_path / "sub").mkdir()
        out = tmp_path / "sub" / ".." / model.name
    else:
        out = tmp_path / f"{route}.safetensors"
        (os.link if route == "hardlink" else os.symlink)(model, out)
    user_error(capsys, command, model, *EDITS[command], "-o", out, naming="input")
    assert digest(model) == before


@pytest.mark.parametrize("command", sorted(EDITS))
def test_a_file_inside_a_sharded_input_folder_is_refused(tmp_path, capsys, sharded, command):
    shard = sharded / "model-00001-of-00002.safetensors"
    before = digest(shard)
    for out in (shard, sharded / "new.safetensors"):
        user_error(capsys, command, sharded, *EDITS[command], "-o", out, naming="input folder")
    link = tmp_path / "link.safetensors"
    os.link(shard, link)  # a hard link to a shard, outside the folder
    user_error(capsys, command, sharded, *EDITS[command], "-o", link, naming="input")
    assert digest(shard) == before
    assert not (sharded / "new.safetensors").exists()


def test_tables_and_figures_never_land_on_the_input(tmp_path, capsys, model, sharded):
    user_error(capsys, "traps", sharded, "--out", sharded / "t.csv", naming="input folder")
    user_error(capsys, "analyze", sharded, "--out", sharded / "table.csv", naming="input folder")
    user_error(capsys, "analyze", sharded, "--plot", sharded / "figs", naming="input folder")
    user_error(capsys, "report", sharded, "-o", sharded / "r.html", naming="input folder")
    user_error(capsys, "analyze", model, "--base", sharded, "--out", sharded / "t.csv",
               naming="input folder")
    assert sorted(p.name for p in sharded.iterdir()) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json"]


def test_rank_never_overwrites_its_input(tmp_path, capsys):
    pytest.importorskip("sklearn")
    x = tmp_path / "x.npy"
    np.save(x, RNG.standard_normal((40, 30)))
    before = digest(x)
    user_error(capsys, "rank", x, "--out", x, naming="input")
    assert digest(x) == before


def test_an_output_next_to_the_input_is_fine(tmp_path, capsys, model):
    code, out, err = cli(capsys, "prune", model, "--sparsity", "0.5", "-o",
                         tmp_path / "pruned.safetensors")
    assert code == 0, err
    assert (tmp_path / "pruned.safetensors").exists()


# --- 2. discrete fits take whole numbers, and a non-finite D is a failure ---------------------
def test_discrete_fit_refuses_non_integers():
    x = RNG.zipf(2.5, 2000).astype(float)
    with pytest.raises(ValueError, match="whole numbers"):
        fit_power_law(x + 0.5, discrete=True)
    with pytest.raises(ValueError, match="xmin=2.5"):
        fit_power_law(x, discrete=True, xmin=2.5)
    assert fit_power_law(x, discrete=True, xmin=3).ok  # a whole xmin as a float is fine
    assert fit_power_law(x, discrete=True, xmin=(2.5, 10.5)).ok  # a range bounds candidates


def test_discrete_fit_far_from_one_is_a_failure_with_its_reason():
    x = np.random.default_rng(0).zipf(2.5, 5000) + 10**6
    fit = fit_power_law(x, discrete=True)
    assert not fit.ok and fit.status == "failed"
    assert "D is nan" in fit.reason
    assert np.isnan(fit.alpha)


def test_discrete_fit_still_matches_powerlaw():
    import warnings

    powerlaw = pytest.importorskip("powerlaw")
    x = np.random.default_rng(0).zipf(2.5, 3000)
    fit = fit_power_law(x, discrete=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(x, discrete=True, verbose=False)
    assert fit.ok and fit.xmin == ref.xmin
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-12)
    assert fit.D == pytest.approx(ref.D, rel=1e-9)


def test_fit_cli_discrete_refuses_fractions_and_a_failed_fit(tmp_path, capsys):
    halves = tmp_path / "halves.txt"
    halves.write_text("\n".join(str(v + 0.5) for v in RNG.zipf(2.5, 500)))
    user_error(capsys, "fit", halves, "--discrete", naming="whole numbers")
    counts = tmp_path / "counts.txt"
    counts.write_text("\n".join(str(v) for v in RNG.zipf(2.5, 500)))
    user_error(capsys, "fit", counts, "--discrete", "--xmin", "2.5", naming="xmin=2.5")
    far = tmp_path / "far.txt"
    far.write_text("\n".join(str(v) for v in np.random.default_rng(0).zipf(2.5, 3000) + 10**6))
    err = user_error(capsys, "fit", far, "--discrete")
    assert "not finite" in err or "nan" in err


# --- 3. names are drawn literally ---------------------------------------------------------------
DOLLAR_NAMES = ("a$b$.weight", "x_{1}^$", r"$\frac{1}{$.weight")


@pytest.fixture
def dollar_model(tmp_path):
    path = tmp_path / "dollar.safetensors"
    save_file({n: RNG.standard_normal((70 + 5 * i, 40)).astype(np.float32)
               for i, n in enumerate(DOLLAR_NAMES)}, str(path))
    return path


def test_literal_escapes_once():
    pytest.importorskip("matplotlib")
    from tailscope.report.plots import literal

    assert literal("a$b$") == r"a\$b\$"
    assert literal(literal("a$b$")) == literal("a$b$")
    assert literal("plain") == "plain"


def test_analyze_plot_draws_dollar_names(tmp_path, dollar_model):
    pytest.importorskip("matplotlib")
    figs = tmp_path / "figs"
    res = sh("analyze", dollar_model, "--plot", figs, "--quiet")
    assert res.returncode == 0, res.stderr
    assert len(list(figs.glob("*.png"))) == len(DOLLAR_NAMES)


def test_report_draws_dollar_names(tmp_path, capsys, dollar_model):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    code, _, err = cli(capsys, "report", dollar_model, "-o", out, "--quiet")
    assert code == 0, err
    assert out.stat().st_size > 1000


def test_zoo_scatter_draws_dollar_names(tmp_path):
    pytest.importorskip("matplotlib")
    import pandas as pd

    from tailscope.zoo.correlate import write_zoo_report

    models = pd.DataFrame({"name": [f"m{i}" for i in range(6)], "group": [r"$\frac{g$"] * 6,
                           "status": ["success"] * 6, "alpha": RNG.random(6) + 2,
                           "acc$": RNG.random(6)})
    path = write_zoo_report(models, tmp_path / "z.html", quality=["acc$"], metrics=["alpha"])
    assert path.exists()


# --- 4. validate checks its options and output folder before any work ---------------------------
def test_validate_bad_columns_before_any_training(tmp_path):
    out = tmp_path / "v"
    res = sh("validate", "--quick", "--columns", "bogus", "--out", out, timeout=60)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "bogus" in res.stderr
    assert not out.exists()


def test_validate_never_creates_missing_parents(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "c"
    user_error(capsys, "validate", "--quick", "--out", out, naming="does not exist")
    assert not (tmp_path / "a").exists()


def test_validate_refuses_an_output_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "report.html").mkdir()
    user_error(capsys, "validate", "--quick", "--out", tmp_path, naming="report.html")


def test_validate_writes_all_its_files_or_none(tmp_path):
    from tailscope.zoo.quality import _write_all

    def broken(p):
        raise OSError(28, "No space left on device")

    with pytest.raises(ValueError, match=r"c\.csv: No space left"):
        _write_all(tmp_path, {"a.csv": lambda p: open(p, "w").write("a"),
                              "b.csv": lambda p: open(p, "w").write("b"), "c.csv": broken})
    assert list(tmp_path.iterdir()) == []
    _write_all(tmp_path, {"a.csv": lambda p: open(p, "w").write("a")})
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


# --- 5. small ones ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 1.5, "x"])
def test_goodness_of_fit_names_a_bad_seed(seed):
    fit = fit_power_law((1 - RNG.random(500)) ** (-1 / 1.5))
    with pytest.raises(ValueError, match="^seed must be"):
        fit.goodness_of_fit(5, seed=seed, n_jobs=1)


def test_rank_of_an_all_zero_matrix_is_refused(tmp_path, capsys):
    pytest.importorskip("sklearn")
    x = tmp_path / "zero.npy"
    np.save(x, np.zeros((50, 20)))
    out = tmp_path / "latent.npy"
    user_error(capsys, "rank", x, "--out", out, naming="all zeros")
    assert not out.exists()
