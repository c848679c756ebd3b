"""Mixture-of-Experts checkpoints (issue 22): every expert a row, in the orientation the forward
pass uses, for each released layout; routers and shared experts typed; an unknown 3-D tensor
refused; the model's own order; GGUF experts; edits written back into the fused stack.

The fused stacks are built here from per-expert (out x in) matrices following each model's
forward pass in transformers 5.25 (``models/*/modeling_*.py``), independently of
``tailscope.sources.moe``; the oracle is tailscope's analysis of the same matrices given as
plain 2-D tensors (and, for Qwen3-MoE and Mixtral, the per-expert tensors transformers' own
``save_pretrained`` writes from its fused parameters)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailscope import analyze, describe
from tailscope.sources import Source, open_source
from tailscope.sources.base import LayerRef, Raising
from tailscope.sources.moe import restack, with_experts
from tailscope.sources.safetensors import write_safetensors

E, H, INTER = 3, 48, 40
RNG = np.random.default_rng(22)
GATE = [RNG.standard_normal((INTER, H)) for _ in range(E)]  # (out x in), as nn.Linear holds
UP = [RNG.standard_normal((INTER, H)) for _ in range(E)]
DOWN = [RNG.standard_normal((H, INTER)) for _ in range(E)]


def _stacks(layout: str) -> dict[str, np.ndarray]:
    """The fused tensors of one layer in ``layout``, written the way the model's forward reads
    them."""
    if layout == "gpt_oss":  # gate_up = x @ W[e]; gate = gate_up[..., ::2], up = [..., 1::2]
        gu = np.zeros((E, H, 2 * INTER))
        for e in range(E):
            gu[e][:, ::2], gu[e][:, 1::2] = GATE[e].T, UP[e].T
        return {"mlp.experts.gate_up_proj": gu,
                "mlp.experts.gate_up_proj_bias": np.zeros((E, 2 * INTER)),  # not a matrix
                "mlp.experts.down_proj": np.stack([d.T for d in DOWN])}  # out = h @ W[e]
    if layout == "llama4":  # bmm(x, W) then chunk(2): gate | up, [E, in, out]
        return {"feed_forward.experts.gate_up_proj":
                np.stack([np.concatenate([g.T, u.T], axis=1) for g, u in zip(GATE, UP)]),
                "feed_forward.experts.down_proj": np.stack([d.T for d in DOWN])}
    if layout == "granitemoe-legacy":  # input_linear: linear(x, W[e]).chunk(2)
        return {"block_sparse_moe.input_linear.weight":
                np.stack([np.concatenate([g, u]) for g, u in zip(GATE, UP)]),
                "block_sparse_moe.output_linear.weight": np.stack(DOWN)}
    # transformers 5: linear(x, gate_up_proj[e]).chunk(2); linear(h, down_proj[e])
    prefix = "block_sparse_moe" if layout == "granitemoe" else "mlp"
    return {f"{prefix}.experts.gate_up_proj": np.stack([np.concatenate([g, u])
                                                       for g, u in zip(GATE, UP)]),
            f"{prefix}.experts.down_proj": np.stack(DOWN)}


LAYOUTS = {  # layout -> (config.json, its router's name)
    "gpt_oss": ({"model_type": "gpt_oss", "num_local_experts": E}, "mlp.router.weight"),
    "llama4": ({"model_type": "llama4", "text_config": {"model_type": "llama4_text",
                                                        "num_local_experts": E,
                                                        "hidden_size": H}},
               "feed_forward.router.weight"),
    "qwen3_moe": ({"model_type": "qwen3_moe", "num_experts": E}, "mlp.gate.weight"),
    "qwen2_moe": ({"model_type": "qwen2_moe", "num_experts": E}, "mlp.gate.weight"),
    "mixtral": ({"model_type": "mixtral", "num_local_experts": E}, "mlp.gate.weight"),
    "deepseek_v3": ({"model_type": "deepseek_v3", "n_routed_experts": E}, "mlp.gate.weight"),
    "deepseek_v2": ({"model_type": "deepseek_v2", "n_routed_experts": E}, "mlp.gate.weight"),
    "olmoe": ({"model_type": "olmoe", "num_experts": E}, "mlp.gate.weight"),
    "granitemoe": ({"model_type": "granitemoe", "num_local_experts": E},
                   "block_sparse_moe.router.weight"),
    "granitemoe-legacy": ({"model_type": "granitemoe", "num_local_experts": E},
                          "block_sparse_moe.router.layer.weight"),
    "phimoe": ({"model_type": "phimoe", "num_local_experts": E}, "mlp.router.weight"),
}


def _write(folder, layout: str, dtype=np.float64):
    config, router = LAYOUTS[layout]
    config = {**config, "hidden_size": H}
    pre = "model.layers.0."
    t = {"lm_head.weight": RNG.standard_normal((64, H)),
         "model.embed_tokens.weight": RNG.standard_normal((64, H)),
         pre + "self_attn.q_proj.weight": RNG.standard_normal((H, H)),
         pre + router: RNG.standard_normal((E, H)),
         **{pre + k: v for k, v in _stacks(layout).items()}}
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", {k: v.astype(dtype) for k, v in t.items()})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _separate_alphas() -> dict[tuple[str, int], float]:
    """alpha of each expert matrix analysed as a plain 2-D tensor (the oracle)."""
    mats = {f"{kind}.{e}": m for kind, ms in (("gate", GATE), ("up", UP), ("down", DOWN))
            for e, m in enumerate(ms)}
    a = analyze(mats)
    return {(n.split(".")[0], int(n.split(".")[1])): v
            for n, v in zip(a.details["name"], a.details["alpha"])}


@pytest.fixture(scope="module")
def oracle():
    return _separate_alphas()


def _kind(name: str) -> str:
    if "gate_up" in name or "input_linear" in name:
        return "gate" if name.endswith(".gate]") else "up"
    return "down"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_fused_layout_gives_expert_rows_equal_to_the_separate_matrices(
        layout, tmp_path, oracle):
    folder = _write(tmp_path / layout, layout)
    a = analyze(folder)
    d = a.details
    assert "conv1d" not in set(d["layer_type"]) and "conv1d" not in set(a.skipped["layer_type"])
    experts = d[d["layer_type"] == "expert"]
    assert len(experts) == 3 * E and experts["expert"].notna().all()
    for name, e, alpha in zip(experts["name"], experts["expert"], experts["alpha"]):
        assert abs(alpha - oracle[(_kind(name), int(e))]) <= 1e-12 * max(1.0, abs(alpha)), name
    # alpha cannot tell W from W.T: the matrices themselves are the forward pass's (out x in)
    mats = {"gate": GATE, "up": UP, "down": DOWN}
    for ref in (r for r in open_source(folder) if r.expert is not None):
        np.testing.assert_array_equal(ref.load(), mats[_kind(ref.name)][ref.expert])
    # the router is its own row, named as a router even when min_evals drops it
    router = a.skipped[a.skipped["layer_type"] == "router"]
    assert len(router) == 1 and "a router" in router["reason"].iloc[0]
    assert d["expert"][d["layer_type"] != "expert"].isna().all()
    assert not d["name"].str.endswith("_bias").any()
    # the model's order: the embedding first, lm_head last
    assert d["name"].iloc[0] == "model.embed_tokens.weight"
    assert d["name"].iloc[-1] == "lm_head.weight"
    # per-layer summaries across the experts; the model means weigh each expert, or each layer
    s = a.experts()
    dense = d[d["layer_type"] != "expert"]["alpha"]
    assert a.summary()["experts"] == 3 * E
    assert a.summary()["alpha"] == pytest.approx(d["alpha"].mean(), rel=1e-12)
    by_layer = a.summary(experts="layer")
    assert by_layer["layers"] == len(dense) + 3
    assert by_layer["alpha"] == pytest.approx((dense.sum() + s["mean"].sum()) / (len(dense) + 3),
                                              rel=1e-12)
    assert list(s["experts"]) == [E] * 3 and (s["spread"] >= 0).all()
    for _, row in s.iterrows():
        vals = experts[[g == row["group"] for g in experts["name"].map(
            lambda n: n[:n.rindex("[")] + ("[*.gate]" if n.endswith(".gate]") else "[*.up]"
                                            if n.endswith(".up]") else "[*]"))]]["alpha"]
        assert row["mean"] == pytest.approx(vals.mean(), rel=1e-12)
        assert row["max"] - row["min"] == pytest.approx(row["spread"], rel=1e-12)


def test_describe_lists_experts_and_routers_without_reading_a_tensor():
    def refs(specs):
        return tuple(LayerRef(n, i, s, "float32", "<test>", Raising("read!"))
                     for i, (n, s) in enumerate(specs))
    src = Source(refs([("model.layers.0.mlp.experts.gate_up_proj", (E, 2 * INTER, H)),
                       ("model.layers.0.mlp.experts.down_proj", (E, H, INTER)),
                       ("model.layers.0.mlp.gate.weight", (E, H)),
                       ("model.layers.0.mlp.shared_experts.up_proj.weight", (INTER, H))]),
                 "safetensors", ("<test>",), config={"model_type": "deepseek_v3",
                                                    "n_routed_experts": E, "hidden_size": H})
    d = describe(with_experts(src))
    kinds = d.groupby("layer_type").size().to_dict()
    assert kinds == {"expert": 2 + 3 * E, "router": 1, "shared_expert": 1}
    assert sorted(d["expert"].dropna().astype(int).unique()) == list(range(E))


def test_an_expert_is_read_alone_through_the_part_loader(tmp_path):
    folder = _write(tmp_path / "q", "qwen3_moe", np.float32)
    src = open_source(folder)
    stack = next(r for r in src if r.name.endswith("experts.gate_up_proj"))
    assert stack.part_loader is not None
    np.testing.assert_array_equal(stack.part_loader(2), stack.load()[2])
    # with the whole-stack loader broken, every expert still reads: only its bytes are read
    from dataclasses import replace
    broken = replace(stack, loader=Raising("the whole stack was read"), split_into=(),
                     layout="torch")
    redone = with_experts(Source((broken,), "safetensors", src.files, config=src.config))
    parts = [r for r in redone if r.expert is not None]
    assert len(parts) == 2 * E
    np.testing.assert_array_equal(parts[2].load(), GATE[1].astype(np.float32))
    np.testing.assert_array_equal(parts[3].load(), UP[1].astype(np.float32))


@pytest.mark.parametrize("config,why", [
    (None, "no config.json"),
    ({"model_type": "some_new_moe", "num_experts": E}, "does not know"),
    ({"model_type": "qwen3_moe", "num_experts": E + 1}, "declares"),
    ({"model_type": "gpt_oss", "num_local_experts": E, "hidden_size": H}, "hidden_size"),
])
def test_a_stack_that_cannot_be_decoded_is_refused_with_its_reason(tmp_path, config, why):
    t = {"model.layers.0.mlp.experts.gate_up_proj":
         np.stack([np.concatenate([g, u]) for g, u in zip(GATE, UP)]).astype(np.float32)}
    write_safetensors(tmp_path / "model.safetensors", t)
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    d = describe(tmp_path)
    assert len(d) == 1 and not d["analyze"].iloc[0] and why in d["reason"].iloc[0]
    assert d["layer_type"].iloc[0] != "conv1d"


def test_an_unknown_3d_tensor_is_refused_and_a_named_conv_is_a_conv():
    a = np.ones((8, 256, 512), np.float32)
    d = describe({"blocks.0.mix": a, "blocks.0.conv.weight": np.ones((32, 16, 3), np.float32)})
    mix, conv = d.iloc[0], d.iloc[1]
    assert mix["layer_type"] == "other" and "neither a known convolution" in mix["reason"]
    assert conv["layer_type"] == "conv1d"


def test_a_torch_conv1d_module_is_known_by_its_type():
    torch = pytest.importorskip("torch")
    m = torch.nn.Sequential(torch.nn.Conv1d(16, 32, 3), torch.nn.Linear(3, 4))
    d = describe(m)
    assert list(d["layer_type"][d["name"].str.endswith("weight")]) == ["conv1d", "dense"]


def test_restack_inverts_the_split_in_every_layout(tmp_path):
    for layout in LAYOUTS:
        src = open_source(_write(tmp_path / layout, layout, np.float32))
        for stack in (r for r in src if r.split_into):
            parts = [next(p for p in src if p.name == n).load() for n in stack.split_into]
            np.testing.assert_array_equal(restack(stack, parts), stack.load())


@pytest.mark.parametrize("layout", ["gpt_oss", "qwen3_moe"])
def test_an_edit_of_the_experts_is_written_back_into_the_stack(tmp_path, layout):
    from tailscope import smooth

    folder = _write(tmp_path / layout, layout)
    edited = smooth(folder, method="svd", percent=0.5, layers=["expert"])
    separate = {f"{k}.{e}": m for k, ms in (("gate", GATE), ("up", UP), ("down", DOWN))
                for e, m in enumerate(ms)}
    expected = smooth(separate, method="svd", percent=0.5).weights
    src = open_source(folder)
    w = edited.weights
    assert set(w) == {r.name for r in src if not r.parent}
    for stack in (r for r in src if r.split_into):
        assert w[stack.name].shape == stack.shape
        redone = with_experts(Source((LayerRef(stack.name, 0, stack.shape, "float64", "<t>",
                                               lambda a=w[stack.name]: a),),
                                     "safetensors", ("<t>",), config=src.config))
        for part in (r for r in redone if r.expert is not None):
            key = f"{_kind(part.name)}.{part.expert}"
            np.testing.assert_allclose(part.load(), expected[key], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_transformers_fused_modules_match_its_own_per_expert_checkpoint(tmp_path):
    """A transformers 5 model in memory (3-D expert Parameters, its config) and the per-expert
    checkpoint transformers' save_pretrained writes from it: the same matrices, expert by
    expert."""
    pytest.importorskip("transformers")
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                            moe_intermediate_size=24, num_experts_per_tok=2)
    model = Qwen3MoeForCausalLM(config)
    model.save_pretrained(tmp_path)
    mem = {(r.name, r.expert): r for r in open_source(model) if r.expert is not None}
    disk = {r.name: r for r in open_source(tmp_path) if r.expert is not None}
    assert len(mem) == len(disk) == 12
    pre = "model.layers.0.mlp.experts."
    for e in range(4):
        for ours, theirs in ((f"{pre}gate_up_proj[e{e}.gate]", f"{pre}{e}.gate_proj.weight"),
                             (f"{pre}gate_up_proj[e{e}.up]", f"{pre}{e}.up_proj.weight"),
                             (f"{pre}down_proj[e{e}]", f"{pre}{e}.down_proj.weight")):
            np.testing.assert_array_equal(mem[(ours, e)].load(), disk[theirs].load())
            assert disk[theirs].expert == e
    d = describe(model)
    assert (d["layer_type"] == "router").sum() == 1


def test_gpt_oss_experts_are_the_matrices_its_forward_pass_uses():
    """The gpt-oss forward (transformers 5.25 GptOssExperts): gate_up = x @ W[e];
    gate = gate_up[..., ::2]; up = gate_up[..., 1::2]; out = h @ down[e]."""
    pytest.importorskip("transformers")
    import torch
    from transformers import GptOssConfig
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    config = GptOssConfig(hidden_size=32, intermediate_size=24, num_local_experts=3)
    experts = GptOssExperts(config)
    with torch.no_grad():
        for p in experts.parameters():
            p.normal_()
    src = with_experts(Source(open_source({"mlp.experts." + n: p for n, p in
                                           experts.named_parameters()}).refs,
                              "state dict", ("<memory>",), config=config.to_dict()))
    parts = {r.name: r.load() for r in src if r.expert is not None}
    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    for e in range(3):
        gu = x @ experts.gate_up_proj[e].detach().numpy()
        np.testing.assert_allclose(x @ parts[f"mlp.experts.gate_up_proj[e{e}.gate]"].T, gu[..., ::2],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(x @ parts[f"mlp.experts.gate_up_proj[e{e}.up]"].T, gu[..., 1::2],
                                   rtol=1e-5, atol=1e-5)
        h = np.random.default_rng(e).standard_normal((5, 24)).astype(np.float32)
        np.testing.assert_allclose(h @ parts[f"mlp.experts.down_proj[e{e}]"].T,
                                   h @ experts.down_proj[e].detach().numpy(), rtol=1e-5,
                                   atol=1e-5)


def test_gguf_experts_get_the_expert_column(tmp_path):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(1)
    exps = rng.standard_normal((E, 40, 64)).astype(np.float32)  # numpy (experts, out, in)
    path = tmp_path / "moe.gguf"
    w = gguf.GGUFWriter(str(path), "qwen3moe")
    w.add_tensor("token_embd.weight", rng.standard_normal((100, 64)).astype(np.float32))
    w.add_tensor("blk.0.ffn_gate_inp.weight", rng.standard_normal((E, 64)).astype(np.float32))
    w.add_tensor("blk.0.ffn_up_exps.weight", exps)
    w.add_tensor("output.weight", rng.standard_normal((100, 64)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    a = analyze(path)
    d = a.details
    ex = d[d["layer_type"] == "expert"]
    assert list(ex["expert"].astype(int)) == list(range(E))
    alone = analyze({f"m{e}": exps[e] for e in range(E)}).details["alpha"].to_numpy()
    np.testing.assert_allclose(ex["alpha"].to_numpy(), alone, rtol=1e-12)
    assert a.skipped.set_index("name").loc["blk.0.ffn_gate_inp.weight", "layer_type"] == "router"


def test_the_experts_batched_on_torch_equal_numpy(tmp_path):
    """Same-shape experts go to the eigensolver as one stack (numpy and torch); each expert's
    alpha is that of its own matrix."""
    pytest.importorskip("torch")
    from tailscope.engine.layer import batches
    from tailscope.engine.options import make_options
    from tailscope.engine.plan import planned
    from tailscope.spectrum import get_backend

    folder = _write(tmp_path / "q", "qwen3_moe")
    o = make_options()
    todo = [(r, p) for r, p, why in planned(open_source(folder), o) if not why]
    for device in ("cpu", "torch:cpu"):
        groups = batches(todo, get_backend(device))
        assert max(len(g) for g in groups) == 2 * E  # the gate and up matrices of all experts
    a, b = analyze(folder), analyze(folder, device="torch:cpu")
    np.testing.assert_allclose(b.details["alpha"], a.details["alpha"], rtol=1e-9)
