"""Same weights, same numbers (issue 26): one conv normalisation for every kernel rank and layout,
rand_distance exactly 0 where the shuffled spectrum is the real one, FARMS on degenerate windows,
and every summary mean saying over how many layers it was taken."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from oracles import weightwatcher_details

import tailscope

OPTIONS = dict(hill=True, farms=True, mp_fit=True, detX=True, randomize=True, seed=7)
# the columns that name the tensor as stored, not what was measured
IDENTITY = {"layer_id", "name", "module", "layer_type", "dtype"}


def conv_weights(out=48, inp=24, k=5, seed=0) -> np.ndarray:
    """Heavy-tailed conv weights in PyTorch's Conv1d layout (out, in, k), float32."""
    rng = np.random.default_rng(seed)
    return (rng.standard_t(2.5, (out, inp, k)) * 0.05).astype(np.float32)


def write_keras(path, w: np.ndarray):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv"]
        g = f.create_group("conv")
        g.attrs["weight_names"] = [b"conv/kernel:0"]
        g.create_dataset("conv/kernel:0", data=w.transpose(2, 1, 0))  # Keras Conv1D (k, in, out)
    return path


def write_onnx(path, w: np.ndarray):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    out, inp, _ = w.shape
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv.weight"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inp, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out, None])],
        initializer=[numpy_helper.from_array(w, "conv.weight")])
    onnx.save(helper.make_model(graph), path)
    return path


def formats(tmp_path, w: np.ndarray) -> dict:
    t = torch.from_numpy(w.copy())
    conv1d, conv2d = tmp_path / "conv1d.pt", tmp_path / "conv2d.pt"
    torch.save({"conv.weight": t}, conv1d)  # PyTorch Conv1d (out, in, k)
    torch.save({"conv.weight": t.unsqueeze(-1).contiguous()}, conv2d)  # Conv2d (out, in, k, 1)
    return {"keras": write_keras(tmp_path / "conv.h5", w), "torch_conv1d": conv1d,
            "torch_conv2d": conv2d, "onnx": write_onnx(tmp_path / "conv.onnx", w)}


@pytest.mark.parametrize("pool", [True, False])
def test_the_same_conv_weights_give_the_same_numbers_in_every_format(tmp_path, pool):
    w = conv_weights()
    frames = {k: tailscope.analyze(p, pool=pool, **OPTIONS).details
              for k, p in formats(tmp_path, w).items()}
    ref = frames["torch_conv2d"]
    assert len(ref) == (1 if pool else 5) and (ref["status"] == "success").all()
    assert list(ref["rf"]) == [5] * len(ref)
    for kind, d in frames.items():
        assert list(d.columns) == list(ref.columns), kind
        for col in ref.columns:
            if col in IDENTITY:
                continue
            a, b = ref[col], d[col]
            if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
                np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=1e-12,
                                           atol=0, equal_nan=True, err_msg=f"{kind}: {col}")
            else:
                assert list(b) == list(a), (kind, col)
    # the kernel's rank is what the file says; the numbers are not
    assert set(frames["keras"]["layer_type"]) == {"conv1d"}
    assert set(frames["torch_conv2d"]["layer_type"]) == {"conv2d"}


def test_conv2d_norm_is_weightwatchers_on_conv2d_and_every_kernel_rank():
    """WeightWatcher 0.7.7 defines conv2d_norm on Conv2d: our conv2d (k x 1) equals it, and the
    same weights as a Conv1d or a Conv3d (k x 1 x 1) equal our conv2d."""
    w = conv_weights(out=64, inp=32, k=3, seed=1)
    model = torch.nn.Sequential(torch.nn.Conv2d(32, 64, (3, 1), bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w).unsqueeze(-1))
    ww = weightwatcher_details(model)
    ours = tailscope.analyze(model).details
    assert len(ww) == len(ours) == 1
    for col in ("lambda_max", "alpha", "alpha_weighted", "log_alpha_norm", "log_norm",
                "log_spectral_norm", "stable_rank"):
        assert ours[col].iloc[0] == pytest.approx(float(ww[col].iloc[0]), rel=1e-6), col
    t = torch.from_numpy(w)
    as_1d = tailscope.analyze({"conv.weight": t.numpy()}).details
    as_3d = tailscope.analyze({"conv.weight": t[..., None, None].numpy()}).details
    assert as_3d["layer_type"].iloc[0] == "conv3d" and as_3d["rf"].iloc[0] == 3
    for col in ("lambda_max", "alpha", "alpha_weighted", "log_alpha_norm", "log_norm"):
        assert as_1d[col].iloc[0] == pytest.approx(ours[col].iloc[0], rel=1e-12), col
        assert as_3d[col].iloc[0] == pytest.approx(ours[col].iloc[0], rel=1e-12), col


