"""smooth / sharpen / distances: WeightWatcher 0.7.5.5's SVDSmoothing, SVDSharpness and distances,
exact and deterministic; new weights written atomically."""

import contextlib
import copy
import io
import logging
import math

import numpy as np
import pytest
import torch
from oracles import minilm_path, mtcnn_path

import tailscope
from tailscope.sources.layers import matrices


def ww():
    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return weightwatcher.WeightWatcher()


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def onet():
    return torch.load(mtcnn_path("onet"), weights_only=True)


def ww_smoothed(sd, **kwargs):
    model = copy.deepcopy(sd)
    with quiet():
        ww().SVDSmoothing(model=model, **kwargs)
    return {k: v.numpy() for k, v in model.items()}


def slice_ranks(name, w):
    ref = tailscope.open_source({name: w}).refs[0]
    return [int(np.linalg.matrix_rank(m.astype(np.float64))) for m in matrices(ref, w)]


@pytest.mark.slow  # WeightWatcher's SVDSmoothing and per-slice ranks
def test_svd_percent_keeps_int_percent_m_components_as_weightwatcher():
    sd = onet()
    ours = tailscope.smooth(sd, method="svd", percent=0.2)
    ref = ww_smoothed(sd, method="svd", percent=0.2)
    w, w_ref = ours.weights["dense5.weight"].astype(np.float64), ref["dense5.weight"]
    k = int(0.2 * 256)
    sv = np.linalg.svd(w, compute_uv=False)
    sv_ref = np.linalg.svd(w_ref.astype(np.float64), compute_uv=False)
    assert np.count_nonzero(sv**2 > 1e-10 * sv[0]**2) == k == \
        np.count_nonzero(sv_ref**2 > 1e-10 * sv_ref[0]**2)
    exact = np.linalg.svd(sd["dense5.weight"].double().numpy(), compute_uv=False)[:k]
    np.testing.assert_allclose(sv[:k], exact, rtol=1e-6)  # exact SVD: the true top k
    # WeightWatcher's randomized TruncatedSVD (n_iter=7) is close, not exact
    np.testing.assert_allclose(sv_ref[:k], exact, rtol=2e-2)
    for name in sd:
        if sd[name].ndim >= 2 and name in set(ours.details["name"]):
            assert slice_ranks(name, ours.weights[name]) == slice_ranks(name, ref[name]), name
    row = ours.details.set_index("name").loc["dense5.weight"]
    assert (row["kept"], row["removed"], row["status"]) == (k, 256 - k, "edited")
    np.testing.assert_array_equal(ours.weights["dense5.bias"], sd["dense5.bias"].numpy())


def test_negative_percent_removes_the_top_components_exactly_as_weightwatcher():
    sd = onet()
    ours = tailscope.smooth(sd, method="svd", percent=-0.2, layers=["dense"])
    ref = ww_smoothed(sd, method="svd", percent=-0.2, layers=[9, 13])  # its dense5, dense6_3
    for name in ("dense5.weight", "dense6_3.weight"):  # both use a full SVD here
        np.testing.assert_allclose(ours.weights[name], ref[name], atol=1e-5, rtol=0)
    assert ours.details.set_index("name").loc["dense5.weight", "removed"] == 51


@pytest.mark.parametrize("method, ww_method", [("pl", "alpha_min"), ("detX", "detX")])
@pytest.mark.slow  # WeightWatcher's SVDSmoothing and per-slice ranks
def test_pl_and_detx_counts_equal_weightwatchers(method, ww_method):
    sd = onet()
    ours = tailscope.smooth(sd, method=method, layers=["conv2", "dense5", "dense6_3"])
    ref = ww_smoothed(sd, method=ww_method, layers=[3, 9, 13])  # its ids of the same layers
    assert list(ours.details["name"]) == ["conv2.weight", "dense5.weight", "dense6_3.weight"]
    for name in ("conv1.weight", "conv3.weight"):
        np.testing.assert_array_equal(ours.weights[name], ref[name])  # both left alone
    for name in ours.details["name"]:
        assert slice_ranks(name, ours.weights[name]) == slice_ranks(name, ref[name]), name
        a, b = ours.weights[name], ref[name]
        assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(a), name  # randomized vs exact


