"""analyze()'s optional diagnostics (fit='TPL'/'E_TPL', compare, gof, vectors, finger fixes) against
weightwatcher 0.7.5.5 with powerlaw 1.5, and the option combinations WeightWatcher rejects."""

import functools
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from oracles import minilm_path, weightwatcher_details

import tailscope
from tailscope.fit import fit_power_law, fit_truncated_power_law
from tailscope.spectrum.vectors import eigenvectors, per_vector, vector_metrics, vector_summary


@functools.cache
def _minilm(name):
    from safetensors.numpy import load_file

    return load_file(minilm_path())[name]


def _small_real():
    """A real 384 x 40 block of a trained MiniLM matrix: 40 eigenvalues, fast for the oracles."""
    return {"blk.weight": np.ascontiguousarray(
        _minilm("encoder.layer.1.attention.self.key.weight")[:, :40])}


def _torch(sd):
    import torch

    return {k: torch.tensor(v) for k, v in sd.items()}


def _esd(w):
    w = w.astype(np.float64)
    w = w if w.shape[0] >= w.shape[1] else w.T
    ev = np.linalg.eigvalsh(w.T @ w)
    return np.sort(ev[ev > 1e-5])


def _ww_range(x, lo, hi):
    """powerlaw 1.5's candidates for an xmin range (lo, hi): the unique values inside, less the
    largest of them; as an (lo, hi) range for our scan."""
    u = np.unique(x[(x >= lo) & (x <= hi)])
    return float(lo), float(u[-2])


def _ww_peak(x):
    counts, edges = np.histogram(np.log10(x), bins=100)
    return 10 ** edges[int(np.argmax(counts))]


# --- fit='TPL' / 'E_TPL' ----------------------------------------------------------------------
def test_tpl_and_e_tpl_equal_weightwatcher_with_powerlaw_on_a_real_block():
    sd = _small_real()
    x = _esd(sd["blk.weight"])
    ww_tpl = weightwatcher_details(_torch(sd), fit="TPL", pl_package="powerlaw").iloc[0]
    ours = tailscope.analyze(sd, fit="TPL").details.iloc[0]
    # eigenvalues: WeightWatcher's SVD, our Gram matrix: equal to ~1e-14
    assert ours["xmin"] == pytest.approx(ww_tpl["xmin"], rel=1e-10)
    assert ours["num_pl_spikes"] == ww_tpl["num_pl_spikes"]
    assert ours["alpha"] == pytest.approx(ww_tpl["alpha"], abs=2e-4)  # fmin's tolerance (measured: 1.2e-4)
    assert ours["Lambda"] == pytest.approx(ww_tpl["Lambda"], rel=2e-3)
    assert ours["D"] == pytest.approx(ww_tpl["D"], abs=5e-4)
    assert math.isnan(ours["sigma"]) and ours["status"] == "success"
    assert ours["alpha_weighted"] == pytest.approx(ours["alpha"] * ours["log_spectral_norm"])
    # E_TPL: WeightWatcher searches xmin from log10(0.95 p) (a log value used as a linear bound)
    ww_e = weightwatcher_details(_torch(sd), fit="E_TPL", pl_package="powerlaw").iloc[0]
    p = _ww_peak(x)
    quirk = fit_truncated_power_law(x, xmin=_ww_range(x, math.log10(0.95 * p), 1.5 * p))
    assert quirk.xmin == pytest.approx(ww_e["xmin"], rel=1e-10)
    assert quirk.alpha == pytest.approx(ww_e["alpha"], abs=2e-4)
    assert quirk.Lambda == pytest.approx(ww_e["Lambda"], rel=2e-3)
    # ours searches the linear range [0.95 p, 1.5 p]
    e_tpl = tailscope.analyze(sd, fit="E_TPL").details.iloc[0]
    fixed = fit_truncated_power_law(x, fix_fingers="xmin_peak")
    assert 0.95 * p <= e_tpl["xmin"] <= 1.5 * p
    assert (e_tpl["xmin"], e_tpl["alpha"], e_tpl["Lambda"]) == (fixed.xmin, fixed.alpha,
                                                                 fixed.Lambda)


