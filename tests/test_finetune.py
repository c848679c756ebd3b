"""Fine-tune deltas (base_model=) and LoRA adapters (peft=) equal WeightWatcher 0.7.7's numbers;
layers are matched by name across formats; bad input gives a reason per layer or one line."""

import json

import numpy as np
import pytest
import torch
from oracles import mtcnn_path, ww_small_n
from safetensors.numpy import save_file
from torch import nn

import tailscope
from tailscope.compat import WeightWatcher
from tailscope.sources import SourceError
from tailscope.spectrum import lowrank_eigenvalues


def ww_analyze(model, small_n="off", **kwargs):
    """WeightWatcher 0.7.7's analyze; the model goes to analyze() too, because its
    ``analyze(base_model=)`` is silently ignored when the model came through the constructor.
    ``small_n='off'``: with tailscope's own defaults (see ``oracles.ww_small_n``)."""
    if small_n == "off":
        kwargs.setdefault("min_evals", 10)
    with ww_small_n(small_n) as ww:
        return ww.WeightWatcher().analyze(model=model, **kwargs)


def fine_tuned_onet(seed=0, scale=0.01):
    """The real MTCNN ONet weights and a perturbed copy (every weight and bias moved)."""
    base = torch.load(mtcnn_path("onet"), weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    tuned = {k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous()
             for k, v in base.items()}  # contiguous: safetensors.numpy writes raw buffers
    return base, tuned


def test_delta_equals_weightwatcher_base_model():
    base, tuned = fine_tuned_onet()
    ref = ww_analyze(tuned, base_model=base).set_index("name")
    ours = tailscope.analyze(tuned, base_model=base).details.set_index("module")
    assert sorted(ours.index) == sorted(ref.index)
    ours = ours.loc[ref.index]
    assert (ours["status"] == "success").all()
    for col in ("alpha", "D", "xmin", "lambda_max", "log_norm", "stable_rank"):
        np.testing.assert_allclose(ours[col], ref[col], rtol=1e-6, err_msg=col)
    np.testing.assert_array_equal(ours["num_evals"], ref["num_evals"])


def test_delta_is_w_minus_w_base_across_formats_prefixes_and_shards(tmp_path):
    base, tuned = fine_tuned_onet(seed=1)
    expected = tailscope.analyze(tuned, base_model=base).details
    # the model as a sharded safetensors folder with a 'model.' prefix, the base a torch file
    names = list(tuned)
    half = len(names) // 2
    folder = tmp_path / "tuned"
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({f"model.{k}": tuned[k].numpy() for k in keys}, str(folder / shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {f"model.{k}": s for s, keys in shards.items() for k in keys}}))
    torch.save(base, tmp_path / "base.pt")
    ours = tailscope.analyze(folder, base_model=tmp_path / "base.pt").details
    assert list(ours["name"]) == ["model." + n for n in expected["name"]]  # model order
    np.testing.assert_allclose(ours["alpha"], expected["alpha"], rtol=1e-9)
    # and the ESD is that of W - W_base
    w = (tuned["dense5.weight"] - base["dense5.weight"]).double().numpy()
    analysis = tailscope.analyze(folder, base_model=tmp_path / "base.pt", layers=["*dense5*"])
    np.testing.assert_allclose(analysis.esd("model.dense5.weight"),
                               np.sort(np.linalg.svd(w, compute_uv=False) ** 2), rtol=1e-5)


def test_unmatched_or_reshaped_layers_fail_with_their_reason_and_identical_models_are_zero(
        tmp_path):
    rng = np.random.default_rng(0)
    model = {"enc.a.weight": rng.standard_normal((60, 30)).astype(np.float32),
             "enc.b.weight": rng.standard_normal((50, 40)).astype(np.float32),
             "enc.new_head.weight": rng.standard_normal((40, 20)).astype(np.float32),
             "enc.a.bias": rng.standard_normal(60).astype(np.float32)}
    base = {"enc.a.weight": model["enc.a.weight"].copy(),
            "enc.b.weight": rng.standard_normal((50, 30)).astype(np.float32)}
    save_file(model, str(tmp_path / "m.safetensors"))
    save_file(base, str(tmp_path / "b.safetensors"))
    analysis = tailscope.analyze(tmp_path / "m.safetensors", base_model=tmp_path / "b.safetensors")
    d = analysis.details.set_index("name")
    assert (d["status"] == "failed").all()
    assert "all-zero matrix" in d.loc["enc.a.weight", "reason"]  # identical: no made-up numbers
    assert np.isnan(d.loc["enc.a.weight", "alpha"])
    assert "(50, 40) here but (50, 30) in the base model" in d.loc["enc.b.weight", "reason"]
    assert "no layer named 'enc.new_head.weight' in the base model" in \
        d.loc["enc.new_head.weight", "reason"]
    table = tailscope.describe(tmp_path / "m.safetensors", base_model=tmp_path / "b.safetensors")
    assert list(table[table["analyze"]]["name"]) == list(d.index)


