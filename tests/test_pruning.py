"""Alpha-guided pruning: the allocation against AlphaPruning's ww_sparsity written here from the
published formula, on synthetic metric vectors and on all-MiniLM-L6-v2; magnitude pruning's exact
counts, ties, untouched tensors and the safetensors round trip; the command line."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import minilm_path

import tailscope
from tailscope.cli import main
from tailscope.edit.prune import block_of, magnitude_mask

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def ww_sparsity(metrics, prunables, sparsity_ratio, epsilon, block_wise, layer_num_in_block):
    """haiquanlu/AlphaPruning lib/prune.py ww_sparsity, in float64 numpy: consecutive chunks of
    layer_num_in_block layers are a block; linear map onto [1 - eps, 1 + eps]; scaled to the
    parameter-weighted target."""
    metrics = np.asarray(metrics, dtype=np.float64)
    prunables = np.asarray(prunables, dtype=np.float64)
    s1, s2 = 1.0 - epsilon, 1.0 + epsilon
    if block_wise:
        block = [np.mean(metrics[i:i + layer_num_in_block])
                 for i in range(0, len(metrics), layer_num_in_block)]
        metrics = np.array([b for b in block for _ in range(layer_num_in_block)])
    lo, hi = metrics.min(), metrics.max()
    ratios = (metrics - lo) / (hi - lo) * (s2 - s1) + s1
    scaler = prunables.sum() * sparsity_ratio / (prunables * ratios).sum()
    return ratios * scaler


def llama_like(blocks, seed):
    """A details frame of a LLaMA-like model: 7 projections per block, alpha_hill values."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(blocks):
        for p in PROJ:
            n, m = (4096, 1024) if p in ("gate_proj", "up_proj", "down_proj") else (1024, 1024)
            rows.append({"name": f"model.layers.{b}.{p}.weight", "N": n, "M": m, "rf": 1,
                         "alpha_hill": rng.uniform(1.5, 6.0)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("block_wise", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_allocation_equals_the_reference_formula(block_wise, seed):
    d = llama_like(6, seed)
    target, eps = 0.5, 0.3  # every ratio below 1: the reference formula holds unclipped
    got = tailscope.allocate_sparsity(d, target=target, eps=eps, block_wise=block_wise)
    ref = ww_sparsity(d["alpha_hill"], d["N"] * d["M"], target, eps, block_wise, len(PROJ))
    assert list(got.index) == list(d["name"])
    np.testing.assert_allclose(got.to_numpy(), ref, rtol=0, atol=1e-12)
    assert got.attrs["capped"] == 0


def weighted_mean(alloc, details):
    p = (details["N"] * details["M"] * details["rf"]).to_numpy(np.float64)
    s = alloc.loc[details["name"]].to_numpy()
    return float((p * s).sum() / p.sum())


@pytest.fixture(scope="module")
def minilm():
    return tailscope.analyze(minilm_path(), hill=True)


@pytest.mark.parametrize("target", [0.5, 0.7])
@pytest.mark.slow  # MiniLM analysed (the minilm fixture)
def test_on_minilm_the_weighted_mean_is_the_target_and_blocks_follow_the_reference(minilm,
                                                                                   target):
    d = minilm.details
    alloc = tailscope.allocate_sparsity(minilm, target=target)
    # as the reference: the linear layers of the blocks only (embeddings, pooler stay dense)
    blocks = d[d["name"].str.startswith("encoder.layer.")]
    assert len(blocks) == 36  # 6 blocks of 6 dense layers, in block order
    assert list(alloc.dropna().index) == list(blocks["name"])
    assert abs(weighted_mean(alloc.dropna(), blocks) - target) < 1e-12
    ref = ww_sparsity(blocks["alpha_hill"], blocks["N"] * blocks["M"], target, 0.3, True, 6)
    got = alloc.dropna().to_numpy()
    if ref.max() <= 1:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        assert alloc.attrs["capped"] == 0
    else:  # the reference asks more than all of a block: held at 1, the rest scaled up
        assert target == 0.7 and alloc.attrs["capped"] == (ref > 1).sum() > 0
        assert (got[ref > 1] == 1).all() and (got[ref <= 1] > ref[ref <= 1]).all()
    # every layer: each layer outside a block is its own block; the mean over all is the target
    every = tailscope.allocate_sparsity(minilm, target=target, blocks_only=False)
    assert every.notna().all() and every.attrs["capped"] == 0
    assert abs(weighted_mean(every, d) - target) < 1e-12
    ref = ww_sparsity(d["alpha_hill"], d["N"] * d["M"], target, 0.3, False, 1)
    per_layer = tailscope.allocate_sparsity(minilm, target=target, blocks_only=False,
                                            block_wise=False)
    np.testing.assert_allclose(per_layer.to_numpy(), ref, rtol=0, atol=1e-12)


def test_block_names():
    assert block_of("model.layers.12.mlp.up_proj.weight") == "model.layers.12"
    assert block_of("h.3.attn.c_attn.weight") == "h.3"
    assert block_of("transformer.h.3.mlp.c_fc.weight") == "transformer.h.3"
    assert block_of("0.weight") is None and block_of("fc1.weight") is None
    assert block_of("lm_head.weight") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(1.0, 8.0), st.integers(1, 10_000)), min_size=2,
                max_size=12),
       st.floats(0.0, 1.0), st.floats(0.0, 0.999), st.booleans(), st.floats(0.0, 1.0))
