"""tailscope against WeightWatcher 0.7.7 (the oracle, powerlaw 1.5 beside it): the facade's numbers
with ``analyze(ERG=True, mp_fit=True, detX=True)`` on real and seeded models, including the
small-sample fit (ESDs of 8-19 eigenvalues), ``num_traps``, and tailscope's own ``small_n``."""

import functools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import minilm_path, mtcnn_path, ww_small_n

import tailscope
from tailscope import fit_power_law
from tailscope.compat import WeightWatcher

ERG = {"ERG": True, "mp_fit": True, "detX": True}
# columns that depend on the shuffles (WeightWatcher's are unseeded)
RANDOM = ("max_rand_eval", "rand_", "ww_softrank", "ww_maxdist", "num_traps")
# columns whose WeightWatcher meaning differs on purpose (layer ids: another engineer's part)
NOT_COMPARED = ("layer_id",)


def small_model(seed=0):
    """Seeded random-init dense layers with 12, 16, 9, 19 and 100 eigenvalues (the small-sample
    fit runs on the first four)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(30, 12), torch.nn.Linear(64, 16),
                               torch.nn.Linear(64, 9), torch.nn.Linear(40, 19),
                               torch.nn.Linear(200, 100))


def ww077(model, mode="intended", **kwargs):
    with ww_small_n(mode) as ww:
        return ww.WeightWatcher(model=model).analyze(**kwargs)


def compared_columns(ours: pd.DataFrame, ref: pd.DataFrame) -> list[str]:
    cols = []
    for c in ref.columns:
        if c in ours.columns and c not in NOT_COMPARED and not c.startswith(RANDOM) and \
                pd.api.types.is_numeric_dtype(ref[c]) and not pd.api.types.is_bool_dtype(ref[c]):
            cols.append(c)
    return cols


def assert_same_numbers(ours: pd.DataFrame, ref: pd.DataFrame, expect=()):
    assert len(ours) == len(ref), (list(ours["name"]), list(ref["name"]))
    np.testing.assert_array_equal(ours["N"].astype(int), ref["N"].astype(int))
    np.testing.assert_array_equal(ours["num_evals"].astype(int), ref["num_evals"].astype(int))
    cols = compared_columns(ours, ref)
    assert set(expect) <= set(cols), set(expect) - set(cols)
    # an ESD with no Marchenko-Pastur bulk: NaN and mp_reason here, where WeightWatcher reports
    # the grid fit in which every sigma scored its penalty (a documented difference)
    no_mp = (ours["mp_reason"].fillna("") != "").to_numpy() if "mp_reason" in ours else \
        np.zeros(len(ours), bool)
    assert no_mp.sum() <= max(1, len(ours) // 20), list(ours["name"][no_mp])
    for c in cols:
        a, b = ours[c].astype(float).to_numpy(), ref[c].astype(float).to_numpy()
        keep = ~no_mp if c in MP_COLUMNS else slice(None)
        np.testing.assert_allclose(a[keep], b[keep], rtol=1e-6, atol=1e-12, err_msg=c)
        if c in MP_COLUMNS:
            assert np.isnan(a[no_mp]).all()
    assert list(ours["warning"].fillna("")) == list(ref["warning"].fillna("").astype(str))
    return cols


MP_COLUMNS = ("num_spikes", "sigma_mp", "mp_softrank", "W_scale", "bulk_max", "bulk_min")
ERG_COLUMNS = ("alpha", "D", "xmin", "xmax", "sigma", "num_pl_spikes", "alpha_weighted",
               "log_alpha_norm", "detX_num", "detX_val", "num_ERG_spikes", "ERG_gap",
               "num_spikes", "sigma_mp", "mp_softrank", "bulk_max", "lambda_max", "stable_rank")


# --- the facade equals WeightWatcher 0.7.7 -----------------------------------------------------
@functools.cache
def small_pair():
    m = small_model()
    return WeightWatcher(model=m).analyze(**ERG), ww077(m, **ERG), ww077(m, "released", **ERG)


def test_facade_equals_ww077_on_small_layers_with_the_small_sample_fit():
    ours, ref, released = small_pair()
    assert list(ours["num_evals"]) == [12, 16, 9, 19, 100]  # min_evals 8: the 9 is analysed
    assert_same_numbers(ours, ref, ERG_COLUMNS)
    # where 0.7.7's D re-choice happens to keep J's xmin, the release itself agrees too
    same = np.isclose(ref["xmin"], released["xmin"], rtol=0)
    assert same.sum() >= 3
    np.testing.assert_allclose(ours["alpha"][same], released["alpha"][same], rtol=1e-12)


@pytest.mark.slow  # WeightWatcher 0.7.7 on three nets
def test_facade_equals_ww077_on_real_mtcnn_nets_with_a_ten_eigenvalue_layer():
    for net in ("pnet", "rnet", "onet"):
        sd = torch.load(mtcnn_path(net), weights_only=True)
        ours = WeightWatcher(model=sd).analyze(**ERG)
        ref = ww077(sd, **ERG)
        assert_same_numbers(ours, ref, ERG_COLUMNS)
        if net == "onet":
            assert 10 in set(ours["num_evals"])  # dense6_3: the small-sample fit, real weights


@pytest.mark.slow  # WeightWatcher's MP grid fits of 39 layers: about 2 minutes on a quiet 2-core CI
def test_facade_equals_ww077_on_minilm():
    folder = str(minilm_path().parent)
    watcher = WeightWatcher(model=folder)
    ours = watcher.analyze(**ERG)
    # the facade's table has WeightWatcher's columns; each layer's mp_reason is on the analysis
    reasons = watcher.analysis.details.groupby("module")["mp_reason"].first()
    assert ours["longname"].isin(reasons.index).all()
    ours = ours.assign(mp_reason=ours["longname"].map(reasons).to_numpy())
    ref = ww077(folder, **ERG)
    assert len(ours) == 39
    assert_same_numbers(ours, ref, ERG_COLUMNS)


# --- where 0.7.7 is wrong: its J objective never chooses xmin ------------------------------------
def test_ww077_small_n_fit_reports_the_d_argmin_and_we_report_its_j_choice(capsys):
    from weightwatcher import WW_powerlaw

    ours, ref, released = small_pair()
    row = 2  # the 9-eigenvalue layer: D picks the whole ESD, J the 8 largest
    x = np.sort(tailscope.analyze(small_model(), min_evals=8).esd(4))
    with ww_small_n("released"):
        f = WW_powerlaw.WWFit(x[x > 1e-5])
    # the release: xmin by argmin D, while fit.data was cut at J's xmin (they disagree)
    assert f.xmin == f.xmins[np.argmin(f.Ds)] != f.data[0]
    assert released["alpha"][row] == pytest.approx(f.alpha, rel=1e-12)
    assert released["num_pl_spikes"][row] == 9
    # what its code says it does (J chooses xmin), and what the facade reports
    assert ours["num_pl_spikes"][row] == 8 == len(f.data)
    assert ours["xmin"][row] == pytest.approx(f.data[0], rel=1e-12)
    assert ours["alpha"][row] != pytest.approx(released["alpha"][row], rel=1e-3)
    capsys.readouterr()
    WeightWatcher(model=small_model()).analyze()
    assert "SMALL N" not in capsys.readouterr().out  # 0.7.7 prints it for every small layer


# --- num_traps, and finite ERG columns with randomize --------------------------------------------
@pytest.mark.slow  # randomized ESDs, WeightWatcher 0.7.7
def test_erg_with_randomize_is_finite_on_every_layer_and_num_traps_is_rand_num_spikes():
    sd = torch.load(mtcnn_path("onet"), weights_only=True)
    torch.manual_seed(4)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 32, 3),
                               torch.nn.Flatten(), torch.nn.Linear(128, 10))  # random-init
    for model in (small_model(1), conv, sd):
        d = WeightWatcher(model=model).analyze(ERG=True, randomize=True, seed=0)
        assert (d["status"] == "success").all(), d[["name", "reason"]]
        for col in ("alpha", "ERG_gap", "num_traps"):
            assert np.isfinite(d[col].astype(float)).all(), col
        np.testing.assert_array_equal(d["num_traps"], d["rand_num_spikes"])
    # WeightWatcher 0.7.7's own num_traps is its rand_num_spikes
    ref = ww077(small_model(1), randomize=True, ERG=True)
    np.testing.assert_array_equal(ref["num_traps"], ref["rand_num_spikes"])


def test_num_traps_in_tailscopes_own_analysis():
    d = tailscope.analyze(small_model(2), randomize=True, seed=3).details
    assert "num_traps" in d and (d["num_traps"] == d["rand_num_spikes"]).all()
    assert "num_traps" not in tailscope.analyze(small_model(2)).details


# --- tailscope's own small-sample estimator ------------------------------------------------------
def small_n_plain(x):
    """The small-sample estimator written plainly: (xmin, alpha, D)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    best = None
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        n = tail.size
        if n < 8:
            continue
        alpha = 1 + (n - 1) / np.sum(np.log(tail / xmin))
        cdf = 1 - (tail / xmin) ** (1 - alpha)
        D = np.max(np.abs(cdf - np.arange(n) / n))
        J = D - 0.868 / math.sqrt(n)
        if best is None or J < best[0]:
            best = (J, xmin, alpha, D)
    return best[1:]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(8, 19), a=st.floats(1.5, 6.0), seed=st.integers(0, 2**31))