def test_tpl_on_full_real_layers_keeps_the_power_law_columns_and_its_fit():
    name = "encoder.layer.0.attention.self.query.weight"
    a = tailscope.analyze({name: _minilm(name)}, fit="TPL")
    row = a.details.iloc[0]
    fit = a.fit(0)
    assert (row["alpha"], row["Lambda"], row["xmin"]) == (fit.alpha, fit.Lambda, fit.xmin)
    # WeightWatcher (pl_package='powerlaw', measured once): alpha 1.0000055, Lambda 0.0798070,
    # xmin 3.421746; here the constrained maximum sits exactly on alpha = 1
    assert row["alpha"] == 1.0 and row["xmin"] == pytest.approx(3.421746376122062, rel=1e-12)
    assert list(a.details.columns).index("Lambda") == list(a.details.columns).index("alpha") + 1


# --- compare / gof ----------------------------------------------------------------------------
def test_compare_and_gof_columns_equal_the_fit_api():
    name = "encoder.layer.0.output.dense.weight"
    sd = {name: _minilm(name)}
    a = tailscope.analyze(sd, compare=True, gof=12, seed=3)
    d = a.details.iloc[0]
    esd = a.esd(0)  # the analysis' own eigenvalues: p near 1 magnifies last-ulp differences
    np.testing.assert_allclose(esd[esd > 1e-5], _esd(sd[name]), rtol=1e-12)
    pl = fit_power_law(esd[esd > 1e-5])
    for tag, dist in (("TPL", "truncated_power_law"), ("lognormal", "lognormal"),
                      ("exponential", "exponential")):
        R, p = pl.compare(dist)
        assert d[f"R_{tag}"] == pytest.approx(R, rel=1e-9, abs=1e-12)
        assert d[f"p_{tag}"] == pytest.approx(p, rel=1e-9)
    gof = pl.goodness_of_fit(12, seed=[3, 0], n_jobs=1)
    assert d["p_gof"] == gof.p_value
    again = tailscope.analyze(sd, compare=("lognormal",), gof=12, seed=3).details
    assert again["p_gof"].iloc[0] == d["p_gof"]
    assert "R_lognormal" in again and "R_TPL" not in again
    # with fit='TPL' the comparisons still use the power-law fit's tail
    tpl = tailscope.analyze(sd, fit="TPL", compare=("TPL",)).details.iloc[0]
    assert tpl["R_TPL"] == pytest.approx(d["R_TPL"], rel=1e-9, abs=1e-12)


# --- vectors ----------------------------------------------------------------------------------
def test_vector_metrics_equal_weightwatchers_on_the_same_vectors():
    import logging

    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    _, vecs = eigenvectors(_small_real()["blk.weight"])
    rows = vecs.T  # WeightWatcher's vector_metrics takes the vectors as rows
    ww = weightwatcher.WeightWatcher().vector_metrics(rows)
    ours = vector_metrics(rows)
    for col in ("entropy", "localization_ratio", "participation_ratio"):
        np.testing.assert_allclose(ours[col].to_numpy(float), ww[col].to_numpy(float), rtol=1e-12)
    # WeightWatcher writes the discrete entropy to a misspelt column and leaves its own empty
    np.testing.assert_allclose(ours["discrete_entropy"].to_numpy(float),
                               ww["discete_entropy"].to_numpy(float), rtol=1e-12)
    assert ww["discrete_entropy"].isna().all()
    assert list(ours["length"]) == [40] * 40
    with pytest.raises(ValueError, match="vectors"):
        vector_metrics("not vectors")


def test_vectors_equal_weightwatcher_analyze_on_a_real_block():
    """eigh here, eig there: the eigenvectors agree up to sign (the metrics ignore sign). The
    one difference: WeightWatcher splits by value, and eig's copy of the eigenvalue equal to xmin
    is an ulp below its xmin, so that eigenvector lands in its bulk; we split by rank."""
    import scipy.linalg

    sd = _small_real()
    w = sd["blk.weight"].astype(np.float64)
    ww = weightwatcher_details(_torch(sd), vectors=True).iloc[0]
    ours = tailscope.analyze(sd, vectors=True).details.iloc[0]
    assert ours["xmin"] == pytest.approx(ww["xmin"], rel=1e-9)
    n_tail = int(ours["num_pl_spikes"])
    ev, vecs = eigenvectors(w)
    rank_split = vector_summary(ev, vecs, n_tail=n_tail)
    ww_split = vector_summary(ev, vecs, n_tail=n_tail - 1)
    ww_evals = np.sort(scipy.linalg.eig(w.T @ w)[0].real)
    assert ww_evals[-n_tail] < ww["xmin"]  # the cause, on this block
    cols = [c for c in ww.index if c.startswith(("bulk_", "tail_"))]
    assert len(cols) == 12
    for c in cols:
        assert ours[c] == pytest.approx(rank_split[c], rel=1e-12), c
        assert ww[c] == pytest.approx(ww_split[c], rel=1e-7, abs=1e-10), c