def test_conv3d_kernels_in_both_layouts_are_the_same_slices():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 20, 2, 3, 2))  # torch Conv3d (out, in, kd, kh, kw)
    from tailscope.sources import LayerRef, plan_layer
    from tailscope.sources.layers import matrices

    torch_ref = LayerRef(index=0, name="c.weight", shape=w.shape, dtype="float64",
                         source="x", loader=lambda: w)
    kw = w.transpose(2, 3, 4, 1, 0)  # Keras Conv3D (kd, kh, kw, in, out)
    keras_ref = LayerRef(index=0, name="c.weight", shape=kw.shape, dtype="float64",
                         source="x", loader=lambda: kw, layout="keras")
    for ref, arr in ((torch_ref, w), (keras_ref, kw)):
        plan = plan_layer(ref)
        assert (plan.layer_type, plan.N, plan.M, plan.rf) == ("conv3d", 40, 20, 12)
        mats = matrices(ref, arr)
        assert len(mats) == 12
    for a, b in zip(matrices(torch_ref, w), matrices(keras_ref, kw)):
        np.testing.assert_array_equal(a, b.T)


# --- rand_distance on N x 1 slices --------------------------------------------------------------
def test_rand_distance_is_exactly_zero_on_depthwise_and_column_layers(recwarn):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 5, groups=32, bias=False),
                                torch.nn.Conv2d(32, 64, 3, groups=32, bias=False),
                                torch.nn.Conv1d(16, 48, 3, groups=16, bias=False))
    arrays = {"column.weight": np.random.default_rng(1).standard_normal((300, 1))}
    for source in (model, arrays):
        for pool in (True, False):
            d = tailscope.analyze(source, randomize=True, pool=pool, min_evals=1,
                                  seed=3).details
            assert (d["M"] == 1).all()
            assert (d["rand_distance"] == 0.0).all(), d[["name", "rand_distance"]]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_jensen_shannon_distance_is_zero_on_round_off_and_never_nan():
    from tailscope.spectrum.randomize import jensen_shannon_distance

    rng = np.random.default_rng(0)
    for _ in range(200):
        p = np.sort(rng.pareto(2.0, rng.integers(1, 60)) + 1e-3)
        q = p * (1 + rng.uniform(-4, 4, p.size) * np.finfo(float).eps)
        assert jensen_shannon_distance(p, q) == 0.0
    p = np.array([1.0, 2.0, 3.0])
    far = jensen_shannon_distance(p, np.array([1.0, 2.0, 30.0]))
    assert far > 0.1 and math.isfinite(far)
    # an honest difference stays WeightWatcher 0.7.7's number
    from weightwatcher.RMT_Util import jensen_shannon_distance as ww_distance

    for q in (np.array([1.0, 2.5, 3.0]), np.array([1.0, 2.0, 3.0 + 1e-6])):
        assert jensen_shannon_distance(p, q) == pytest.approx(ww_distance(p, q), rel=1e-9)


# --- FARMS on degenerate windows; means over how many layers --------------------------------------
def test_farms_on_a_conv_with_dead_channels_is_a_mean_over_the_defined_divisions():
    from tailscope.fit import hill_alpha
    from tailscope.spectrum import conv_window_eigenvalues

    rng = np.random.default_rng(4)
    w = rng.standard_t(3, (96, 32, 3, 3))
    w[32:48] = 0.0  # dead output channels: the third row division's windows are all zero
    d = tailscope.analyze({"conv.weight": w}, farms=True).details.iloc[0]
    slices = [w[:, :, i, j] for i in range(3) for j in range(3)]
    divisions = conv_window_eigenvalues(slices)
    defined = []
    for ev in divisions:
        try:
            defined.append(hill_alpha(ev))
        except ValueError:
            pass
    assert 0 < len(defined) < len(divisions)
    assert d["alpha_farms"] == pytest.approx(np.mean(defined), rel=1e-12)
    assert (f"alpha_farms: mean over {len(defined)} of {len(divisions)} row divisions"
            in d["reason"])
    # the reference's mean is NaN there (log 0 in one division): the note says what was left out
    assert "xmin 0" in d["reason"]