def test_small_n_fit_equals_its_definition_and_weightwatchers_own_routine(n, a, seed):
    from weightwatcher import WW_powerlaw

    x = (1 - np.random.default_rng(seed).random(n)) ** (-1 / (a - 1))
    ours = fit_power_law(x, small_n=True)
    xmin, alpha, D = small_n_plain(x)
    assert ours.small_n and ours.xmin == xmin
    assert ours.alpha == pytest.approx(alpha, rel=1e-12)
    assert ours.D == pytest.approx(D, rel=1e-9, abs=1e-15)
    assert ours.sigma == pytest.approx((alpha - 1) / math.sqrt(ours.n_tail), rel=1e-12)
    with ww_small_n("intended"):
        ref = WW_powerlaw.WWFit(x)
    assert (ref.xmin, ref.alpha) == pytest.approx((ours.xmin, ours.alpha), rel=1e-12)


def test_small_n_is_an_option_and_changes_nothing_else():
    x = (1 - np.random.default_rng(5).random(40)) ** (-1 / 1.8)
    assert fit_power_law(x, small_n=True).alpha == fit_power_law(x).alpha  # 40 >= 20
    assert not fit_power_law(x[:15]).small_n  # off by default
    own = tailscope.analyze(small_model(), small_n=True, min_evals=8).details
    default = tailscope.analyze(small_model()).details
    assert 9 not in set(default["num_evals"])  # tailscope's min_evals stays 10
    big = own["num_evals"] >= 20
    np.testing.assert_array_equal(own.loc[big, "alpha"], default.set_index("num_evals").loc[
        own.loc[big, "num_evals"], "alpha"])
    facade = WeightWatcher(model=small_model()).analyze()
    np.testing.assert_allclose(facade["alpha"], own["alpha"], rtol=1e-12)
    with pytest.raises(ValueError, match="small_n"):
        tailscope.analyze(small_model(), small_n="yes")