def test_compat_base_model_in_the_constructor():
    base, tuned = fine_tuned_onet(seed=2)
    details = WeightWatcher(model=tuned, base_model=base).analyze()
    ref = ww_analyze(tuned, "intended", base_model=base)  # the facade: WeightWatcher 0.7.7's
    np.testing.assert_allclose(details["alpha"], ref["alpha"], rtol=1e-6)


# --- LoRA ---------------------------------------------------------------------------------------
class LoraLinear(nn.Module):
    """The layout of a PEFT-wrapped Linear: base_layer, lora_A, lora_B (as WeightWatcher reads)."""

    def __init__(self, n_in, n_out, r):
        super().__init__()
        self.base_layer = nn.Linear(n_in, n_out)
        self.lora_A = nn.Linear(n_in, r, bias=False)
        self.lora_B = nn.Linear(r, n_out, bias=False)
        nn.init.normal_(self.lora_B.weight, std=0.05)  # PEFT starts B at 0: as if trained


class LoraNet(nn.Module):
    def __init__(self, r=16):
        super().__init__()
        torch.manual_seed(0)
        self.q = LoraLinear(96, 64, r)
        self.v = LoraLinear(64, 128, r)
        self.out = nn.Linear(128, 16)


def test_lora_ba_layers_equal_weightwatcher_peft():
    net = LoraNet()
    ref = ww_analyze(net, peft=True).set_index("longname")
    ours = tailscope.analyze(net, peft=True).details.set_index("module")
    assert list(ours.index) == list(ref.index) == ["q.lora_BA", "v.lora_BA"]
    np.testing.assert_allclose(ours["alpha"], ref["alpha"], rtol=1e-6)
    np.testing.assert_allclose(ours["lambda_max"], ref["lambda_max"], rtol=1e-6)
    assert list(ours["num_evals"]) == list(ref["num_evals"]) == [16, 16]  # rank, as svds(k=r)
    assert list(ours["M"]) == list(ref["M"])


def test_lora_with_base_rows_equal_weightwatcher_where_the_same():
    net = LoraNet()
    ref = ww_analyze(net, peft="with_base").set_index("longname")
    ours = tailscope.analyze(net, peft="with_base").details.set_index("module")
    assert list(ours.index) == ["q.base_layer", "q.lora_BA", "q.lora_W_plus_AB", "v.base_layer",
                                "v.lora_BA", "v.lora_W_plus_AB", "out"]
    same = ["q.base_layer", "q.lora_BA", "v.base_layer", "v.lora_BA", "out"]
    np.testing.assert_allclose(ours.loc[same, "alpha"], ref.loc[same, "alpha"], rtol=1e-6)
    # W + BA: the full spectrum (WeightWatcher keeps only its top r = 16 eigenvalues)
    sd = net.state_dict()
    merged = sd["q.base_layer.weight"].double() + \
        sd["q.lora_B.weight"].double() @ sd["q.lora_A.weight"].double()
    analysis = tailscope.analyze(net, peft="with_base")
    np.testing.assert_allclose(analysis.esd("q.lora_W_plus_AB"),
                               np.sort(np.linalg.svd(merged.numpy(), compute_uv=False) ** 2),
                               rtol=1e-9)
    assert ours.loc["q.lora_W_plus_AB", "num_evals"] == 64
    assert ref.loc["q.lora_W_plus_AB", "num_evals"] == 16


def _adapter_folder(tmp_path, net, alpha=None):
    sd = net.state_dict()
    folder = tmp_path / "adapter"
    folder.mkdir()
    tensors = {f"base_model.model.{m}.lora_{ab}.weight": sd[f"{m}.lora_{ab}.weight"].numpy()
               for m in ("q", "v") for ab in "AB"}
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    if alpha is not None:
        (folder / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "r": 16, "lora_alpha": alpha, "target_modules": ["q", "v"]}))
    base = {k.replace(".base_layer", ""): v for k, v in sd.items() if "lora_" not in k}
    return folder, base


def test_adapter_folder_scaled_by_alpha_over_r_and_merged_onto_its_base(tmp_path):
    net = LoraNet()
    plain = tailscope.analyze(net, peft="only").details
    folder, base = _adapter_folder(tmp_path, net, alpha=32)  # scale 32 / 16 = 2
    scaled = tailscope.analyze(folder, peft="only").details
    assert list(scaled["module"]) == ["base_model.model.q.lora_BA", "base_model.model.v.lora_BA"]
    np.testing.assert_allclose(scaled["alpha"], plain["alpha"], rtol=1e-9)  # scale-free
    np.testing.assert_allclose(scaled["lambda_max"], 4 * plain["lambda_max"], rtol=1e-9)
    analysis = tailscope.analyze(folder, peft="with_base", base_model=base)
    d = analysis.details  # every base layer, each adapted one followed by its two LoRA rows
    assert list(d["module"]) == ["q", "base_model.model.q.lora_BA",
                                 "base_model.model.q.lora_W_plus_AB", "v",
                                 "base_model.model.v.lora_BA",
                                 "base_model.model.v.lora_W_plus_AB", "out"]
    sd = net.state_dict()
    merged = sd["v.base_layer.weight"].double() + \
        2 * sd["v.lora_B.weight"].double() @ sd["v.lora_A.weight"].double()
    np.testing.assert_allclose(analysis.esd("base_model.model.v.lora_W_plus_AB"),
                               np.sort(np.linalg.svd(merged.numpy(), compute_uv=False) ** 2),
                               rtol=1e-9)