def test_vector_summary_splits_at_xmin_and_pools_conv_slices():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((60, 30))
    ev, v = eigenvectors(w)
    xmin = float(np.median(ev))
    s = vector_summary(ev, v, xmin)
    m = per_vector(v)
    assert s["tail_mean_loc_ratio"] == pytest.approx(np.mean(m["loc_ratio"][ev >= xmin]))
    assert s["bulk_var_part_ratio"] == pytest.approx(np.var(m["part_ratio"][ev < xmin]))
    assert math.isnan(vector_summary(ev, v, 0.0)["bulk_mean_vec_entropy"])
    conv = {"conv.weight": rng.standard_normal((16, 8, 3, 3)).astype(np.float32)}
    d = tailscope.analyze(conv, vectors=True).details
    assert d["status"].iloc[0] == "success" and np.isfinite(d["tail_mean_loc_ratio"].iloc[0])
    sliced = tailscope.analyze(conv, vectors=True, pool=False, min_evals=5).details
    assert len(sliced) == 9 and sliced["tail_mean_part_ratio"].notna().all()


# --- finger fixes against WeightWatcher ---------------------------------------------------------
def test_clip_xmax_differs_from_weightwatcher_by_its_off_by_one_only():
    name = "encoder.layer.0.attention.self.value.weight"  # a 4-eigenvalue finger
    sd = {"v.weight": _minilm(name)}
    ww = weightwatcher_details(_torch(sd), fix_fingers="clip_xmax").iloc[0]
    ours = tailscope.analyze(sd, fix_fingers="clip_xmax").details.iloc[0]
    assert ours["raw_alpha"] == pytest.approx(ww["raw_alpha"], rel=1e-12)
    # WeightWatcher removes idx values and reports idx - 1; here k removed is k reported
    assert ours["num_fingers"] == ww["num_fingers"] + 1 == 4
    assert ours["alpha"] == pytest.approx(ww["alpha"], rel=1e-12)
    assert ours["xmin"] == pytest.approx(ww["xmin"], rel=1e-12)


def test_clip_xmax_finds_a_one_eigenvalue_finger_that_weightwatcher_never_tries():
    name = "encoder.layer.0.attention.output.dense.weight"
    sd = {"o.weight": _minilm(name)}
    ww = weightwatcher_details(_torch(sd), fix_fingers="clip_xmax").iloc[0]
    ours = tailscope.analyze(sd, fix_fingers="clip_xmax").details.iloc[0]
    x = _esd(sd["o.weight"])
    assert ours["raw_alpha"] == pytest.approx(ww["raw_alpha"], rel=1e-12)
    assert ours["num_fingers"] == 1 and ours["alpha"] == fit_power_law(x[:-1]).alpha
    assert ww["alpha"] != pytest.approx(ours["alpha"], rel=1e-6)


def test_xmin_peak_equals_weightwatcher_on_its_range_and_documents_ours():
    name = "encoder.layer.0.attention.self.query.weight"
    sd = {"q.weight": _minilm(name)}
    x = _esd(sd["q.weight"])
    ww = weightwatcher_details(_torch(sd), fix_fingers="xmin_peak", pl_package="powerlaw").iloc[0]
    p = _ww_peak(x)
    quirk = fit_power_law(x, xmin=_ww_range(x, math.log10(0.95 * p), 1.5 * p))
    assert quirk.xmin == pytest.approx(ww["xmin"], rel=1e-10)
    assert quirk.alpha == pytest.approx(ww["alpha"], rel=1e-12)
    ours = tailscope.analyze(sd, fix_fingers="xmin_peak").details.iloc[0]
    fixed = fit_power_law(x, xmin=(0.95 * p, 1.5 * p))
    assert (ours["xmin"], ours["alpha"]) == (fixed.xmin, fixed.alpha)
    assert 0.95 * p <= ours["xmin"] <= 1.5 * p