# --- TPL, E_TPL and xmin_peak where WeightWatcher with powerlaw 2.0.0 fails ----------------------
POWERLAW2 = Path(__file__).resolve().parents[1] / ".cache" / "powerlaw2"

WW_UNDER_POWERLAW2 = textwrap.dedent("""
    import contextlib, io, json, logging
    import torch
    import powerlaw, weightwatcher
    assert powerlaw.__version__.startswith("2."), powerlaw.__version__
    class Errors(logging.Handler):  # WeightWatcher logs the exception and marks the fit failed
        def emit(self, record):
            seen.append(record.getMessage())
    log = logging.getLogger("weightwatcher")
    log.addHandler(Errors(logging.WARNING))
    log.propagate = False
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 120), torch.nn.Linear(120, 60))
    out = {}
    for name, opts in {"TPL": {"fit": "TPL"}, "E_TPL": {"fit": "E_TPL"},
                       "xmin_peak": {"fix_fingers": "xmin_peak"}}.items():
        seen = []
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                d = weightwatcher.WeightWatcher(model=model).analyze(pl_package="powerlaw", **opts)
            out[name] = {"status": list(d["status"]), "alpha": list(d["alpha"]), "log": seen}
        except TypeError as exc:
            out[name] = {"raised": "TypeError: " + str(exc)}
    print(json.dumps(out))
""")


