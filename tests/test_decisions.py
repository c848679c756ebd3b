"""The decisions taken from the spectra (issue #23): bits per layer (AlphaQ), LoRA experts per
block (AlphaLoRA), layers to unfreeze (Spectrum), intruder dimensions (PEFT), each against an
independent exact solve or the reference's own code (transcribed where it cannot be installed:
AlphaQ needs PuLP and a GPU pipeline, spectrum.py loads a model from the hub)."""

from __future__ import annotations

import copy
import itertools
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import tailscope as ts
from tailscope.edit.allocate import milp_rule, power_rule
from tailscope.edit.decisions import bit_costs, module_type
from tailscope.spectrum import spectrum_snr

BITS = np.array([2.0, 3.0, 4.0])


# --- references, transcribed -----------------------------------------------------------------------
def alphaq_costs(alphas, variances, candidate_bits, gamma):
    """Superone77/AlphaQ main.py build_and_solve_global_milp's cost table, line by line."""
    alpha0 = float(pd.Series(alphas).median())
    eps = 1e-8
    sensitivities = [((alpha0 / max(a, eps)) ** gamma) for a in alphas]
    clamped = [max(v, 1e-12) for v in variances]
    q = {b: 2.0 ** (-2 * b) for b in candidate_bits}
    return [[sensitivities[i] * clamped[i] * q[b] for b in candidate_bits]
            for i in range(len(alphas))]


def brute_force(cost, weights, budget):
    """The exact optimum by enumeration: (best cost, every optimal assignment's mean)."""
    n = len(cost)
    best = np.inf
    for combo in itertools.product(range(len(BITS)), repeat=n):
        idx = np.array(combo)
        if np.sum(weights * BITS[idx]) <= budget * weights.sum() * (1 + 1e-12):
            best = min(best, float(np.sum(cost[np.arange(n), idx])))
    return best


def spectrum_py_snr(weights):
    """cognitivecomputations/spectrum spectrum.py calculate_snr_for_layer, on one weight."""
    import torch

    S = torch.linalg.svdvals(weights)
    max_singular_value = S[0]
    q75, q25 = torch.quantile(S, 0.75), torch.quantile(S, 0.25)
    sigma_estimated = (q75 - q25) / 1.349
    n, m = weights.shape[-2:]
    beta = n / m if n < m else m / n
    mp_threshold = sigma_estimated * np.sqrt((1 + np.sqrt(beta)) ** 2)
    signal_mask = S > mp_threshold
    noise_mask = ~signal_mask
    signal = S[signal_mask].sum() if signal_mask.any() else torch.tensor(0.0)
    noise = S[noise_mask].sum() if noise_mask.any() else torch.tensor(1.0)
    snr = signal / noise if noise != 0 else float("inf")
    return (snr / max_singular_value).item(), S.numpy()


def spectrum_py_yaml(snr_data, top_percent):
    """spectrum.py generate_unfrozen_params_yaml, writing to a string."""
    unfrozen = {}
    for layer_name, info in snr_data.items():
        unfrozen.setdefault(info["type"], []).append((layer_name, info["snr"]))
    top = {}
    for layer_type, layers in unfrozen.items():
        layers_sorted = sorted(layers, key=lambda x: x[1], reverse=True)
        top[layer_type] = [x[0] for x in layers_sorted[:int(len(layers) * top_percent / 100)]]
    out = "unfrozen_parameters:\n- ^lm_head.weight$\n- ^model.embed_tokens.weight$\n"
    for layer_type, names in top.items():
        out += f"# {layer_type} layers\n" + "".join(f"- {n}\n" for n in names)
    return out


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    from tailscope.datasets import minilm_path

    return minilm_path()