# --- option combinations ------------------------------------------------------------------------
WORKS = [  # WeightWatcher 0.7.5.5 (default pl_package='ww') rejects or fails each of these
    {"fit": "TPL"},  # 'params not valid'; with pl_package='powerlaw' and powerlaw 2.0 every fit fails
    {"fit": "E_TPL"},
    {"fit": "TPL", "xmax": "force"},  # with powerlaw 1.5 it runs, but its likelihood ignores xmax
    {"fit": "TPL", "xmax": -2},
    {"fit": "TPL", "fix_fingers": "xmin_peak"},
    {"fix_fingers": "xmin_peak"},  # with pl_package='ww': CRITICAL and a failed fit
    {"fix_fingers": "clip_xmax", "xmax": -2},  # rejected: fix_fingers with an integer xmax
    {"fix_fingers": "xmin_peak", "xmax": "force"},  # xmax='force' needs pl_package='powerlaw'
    {"vectors": True, "pool": False},  # WeightWatcher runs vectors with conv layers too (checked)
    {"vectors": True, "fit": "TPL"},
    {"compare": True, "fit": "E_TPL"},
    {"compare": ("lognormal_positive", "stretched_exponential"), "gof": 3, "seed": 0},
]
REJECTED = [
    ({"fit": "E_TPL", "fix_fingers": "clip_xmax"}, "clip_xmax"),
    ({"fit": "TPL", "fix_fingers": "clip_xmax"}, "clip_xmax"),
    ({"fit": "lognormal"}, "fit"),
    ({"compare": ("gamma",)}, "compare"),
    ({"compare": ()}, "compare"),
    ({"gof": -1}, "gof"),
    ({"gof": 2.5}, "gof"),
    ({"seed": "x"}, "seed"),
    ({"vectors": "yes"}, "vectors"),
    ({"fix_fingers": "both"}, "fix_fingers"),
    ({"xmax": 0}, "xmax"),
]


@functools.cache
def _combo_model():
    rng = np.random.default_rng(1)
    return {"dense.weight": _minilm("encoder.layer.0.output.dense.weight")[:, :96].copy(),
            "conv.weight": rng.standard_t(3, size=(12, 6, 3, 3)).astype(np.float32)}


@pytest.mark.parametrize("opts", WORKS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_combinations_weightwatcher_refuses_work_here(opts):
    d = tailscope.analyze(_combo_model(), **opts).details
    assert (d["status"] == "success").all(), d[["name", "reason"]]
    assert np.isfinite(d["alpha"]).all()
    if opts.get("fit") in ("TPL", "E_TPL"):
        assert (d["Lambda"] > 0).all()


@pytest.mark.parametrize("opts,word", REJECTED, ids=lambda o: str(o))
def test_meaningless_combinations_raise_a_value_error_naming_the_option(opts, word):
    with pytest.raises(ValueError, match=word):
        tailscope.analyze(_combo_model(), **opts)


def test_compat_passes_the_new_options_through():
    from tailscope.compat import WeightWatcher

    d = WeightWatcher(model=_combo_model()).analyze(fit="TPL", pl_package="ww", vectors=True,
                                                    compare=True)
    assert {"Lambda", "R_TPL", "tail_mean_loc_ratio"} <= set(d.columns)


@pytest.mark.slow  # fresh processes
def test_cli_fit_compare_vectors(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file(_combo_model(), str(path))
    out = tmp_path / "d.csv"
    r = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(path), "--fit", "TPL",
                        "--compare", "--vectors", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = pd.read_csv(out)
    assert {"Lambda", "R_TPL", "p_exponential", "bulk_mean_vec_entropy"} <= set(d.columns)
    r = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(path), "--compare",
                        "gamma", "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "compare" in r.stderr


def test_tpl_analysis_draws_its_figures_and_report(tmp_path):
    from tailscope.report.plots import layer_figures

    a = tailscope.analyze(_combo_model(), fit="TPL")
    fit = a.fit(0)
    grid = np.array([fit.xmin / 2, fit.xmin, fit.xmin * 2])
    assert fit.pdf(grid)[0] == 0 and fit.pdf(grid)[1] > 0 and fit.cdf(grid)[0] == 0
    assert fit.ccdf(grid)[1] == pytest.approx(1.0)
    assert layer_figures(a, tmp_path)
    assert a.to_html(tmp_path / "r.html").stat().st_size > 0
