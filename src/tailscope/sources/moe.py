"""Mixture-of-Experts checkpoints -> one matrix per expert, routers and shared experts named.

``with_experts(src)`` is the last of ``finish``'s passes. Nothing here reads a weight tensor:
every decision comes from the names, the shapes and the model's ``config.json``
(``Source.config``: ``model_type``, ``architectures``, ``num_experts`` /
``num_local_experts`` / ``n_routed_experts``, ``hidden_size``; a ``text_config`` inside it too).

Fused 3-D expert stacks, layouts checked against transformers 5.25's modeling code
(``models/*/modeling_*.py``, ``conversion_mapping.py``):

==========================================  ===============================  ==================
tensor (model_type)                         stored as                        gate and up
==========================================  ===============================  ==================
``experts.gate_up_proj`` (gpt_oss)          [E, in, out]: ``x @ W[e]``       interleaved:
                                                                             gate ``[..., ::2]``,
                                                                             up ``[..., 1::2]``
``experts.down_proj`` (gpt_oss)             [E, in, out]
``experts.gate_up_proj`` (llama4)           [E, in, out]: ``bmm(x, W)``      concatenated
``experts.down_proj`` (llama4)              [E, in, out]
``experts.gate_up_proj`` (qwen2_moe,        [E, out, in]:                    concatenated
qwen3_moe, mixtral, deepseek_v2/v3, olmoe,  ``linear(x, W[e])``              (``chunk(2)``)
granitemoe*, phimoe and the model types
transformers converts like them)
``experts.down_proj`` (the same)            [E, out, in]
``block_sparse_moe.input_linear.weight``    [E, out, in]                     concatenated
/ ``output_linear.weight`` (granitemoe*)    (its legacy names)
==========================================  ===============================  ==================

Each stack is split into one (out x in) matrix per expert, the matrix the forward pass uses as
a Linear weight: ``name[e3]`` (down), ``name[e3.gate]`` and ``name[e3.up]`` (gate_up). An
expert is read alone: through the reader's ``part_loader`` (safetensors reads that expert's
bytes only), else by slicing the loaded stack. The stack stays listed with ``split_into`` (a
skipped row: "split into N expert matrices") and ``layout`` ``'stack:<spec>'``, from which
``restack`` writes edited experts back into the stack in its own orientation.

Per-expert (legacy) names, ``...experts.3.w1.weight`` (Mixtral), ``...experts.3.gate_proj.weight``
(Qwen, DeepSeek, OLMoE, what transformers 5 saves), ``...experts.expert_3.wi.weight``
(Switch), get ``expert = 3``. GGUF's reader splits ``*_exps`` stacks itself.

In a model with experts (its config counts them, or expert tensors were found), 2-D routers
(``mlp.gate.weight``, ``mlp.router.weight``, ``router.layer.weight``, ``router.classifier``,
GGUF ``ffn_gate_inp``; Qwen2-MoE's ``shared_expert_gate``) get ``role='router'`` and the shared
experts' matrices (``shared_expert.``, ``shared_experts.``, ``shared_mlp.``, GGUF ``*_shexp``)
``role='shared_expert'``.

A 3-D tensor that is not a stack of a known layout is never guessed into one: a stack whose
model type is unknown, or has no config, or whose shape disagrees with the config is marked
``role='refused: <why>'`` and reported skipped with that reason; any other 3-D tensor is a conv1d
only when it is a known convolution (``KNOWN_CONV``; see ``sources.layers``).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from .base import LayerRef, Source

EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")

# model_type -> the family whose stack layout it has (transformers 5.25's modeling code; the
# model types its conversion_mapping.py converts like qwen2_moe / mixtral / granitemoe)
_DEFAULT_TYPES = (
    "qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_omni_moe", "qwen3_omni_moe_thinker",
    "qwen3_omni_moe_text", "mixtral", "minimax", "minimax_m2", "deepseek_v2", "deepseek_v3",
    "deepseek_v32", "olmoe", "flex_olmo", "granitemoe", "granitemoeshared", "granitemoehybrid",
    "phimoe", "dots1", "ernie4_5_moe", "glm4_moe", "glm4_moe_lite", "hunyuan_v1_moe",
    "exaone_moe", "lfm2_moe")
FAMILIES: dict[str, str] = {
    **{t: "oi" for t in _DEFAULT_TYPES},  # [E, out, in], gate|up concatenated
    "gpt_oss": "io+interleaved",             # [E, in, out], gate/up interleaved
    "llama4": "io", "llama4_text": "io",     # [E, in, out], gate|up concatenated
}

_STACK = re.compile(r"(?:^|\.)experts\.(?P<proj>gate_up_proj|down_proj)$"
                    r"|(?:^|\.)block_sparse_moe\.(?P<legacy>input_linear|output_linear)\.weight$")
_STACK_BIAS = re.compile(r"(?:^|\.)experts\.(?:gate_up_proj|down_proj)_bias$")
_PER_EXPERT = re.compile(r"(?:^|\.)experts\.(?:expert_)?(?P<e>\d+)\.")
_ROUTER = re.compile(r"(?:^|\.)(?:(?:mlp|block_sparse_moe|feed_forward|moe)\.(?:gate|router)"
                     r"|router\.(?:layer|classifier)|shared_experts?_gate)\.weight$"
                     r"|(?:^|\.)ffn_gate_inp(?:_shexp)?\.weight$")
_SHARED = re.compile(r"(?:^|\.)(?:shared_experts?|shared_mlp)\.|_shexp\.weight$")
_PART = re.compile(r"\[e(?P<e>\d+)(?:\.(?P<kind>gate|up))?\]$")

NO_CONFIG = ("a fused Mixture-of-Experts stack, but no config.json beside it names the model "
             "type, and the layout ([E, out, in] or [E, in, out], gate and up concatenated or "
             "interleaved) depends on it; put the model's config.json beside its weights")


def expert_count(config: dict | None) -> int | None:
    """The number of routed experts a ``config.json`` declares (its ``text_config`` too)."""
    for c in _configs(config):
        for key in EXPERT_COUNT_KEYS:
            v = c.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def model_types(config: dict | None) -> list[str]:
    """The config's ``model_type`` and its ``text_config``'s, when present."""
    return [c["model_type"] for c in _configs(config) if isinstance(c.get("model_type"), str)]


def _configs(config) -> list[dict]:
    if not isinstance(config, dict):
        return []
    out = [config]
    for key in ("text_config", "language_config", "llm_config"):
        if isinstance(config.get(key), dict):
            out.append(config[key])
    return out


def _hidden(config) -> int | None:
    for c in _configs(config)[::-1]:
        v = c.get("hidden_size")
        if isinstance(v, int) and v > 0:
            return v
    return None


def family(config: dict | None) -> str | None:
    """The stack layout spec of a model ('oi', 'io', 'io+interleaved'), None when unknown."""
    for t in model_types(config)[::-1]:
        if t in FAMILIES:
            return FAMILIES[t]
    return None


# --- one expert of a stack ------------------------------------------------------------------------
class ExpertLoader:
    """Reads expert ``e`` of a stack alone and turns it into the (out x in) matrix: picklable."""

    def __init__(self, parent: LayerRef, e: int, spec: str, kind: str):
        self.parent, self.e, self.spec, self.kind = parent, e, spec, kind

    def __call__(self) -> np.ndarray:
        p = self.parent
        w = p.part_loader(self.e) if p.part_loader is not None else np.asarray(p.load())[self.e]
        return expert_matrix(w, self.spec, self.kind)


def expert_matrix(w: np.ndarray, spec: str, kind: str) -> np.ndarray:
    """One expert's slice ``w`` of a stack -> its (out x in) matrix (a view); ``kind`` '',
    'gate' or 'up' (the halves of a gate_up stack, concatenated or interleaved along out)."""
    m = w.T if spec.startswith("io") else w
    if kind and spec.endswith("+interleaved"):
        return m[0::2] if kind == "gate" else m[1::2]
    if kind:
        half = m.shape[0] // 2
        return m[:half] if kind == "gate" else m[half:]
    return m


def restack(parent: LayerRef, parts: list[np.ndarray]) -> np.ndarray:
    """The stack ``parent`` (``layout`` 'stack:<spec>') rebuilt from its experts' (out x in)
    matrices, in ``split_into`` order: the inverse of the split, in the stack's own
    orientation."""
    spec = parent.layout.split(":", 1)[1]
    io = spec.startswith("io")
    kinds = [(_PART.search(n)["kind"] or "") for n in parent.split_into]
    experts: list[np.ndarray] = []
    i = 0
    while i < len(parts):
        if kinds[i] == "gate":
            gate, up = (p.T if io else p for p in parts[i:i + 2])
            axis = 1 if io else 0
            if spec.endswith("+interleaved"):
                shape = list(gate.shape)
                shape[axis] *= 2
                w = np.empty(shape, dtype=np.result_type(gate, up))
                if io:
                    w[:, 0::2], w[:, 1::2] = gate, up
                else:
                    w[0::2], w[1::2] = gate, up
            else:
                w = np.concatenate([gate, up], axis=axis)
            i += 2
        else:
            w = parts[i].T if io else parts[i]
            i += 1
        experts.append(w)
    out = np.stack(experts)
    if out.shape != tuple(parent.shape):
        raise ValueError(f"{parent.name}: its experts stack to {out.shape}, not {parent.shape}")
    return out


def _split_stack(ref: LayerRef, spec: str, gate_up: bool) -> list[LayerRef]:
    E, a, b = ref.shape
    io = spec.startswith("io")
    out_dim, in_dim = (b, a) if io else (a, b)
    parts = []
    for e in range(E):
        for kind in (("gate", "up") if gate_up else ("",)):
            rows = out_dim // 2 if kind else out_dim
            label = f"e{e}.{kind}" if kind else f"e{e}"
            parts.append(replace(ref, name=f"{ref.name}[{label}]", shape=(rows, in_dim),
                                 loader=ExpertLoader(ref, e, spec, kind), part_loader=None,
                                 layout="torch", parent=ref.name, split_into=(), gates="",
                                 role="", expert=e))
    return parts


def _stack_problem(ref: LayerRef, config, count: int | None, spec: str | None,
                   gate_up: bool) -> str:
    """Why a fused stack cannot be split ('' when it can)."""
    if len(ref.shape) != 3 or not ref.is_float:
        return "" if len(ref.shape) != 3 else "not floating-point"
    if config is None:
        return NO_CONFIG
    if spec is None:
        types = ", ".join(model_types(config)) or "none"
        return (f"a fused Mixture-of-Experts stack of model_type {types}, whose layout tailscope "
                f"does not know (known: {', '.join(sorted(FAMILIES))}); not guessed")
    E, a, b = ref.shape
    if count is not None and E != count:
        return (f"a fused expert stack of {E} along its first axis, but config.json declares "
                f"{count} experts; not guessed")
    io = spec.startswith("io")
    out_dim, in_dim = (b, a) if io else (a, b)
    hidden = _hidden(config)
    if gate_up and out_dim % 2:
        return f"gate_up with an odd output size {out_dim}; not guessed"
    if hidden is not None and (in_dim if gate_up else out_dim) != hidden:
        side = "input" if gate_up else "output"
        return (f"a fused expert stack whose {side} size is {in_dim if gate_up else out_dim} in "
                f"the {spec.split('+')[0]} layout of its model type, but hidden_size is "
                f"{hidden}; not guessed")
    return ""


OP_FORMATS = ("onnx",)  # readers that list a 3-D weight only as a Conv op's


def with_experts(src: Source) -> Source:
    """``src`` with its fused expert stacks split into one matrix per expert (``expert`` set),
    per-expert tensors numbered, routers and shared experts given their ``role``; unchanged
    when it has none. See the module docstring."""
    config = src.config
    count = expert_count(config)
    spec = family(config)
    out: list[LayerRef] = []
    changed = False
    has_experts = count is not None
    for ref in src.refs:
        m = _STACK.search(ref.name)
        if m and len(ref.shape) == 3 and ref.expert is None:
            has_experts = True
            gate_up = m["proj"] == "gate_up_proj" or m["legacy"] == "input_linear"
            s = "oi" if m["legacy"] else spec
            why = _stack_problem(ref, config, count, s, gate_up)
            if why:
                out.append(replace(ref, role=f"refused: {why}"))
            else:
                parts = _split_stack(ref, s, gate_up)
                out.append(replace(ref, layout=f"stack:{s}",
                                   split_into=tuple(p.name for p in parts)))
                out.extend(parts)
            changed = True
            continue
        if len(ref.shape) == 2 and _STACK_BIAS.search(ref.name):  # gpt-oss: [E, out]
            out.append(replace(ref, role=f"refused: the biases of {ref.shape[0]} experts (one "
                               "vector each), not a weight matrix"))
            has_experts = changed = True
            continue
        if ref.expert is None and len(ref.shape) == 2 and not ref.parent:
            e = _PER_EXPERT.search(ref.name)
            if e:
                out.append(replace(ref, expert=int(e["e"])))
                has_experts = changed = True
                continue
        if ref.expert is not None:
            has_experts = True
        if len(ref.shape) == 3 and src.format in OP_FORMATS and not ref.role:
            ref = replace(ref, role="conv")
            changed = True
        out.append(ref)
    if has_experts:
        for i, ref in enumerate(out):
            if ref.expert is None and len(ref.shape) == 2 and not ref.role:
                if _ROUTER.search(ref.name):
                    out[i] = replace(ref, role="router")
                    changed = True
                elif _SHARED.search(ref.name):
                    out[i] = replace(ref, role="shared_expert")
                    changed = True
    if not changed:
        return src
    refs = tuple(r if r.index == i else replace(r, index=i) for i, r in enumerate(out))
    # parts keep a reference to their parent as it was read (its loaders), which is enough
    return replace(src, refs=refs)


def stack_of(name: str) -> str:
    """The fused stack an expert matrix was split from (``...experts.down_proj[e3]`` ->
    ``...experts.down_proj``); any other name unchanged."""
    m = _PART.search(name)
    return name[:m.start()] if m else name


def expert_group(name: str) -> str:
    """The name shared by all experts of one projection of one MoE layer:
    ``...experts.gate_up_proj[e3.gate]`` -> ``...experts.gate_up_proj[*.gate]``,
    ``...experts.3.w1.weight`` -> ``...experts.*.w1.weight``."""
    m = _PART.search(name)
    if m:
        return name[:m.start()] + (f"[*.{m['kind']}]" if m["kind"] else "[*]")
    return _PER_EXPERT.sub(lambda g: g[0].replace(g["e"], "*", 1), name, count=1)


def is_known_conv_name(name: str) -> bool:
    """Whether a tensor's name says it is a convolution's weight ('conv' in its module path)."""
    return "conv" in name.lower()