@pytest.mark.slow  # MiniLM layers analysed and smoothed
def test_pl_keeps_the_power_law_tail_that_analyze_finds_on_real_weights():
    layers = ["encoder.layer.0.attention.self.*", "encoder.layer.5.output.dense.weight"]
    analysis = tailscope.analyze(minilm_path(), layers=layers)
    edited = tailscope.smooth(minilm_path(), method="pl", layers=layers)
    d = edited.details.set_index("name")
    expected = analysis.details.set_index("name")["num_pl_spikes"]
    assert list(d.index) == list(expected.index)
    assert list(d["kept"]) == [min(int(k), m) for k, m in zip(expected, d["M"])]
    name = "encoder.layer.5.output.dense.weight"
    sv = np.linalg.svd(edited.weights[name].astype(np.float64), compute_uv=False)
    kept = int(d.loc[name, "kept"])
    assert sv[kept] < 1e-5 * sv[0]  # rank kept
    orig = tailscope.open_source(minilm_path())
    untouched = "encoder.layer.1.attention.self.query.weight"
    ref = next(r for r in orig if r.name == untouched)
    np.testing.assert_array_equal(edited.weights[untouched], ref.load())


def test_save_is_atomic_and_reads_back(tmp_path):
    sd = onet()
    edited = tailscope.smooth(sd, method="svd", percent=0.5, layers=["dense5"])
    path = edited.save(tmp_path / "smooth.safetensors")
    back = tailscope.open_source(path)
    assert sorted(r.name for r in back) == sorted(sd)  # every tensor
    for ref in back:
        np.testing.assert_array_equal(ref.load(), edited.weights[ref.name])
    with pytest.raises(ValueError, match="does not exist"):
        edited.save(tmp_path / "missing" / "x.safetensors")
    assert not (tmp_path / "missing").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["smooth.safetensors"]  # no temp left
    module_sd = edited.to_state_dict()
    assert module_sd["dense5.weight"].dtype == torch.float32
    with pytest.raises(ValueError, match="method must be"):
        tailscope.smooth(sd, method="nope")
    with pytest.raises(ValueError, match="percent"):
        tailscope.smooth(sd, method="svd", percent=2)


def test_a_bad_layer_is_left_as_it_was_with_its_reason():
    rng = np.random.default_rng(0)
    bad = rng.standard_normal((40, 30)).astype(np.float32)
    bad[0, 0] = np.nan
    state = {"a.weight": rng.standard_normal((40, 30)), "b.weight": bad,
             "z.weight": np.zeros((40, 30))}
    edited = tailscope.smooth(state, method="pl")
    d = edited.details.set_index("name")
    assert d.loc["a.weight", "status"] == "edited"
    assert d.loc["b.weight", "status"] == "failed" and "NaN" in d.loc["b.weight", "reason"]
    assert d.loc["z.weight", "status"] == "unchanged"
    assert "all-zero" in d.loc["z.weight", "reason"]
    assert edited.weights["b.weight"] is not None and np.isnan(edited.weights["b.weight"][0, 0])


# --- distances ----------------------------------------------------------------------------------
def perturbed(sd, seed=0, scale=0.01):
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous()
            for k, v in sd.items()}


@pytest.mark.parametrize("method", ["raw", "euclidean", "cka"])
def test_distances_equal_weightwatchers(method):
    sd = onet()
    other = perturbed(sd)
    with quiet():
        avg_dw, avg_db, ref = ww().distances(sd, other, method=method)
    ours = tailscope.distances(sd, other, method=method)
    dw, db, details = ours  # unpacks as WeightWatcher's tuple
    from tailscope.compat import WeightWatcher

    assert WeightWatcher().distances(sd, other, method=method)[0] == dw
    assert list(details["name"].str.replace(".weight", "")) == list(ref["name"])
    np.testing.assert_allclose(details["delta_W"], ref["delta_W"], rtol=1e-5)
    assert dw == pytest.approx(avg_dw, rel=1e-5)
    if method == "raw":
        np.testing.assert_allclose(details["delta_b"], ref["delta_b"], rtol=1e-5)
        assert db == pytest.approx(avg_db, rel=1e-5)
    else:  # WeightWatcher writes 0 where it computed nothing; NaN here
        assert math.isnan(db) and (ref["delta_b"] == 0).all()


def test_distances_of_identical_models_and_unmatched_layers(tmp_path):
    sd = onet()
    same = tailscope.distances(sd, {f"model.{k}": v for k, v in sd.items()}, method="cka")
    np.testing.assert_allclose(same.details["delta_W"], 1.0, rtol=1e-12)
    zero = tailscope.distances(sd, sd, method="euclidean")
    assert (zero.details["delta_W"] == 0).all()
    partial = {k: v for k, v in sd.items() if not k.startswith("dense5")}
    d = tailscope.distances(sd, partial).details.set_index("name")
    assert math.isnan(d.loc["dense5.weight", "delta_W"])
    assert "no layer named 'dense5.weight'" in d.loc["dense5.weight", "reason"]
    with pytest.raises(ValueError, match="method must be"):
        tailscope.distances(sd, sd, method="cosine")