def test_allocation_properties(layers, target, eps, block_wise, room):
    d = pd.DataFrame({"name": [f"blocks.{i // 3}.l{i}.weight" for i in range(len(layers))],
                      "N": [p for _, p in layers], "M": 1, "rf": 1,
                      "alpha_hill": [a for a, _ in layers]})
    cap = target + room * (1 - target)
    s = tailscope.allocate_sparsity(d, target=target, eps=eps, block_wise=block_wise,
                                    max_sparsity=cap)
    assert ((s >= 0) & (s <= cap)).all()
    assert abs(weighted_mean(s, d) - target) < 1e-9
    m = d["alpha_hill"].to_numpy()
    if block_wise:
        m = d.groupby(d["name"].map(block_of))["alpha_hill"].transform("mean").to_numpy()
    order = np.argsort(m, kind="stable")
    assert np.all(np.diff(s.to_numpy()[order]) >= -1e-12)  # higher metric, pruned no less


def test_capping_keeps_the_target_and_equal_metrics_give_the_target():
    d = pd.DataFrame({"name": ["a.weight", "b.weight"], "N": [8192, 1280], "M": 1, "rf": 1,
                      "alpha_hill": [2.0, 4.0]})
    s = tailscope.allocate_sparsity(d, target=0.8, eps=0.3)
    assert s["b.weight"] == 1.0 and s.attrs["capped"] == 1  # 1.3 * c would exceed 1
    assert abs(weighted_mean(s, d) - 0.8) < 1e-12
    s = tailscope.allocate_sparsity(d, target=0.8, eps=0.3, max_sparsity=0.9)
    assert s["b.weight"] == 0.9 and abs(weighted_mean(s, d) - 0.8) < 1e-12
    with pytest.raises(ValueError, match=r"max_sparsity must be a number in \[target, 1\]"):
        tailscope.allocate_sparsity(d, target=0.8, max_sparsity=0.7)
    d["alpha_hill"] = 3.0
    s = tailscope.allocate_sparsity(d, target=0.6)
    np.testing.assert_array_equal(s.to_numpy(), [0.6, 0.6])


def test_allocation_errors_and_failed_layers():
    d = llama_like(2, 0).drop(columns="alpha_hill")
    with pytest.raises(ValueError, match=r"no 'alpha_hill' column; analyze with hill=True"):
        tailscope.allocate_sparsity(d)
    d = llama_like(2, 0)
    for kw, text in [({"target": 1.5}, "target"), ({"eps": -0.1}, "eps"),
                     ({"metric": "nope"}, "no 'nope' column"), ({"block_wise": 1}, "block_wise")]:
        with pytest.raises(ValueError, match=text):
            tailscope.allocate_sparsity(d, **kw)
    with pytest.raises(ValueError, match="Analysis"):
        tailscope.allocate_sparsity([1, 2])
    d.loc[3, "alpha_hill"] = math.nan  # a failed fit: NaN, out of the allocation
    s = tailscope.allocate_sparsity(d, target=0.6, block_wise=False)
    assert math.isnan(s.iloc[3])
    assert abs(weighted_mean(s.drop(s.index[3]), d.drop(index=3)) - 0.6) < 1e-12


# --- magnitude pruning ----------------------------------------------------------------------------
def test_magnitude_mask_is_a_stable_argsort_with_ties():
    rng = np.random.default_rng(0)
    w = rng.integers(-5, 6, size=(37, 23)).astype(np.float32)  # many ties
    for k in (0, 1, 100, 400, 850, w.size):
        mask = magnitude_mask(w, k)
        expected = np.zeros(w.size, dtype=bool)
        expected[np.argsort(np.abs(w).ravel(), kind="stable")[:k]] = True
        np.testing.assert_array_equal(mask.ravel(), expected)


