"""bench/big_model.py and bench/gpu.py: the checkpoint they write (read back with the safetensors
library, against an independent draw), and each script end to end on tiny shapes (gpu.py without
CUDA: its one line; with --device torch:cpu: the whole comparison)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import big_model  # noqa: E402
import gpu  # noqa: E402
import moe_model  # noqa: E402


def script(name: str, *args, timeout: int = 300):
    return subprocess.run([sys.executable, str(BENCH / name), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_the_checkpoint_reads_back_as_an_independent_draw(tmp_path):
    from safetensors.numpy import load_file

    shape = {"hidden": 64, "inter": 172, "vocab": 300}
    size = big_model.write_checkpoint(tmp_path / "a", 2, seed=7, **shape)
    index = json.loads((tmp_path / "a" / "model.safetensors.index.json").read_text())
    names = [n for shard in big_model.tensor_specs(2, **shape) for n, _ in shard]
    assert list(index["weight_map"]) == names and size > 2 * 300 * 64 * 2
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(tmp_path / "a" / shard)))
    assert set(tensors) == set(names)
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"):
        t = tensors[name]
        rng = np.random.default_rng([7, zlib.crc32(name.encode())])  # one draw, not in chunks
        want = (rng.standard_t(3.0, size=t.shape) * 0.02).astype(np.float16)
        assert t.dtype == np.float16 and np.array_equal(t, want)
    assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (64, 172)
    assert np.all(tensors["model.norm.weight"] == 1)
    # shards written by two processes are the same bytes; a whole checkpoint is reused
    big_model.write_checkpoint(tmp_path / "b", 2, seed=7, processes=2, **shape)
    for f in (tmp_path / "a").glob("*.safetensors"):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    stamp = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "a").iterdir()}
    big_model.write_checkpoint(tmp_path / "a", 2, seed=7, **shape)
    assert stamp == {f.name: f.stat().st_mtime_ns for f in (tmp_path / "a").iterdir()}


@pytest.mark.slow  # three fresh processes (WeightWatcher, tailscope twice): ~35 s on 2 quiet cores
def test_big_model_end_to_end_against_weightwatcher(tmp_path):
    res = script("big_model.py", "--tiny", "--blocks", "2", "--dir", tmp_path,
                 "--json", tmp_path / "r.json")
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["ts_1block"]["rows"] == 9 and r["ts_full"]["rows"] == 16  # 7 per block + 2
    assert r["shared_layers_equal"] and r["ts_full"]["failed"] == 0
    assert 50 < r["ts_full"]["peak_rss_mb"] < 4000 and r["ts_full"]["wall_s"] > 0
    assert "load average" in r["load_start"] and "WeightWatcher / tailscope" in res.stdout
    assert not (tmp_path / "llama-tiny-2blocks").exists()  # deleted after the run
    # the same file through WeightWatcher 0.7.5.5: the same alpha per layer
    ww = pd.read_csv(tmp_path / "runs" / "ww-1block.csv")
    ts = pd.read_csv(tmp_path / "runs" / "ts-1block.csv")
    assert len(ww) == len(ts) == 9
    key = "longname" if "longname" in ww.columns else "name"
    ww_alpha = ww.set_index(ww[key].str.removesuffix(".weight"))["alpha"]
    ts_alpha = ts.set_index("module")["alpha"]
    assert set(ww_alpha.index) == set(ts_alpha.index)
    np.testing.assert_allclose(ts_alpha[ww_alpha.index], ww_alpha, rtol=1e-5)


@pytest.mark.skipif(gpu.cuda_state()[0], reason="a CUDA device is present")
def test_gpu_script_without_cuda_says_so_in_one_line(tmp_path):
    res = script("gpu.py", "--tiny", "--dir", tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("checkpoint: 2 blocks, hidden 256")  # the CPU side ran
    assert lines[1].startswith("gpu.py: no GPU here") and len(lines) == 2
    assert not list(tmp_path.glob("llama-*"))


@pytest.mark.slow  # three fresh processes importing torch: ~25 s on 2 quiet cores
def test_gpu_script_end_to_end_on_the_torch_cpu_path(tmp_path):
    res = script("gpu.py", "--tiny", "--blocks", "1", "--device", "torch:cpu", "--dir", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("gpu.py: passed")
    worst = float(re.search(r"largest relative difference cpu vs torch:cpu (\S+)",
                            res.stdout).group(1))
    assert worst <= 1e-6
    assert "subset (8 layers" in res.stdout and "9 layers (0 failed)" in res.stdout


def test_gpu_compare_flags_a_difference():
    cpu = pd.DataFrame({"name": ["a", "b"], "status": ["success"] * 2, "alpha": [2.5, 3.0],
                        "D": [0.1, 0.2], "xmin": [1.0, 2.0], "lambda_max": [9.0, 8.0]})
    same = cpu.copy()
    same["alpha"] *= 1 + 1e-9
    assert gpu.compare(cpu, same)[1:] == (2, [])
    off = cpu.copy()
    off.loc[1, "alpha"] = 3.0 * (1 + 1e-5)
    worst, n, bad = gpu.compare(cpu, off)
    assert n == 2 and worst == pytest.approx(1e-5) and bad and bad[0].startswith("b: alpha")
    failed = cpu.copy()
    failed.loc[0, "status"] = "failed"
    assert "a: status success vs failed" in gpu.compare(cpu, failed)[2]


def test_big_model_reads_analyze_progress_lines(tmp_path, monkeypatch):
    """--time-limit extrapolates from the last progress line the CLI writes to a log: the
    pattern must match what console.Progress writes."""
    import io

    from tailscope.util.console import Progress

    clock = iter([0.0, 15.0, 3725.0])
    monkeypatch.setattr("tailscope.util.console.time.monotonic", lambda: next(clock))
    log = io.StringIO()
    p = Progress("layers", stream=log)
    p(3, 226, "model.layers.0.mlp.up_proj.weight", failed=1)
    p(40, 226, "model.layers.5.self_attn.q_proj.weight")
    (tmp_path / "a.log").write_text("start\n" + log.getvalue() + "tailscope: interrupted\n")
    assert big_model.last_progress(tmp_path / "a.log") == (40, 226, 3725.0)
    (tmp_path / "b.log").write_text("tailscope: interrupted\n")
    assert big_model.last_progress(tmp_path / "b.log") is None


@pytest.mark.slow
def test_the_moe_layer_reads_back_in_bf16_and_splits_into_its_experts(tmp_path):
    """bench/moe_model.py's layer: torch's own bf16 rounding of the same draw, read with the
    safetensors library; tailscope's expert matrices are its slices, the config's layout."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from tailscope.sources import open_source

    path = tmp_path / "model.safetensors"
    moe_model.write_layer(path, 2, seed=3)
    tensors = load_file(str(path))
    name = moe_model.P + "mlp.experts.gate_up_proj"
    want = torch.from_numpy(moe_model._values(name, (2 * moe_model.INTER, moe_model.HIDDEN),
                                              3, 2)).to(torch.bfloat16)
    assert torch.equal(tensors[name][1], want)
    refs = {r.name: r for r in open_source(tmp_path)}
    np.testing.assert_array_equal(refs[name + "[e1.up]"].load(),
                                  want[moe_model.INTER:].float().numpy())
    assert refs[moe_model.P + "mlp.gate.weight"].role == "router"


