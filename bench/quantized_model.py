"""Peak memory while analysing a quantized LLaMA-7B-shaped checkpoint (issue 22).

Writes a GPTQ int4 (group 128, GPTQModel's v2 checkpoint format: qweight, qzeros, scales,
g_idx) or an FP8 (e4m3, DeepSeek-V3's 128 x 128 block ``weight_scale_inv``) checkpoint shaped
like LLaMA-7B (hidden 4096, intermediate 11008, vocab 32000; the embedding and head in fp16,
``--blocks`` decoder blocks quantized) under /tmp, with its config.json, then runs
``tailscope analyze`` on it in a fresh process and prints its wall time and peak RSS (the
kernel's ru_maxrss via wait4) beside the bound the issue sets: two float64 copies of the largest
matrix plus a fixed overhead, the overhead measured as the peak RSS of ``tailscope analyze`` on a
tiny checkpoint in the same run.

Run: .venv/bin/python bench/quantized_model.py [--format gptq|fp8] [--blocks 2] [--no-embed]
     [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN, INTER, VOCAB = 4096, 11008, 32000
TINY = {"hidden": 256, "inter": 768, "vocab": 2000}  # group 128 divides every side


def _weights(rng, shape) -> np.ndarray:
    return (rng.standard_t(3.0, size=shape) * 0.02).astype(np.float32)


def _gptq(w: np.ndarray, bits: int = 4, group: int = 128) -> dict[str, np.ndarray]:
    """GPTQ min-max int4 quantization of a [out, in] weight, packed as GPTQ stores it (v2
    zeros): qweight [in / 8, out], qzeros [groups, out / 8], scales [groups, out], g_idx."""
    out, inp = w.shape
    g = w.T.reshape(inp // group, group, out)
    lo, hi = np.minimum(g.min(1), 0), np.maximum(g.max(1), 0)
    maxq = 2 ** bits - 1
    scale = ((hi - lo) / maxq).astype(np.float16)
    s32 = np.maximum(scale.astype(np.float32), 1e-8)
    zero = np.clip(np.round(-lo / s32), 0, maxq).astype(np.int64)
    q = np.clip(np.round(g / s32[:, None]) + zero[:, None], 0, maxq).astype(np.uint32)
    q = q.reshape(inp, out)
    per = 32 // bits
    qweight = np.zeros((inp // per, out), np.uint32)
    for i in range(per):
        qweight |= q[i::per] << np.uint32(bits * i)
    qzeros = np.zeros((zero.shape[0], out // per), np.uint32)
    for i in range(per):
        qzeros |= zero[:, i::per].astype(np.uint32) << np.uint32(bits * i)
    return {"qweight": qweight.view(np.int32), "qzeros": qzeros.view(np.int32), "scales": scale,
            "g_idx": (np.arange(inp) // group).astype(np.int32)}


def _fp8(w: np.ndarray, block: int = 128) -> dict:
    import torch

    rows, cols = w.shape
    rb, cb = -(-rows // block), -(-cols // block)
    t = torch.from_numpy(w)
    scale = torch.empty(rb, cb)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(rb):
        for j in range(cb):
            blk = t[i * block:(i + 1) * block, j * block:(j + 1) * block]
            s = blk.abs().max() / 448
            scale[i, j] = s
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = (blk / s).to(q.dtype)
    return {"weight": q, "weight_scale_inv": scale}


def write_checkpoint(folder: Path, fmt: str, blocks: int, hidden=HIDDEN, inter=INTER,
                     vocab=VOCAB, embed: bool = True) -> tuple[int, int]:
    """The checkpoint, one safetensors shard per block; (bytes on disk, largest matrix's size)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    fp16 = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    weight_map, largest = {}, 0
    if embed:
        save_file({n: torch.from_numpy(_weights(rng, s).astype(np.float16))
                   for n, s in fp16.items()}, str(folder / "model-embed.safetensors"))
        weight_map = {n: "model-embed.safetensors" for n in fp16}
        largest = vocab * hidden
    for b in range(blocks):
        p = f"model.layers.{b}."
        shapes = {"self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
                  "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
                  "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden),
                  "mlp.down_proj": (hidden, inter)}
        tensors = {}
        for name, shape in shapes.items():
            w = _weights(rng, shape)
            largest = max(largest, w.size)
            parts = _gptq(w) if fmt == "gptq" else _fp8(w)
            for k, v in parts.items():
                tensors[f"{p}{name}.{k}"] = v if isinstance(v, torch.Tensor) else \
                    torch.from_numpy(np.ascontiguousarray(v))
        tensors[p + "input_layernorm.weight"] = torch.ones(hidden, dtype=torch.float16)
        save_file(tensors, str(folder / f"model-{b:05d}.safetensors"))
        weight_map.update({n: f"model-{b:05d}.safetensors" for n in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    qc = ({"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": False, "desc_act": False,
           "checkpoint_format": "gptq_v2"} if fmt == "gptq" else
          {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama",
                                                    "quantization_config": qc}))
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")), largest


def run_child(cmd: list[str], log: Path) -> dict:
    """Wall time, exit code and peak RSS (MB) of ``cmd`` in a fresh process."""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status), "wall_s": time.perf_counter() - t0,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=("gptq", "fp8"), default="gptq")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="small shapes (a smoke run)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--write", default=None, help=argparse.SUPPRESS)  # the writer child
    ap.add_argument("--no-embed", action="store_true",
                    help="leave out the fp16 embedding and head (the largest matrix is then a "
                         "quantized one; much faster)")
    a = ap.parse_args(argv)
    shape = TINY if a.tiny else {}
    if a.write:  # in a child: a forked analysis must not start with the writer's memory mapped
        size, largest = write_checkpoint(Path(a.write), a.format, a.blocks,
                                         embed=not a.no_embed, **shape)
        write_checkpoint(Path(a.write).with_name("small"), a.format, 1, **TINY)
        print(json.dumps([size, largest]))
        return 0
    work = Path(a.dir or tempfile.mkdtemp(prefix="tailscope-quant-"))
    try:
        cmd = [sys.executable, __file__, "--write", str(work / "model"), "--format", a.format,
               "--blocks", str(a.blocks)] + ["--no-embed"] * a.no_embed + ["--tiny"] * a.tiny
        size, largest = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                  text=True).stdout.strip().splitlines()[-1])
        cli = [sys.executable, "-m", "tailscope", "analyze"]
        base = run_child(cli + [str(work / "small"), "--out", str(work / "small.csv")],
                         work / "small.log")
        r = run_child(cli + [str(work / "model"), "--out", str(work / "model.csv")],
                      work / "model.log")
        if r["rc"] != 0:
            print((work / "model.log").read_text()[-2000:])
            return 1
        import pandas as pd

        d = pd.read_csv(work / "model.csv")
        bound = 2 * 8 * largest / 2 ** 20 + base["peak_rss_mb"]
        print(f"checkpoint: {a.format}, {a.blocks} blocks, {size / 2 ** 30:.2f} GiB on disk; "
              f"{len(d)} layers analysed, quant: {sorted(set(d['quant'].fillna('')))}")
        print(f"largest matrix: {largest:,} values; 2 float64 copies = "
              f"{2 * 8 * largest / 2 ** 20:.0f} MB")
        print(f"fixed overhead (tailscope analyze on a tiny checkpoint): "
              f"{base['peak_rss_mb']:.0f} MB")
        print(f"tailscope analyze: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB; "
              f"bound {bound:.0f} MB -> {'within' if r['peak_rss_mb'] <= bound else 'OVER'} "
              f"({r['peak_rss_mb'] / bound:.2f} of it)")
        return 0
    finally:
        if a.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