def test_farms_on_depthwise_convs_follows_the_reference_and_never_fails_silently():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 5, groups=32, bias=False),
                                torch.nn.Conv2d(32, 32, 3, groups=32, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
    d = tailscope.analyze(model, farms=True, min_evals=1).details.set_index("name")
    # (32, 1, 5, 5): 32 divisions of 25 one-by-one windows, each defined
    assert np.isfinite(d.loc["0.weight", "alpha_farms"])
    assert "alpha_farms" not in d.loc["0.weight", "reason"]
    # an all-zero depthwise conv: no division is defined, NaN and the reason
    assert math.isnan(d.loc["1.weight", "alpha_farms"])
    assert "alpha_farms: all 32 row divisions are degenerate" in d.loc["1.weight", "reason"]


def test_every_summary_mean_says_over_how_many_layers(rng, tmp_path):
    arrays = {"a.weight": rng.standard_t(3, (200, 100)),
              "dead.weight": np.zeros((96, 32, 3, 3)),
              "b.weight": rng.standard_t(3, (150, 60)),
              "tiny.weight": rng.standard_normal((2, 2))}
    a = tailscope.analyze(arrays, farms=True, hill=True, min_evals=1)
    s, n = a.summary(), a.summary_layers()
    ok = a.details[a.details["status"] == "success"]
    assert n["alpha"] == s["success"] == len(ok)
    assert n["alpha_farms"] == int(ok["alpha_farms"].notna().sum()) < s["success"]
    assert s["alpha_farms"] == pytest.approx(ok["alpha_farms"].mean())
    html = a._repr_html_()
    assert f"mean alpha_farms (over {n['alpha_farms']} of {s['success']} fitted layers)" in html
    from tailscope.cli import main

    np.savez(tmp_path / "m.npz", **{k.replace(".weight", ""): v for k, v in arrays.items()})
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["analyze", str(tmp_path / "m.npz"), "--farms", "--min-evals", "1"]) == 0
    mean_line = [line for line in buf.getvalue().splitlines() if line.startswith("mean")][0]
    assert f"(over {n['alpha_farms']} of {s['success']} layers)" in mean_line


def test_a_keras_depthwise_kernel_is_pytorchs_depthwise_conv(tmp_path):
    """Keras DepthwiseConv2D (kh, kw, C, mult) and PyTorch's Conv2d(groups=C) (C * mult, 1, kh,
    kw): the same weights, the same rows."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(5)
    c, mult, k = 24, 2, 5
    wt = rng.standard_t(3, (c * mult, 1, k, k)).astype(np.float32)
    wk = wt[:, 0].reshape(c, mult, k, k).transpose(2, 3, 0, 1)
    path = tmp_path / "dw.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dw"]
        g = f.create_group("dw")
        g.attrs["weight_names"] = [b"dw/depthwise_kernel:0"]
        g.create_dataset("dw/depthwise_kernel:0", data=wk)
    torch_file = tmp_path / "dw.pt"
    torch.save({"dw.weight": torch.from_numpy(wt)}, torch_file)
    opts = dict(min_evals=1, hill=True, farms=True, randomize=True, seed=1)
    a = tailscope.analyze(path, **opts).details
    b = tailscope.analyze(torch_file, **opts).details
    assert len(a) == len(b) == 1 and a["status"].iloc[0] == "success"
    assert (a["N"].iloc[0], a["M"].iloc[0], a["rf"].iloc[0]) == (c * mult, 1, k * k)
    for col in b.columns:
        if col in IDENTITY or not pd.api.types.is_numeric_dtype(b[col]):
            continue
        np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-12,
                                   equal_nan=True, err_msg=col)