def test_cli_smooth_writes_the_model_or_one_line_error(tmp_path):
    import subprocess
    import sys

    from safetensors.numpy import save_file

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                              text=True, timeout=300)

    rng = np.random.default_rng(2)
    tensors = {"a.weight": rng.standard_normal((90, 60)).astype(np.float32),
               "a.bias": rng.standard_normal(90).astype(np.float32)}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    out = tmp_path / "s.safetensors"
    res = run("smooth", str(tmp_path / "m.safetensors"), "-o", str(out), "--method", "svd",
              "--percent", "0.5")
    assert res.returncode == 0, res.stderr
    expected = tailscope.smooth(tmp_path / "m.safetensors", method="svd", percent=0.5)
    back = {r.name: r.load() for r in tailscope.open_source(out)}
    np.testing.assert_array_equal(back["a.weight"], expected.weights["a.weight"])
    assert np.linalg.matrix_rank(back["a.weight"]) == 30
    res = run("smooth", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "no" / "s.safetensors"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "no").exists()


# --- sharpen (correlation traps) ----------------------------------------------------------------
def trapped(n, m, traps, seed):
    """A random layer with a few huge entries (correlation traps) in distinct rows and columns."""
    r = np.random.default_rng(seed)
    w = r.standard_normal((n, m)) / np.sqrt(m)
    rows = r.choice(n, traps, replace=False)
    cols = r.choice(m, traps, replace=False)
    w[rows, cols] = 250.0 / np.sqrt(m)
    return torch.from_numpy(w.astype(np.float32))


def traps_model():
    conv = np.random.default_rng(3).standard_normal((40, 20, 3, 3)).astype(np.float32)
    conv[0, 0, 0, 0] = 40.0
    return {"trapped.weight": trapped(150, 100, 3, 1), "clean.weight": trapped(160, 60, 0, 2),
            "conv.weight": torch.from_numpy(conv)}


def test_sharpen_removes_the_traps_as_weightwatchers_svdsharpness():
    sd = traps_model()
    ref = copy.deepcopy(sd)
    np.random.seed(0)  # noqa: NPY002 - WeightWatcher shuffles with the global state
    with quiet():
        ww().SVDSharpness(model=ref)
    ours = tailscope.sharpen(sd, seed=0)
    d = ours.details.set_index("name")
    assert (d.loc["trapped.weight", "removed"], d.loc["clean.weight", "removed"]) == (3, 0)
    assert d.loc["clean.weight", "status"] == "unchanged"
    for name in ("trapped.weight", "clean.weight"):  # both remove by a full SVD: equal
        np.testing.assert_allclose(ours.weights[name], ref[name].numpy(), atol=1e-5, rtol=0)
    before = np.linalg.norm(sd["trapped.weight"].double().numpy(), 2)
    after = np.linalg.norm(ours.weights["trapped.weight"].astype(np.float64), 2)
    assert before / after > 2  # lambda_max drops (WeightWatcher's own test)
    # one trap in a 3x3 conv: k = 1 < rf = 9; tailscope removes ceil(1/9) = 1 per slice,
    # WeightWatcher's ceil(-1/9) = 0 removes nothing
    assert d.loc["conv.weight", "removed"] == 1
    np.testing.assert_array_equal(ref["conv.weight"].numpy(), sd["conv.weight"].numpy())
    assert np.abs(ours.weights["conv.weight"]).max() < 20
    again = tailscope.sharpen(sd, seed=0)
    for name in sd:
        np.testing.assert_array_equal(again.weights[name], ours.weights[name])  # seeded


def test_smooth_mp_keeps_the_marchenko_pastur_spikes_as_weightwatchers_rmt():
    sd = traps_model()
    ref = ww_smoothed(sd, method="rmt")
    ours = tailscope.smooth(sd, method="mp")
    for name in sd:
        assert slice_ranks(name, ours.weights[name]) == slice_ranks(name, ref[name].copy()), name
    np.testing.assert_allclose(ours.weights["trapped.weight"], ref["trapped.weight"], atol=1e-4)
    assert ours.details.set_index("name").loc["clean.weight", "status"] == "unchanged"