def test_lora_bad_input(tmp_path):
    net = LoraNet()
    folder, base = _adapter_folder(tmp_path, net)
    with pytest.raises(SourceError, match="with_base.*pass base_model="):
        tailscope.analyze(folder, peft="with_base")  # an adapter holds no base weights
    with pytest.raises(ValueError, match="peft must be"):
        tailscope.analyze(folder, peft="yes")
    with pytest.raises(ValueError, match="base_model= is used with peft='with_base'"):
        tailscope.analyze(folder, peft="only", base_model=base)
    with pytest.raises(SourceError, match="no LoRA layers"):
        tailscope.analyze(base, peft=True)
    del base["v.weight"]
    d = tailscope.analyze(folder, peft="with_base", base_model=base).details.set_index("module")
    assert d.loc["base_model.model.q.lora_W_plus_AB", "status"] == "success"
    assert d.loc["base_model.model.v.lora_BA", "status"] == "success"
    assert "no base weight for 'base_model.model.v'" in \
        d.loc["base_model.model.v.lora_W_plus_AB", "reason"]
    lone = {"x.lora_A.weight": np.ones((4, 30), np.float32)}
    row = tailscope.analyze(lone, peft=True, min_evals=1).details.iloc[0]
    assert row["status"] == "failed" and "lora_A of 'x' without its lora_B" in row["reason"]


@pytest.mark.parametrize("shape", [(300, 8, 200), (50, 12, 400), (40, 60, 30)])
def test_lowrank_eigenvalues_are_those_of_the_product(shape):
    n, r, m = shape
    rng = np.random.default_rng(n + r + m)
    b, a = rng.standard_normal((n, r)), rng.standard_normal((r, m))
    dense = np.sort(np.linalg.svd(b @ a, compute_uv=False) ** 2)[-min(n, m, r):]
    np.testing.assert_allclose(lowrank_eigenvalues(b, a), dense, rtol=1e-10)


@pytest.mark.slow  # fresh processes
def test_cli_analyze_base_and_peft(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                              text=True, timeout=300)

    rng = np.random.default_rng(1)
    base = {"l.weight": rng.standard_normal((80, 40)).astype(np.float32)}
    tuned = {"model.l.weight": base["l.weight"] + 0.1 * rng.standard_normal((80, 40)).astype(
        np.float32)}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    res = run("analyze", str(tmp_path / "tuned.safetensors"), "--base",
              str(tmp_path / "base.safetensors"), "--out", str(tmp_path / "d.csv"))
    assert res.returncode == 0, res.stderr
    expected = tailscope.analyze(tmp_path / "tuned.safetensors",
                                 base_model=tmp_path / "base.safetensors").details
    import pandas as pd

    np.testing.assert_allclose(pd.read_csv(tmp_path / "d.csv")["alpha"], expected["alpha"],
                               rtol=1e-12)
    folder, _ = _adapter_folder(tmp_path, LoraNet(), alpha=16)
    res = run("analyze", str(folder), "--peft", "only", "--min-evals", "1")
    assert res.returncode == 0, res.stderr
    assert "base_model.model.q.lora_BA" in res.stdout
    res = run("analyze", str(folder), "--peft", "with_base")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "pass base_model=" in res.stderr


def test_name_matching_rules():
    from tailscope.sources.derived import NameIndex

    def refs(*names):
        return tailscope.open_source({n: np.zeros((4, 4), np.float32) for n in names}).refs

    index = NameIndex(refs("model.layers.0.q.weight", "layers.0.q.weight", "bert.encoder.k.weight",
                           "lm_head.weight", "a.x.weight", "b.x.weight", "blk.v.base_layer.weight"))
    assert index.find("layers.0.q.weight")[0].name == "layers.0.q.weight"  # exact first
    assert index.find("base_model.model.lm_head.weight")[0].name == "lm_head.weight"
    assert index.find("encoder.k.weight")[0].name == "bert.encoder.k.weight"  # dotted suffix
    assert index.find("blk.v.weight")[0].name == "blk.v.base_layer.weight"
    assert index.find("module.layers.0.q.weight")[0] is None  # two base layers match
    assert "2 base layers" in index.find("module.layers.0.q.weight")[1]
    ref, why = index.find("x.weight")
    assert ref is None and "end like" in why
    assert index.find("x.weigh")[0] is None  # never a partial-segment match