@pytest.mark.slow
def test_the_moe_layer_in_fp8_is_what_transformers_writes(tmp_path):
    """bench/moe_model.py --fp8: each matrix's e4m3 bytes and scale_inv are those of
    transformers 5's own Fp8Quantize on the same float32 draw; its config loads as transformers'
    FP8 config; tailscope's expert matrices are transformers' dequantization of them."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from tailscope.sources import open_source

    fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    from transformers import FineGrainedFP8Config

    path = tmp_path / "model.safetensors"
    moe_model.write_layer(path, 2, seed=3, fp8=True)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    cfg = FineGrainedFP8Config.from_dict(qc)
    assert cfg.weight_block_size == [128, 128] and cfg.activation_scheme == "dynamic"
    quantize = fp8.Fp8Quantize(SimpleNamespace(quantization_config=cfg))
    tensors = load_file(str(path))
    P, inter, hidden = moe_model.P, moe_model.INTER, moe_model.HIDDEN
    gu = P + "mlp.experts.gate_up_proj"
    q_proj = P + "self_attn.q_proj.weight"
    cases = {gu: (moe_model._values(gu, (2 * inter, hidden), 3, 2), tensors[gu][1],
                  tensors[gu + "_scale_inv"][1]),
             q_proj: (moe_model._values(q_proj, tuple(tensors[q_proj].shape), 3),
                      tensors[q_proj], tensors[P + "self_attn.q_proj.weight_scale_inv"])}
    for key, (w, q, s) in cases.items():
        got = quantize.convert({key: torch.from_numpy(w)})
        want_q, want_s = (got[k] for k in sorted(got, key=len))
        assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32
        assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8)), key
        assert torch.equal(s, want_s), key
    assert tensors[P + "mlp.gate.weight"].dtype == torch.bfloat16  # the router stays bf16
    deq = fp8._dequantize_fp8_weight(tensors[gu], tensors[gu + "_scale_inv"], [128, 128],
                                     torch.float32)
    refs = {r.name: r for r in open_source(tmp_path)}
    assert refs[gu + "[e1.up]"].quant == "fp8-e4m3 block 128x128"
    np.testing.assert_array_equal(refs[gu + "[e1.up]"].load(), deq[1][inter:].numpy())
    np.testing.assert_array_equal(refs[gu + "[e0.gate]"].load(), deq[0][:inter].numpy())
