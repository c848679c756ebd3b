"""An edited model loads back as the same model: Keras kernels are saved in torch layout (the
transposition recorded), tensors split for analysis (fused q/k/v, gates) are saved fused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

import tailscope


def _keras_h5(path, kernels):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [k.encode() for k in kernels]
        for layer, k in kernels.items():
            g = f.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()]
            g.create_dataset(f"{layer}/kernel:0", data=k)
            g.create_dataset(f"{layer}/bias:0", data=np.zeros(k.shape[-1], k.dtype))


def _truncated_evals(mats, keep):
    """Squared singular values of each matrix truncated to its top ``keep`` (numpy's SVD)."""
    out = []
    for m in mats:
        u, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
        t = (u[:, :keep] * s[:keep]) @ vt[:keep]
        out.append(np.linalg.svd(t, compute_uv=False) ** 2)
    return np.sort(np.concatenate(out))


def test_smoothed_keras_model_reads_back_as_the_same_layers(tmp_path):
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((3, 3, 16, 24)).astype(np.float32)  # kh, kw, in, out
    dense = rng.standard_normal((40, 24)).astype(np.float32)  # in, out
    src = tmp_path / "model.h5"
    _keras_h5(src, {"conv": conv, "fc": dense})
    edited = tailscope.smooth(src, method="svd", percent=0.5)
    out = edited.save(tmp_path / "smooth.safetensors")
    before = tailscope.analyze(src).details.set_index("name")
    after = tailscope.analyze(out).details.set_index("name")
    assert list(after.index) == list(before.index) == ["conv/kernel", "fc/kernel"]
    for col in ("layer_type", "N", "M", "rf"):
        assert list(after[col]) == list(before[col]), col
    assert (after.loc["conv/kernel", "N"], after.loc["conv/kernel", "M"],
            after.loc["conv/kernel", "rf"]) == (24, 16, 9)
    # the re-read spectrum is the smoothed one: each 16x24 slice keeps ceil(int(.5*16*9)/9)
    keep = math.ceil(int(0.5 * 16 * 9) / 9)
    want = _truncated_evals([conv[i, j] for i in range(3) for j in range(3)], keep) / 2
    got = tailscope.analyze(out, layers=["conv/kernel"]).esd("conv/kernel")
    np.testing.assert_allclose(got[-keep * 9:], want[-keep * 9:], rtol=1e-5)
    # the header records the transposition; undoing it gives the Keras arrays back
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    axes = json.loads(meta["tailscope.transposed"])
    assert axes == {"conv/kernel": [3, 2, 0, 1], "fc/kernel": [1, 0]}
    back = {r.name: r.load() for r in tailscope.open_source(out)}
    for name, ax in axes.items():
        np.testing.assert_array_equal(np.transpose(back[name], np.argsort(ax)),
                                      edited.weights[name])


class Attention(torch.nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        torch.manual_seed(0)
        self.attn = torch.nn.MultiheadAttention(dim, 4)
        self.rnn = torch.nn.LSTM(dim, 16)
        self.fc = torch.nn.Linear(dim, 48)


def test_smooth_with_the_default_split_writes_fused_tensors_back(tmp_path):
    model = Attention()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    edited = tailscope.smooth(model, method="svd", percent=0.5)
    assert list(edited.weights) == list(sd)  # no extra keys for q/k/v or gates
    out = edited.save(tmp_path / "smooth.safetensors")
    assert sorted(r.name for r in tailscope.open_source(out)) == sorted(sd)
    before, after = tailscope.analyze(model).details, tailscope.analyze(out).details
    assert len(after) == len(before) and sorted(after["name"]) == sorted(before["name"])
    # q, k, v each smoothed on its own and written back in place
    w = sd["attn.in_proj_weight"]
    fused = edited.weights["attn.in_proj_weight"]
    for part in range(3):
        block = w[32 * part: 32 * (part + 1)]
        got = np.linalg.svd(fused[32 * part: 32 * (part + 1)].astype(np.float64),
                            compute_uv=False) ** 2
        np.testing.assert_allclose(np.sort(got)[-16:], _truncated_evals([block], 16)[-16:],
                                   rtol=1e-5)
    # LSTM gates likewise: each (16, 32) gate of weight_ih_l0 keeps int(.5 * 16) = 8
    gates = edited.weights["rnn.weight_ih_l0"].reshape(4, 16, 32)
    for g in gates:
        assert np.linalg.matrix_rank(g.astype(np.float64), tol=1e-4) == 8


def test_remove_traps_and_sharpen_write_split_tensors_back_fused(tmp_path):
    model = Attention()
    names = list(model.state_dict())
    for edited in (tailscope.remove_traps(model), tailscope.sharpen(model)):
        assert list(edited.weights) == names
        for name, w in edited.weights.items():
            assert w.shape == tuple(model.state_dict()[name].shape), name
