"""One Qwen3-30B-A3B-shaped Mixture-of-Experts decoder layer analysed end to end: wall time and
peak RSS, tailscope beside WeightWatcher, on this machine.

The layer (Qwen3-30B-A3B's config: hidden 2048, 32 query and 4 key/value heads of 128, 128
experts of moe_intermediate 768, a 128 x 2048 router) is written once as a safetensors file in
bf16, in transformers 5's fused layout (``mlp.experts.gate_up_proj`` [E, 1536, 2048],
``mlp.experts.down_proj`` [E, 2048, 768]) with its ``config.json``, values Student-t (3 degrees
of freedom) from a seeded generator, streamed to disk expert by expert; never committed (by
default under /tmp/tailscope-moe).

Then, each in a fresh process whose peak RSS is read from the kernel (``os.wait4``):
1. ``tailscope.analyze`` (default options) on the file: the experts are split from the fused
   stacks (each expert read alone) and solved in same-shape batches;
2. WeightWatcher (the installed version, named in the output) ``analyze()`` (its defaults) on the
   same values given as a torch module of per-expert ``nn.Linear`` modules (gate_proj, up_proj,
   down_proj per expert, the attention projections and the router), the form it understands.
Each process times the non-expert matrices and the experts separately, so the layer's time at
128 experts and the 48-layer model are extrapolated from a run with fewer experts
(``--experts``): layer = non-expert + expert time x 128 / experts; model = 48 x layer
(embedding and head left out). The ratios WeightWatcher / tailscope are printed.

``--fp8``: the same layer as transformers 5 saves a fine-grained FP8 model (its
``Fp8Quantize``: per 128 x 128 block, scale = 448 / max|w|, e4m3 = clamp(w x scale), the stored
``*_scale_inv`` = 1 / scale in float32): ``self_attn.*.weight`` + ``weight_scale_inv``, the fused
experts ``mlp.experts.gate_up_proj`` + ``gate_up_proj_scale_inv`` [E, 2I/128, H/128] and
``down_proj`` + ``down_proj_scale_inv``, the router left in bf16, and ``config.json``'s
``quantization_config`` as DeepSeek-V3 / Qwen3-FP8 write it (``quant_method`` fp8, ``fmt`` e4m3,
``weight_block_size`` [128, 128]); written with ml_dtypes, without torch. tailscope analyses it
(dequantized by ``sources/quantized.py``) in a fresh process, and a table compares the bf16 and
FP8 runs (time, peak RSS, mean expert alpha) with WeightWatcher on the bf16 values.

Run: .venv/bin/python bench/moe_model.py [--experts 16] [--dir /tmp/tailscope-moe] [--no-ww]
     .venv/bin/python bench/moe_model.py --experts 128       # the whole layer (minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HIDDEN, INTER, EXPERTS, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 2048, 768, 128, 32, 4, 128, 48
P = "model.layers.0."


BLOCK = 128
FP8_CONFIG = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
              "weight_block_size": [BLOCK, BLOCK], "modules_to_not_convert": ["lm_head", "mlp.gate"]}


def config(experts: int, fp8: bool = False) -> dict:
    c = {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
         "hidden_size": HIDDEN, "moe_intermediate_size": INTER, "num_experts": experts,
         "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
         "head_dim": HEAD_DIM, "num_hidden_layers": LAYERS}
    if fp8:
        c["quantization_config"] = FP8_CONFIG
    return c


def specs(experts: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(P + "self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)),
            (P + "self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (P + "self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (P + "self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)),
            (P + "mlp.gate.weight", (experts, HIDDEN)),
            (P + "mlp.experts.gate_up_proj", (experts, 2 * INTER, HIDDEN)),
            (P + "mlp.experts.down_proj", (experts, HIDDEN, INTER))]


def _values(name: str, shape: tuple[int, ...], seed: int, index: int = 0) -> np.ndarray:
    """float32 Student-t values scaled like an initialised layer, seeded by (seed, name, index)."""
    rng = np.random.default_rng([seed, sum(map(ord, name)), index])
    fan_in = shape[-1]
    return (rng.standard_t(3, size=shape) / np.sqrt(3 * fan_in)).astype(np.float32)


def bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    u = a.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _pieces(name: str, shape: tuple[int, ...], seed: int):
    """The tensor's float32 values, one expert (first-axis slice) at a time for a stack."""
    if len(shape) == 3:
        for e in range(shape[0]):
            yield _values(name, shape[1:], seed, e + 1)
    else:
        yield _values(name, shape, seed)


