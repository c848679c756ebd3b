"""The decisions LLM practitioners take from the spectra, each one rule of the allocation core
(:mod:`tailscope.edit.allocate`) on a metric of the analysis:

- ``allocate_bits`` (AlphaQ, arXiv 2606.04980; Superone77/AlphaQ ``main.py``
  ``build_and_solve_global_milp``): bits per layer, an exact integer program, with exports to
  llama.cpp's ``llama-quantize --tensor-type``, llm-compressor / compressed-tensors config groups
  and GPTQModel's ``dynamic`` per-module configuration;
- ``allocate_experts`` (AlphaLoRA, EMNLP 2024): LoRA experts per decoder block;
- ``select_trainable`` (Spectrum, arXiv 2406.06623; cognitivecomputations/spectrum
  ``spectrum.py``): the layers to unfreeze, exported as Axolotl's ``unfrozen_parameters`` and
  PEFT's ``target_modules``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .allocate import allocate, block_means, block_of, layer_frame, layer_metric, tensor_of

# llama.cpp's k-quant (and 8-bit) types for a number of bits (ggml_type_name spelling)
GGML_TYPES = {2: "q2_K", 3: "q3_K", 4: "q4_K", 5: "q5_K", 6: "q6_K", 8: "q8_0"}
QUANTIZE_FORMATS = ("llama.cpp", "llm-compressor", "gptqmodel")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")


def _number(name: str, value, lo: float = -math.inf, hi: float = math.inf,
            open_lo: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value > hi or value < lo or (open_lo and value == lo):
        side = "(" if open_lo else "["
        raise ValueError(f"{name} must be a number in {side}{lo}, {hi}]; got {value!r}")
    return float(value)


def _module(name: str) -> str:
    name = tensor_of(name)
    return name[:-len(".weight")] if name.endswith(".weight") else name


def _exact(name: str) -> str:
    return "^" + re.escape(name) + "$"


# --- bits ----------------------------------------------------------------------------------------
class BitAllocation(pd.Series):
    """Bits per layer (a ``pandas.Series`` indexed by tensor name) with exports to quantizers.

    ``.attrs``: budget, bits, gamma, metric, weighted, the achieved mean (``mean_bits``:
    per parameter when weighted, per layer otherwise) and the objective (``cost``)."""

    @property
    def _constructor(self):
        return BitAllocation

    def to_llama_cpp(self, arch: str | None = None) -> list[str]:
        """``llama-quantize --tensor-type`` overrides, one ``'^regex$=type'`` per GGUF tensor
        (``blk.3.attn_q.weight`` -> ``q4_K``; 2, 3, 4, 5, 6 bits -> q2_K ... q6_K, 8 -> q8_0).
        Names from another format are mapped with the ``gguf`` package's tensor-name map for
        ``arch`` (a GGUF architecture name such as 'llama', 'qwen2moe', 'bert'; default: the
        analysis' ``config.json`` architecture is not known here, so 'llama'); GGUF names pass
        through. Experts of one block stored separately map to one stacked GGUF tensor
        (``ffn_down_exps``), which gets the largest of their bits. A tensor the map does not
        know is a ValueError naming it."""
        import gguf

        out: dict[str, int] = {}
        gguf_names = all(re.match(r"^(blk\.\d+\.|token_embd|output|position_embd)", n)
                         for n in self.index)
        tmap = None
        if not gguf_names:
            arch = (arch or "llama").lower()
            by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
            if arch not in by_name:
                raise ValueError(f"unknown GGUF architecture {arch!r}; one of "
                                 f"{', '.join(sorted(by_name))}")
            blocks = [int(b.rsplit(".", 1)[1]) for b in map(block_of, self.index) if b]
            tmap = gguf.get_tensor_name_map(by_name[arch], (max(blocks) + 1) if blocks else 1)
        for key, bits in self.items():
            if not np.isfinite(bits):
                continue
            name = tensor_of(key)
            target = name
            if tmap is not None:
                target = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
                if target is None and _EXPERT.search(name):
                    stacked = _EXPERT.sub(".experts.", name)
                    target = tmap.get_name(stacked, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise ValueError(f"{name!r} has no GGUF name for architecture {arch!r}")
                if not target.endswith((".weight", ".bias")):  # a fused stack named bare
                    target += ".weight"
            b = int(bits)
            if b not in GGML_TYPES:
                raise ValueError(f"{name!r}: llama.cpp has no {b}-bit type here (one of "
                                 f"{sorted(GGML_TYPES)})")
            out[target] = max(out.get(target, 0), b)
        return [f"{_exact(t)}={GGML_TYPES[b]}" for t, b in out.items()]

    def to_llm_compressor(self, *, group_size: int = 128, symmetric: bool = True,
                          ignore: tuple[str, ...] = ("lm_head",)) -> dict:
        """An llm-compressor recipe (``QuantizationModifier``) whose compressed-tensors
        ``config_groups`` hold one group per number of bits, each targeting its modules by exact
        regex (``'re:^model\\.layers\\.0\\.mlp\\.down_proj$'``): integer weights, ``group``
        strategy of ``group_size``. ``yaml.safe_dump`` writes it."""
        per_module = self._per_module()
        groups = {}
        for b in sorted(set(per_module.values())):
            targets = [f"re:{_exact(m)}" for m, v in per_module.items() if v == b]
            groups[f"group_{b}bit"] = {
                "targets": targets,
                "weights": {"num_bits": b, "type": "int", "symmetric": bool(symmetric),
                            "strategy": "group", "group_size": int(group_size)}}
        return {"quant_stage": {"quant_modifiers": {"QuantizationModifier": {
            "ignore": list(ignore), "config_groups": groups}}}}

    def to_gptqmodel(self, *, group_size: int = 128) -> dict:
        """GPTQModel's quantization config with per-module overrides: ``bits`` the most common
        allocation, ``dynamic`` one ``'+:^module$'`` regex -> ``{'bits': b}`` per other module
        (GPTQModel's ``QuantizeConfig(dynamic=...)``)."""
        per_module = self._per_module()
        vals = pd.Series(per_module, dtype=np.int64)
        default = int(vals.mode().min())
        dynamic = {f"+:{_exact(m)}": {"bits": int(b)} for m, b in per_module.items()
                   if int(b) != default}
        return {"bits": default, "group_size": int(group_size), "dynamic": dynamic}

    def _per_module(self) -> dict[str, int]:
        """Module name -> bits (the experts of one fused tensor: the largest of theirs)."""
        out: dict[str, int] = {}
        for key, v in self.dropna().items():
            m = _module(key)
            out[m] = max(out.get(m, 0), int(v))
        return out

    def export(self, fmt: str):
        """The export named ``fmt`` (one of ``QUANTIZE_FORMATS``)."""
        if fmt == "llama.cpp":
            return self.to_llama_cpp()
        if fmt == "llm-compressor":
            return self.to_llm_compressor()
        if fmt == "gptqmodel":
            return self.to_gptqmodel()
        raise ValueError(f"format must be one of {', '.join(QUANTIZE_FORMATS)}; got {fmt!r}")


def bit_costs(alpha: np.ndarray, var: np.ndarray, bits: np.ndarray, gamma: float) -> np.ndarray:
    """AlphaQ's cost table: s_l = (median(alpha) / max(alpha_l, 1e-8))^gamma (the median over
    these layers), cost[l, b] = s_l * max(Var(W_l), 1e-12) * 2^(-2 b)."""
    a0 = float(np.median(alpha))
    s = (a0 / np.maximum(alpha, 1e-8)) ** gamma
    v = np.maximum(var, 1e-12)
    return (s * v)[:, None] * (2.0 ** (-2.0 * bits))[None, :]


def allocate_bits(analysis, budget: float = 3.5, bits=(2, 3, 4), gamma: float = 10.0,
                  metric: str = "alpha_farms", weighted: bool = True) -> BitAllocation:
    """Bits per layer for mixed-precision quantization, without calibration data (AlphaQ).

    Parameters
    ----------
    analysis : Analysis or its ``details`` DataFrame
        One row per layer, with the metric's column and ``weight_var`` (every analysis has it).
        A DataFrame allocates over its rows only (e.g. the experts).
    budget : float
        The mean number of bits: per parameter (``weighted=True``: sum b_l P_l <= budget sum P_l,
        P_l = N M rf, what memory is) or per layer (``weighted=False``: sum b_l <= budget * L,
        the reference's constraint).
    bits : sequence of int
        The bit widths a layer may get.
    gamma : float
        The sensitivity exponent: s_l = (median(alpha) / alpha_l)^gamma.
    metric : str
        The alpha column ('alpha_farms', the reference's FARMS-Hill, needs
        ``analyze(farms=True)``; 'alpha', 'alpha_hill', ...).

    Returns
    -------
    BitAllocation
        A pandas Series of bits per tensor name (NaN for a layer without a finite metric or
        Var(W): not allocated), with ``to_llama_cpp()``, ``to_llm_compressor()``,
        ``to_gptqmodel()``.

    Notes
    -----
    cost_l(b) = s_l Var(W_l) 2^(-2b) (Var clamped at 1e-12, alpha at 1e-8, as the reference);
    the total cost is minimised exactly (zero gap) with one b per layer under the budget.
    """
    budget = _number("budget", budget, 0, open_lo=True)
    gamma = _number("gamma", gamma)
    if not isinstance(weighted, bool):
        raise ValueError(f"weighted must be True or False; got {weighted!r}")
    try:
        choices = np.array(sorted({int(b) for b in bits}), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"bits must be positive integers; got {bits!r}") from None
    if choices.size == 0 or choices[0] <= 0 or any(float(b) != int(b) for b in bits):
        raise ValueError(f"bits must be positive integers; got {bits!r}")
    if budget < choices[0]:
        raise ValueError(f"a budget of {budget} bits is below the smallest width {choices[0]:g}")
    vec = layer_metric(analysis, metric)
    details = layer_frame(analysis)
    if "weight_var" not in details.columns:
        raise ValueError("the analysis has no 'weight_var' column (analyse with this version)")
    var = pd.to_numeric(details["weight_var"], errors="coerce").to_numpy(np.float64)
    ok = vec.ok & np.isfinite(var)
    if not ok.any():
        raise ValueError(f"no layer has a finite {metric} and weight_var")
    cost = bit_costs(vec.values[ok], var[ok], choices, gamma)
    weights = vec.params[ok] if weighted else np.ones(int(ok.sum()))
    pick = allocate(cost, budget, "milp", choices=choices, weights=weights)
    out = np.full(len(vec.names), math.nan)
    out[ok] = choices[pick]
    series = BitAllocation(out, index=pd.Index(vec.names, name="name"), name="bits")
    series.attrs.update(budget=budget, bits=tuple(int(b) for b in choices), gamma=gamma,
                        metric=metric, weighted=weighted,
                        mean_bits=float(np.sum(weights * choices[pick]) / weights.sum()),
                        cost=float(cost[np.arange(pick.size), pick].sum()))
    return series


# --- experts -------------------------------------------------------------------------------------
def allocate_experts(analysis, total: int = 160, beta: float = 2.5,
                     metric: str = "alpha_hill") -> pd.Series:
    """LoRA experts per decoder block (AlphaLoRA, Qing et al., EMNLP 2024).

    The block's metric is the mean of its layers' (block: :func:`block_of`; layers outside a
    numbered block are left out); n_l = round(total * a_l^beta / sum a^beta) (half to even), then
    adjusted one expert at a time, the largest remainder first, to sum exactly to ``total``, at
    least 1 per block. ``.attrs['top_k']``: the reference's router top-k per block, 2 if n > 1
    else 1.

    Returns
    -------
    pandas.Series
        Expert counts (int) indexed by block name ('model.layers.3'), in model order.
    """
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 1:
        raise ValueError(f"total must be a positive integer; got {total!r}")
    beta = _number("beta", beta)
    vec = layer_metric(analysis, metric)
    blocks = np.array([block_of(n) for n in vec.names], dtype=object)
    ok = vec.ok & np.array([b is not None for b in blocks])
    if not ok.any():
        raise ValueError("no layer with a finite metric is in a numbered block "
                         "('model.layers.3...')")
    means = block_means(vec.names, vec.values, ok)
    order = list(dict.fromkeys(blocks[ok].tolist()))
    first = {b: i for i, b in reversed(list(enumerate(blocks))) if b is not None}
    per_block = np.array([means[first[b]] for b in order])
    if total < len(order):
        raise ValueError(f"total {total} is fewer than the {len(order)} blocks")
    if not (per_block > 0).all():
        raise ValueError(f"the block means of {metric} must be positive")
    counts = allocate(per_block, int(total), "power", beta=beta)
    series = pd.Series(counts.astype(np.int64), index=pd.Index(order, name="block"),
                       name="experts")
    series.attrs.update(total=int(total), beta=beta, metric=metric,
                        top_k={b: (2 if n > 1 else 1) for b, n in zip(order, counts)})
    return series


# --- layers to unfreeze --------------------------------------------------------------------------
def module_type(name: str) -> str:
    """Spectrum's layer type: the module name after its first numbered component
    ('model.layers.3.mlp.down_proj.weight' -> 'mlp.down_proj'); the module name itself when it
    has none."""
    parts = _module(name).split(".")
    idx = next((i for i, p in enumerate(parts) if p.isdigit()), -1)
    return ".".join(parts[idx + 1:]) if idx != -1 else _module(name)


@dataclass(frozen=True, repr=False, eq=False)
class Trainable:
    """The layers chosen to train: ``names`` (tensor names), ``details`` (every layer with its
    type, metric and whether chosen), and the exports to Axolotl and PEFT."""

    names: list[str]
    details: pd.DataFrame
    metric: str
    top_percent: float

    def to_axolotl(self) -> str:
        """Axolotl's ``unfrozen_parameters`` YAML as Spectrum writes it: the embeddings and the
        head always unfrozen (``^lm_head.weight$``, ``^model.embed_tokens.weight$``), then per
        layer type a comment and the chosen module names."""
        lines = ["unfrozen_parameters:", "- ^lm_head.weight$", "- ^model.embed_tokens.weight$"]
        chosen = self.details[self.details["chosen"]]
        for kind, part in chosen.groupby("type", sort=False):
            lines.append(f"# {kind} layers")
            lines.extend(f"- {_module(n)}" for n in part["name"])
        return "\n".join(lines) + "\n"

    def to_peft(self) -> list[str]:
        """PEFT's ``target_modules``: the chosen module names (LoraConfig matches a list of
        names against the end of each module name)."""
        return [_module(n) for n in self.names]

    def __repr__(self) -> str:
        return (f"Trainable({len(self.names)} of {len(self.details)} layers, top "
                f"{self.top_percent:g}% by {self.metric} per type)")


def select_trainable(analysis, top_percent: float = 50, metric: str = "snr") -> Trainable:
    """The layers to unfreeze (Spectrum): per layer type (:func:`module_type`), the
    int(count * top_percent / 100) layers of highest ``metric``.

    ``metric`` 'snr' is Spectrum's signal-to-noise ratio (every analysis has it); any numeric
    column works ('alpha', 'alpha_hill', ...: higher chosen first). A layer without a finite
    metric is not chosen (Spectrum scores it NaN and sorts it arbitrarily).
    """
    top_percent = _number("top_percent", top_percent, 0, 100)
    vec = layer_metric(analysis, metric)
    types = np.array([module_type(n) for n in vec.names], dtype=object)
    ok = vec.ok
    chosen = np.zeros(len(vec.names), dtype=bool)
    chosen[ok] = allocate(vec.values[ok], top_percent, "top", groups=types[ok])
    details = pd.DataFrame({"name": vec.names, "type": types, metric: vec.values,
                            "chosen": chosen})
    return Trainable(names=[n for n, c in zip(vec.names, chosen) if c], details=details,
                     metric=metric, top_percent=top_percent)


__all__ = ["GGML_TYPES", "QUANTIZE_FORMATS", "BitAllocation", "Trainable", "allocate_bits",
           "allocate_experts", "bit_costs", "module_type", "select_trainable"]
