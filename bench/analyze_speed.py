"""Whole-model analysis: tailscope against WeightWatcher (the installed oracle) on LLaMA-shaped
checkpoints.

Writes sharded fp16 safetensors checkpoints shaped like LLaMA (hidden 2048, intermediate 5632,
vocab 32000; 2 and 4 blocks) with heavy-tailed (Student-t) random entries, then analyses each in
a fresh process per tool and prints wall time, peak RSS and their ratios. The default analysis of
both tools is timed (WeightWatcher's analyze() with its defaults; tailscope.analyze()).

Run: .venv/bin/python bench/analyze_speed.py [--blocks 2 4] [--dir /tmp/tailscope-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN, INTER, VOCAB = 2048, 5632, 32000


def write_checkpoint(folder: Path, blocks: int, seed: int = 0, *, hidden: int = HIDDEN,
                     inter: int = INTER, vocab: int = VOCAB) -> int:
    """A sharded LLaMA-shaped checkpoint (fp16; one shard per block plus the embedding and the
    head); returns its size in bytes. LLaMA-7B is hidden 4096, intermediate 11008."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    rng = np.random.default_rng(seed)

    def heavy(shape):
        return (rng.standard_t(3.0, size=shape) * 0.02).astype(np.float16)

    shards: list[dict] = [{"model.embed_tokens.weight": heavy((vocab, hidden))}]
    for b in range(blocks):
        p = f"model.layers.{b}."
        shards.append({
            p + "self_attn.q_proj.weight": heavy((hidden, hidden)),
            p + "self_attn.k_proj.weight": heavy((hidden, hidden)),
            p + "self_attn.v_proj.weight": heavy((hidden, hidden)),
            p + "self_attn.o_proj.weight": heavy((hidden, hidden)),
            p + "mlp.gate_proj.weight": heavy((inter, hidden)),
            p + "mlp.up_proj.weight": heavy((inter, hidden)),
            p + "mlp.down_proj.weight": heavy((hidden, inter)),
            p + "input_layernorm.weight": np.ones(hidden, np.float16),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float16),
        })
    shards.append({"model.norm.weight": np.ones(hidden, np.float16),
                   "lm_head.weight": heavy((vocab, hidden))})
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name))
        weight_map.update({k: name for k in shard})
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


CHILD = {
    "tailscope": (
        "import tailscope, sys\n"
        "a = tailscope.analyze(sys.argv[1])\n"
        "d = a.details\n"
        "result = {'layers': int(len(d)), 'alpha_mean': float(d['alpha'].mean())}\n"),
    "weightwatcher": (
        "import logging, sys, io, contextlib\n"
        "import weightwatcher\n"
        "logging.getLogger('weightwatcher').setLevel(logging.ERROR)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    d = weightwatcher.WeightWatcher(model=sys.argv[1]).analyze()\n"
        "result = {'layers': int(len(d)), 'alpha_mean': float(d['alpha'].mean())}\n"),
}
WRAP = (
    "import json, resource, time\n"
    "t0 = time.perf_counter()\n"
    "{body}"
    "result['seconds'] = time.perf_counter() - t0\n"
    "result['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "print('RESULT ' + json.dumps(result))\n")


def run_tool(tool: str, folder: Path) -> dict:
    code = WRAP.format(body=CHILD[tool])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_seconds"] = wall
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, nargs="*", default=[2, 4])
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tailscope-bench"))
    ap.add_argument("--tools", nargs="*", default=["tailscope", "weightwatcher"])
    args = ap.parse_args(argv)
    print(f"{'blocks':>6s} {'ckpt MB':>8s} {'tool':>14s} {'layers':>6s} {'seconds':>8s} "
          f"{'wall s':>7s} {'peak RSS MB':>11s} {'mean alpha':>10s}")
    for blocks in args.blocks:
        folder = Path(args.dir) / f"llama-{blocks}blocks"
        size = write_checkpoint(folder, blocks) / 2**20
        results = {}
        for tool in args.tools:
            r = results[tool] = run_tool(tool, folder)
            if "error" in r:
                print(f"{blocks:6d} {size:8.0f} {tool:>14s}  failed: {r['error']}")
                continue
            print(f"{blocks:6d} {size:8.0f} {tool:>14s} {r['layers']:6d} {r['seconds']:8.1f} "
                  f"{r['wall_seconds']:7.1f} {r['peak_rss_mb']:11.0f} {r['alpha_mean']:10.4f}")
        ours, ref = results.get("tailscope", {}), results.get("weightwatcher", {})
        if "seconds" in ours and "seconds" in ref:
            print(f"{'':6s} {'':8s} {'ratio':>14s} {'':6s} {ref['seconds'] / ours['seconds']:7.1f}x "
                  f"{ref['wall_seconds'] / ours['wall_seconds']:6.1f}x "
                  f"{ref['peak_rss_mb'] / ours['peak_rss_mb']:10.1f}x  (WeightWatcher / tailscope)")


if __name__ == "__main__":
    main()