def test_tailscope_runs_tpl_etpl_xmin_peak_where_weightwatcher_with_powerlaw2_fails():
    if not POWERLAW2.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{POWERLAW2} is missing: make's install step puts powerlaw 2.0.0 there")
        pytest.skip(f"powerlaw 2.0.0 not installed at {POWERLAW2} (make installs it there)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(POWERLAW2)] + [p for p in sys.path if p]))
    r = subprocess.run([sys.executable, "-c", WW_UNDER_POWERLAW2], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    results = json.loads(r.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 120), torch.nn.Linear(120, 60))
    for name, opts in {"TPL": {"fit": "TPL"}, "E_TPL": {"fit": "E_TPL"},
                       "xmin_peak": {"fix_fingers": "xmin_peak"}}.items():
        got = results[name]  # raised, or caught and logged by WeightWatcher: a failed fit
        if "raised" not in got:
            assert set(got["status"]) == {"failed"} and set(got["alpha"]) == {-1}, (name, got)
            assert any("unexpected keyword argument" in m for m in got["log"]), (name, got)
        d = WeightWatcher(model=model).analyze(pl_package="powerlaw", **opts)
        assert (d["status"] == "success").all() and np.isfinite(d["alpha"]).all(), name


# --- the finger fixes, xmin_peak and E_TPL as WeightWatcher 0.7.7 runs them ----------------------
@functools.cache
def _minilm_block(name, cols=None):
    from safetensors.numpy import load_file

    w = load_file(minilm_path())[name]
    return {"w.weight": np.ascontiguousarray(w[:, :cols] if cols else w)}


def _both(sd, **opts):
    ours = WeightWatcher(model=sd).analyze(**opts).iloc[0]
    ref = ww077({k: torch.tensor(v) for k, v in sd.items()}, **opts).iloc[0]
    return ours, ref


@pytest.mark.parametrize("name", ["encoder.layer.0.attention.self.value.weight",
                                  "encoder.layer.0.attention.output.dense.weight"])
def test_clip_xmax_removes_and_counts_fingers_as_weightwatcher(name):
    # value: a 4-eigenvalue finger (WeightWatcher: 5 removed, num_fingers 4); output.dense: a
    # one-eigenvalue finger WeightWatcher never tries (it starts by removing two)
    ours, ref = _both(_minilm_block(name), fix_fingers="clip_xmax")
    for col in ("alpha", "raw_alpha", "xmin", "D", "num_pl_spikes"):
        assert ours[col] == pytest.approx(ref[col], rel=1e-9), col
    assert ours["num_fingers"] == ref["num_fingers"]
    own = tailscope.analyze(_minilm_block(name), fix_fingers="clip_xmax").details.iloc[0]
    assert own["num_fingers"] in (ref["num_fingers"] + 1, 1)  # tailscope's own: k removed is k


def test_max_fingers_is_replaced_by_ten_as_weightwatcher_does():
    sd = _minilm_block("encoder.layer.0.attention.self.value.weight")
    ours, ref = _both(sd, fix_fingers="clip_xmax", max_fingers=3)  # 3 < 384 / 2: ignored
    assert ours["num_fingers"] == ref["num_fingers"] == 3  # 4 removed, past max_fingers=3
    assert ours["alpha"] == pytest.approx(ref["alpha"], rel=1e-9)
    own = tailscope.analyze(sd, fix_fingers="clip_xmax", max_fingers=3).details.iloc[0]
    assert own["num_fingers"] <= 2  # honoured in tailscope's own analysis


@pytest.mark.parametrize("xmin_max", [None, 1.0])
def test_xmin_peak_gives_weightwatchers_numbers(xmin_max):
    sd = _minilm_block("encoder.layer.0.attention.self.query.weight")
    ours, ref = _both(sd, fix_fingers="xmin_peak", pl_package="powerlaw", xmin_max=xmin_max)
    assert ref["status"] == "success" and ours["status"] == "success"
    assert ours["xmin"] == pytest.approx(ref["xmin"], rel=1e-10)
    assert ours["alpha"] == pytest.approx(ref["alpha"], rel=1e-9)
    assert ours["D"] == pytest.approx(ref["D"], rel=1e-9)


def test_e_tpl_lambda_as_weightwatcher_reports_it():
    sd = _minilm_block("encoder.layer.1.attention.self.key.weight", 40)
    ours, ref = _both(sd, fit="E_TPL", pl_package="powerlaw")
    assert ours["xmin"] == pytest.approx(ref["xmin"], rel=1e-10)
    assert ours["alpha"] == pytest.approx(ref["alpha"], abs=2e-4)  # scipy fmin's tolerance there
    assert ours["Lambda"] == pytest.approx(ref["Lambda"], rel=2e-3)


def test_xmax_force_with_powerlaw_keeps_the_exact_truncated_mle_and_warns():
    from oracles import truncated_alpha_numeric

    sd = _minilm_block("encoder.layer.0.attention.self.query.weight")
    with pytest.warns(UserWarning, match="xmax='force'"):
        ours, ref = _both(sd, xmax="force", pl_package="powerlaw")
    w = sd["w.weight"].astype(np.float64)
    x = np.linalg.eigvalsh(w.T @ w)
    x = np.sort(x[x > 1e-5])
    # WeightWatcher (powerlaw 1.5): the untruncated MLE, though the model is cut at xmax
    tail = x[x >= ref["xmin"]]
    assert ref["alpha"] == pytest.approx(1 + tail.size / np.sum(np.log(tail / ref["xmin"])),
                                         rel=1e-9)
    # the facade: the maximum-likelihood alpha of the truncated model, and a closer fit
    tail = x[x >= ours["xmin"]]
    assert ours["alpha"] == pytest.approx(truncated_alpha_numeric(tail, ours["xmin"], x[-1]),
                                          rel=1e-6)
    assert ours["D"] < ref["D"] / 2
