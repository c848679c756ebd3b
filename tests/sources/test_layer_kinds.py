"""Which 3-D and 4-D tensors are conv kernels: a ViT's class token and position embedding are not
(WeightWatcher ignores them), torch and Keras conv1d kernels are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import weightwatcher_details

from tailscope import analyze, describe


class TinyViT(torch.nn.Module):
    """torchvision's VisionTransformer parameter layout, small: class_token (1, 1, D),
    encoder.pos_embedding (1, 1 + patches, D), conv_proj, a Conv1d and MLP blocks."""

    def __init__(self, dim=48, patches=36):
        super().__init__()
        torch.manual_seed(0)
        self.class_token = torch.nn.Parameter(torch.randn(1, 1, dim))
        self.conv_proj = torch.nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.encoder = torch.nn.Module()
        self.encoder.pos_embedding = torch.nn.Parameter(torch.randn(1, patches + 1, dim))
        self.encoder.mix = torch.nn.Conv1d(dim, 2 * dim, kernel_size=3)
        self.encoder.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(),
                                               torch.nn.Linear(4 * dim, dim))
        self.heads = torch.nn.Linear(dim, 10)

    def forward(self, x):  # pragma: no cover - the layout is what matters
        return self.heads(self.encoder.mlp(self.conv_proj(x).flatten(2).mean(-1)))


def test_vit_tokens_are_not_conv1d_layers():
    model = TinyViT()
    d = describe(model)
    kinds = dict(zip(d["name"], d["layer_type"]))
    assert kinds["encoder.mix.weight"] == "conv1d"
    res = analyze(model)
    names = list(res.details["name"])
    assert "class_token" not in names and "encoder.pos_embedding" not in names
    assert {"class_token", "encoder.pos_embedding"} <= set(res.skipped["name"])
    assert "encoder.mix.weight" in names
    # WeightWatcher analyses the module's Linear and Conv layers only: the same layers, alphas
    ww = weightwatcher_details(model)
    ours = res.details[res.details["layer_type"] != "conv1d"]  # WW 0.7.5.5's conv1d differs
    ww = ww[ww["layer_type"].astype(str).str.lower().str.contains("dense|conv2d")]
    assert len(ours) == len(ww)
    np.testing.assert_allclose(ours["alpha"].to_numpy(), ww["alpha"].to_numpy(), rtol=1e-10)


@pytest.mark.parametrize("name,shape,layout_kind", [
    ("t.weight", (1, 1, 64), "other"), ("t.weight", (1, 50, 64), "other"),
    ("conv.weight", (32, 16, 3), "conv1d"),
    # a 3-D tensor is a conv1d only when it is known to be one (issue 22): the same shape under
    # a name that does not say so is refused, never guessed (it could be an expert stack)
    ("t.weight", (32, 16, 3), "other"),
    ("t.weight", (1, 16, 3, 3), "other")])
def test_shape_rule_on_a_state_dict(name, shape, layout_kind):
    d = describe({name: np.ones(shape, np.float32)})
    assert d["layer_type"].iloc[0] == layout_kind
    if layout_kind == "other" and shape[0] > 1:
        assert "neither a known convolution" in d["reason"].iloc[0]


def test_keras_conv1d_kernels_keep_their_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    k1 = rng.standard_normal((1, 24, 40)).astype(np.float32)  # a pointwise Conv1D: k = 1
    k3 = rng.standard_normal((3, 24, 40)).astype(np.float32)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"pw", b"c3"]
        for layer, k in (("pw", k1), ("c3", k3)):
            g = f.create_group(layer)
            g.attrs["weight_names"] = [f"{layer}/kernel:0".encode()]
            g.create_dataset(f"{layer}/kernel:0", data=k)
    d = describe(path)
    assert list(d["layer_type"]) == ["conv1d", "conv1d"]
    assert list(d["N"]) == [40, 40] and list(d["M"]) == [24, 24] and list(d["rf"]) == [1, 3]