def _fp8_pieces(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(e4m3 bytes, float32 scale_inv per 128 x 128 block) of one 2-D float32 matrix, with
    transformers 5's arithmetic (``finegrained_fp8.Fp8Quantize``, float32 throughout): scale =
    (1 / max|block|) x 448 (1 for an all-zero block), e4m3 = clamp(w x scale, +-448) rounded to
    nearest, scale_inv = 1 / scale. The sides must be multiples of 128 (transformers leaves
    other matrices unquantized)."""
    import ml_dtypes

    rows, cols = a.shape
    if rows % BLOCK or cols % BLOCK:
        raise ValueError(f"{a.shape} is not a multiple of {BLOCK} x {BLOCK}")
    fmax = np.float32(float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max))  # 448
    tiles = a.astype(np.float32).reshape(rows // BLOCK, BLOCK, cols // BLOCK, BLOCK)
    amax = np.abs(tiles).max(axis=(1, 3))
    # torch computes 448 / t as reciprocal(t) * 448 (Tensor.__rdiv__): the same two roundings
    recip = (np.float32(1) / np.where(amax > 0, amax, np.float32(1))).astype(np.float32)
    scale = np.where(amax > 0, recip * fmax, np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / scale).astype(np.float32)
    scaled = tiles * scale[:, None, :, None]
    q = np.clip(scaled, -fmax, fmax).astype(ml_dtypes.float8_e4m3fn).reshape(rows, cols)
    return q.view(np.uint8), inv


def write_layer(path: Path, experts: int, seed: int = 0, fp8: bool = False) -> None:
    """The layer as one safetensors file (bf16, or FP8 e4m3 + block scales), streamed."""
    entries, offset = [], 0
    for name, shape in specs(experts):
        quant = fp8 and name != P + "mlp.gate.weight"
        itemsize = 1 if quant else 2
        entries.append((name, "F8_E4M3" if quant else "BF16", shape, offset, quant))
        offset += int(np.prod(shape)) * itemsize
        if quant:
            rows, cols = shape[-2:]
            sshape = shape[:-2] + (-(-rows // 128), -(-cols // 128))
            sname = name + "_scale_inv" if name.endswith("proj") else \
                name.replace(".weight", ".weight_scale_inv")
            entries.append((sname, "F32", sshape, offset, None))
            offset += int(np.prod(sshape)) * 4
    header = {n: {"dtype": d, "shape": list(s), "data_offsets": [o, o + int(np.prod(s)) *
                                                                   (4 if d == "F32" else
                                                                    1 if d == "F8_E4M3" else 2)]}
              for n, d, s, o, _ in entries}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, dtype, shape, _, quant in entries:
            if dtype == "F32":  # the scales, written right after their matrix below
                continue
            scales = []
            for piece in _pieces(name, shape, seed):
                if quant:
                    q, s = _fp8_pieces(piece)
                    f.write(q.tobytes())
                    scales.append(s)
                else:
                    f.write(bf16(piece).tobytes())
            if quant:
                f.write(np.stack(scales).reshape(-1).astype(np.float32).tobytes()
                        if len(scales) > 1 else scales[0].tobytes())
    path.with_name("config.json").write_text(json.dumps(config(experts, fp8)))


# --- the measured children ---------------------------------------------------------------------
TAILSCOPE = """
import sys, time, json
from tailscope import analyze
t0 = time.perf_counter()
a = analyze(sys.argv[1], layers=["-expert"])
t1 = time.perf_counter()
b = analyze(sys.argv[1], layers=["expert"])
t2 = time.perf_counter()
ok = int((a.details["status"] == "success").sum() + (b.details["status"] == "success").sum())
print(json.dumps({"other_s": t1 - t0, "experts_s": t2 - t1, "rows": len(a.details) +
                  len(b.details), "fitted": ok, "alpha_mean_experts":
                  float(b.details["alpha"].mean()) if len(b.details) else None}))
"""

WEIGHTWATCHER = """
import sys, time, json, struct
import numpy as np, torch, weightwatcher
path, experts = sys.argv[1], int(sys.argv[2])
n = struct.unpack("<Q", open(path, "rb").read(8))[0]
header = json.loads(open(path, "rb").read(8 + n)[8:])
def read(name, index=None):
    info = header[name]
    shape = info["shape"]
    start, end = info["data_offsets"]
    count = int(np.prod(shape[1:])) if index is not None else end - start
    with open(path, "rb") as f:
        step = int(np.prod(shape[1:])) * 2
        f.seek(8 + n + start + (index * step if index is not None else 0))
        raw = np.frombuffer(f.read(step if index is not None else end - start), np.uint16)
    a = (raw.astype(np.uint32) << 16).view(np.float32)
    return a.reshape(shape[1:] if index is not None else shape)
def linear(w):
    m = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    m.weight.data = torch.from_numpy(np.ascontiguousarray(w))
    return m
P = "model.layers.0."
other = torch.nn.ModuleDict({k: linear(read(P + f"self_attn.{k}.weight"))
                             for k in ("q_proj", "k_proj", "v_proj", "o_proj")})
other["router"] = linear(read(P + "mlp.gate.weight"))
experts_m = torch.nn.ModuleList()
for e in range(experts):
    gu, down = read(P + "mlp.experts.gate_up_proj", e), read(P + "mlp.experts.down_proj", e)
    half = gu.shape[0] // 2
    experts_m.append(torch.nn.ModuleDict({"gate_proj": linear(gu[:half]),
                                          "up_proj": linear(gu[half:]),
                                          "down_proj": linear(down)}))
t0 = time.perf_counter()
a = weightwatcher.WeightWatcher(model=other).analyze()
t1 = time.perf_counter()
b = weightwatcher.WeightWatcher(model=experts_m).analyze()
t2 = time.perf_counter()
print(json.dumps({"other_s": t1 - t0, "experts_s": t2 - t1, "rows": len(a) + len(b),
                  "alpha_mean_experts": float(b["alpha"].mean())}))
"""


def run_child(code: str, args: list[str]) -> dict:
    """Run ``code`` in a fresh Python; its JSON line, wall time and peak RSS (wait4)."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    if status != 0 or not lines:
        return {"error": text.strip().splitlines()[-1] if text.strip() else f"status {status}"}
    r = json.loads(lines[-1])
    r.update(wall_s=wall, peak_rss_mb=usage.ru_maxrss / 1024)
    return r


def extrapolate(r: dict, experts: int) -> tuple[float, float]:
    """(one layer of 128 experts, 48 layers) in seconds, from a run with ``experts``."""
    layer = r["other_s"] + r["experts_s"] * EXPERTS / experts
    return layer, LAYERS * layer


def show(label: str, r: dict, experts: int) -> None:
    if "error" in r:
        print(f"{label}: failed: {r['error']}", flush=True)
        return
    layer, model = extrapolate(r, experts)
    print(f"{label}: {r['rows']} rows; non-expert {r['other_s']:.1f} s, {experts} experts "
          f"{r['experts_s']:.1f} s; process {r['wall_s']:.1f} s, peak RSS "
          f"{r['peak_rss_mb']:.0f} MB; extrapolated: layer of {EXPERTS} experts {layer:.1f} s, "
          f"{LAYERS} layers {model / 60:.1f} min", flush=True)


def table(runs: list[tuple[str, dict]], experts: int) -> None:
    """The runs side by side (Markdown), as docs/guide/moe.md shows them."""
    print(f"\n| run ({experts} experts) | non-expert s | experts s | process s | peak RSS MB | "
          "mean expert alpha |\n|---|---|---|---|---|---|")
    for label, r in runs:
        if "error" in r:
            print(f"| {label} | failed: {r['error']} | | | | |")
            continue
        print(f"| {label} | {r['other_s']:.1f} | {r['experts_s']:.1f} | {r['wall_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['alpha_mean_experts']:.4f} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experts", type=int, default=16, help="experts written (128: the whole "
                    "layer)")
    ap.add_argument("--dir", default="/tmp/tailscope-moe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ww", action="store_true", help="leave WeightWatcher out")
    ap.add_argument("--fp8", action="store_true", help="also the layer in FP8 (e4m3, 128 x 128 "
                    "block scales, as transformers 5 saves it), analysed by tailscope, and the "
                    "bf16 / FP8 table")
    args = ap.parse_args(argv)
    if not 1 <= args.experts <= EXPERTS:
        ap.error(f"--experts must be in 1..{EXPERTS}")
    work = Path(args.dir) / f"e{args.experts}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "model.safetensors"
    if not path.exists():
        t0 = time.perf_counter()
        write_layer(path, args.experts, args.seed)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MB bf16) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    print(f"one Qwen3-30B-A3B-shaped layer with {args.experts} of its {EXPERTS} experts; load "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    ts = run_child(TAILSCOPE, [str(path)])
    show("tailscope (bf16)", ts, args.experts)
    if not args.no_ww:
        ww = run_child(WEIGHTWATCHER, [str(path), str(args.experts)])
        show(f"WeightWatcher {metadata.version('weightwatcher')} (per-expert Linear modules)",
             ww, args.experts)
        if "error" not in ww and "error" not in ts:
            print(f"  WeightWatcher / tailscope: experts {ww['experts_s'] / ts['experts_s']:.2f}x,"
                  f" layer {extrapolate(ww, args.experts)[0] / extrapolate(ts, args.experts)[0]:.2f}x"
                  f", peak RSS {ww['peak_rss_mb'] / ts['peak_rss_mb']:.2f}x; mean expert alpha "
                  f"{ts['alpha_mean_experts']:.4f} vs {ww['alpha_mean_experts']:.4f}", flush=True)
    if args.fp8:
        fp8 = Path(args.dir) / f"fp8-e{args.experts}"
        fp8.mkdir(parents=True, exist_ok=True)
        if not (fp8 / "model.safetensors").exists():
            t0 = time.perf_counter()
            write_layer(fp8 / "model.safetensors", args.experts, args.seed, fp8=True)
            print(f"wrote {fp8 / 'model.safetensors'} "
                  f"({(fp8 / 'model.safetensors').stat().st_size / 2**20:.0f} MB fp8) in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        r = run_child(TAILSCOPE, [str(fp8 / "model.safetensors")])
        if "error" not in r and r.get("fitted") == 0:
            r = {"error": "no layer of the FP8 file was fitted"}
        show("tailscope (fp8)", r, args.experts)
        table([("tailscope, bf16", ts), ("tailscope, FP8 (dequantized)", r)]
              + ([] if args.no_ww else [(f"WeightWatcher {metadata.version('weightwatcher')}, "
                                         "bf16 per-expert Linear", ww)]), args.experts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