@pytest.mark.slow  # the minilm fixture
def test_prune_minilm_exact_counts_untouched_tensors_and_round_trip(minilm, tmp_path):
    alloc = tailscope.allocate_sparsity(minilm, target=0.7)
    before = {r.name: r.load() for r in tailscope.open_source(minilm_path())}
    edited = tailscope.prune(minilm_path(), alloc)
    d = edited.details.set_index("name")
    assert set(d.index) == set(alloc.index)
    assert (d["status"] == "edited").sum() == 36 and alloc.notna().sum() == 36
    assert (d.loc[alloc.index[alloc.isna()], "status"] == "unchanged").all()
    for name, s in alloc.dropna().items():
        w, new = before[name], edited.weights[name]
        k = round(s * w.size)
        assert d.loc[name, "pruned"] == k
        # zeros are the smallest |w|: taken first, so max(k, zeros before) zeros after
        assert np.count_nonzero(new == 0) == max(k, np.count_nonzero(w == 0))
        kept = new != 0
        np.testing.assert_array_equal(new[kept], w[kept])  # survivors unchanged
        if kept.any() and s < 1:
            assert np.abs(w[~kept]).max() <= np.abs(w[kept]).min()  # the smallest went
        else:  # a block held at sparsity 1 (see the MiniLM allocation test)
            assert s == 1 and not kept.any()
    total = sum(before[n].size for n in alloc.dropna().index)
    assert abs(d["pruned"].sum() / total - 0.7) < 1e-4  # rounding per layer only
    for name, w in before.items():
        if name not in alloc.dropna().index:
            assert edited.weights[name].tobytes() == w.tobytes()
    path = edited.save(tmp_path / "pruned.safetensors")
    back = tailscope.open_source(path)
    assert [r.name for r in back] == list(edited.weights)
    for ref in back:
        assert ref.load().tobytes() == edited.weights[ref.name].tobytes()


def test_uniform_prune_counts_and_bad_input():
    rng = np.random.default_rng(1)
    bad = rng.standard_normal((40, 30)).astype(np.float32)
    bad[0, 0] = np.nan
    state = {"a.weight": rng.standard_normal((50, 40)).astype(np.float32),
             "a.bias": rng.standard_normal(50).astype(np.float32), "b.weight": bad}
    edited = tailscope.prune(state, 0.33)
    d = edited.details.set_index("name")
    assert d.loc["a.weight", "pruned"] == round(0.33 * 2000) == \
        np.count_nonzero(edited.weights["a.weight"] == 0)
    assert d.loc["b.weight", "status"] == "failed" and "NaN" in d.loc["b.weight", "reason"]
    assert edited.weights["a.bias"] is state["a.bias"] or \
        edited.weights["a.bias"].tobytes() == state["a.bias"].tobytes()
    assert state["a.weight"].min() != 0  # the input is never modified
    with pytest.raises(ValueError, match="needs activations.*per-layer ratios"):
        tailscope.prune(state, 0.5, method="wanda")
    with pytest.raises(ValueError, match="SparseGPT.*needs activations"):
        tailscope.prune(state, 0.5, method="SparseGPT")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        tailscope.prune(state, 1.2)
    with pytest.raises(ValueError, match="not a tensor of the model"):
        tailscope.prune(state, {"c.weight": 0.5})
    edited = tailscope.prune(state, {"a": 0.5})  # a module name
    assert edited.details["name"].tolist() == ["a.weight"]


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_cli_prune(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    tensors = {"blocks.0.a.weight": rng.standard_normal((90, 60)).astype(np.float32),
               "blocks.1.a.weight": (rng.standard_t(2, (90, 60))).astype(np.float32),
               "blocks.0.a.bias": rng.standard_normal(90).astype(np.float32)}
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src))
    out = tmp_path / "p.safetensors"
    code, stdout, err = cli("prune", src, "--sparsity", "0.7", "-o", out)
    assert code == 0, err
    back = {r.name: r.load() for r in tailscope.open_source(out)}
    assert np.count_nonzero(back["blocks.0.a.weight"] == 0) == 3780
    assert back["blocks.0.a.bias"].tobytes() == tensors["blocks.0.a.bias"].tobytes()
    code, stdout, err = cli("prune", src, "--sparsity", "0.7", "--alpha-allocation", "--eps",
                            "0.2", "-o", out)
    assert code == 0, err
    alloc = tailscope.allocate_sparsity(tailscope.analyze(src, hill=True), 0.7, eps=0.2)
    back = {r.name: r.load() for r in tailscope.open_source(out)}
    for name, s in alloc.items():
        assert np.count_nonzero(back[name] == 0) == round(s * 5400)
    for args, text in [(("--sparsity", "2"), "--sparsity 2: must be in [0, 1]"),
                       (("--sparsity", "x"), "not a number"),
                       (("--sparsity", "0.5", "--eps", "0.1"), "need --alpha-allocation"),
                       (("--sparsity", "0.5", "--alpha-allocation", "--metric", "zz"),
                        "no 'zz' column"),
                       (("--sparsity", "0.5", "--alpha-allocation", "--max-sparsity", "0.4"),
                        "max_sparsity must be")]:
        code, _, err = cli("prune", src, *args, "-o", tmp_path / "x.safetensors")
        assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.safetensors").exists()
    code, _, err = cli("prune", src, "--sparsity", "0.5", "-o", tmp_path / "x.npz")
    assert code == 2 and ".safetensors" in err