@pytest.fixture(scope="module")
def minilm_analysis(minilm):
    return ts.analyze(minilm, farms=True, hill=True,
                      layers=["encoder.layer.0.*", "encoder.layer.1.*"])


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """A small Mixtral-layout MoE: 2 blocks, attention, a router and 4 experts of 3 matrices."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    t = {}
    for b in range(2):
        p = f"model.layers.{b}."
        for name, shape in (("self_attn.q_proj", (64, 64)), ("self_attn.k_proj", (32, 64)),
                            ("self_attn.v_proj", (32, 64)), ("self_attn.o_proj", (64, 64)),
                            ("block_sparse_moe.gate", (4, 64))):
            t[p + name + ".weight"] = rng.standard_t(3 + b, size=shape).astype(np.float32)
        for e in range(4):
            for w, shape in (("w1", (96, 64)), ("w2", (64, 96)), ("w3", (96, 64))):
                t[f"{p}block_sparse_moe.experts.{e}.{w}.weight"] = (
                    rng.standard_t(2.5 + e, size=shape) * 0.02).astype(np.float32)
    path = tmp_path_factory.mktemp("moe") / "model.safetensors"
    save_file(t, str(path))
    return path, t


# --- the allocation core and the bits' integer program ---------------------------------------------
def test_bit_costs_equal_alphaq_reference():
    rng = np.random.default_rng(0)
    alphas, var = rng.uniform(1.5, 8, 40), rng.uniform(1e-5, 1e-2, 40)
    alphas[3], var[5] = 0.0, 0.0  # the reference's clamps
    ref = np.array(alphaq_costs(alphas.tolist(), var.tolist(), [2, 3, 4], 10.0))
    np.testing.assert_allclose(bit_costs(alphas, var, BITS, 10.0), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_milp_equals_brute_force(seed, weighted):
    rng = np.random.default_rng(seed)
    n = 7
    cost = bit_costs(rng.uniform(2, 6, n), rng.uniform(1e-4, 1e-2, n), BITS,
                     float(rng.choice([1.0, 10.0])))
    weights = rng.integers(1, 50, n).astype(float) * 1000 if weighted else np.ones(n)
    for budget in (2.0, 2.4, 3.0, 3.5, 3.9, 4.0):
        pick = milp_rule(cost, budget, choices=BITS, weights=weights)
        assert np.sum(weights * BITS[pick]) <= budget * weights.sum() * (1 + 1e-12)
        got = float(np.sum(cost[np.arange(n), pick]))
        assert got == pytest.approx(brute_force(cost, weights, budget), rel=1e-12)


def test_milp_equals_dynamic_programme_on_moe(moe):
    analysis = ts.analyze(moe[0], farms=True)
    bits = ts.allocate_bits(analysis, budget=3.2, weighted=False)
    d = analysis.details.set_index("name")
    ok = bits.notna()
    assert ok.sum() == len(d) - d["alpha_farms"].isna().sum()
    cost = bit_costs(d.loc[ok[ok].index, "alpha_farms"].to_numpy(),
                     d.loc[ok[ok].index, "weight_var"].to_numpy(), BITS, 10.0)
    # independent exact solve: a dynamic programme over the integer bit total
    cap = int(np.floor(3.2 * len(cost) + 1e-9))
    best = {0: 0.0}
    for row in cost:
        nxt = {}
        for total, c in best.items():
            for b, cb in zip(BITS.astype(int), row):
                if total + b <= cap and c + cb < nxt.get(total + b, np.inf):
                    nxt[total + b] = c + cb
        best = nxt
    assert bits.attrs["cost"] == pytest.approx(min(best.values()), rel=1e-12)
    assert bits[ok].sum() <= cap


def test_allocate_bits_refuses_bad_input():
    d = pd.DataFrame({"name": ["a.weight", "b.weight", "c.weight"], "N": 8, "M": 4, "rf": 1,
                      "alpha_farms": [2.0, 3.0, np.nan], "weight_var": [1e-3, 2e-3, 1e-3]})
    with pytest.raises(ValueError, match="below the smallest width"):
        ts.allocate_bits(d, budget=1.5)
    with pytest.raises(ValueError, match="bits must be positive integers"):
        ts.allocate_bits(d, bits=(0, 4))
    with pytest.raises(ValueError, match="analyze with farms=True"):
        ts.allocate_bits(d.drop(columns="alpha_farms"))
    with pytest.raises(ValueError, match="budget must be"):
        ts.allocate_bits(d, budget=float("nan"))
    with pytest.raises(ValueError, match="several rows"):
        ts.allocate_bits(pd.concat([d, d]))
    bits = ts.allocate_bits(d, budget=3.0)  # a layer without alpha is not allocated
    assert np.isnan(bits["c.weight"]) and bits.attrs["mean_bits"] <= 3.0
    assert bits.dropna().isin([2.0, 3.0, 4.0]).all()


@pytest.mark.slow
@pytest.mark.parametrize("weighted", [False, True])
def test_allocate_bits_minilm_brute_force(minilm, minilm_analysis, weighted):
    from safetensors.numpy import load_file

    raw = load_file(str(minilm))
    d = minilm_analysis.details
    for name, var in zip(d["name"], d["weight_var"]):  # Var(W) as the reference: torch.var
        assert var == pytest.approx(float(np.var(raw[name].astype(np.float64))), rel=1e-12)
    bits = ts.allocate_bits(minilm_analysis, budget=3.3, weighted=weighted)
    cost = bit_costs(d["alpha_farms"].to_numpy(), d["weight_var"].to_numpy(), BITS, 10.0)
    w = (d["N"] * d["M"]).to_numpy(float) if weighted else np.ones(len(d))
    combos = np.array(list(itertools.product(range(3), repeat=len(d))))  # 3^12 assignments
    feasible = (BITS[combos] * w).sum(axis=1) <= 3.3 * w.sum() * (1 + 1e-12)
    totals = cost[np.arange(len(d)), combos[feasible]].sum(axis=1)
    assert bits.attrs["cost"] == pytest.approx(totals.min(), rel=1e-12)
    pick = bits.map({2.0: 0, 3.0: 1, 4.0: 2}).to_numpy()
    assert cost[np.arange(len(d)), pick].sum() == pytest.approx(totals.min(), rel=1e-12)


# --- exports ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_exports_name_only_existing_tensors(minilm_analysis):
    import gguf
    import yaml
    from compressed_tensors.quantization import QuantizationConfig

    bits = ts.allocate_bits(minilm_analysis, budget=3.0)
    names = list(minilm_analysis.details["name"])
    modules = [n.removesuffix(".weight") for n in names]
    # llama.cpp: every override names the GGUF tensor of one of our tensors, with its bits
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, 6)
    gguf_of = {tmap.get_name(n, try_suffixes=(".weight",)): n for n in names}
    overrides = bits.to_llama_cpp(arch="bert")
    assert len(overrides) == len(names)
    for o in overrides:
        pattern, typ = o.rsplit("=", 1)
        hits = [g for g in gguf_of if re.search(pattern, g)]
        assert len(hits) == 1
        assert typ == {2: "q2_K", 3: "q3_K", 4: "q4_K"}[int(bits[gguf_of[hits[0]]])]
    # llm-compressor: compressed-tensors' own schema, each module targeted exactly once
    recipe = yaml.safe_load(yaml.safe_dump(bits.to_llm_compressor()))
    groups = recipe["quant_stage"]["quant_modifiers"]["QuantizationModifier"]["config_groups"]
    config = QuantizationConfig.model_validate({"config_groups": groups})
    seen = []
    for scheme in config.config_groups.values():
        for target in scheme.targets:
            hit = [m for m in modules if re.match(target.removeprefix("re:"), m)]
            assert len(hit) == 1
            assert int(bits[hit[0] + ".weight"]) == scheme.weights.num_bits
            seen += hit
    assert sorted(seen) == sorted(modules)
    # GPTQModel: the default bits plus one override per other module
    g = bits.to_gptqmodel()
    for key, value in g["dynamic"].items():
        hit = [m for m in modules if re.match(key.removeprefix("+:"), m)]
        assert len(hit) == 1 and int(bits[hit[0] + ".weight"]) == value["bits"] != g["bits"]
    assert len(g["dynamic"]) == int((bits != g["bits"]).sum())


def test_moe_experts_map_to_stacked_gguf_tensors(moe):
    analysis = ts.analyze(moe[0], farms=True)
    bits = ts.allocate_bits(analysis, budget=3.0)
    overrides = dict(o.rsplit("=", 1) for o in bits.to_llama_cpp(arch="llama"))
    assert r"^blk\.0\.ffn_down_exps\.weight$" in overrides
    # the stacked tensor gets the largest bits of its experts
    experts = [f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight" for e in range(4)]
    best = int(bits[experts].max())
    assert overrides[r"^blk\.0\.ffn_down_exps\.weight$"] == {2: "q2_K", 3: "q3_K",
                                                             4: "q4_K"}[best]


@pytest.mark.slow
def test_cli_quantize_plan(minilm):
    import yaml

    cmd = [sys.executable, "-m", "tailscope", "quantize-plan", str(minilm), "--layers",
           "encoder.layer.0.*", "--budget", "3", "--format", "llm-compressor"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "config_groups" in yaml.safe_load(out.stdout)["quant_stage"]["quant_modifiers"][
        "QuantizationModifier"]
    bad = subprocess.run(cmd[:5] + ["--bits", "2,x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


# --- experts (AlphaLoRA) ---------------------------------------------------------------------------
def test_power_rule_is_the_rounded_share_and_sums_to_total():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.uniform(2, 8, rng.integers(2, 40))
        total = int(rng.integers(a.size, 400))
        n = power_rule(a, total, beta=2.5)
        ideal = total * a ** 2.5 / np.sum(a ** 2.5)
        assert n.sum() == total and (n >= 1).all()
        rounded = np.maximum(np.round(ideal), 1)
        if rounded.sum() == total:  # nothing to adjust: the formula itself
            np.testing.assert_array_equal(n, rounded)
        assert np.abs(n - ideal).max() < 1 + 1e-12 or (n == 1).any()


def test_allocate_experts_on_moe(moe):
    analysis = ts.analyze(moe[0], hill=True)
    s = ts.allocate_experts(analysis, total=40, beta=2.5)
    assert list(s.index) == ["model.layers.0", "model.layers.1"] and s.sum() == 40
    d = analysis.details
    means = [d[d["name"].str.startswith(b + ".")]["alpha_hill"].mean() for b in s.index]
    ideal = 40 * np.array(means) ** 2.5 / np.sum(np.array(means) ** 2.5)
    assert np.abs(s.to_numpy() - ideal).max() <= 1
    assert s.attrs["top_k"] == {b: (2 if n > 1 else 1) for b, n in s.items()}


# --- layers to unfreeze (Spectrum) -----------------------------------------------------------------
def test_snr_equals_spectrum_py_on_the_same_singular_values():
    import torch

    rng = np.random.default_rng(5)
    for shape in ((50, 30), (30, 50), (64, 64), (200, 17)):
        w = torch.from_numpy(rng.standard_t(3, size=shape))
        ref, s = spectrum_py_snr(w)
        assert spectrum_snr(s, *shape) == pytest.approx(ref, rel=1e-12)
    assert spectrum_snr(np.zeros(0), 3, 3) != spectrum_snr(np.zeros(0), 3, 3)  # NaN


@pytest.mark.slow
def test_snr_column_and_selection_equal_spectrum_py_on_minilm(minilm, minilm_analysis):
    import torch
    import yaml
    from safetensors.numpy import load_file

    raw = load_file(str(minilm))
    d = minilm_analysis.details
    snr_data = {}
    for name, snr in zip(d["name"], d["snr"]):
        ref, s = spectrum_py_snr(torch.from_numpy(raw[name].astype(np.float64)))
        assert spectrum_snr(s, *raw[name].shape) == pytest.approx(ref, rel=1e-12)
        assert snr == pytest.approx(ref, rel=1e-9)  # our S from the Gram's eigenvalues
        snr_data[name.removesuffix(".weight")] = {"snr": ref,
                                                   "type": module_type(name)}
    sel = ts.select_trainable(minilm_analysis, top_percent=50)
    assert sel.to_axolotl() == spectrum_py_yaml(snr_data, 50)
    parsed = yaml.safe_load(sel.to_axolotl())["unfrozen_parameters"]
    assert set(parsed[2:]) == {n.removesuffix(".weight") for n in sel.names}
    assert set(sel.names) <= set(d["name"]) and len(sel.names) == len(d) // 2
    assert sel.to_peft() == [n.removesuffix(".weight") for n in sel.names]
    by_alpha = ts.select_trainable(minilm_analysis, top_percent=50, metric="alpha")
    assert len(by_alpha.names) == len(d) // 2


# --- intruder dimensions (PEFT) --------------------------------------------------------------------
@pytest.mark.slow
def test_intruders_equal_peft():
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(24, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 16)).double()
    base_sd = {k: v.numpy().copy() for k, v in base.state_dict().items()}
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8,
                                                        target_modules=["0", "2"]))
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.8)
    merged = {k: v.numpy().copy() for k, v in
              copy.deepcopy(pm).merge_and_unload().state_dict().items()}
    logs = []
    reduce_intruder_dimension(pm, top_k=10, threshold_epsilon=0.5, mitigation_lambda=0.75,
                              logging_sink=logs.append)
    after = {k: v.numpy() for k, v in copy.deepcopy(pm).merge_and_unload().state_dict().items()}
    df = ts.intruders(merged, base_sd).set_index("name")
    peft_counts = {m.group(1) + ".weight": int(m.group(2)) for m in
                   (re.match(r"base_model\.model\.(\S+): Intruders: (\d+)", s) for s in logs) if m}
    assert peft_counts and peft_counts == df["num_intruders"].to_dict()
    edited = ts.reduce_intruders(merged, base_sd, lambda_=0.75)
    for name in ("0.weight", "2.weight"):
        w = base_sd[name]
        u, s, vt = np.linalg.svd(edited.weights[name] - w, full_matrices=False)
        refactored = w + (u[:, :4] * s[:4]) @ vt[:4]  # PEFT's rank-r refactorisation
        np.testing.assert_allclose(refactored, after[name], rtol=0, atol=1e-12)
        assert not np.allclose(edited.weights[name], merged[name])
    assert np.array_equal(edited.weights["0.bias"], merged["0.bias"])


@pytest.mark.slow
def test_intruders_of_the_model_itself_are_none_and_mismatches_have_reasons(moe):
    path, t = moe
    df = ts.intruders(path, path, top_k=5)
    assert (df["num_intruders"] == 0).all() and (df["status"] == "unchanged").all()
    assert np.allclose(np.vstack(df["cos_sim"]), 1.0)
    other = {k: v for k, v in t.items() if "q_proj" not in k}
    df2 = ts.intruders(path, other).set_index("name")
    assert (df2.loc["model.layers.0.self_attn.q_proj.weight", "status"] == "failed")
    with pytest.raises(ValueError, match="top_k"):
        ts.intruders(path, path, top_k=0)


# --- the fine-tune against its base ----------------------------------------------------------------
@pytest.mark.slow
def test_compare_to_base_and_report(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    base = {f"model.layers.{i}.mlp.down_proj.weight":
            rng.standard_t(3, size=(96, 64)).astype(np.float32) for i in range(3)}
    tuned = {k: v + 3 * np.outer(rng.normal(size=96), rng.normal(size=64)).astype(np.float32)
             for k, v in base.items()}
    save_file(base, str(tmp_path / "b.safetensors"))
    save_file(tuned, str(tmp_path / "t.safetensors"))
    t = ts.compare_to_base(tmp_path / "t.safetensors", tmp_path / "b.safetensors")
    a_t = ts.analyze(tmp_path / "t.safetensors").details.set_index("name")["alpha"]
    a_b = ts.analyze(tmp_path / "b.safetensors").details.set_index("name")["alpha"]
    t = t.set_index("name")
    np.testing.assert_array_equal(t["alpha"], a_t[t.index])
    np.testing.assert_array_equal(t["delta_alpha"], a_t[t.index] - a_b[t.index])
    # a planted rank-1 change far from the base's singular vectors: one intruder per layer
    assert (t["num_intruders"] == 1).all()
    assert t["reason"].str.contains("nothing to fit").all()  # W - W_base is rank 1
    out = subprocess.run([sys.executable, "-m", "tailscope", "report",
                          str(tmp_path / "t.safetensors"), "--base",
                          str(tmp_path / "b.safetensors"), "-o", str(tmp_path / "r.html"),
                          "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Compared to the base model" in (tmp_path / "r.html").read_text()


def test_fused_expert_rows_are_keyed_and_exported_per_tensor():
    rng = np.random.default_rng(2)
    name = "model.layers.0.mlp.experts.down_proj"
    # the rows of a fused stack as sources.moe names them
    d = pd.DataFrame({"name": [f"{name}[e{e}]" for e in range(4)]
                      + ["model.layers.0.self_attn.q_proj.weight"],
                      "expert": [0, 1, 2, 3, np.nan], "N": 64, "M": 32, "rf": 1,
                      "alpha_farms": rng.uniform(2, 6, 5), "weight_var": 1e-3})
    bits = ts.allocate_bits(d, budget=3.0)
    assert list(bits.index[:2]) == [f"{name}[e0]", f"{name}[e1]"]
    g = bits.to_gptqmodel()
    per = {m: b for m, b in [(k.removeprefix("+:"), v["bits"]) for k, v in g["dynamic"].items()]}
    top = int(bits.iloc[:4].max())
    assert per.get(re.escape(name).join("^$"), g["bits"]) == top
    overrides = dict(o.rsplit("=", 1) for o in bits.to_llama_cpp(arch="llama"))
    assert overrides[r"^blk\.0\.ffn_down_exps\.weight$"] == {2: "q2_K", 3: "q3_K",
                                                             4: "q4_K"}[top]


@pytest.mark.slow  # imports gptqmodel (~5 s)
def test_gptqmodel_export_is_a_quantize_config_gptqmodel_resolves(gptqmodel):
    """GPTQModel's own QuantizeConfig takes the export, and its dynamic_get gives every module
    the bits allocated to it (the default bits where there is no override)."""
    rng = np.random.default_rng(5)
    names = [f"model.layers.{b}.{m}.weight" for b in range(4)
             for m in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")]
    d = pd.DataFrame({"name": names, "N": 96, "M": 64, "rf": 1,
                      "alpha_farms": rng.uniform(2, 6, len(names)), "weight_var": 1e-3})
    bits = ts.allocate_bits(d, budget=3.0)
    assert len(set(bits)) > 1  # a plan with overrides
    config = gptqmodel.QuantizeConfig(**bits.to_gptqmodel())
    for name, b in bits.items():
        module = name.removesuffix(".weight")
        got = config.dynamic_get(layer_name=module, key="bits", default=config.bits)
        assert got == int(b), (module, got, b)
