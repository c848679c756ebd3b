"""A whole LLaMA-7B-shaped checkpoint analysed end to end: wall time and peak RSS, on this machine.

Generates a sharded fp16 safetensors checkpoint shaped like LLaMA-7B (hidden 4096, intermediate
11008, vocab 32000; 32 blocks of 7 matrices, about 12.6 GB) with heavy-tailed (Student-t, 3
degrees of freedom) entries from a seeded generator, streamed to disk a few MB at a time (memory
stays low), never committed: by default under /tmp/tailscope-big. Each tensor has its own
generator seeded by (seed, its name), so the 1-block checkpoint (block 0 + embedding + head) holds
exactly the same tensors as the first block, the embedding and the head of the full one.

Then, each in a fresh process whose peak RSS is read from the kernel (``os.wait4``):
1. WeightWatcher (the installed version, named in the output) ``analyze()`` (its defaults) on
   the 1-block checkpoint,
2. ``tailscope analyze`` (the CLI, default options) on the 1-block checkpoint,
3. ``tailscope analyze`` on the full checkpoint,
and prints wall time, peak RSS and the WeightWatcher/tailscope ratios, the load average at the
start and the end (the machine may be shared), and an extrapolation of the full run from the
1-block run (per block, and embedding + head) next to the measurement. The full checkpoint is
deleted afterwards unless ``--keep``.

Run: .venv/bin/python bench/big_model.py [--blocks 32] [--dir /tmp/tailscope-big] [--no-ww]
     .venv/bin/python bench/big_model.py --tiny        # a small-shaped smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from importlib import metadata
from pathlib import Path

import numpy as np

HIDDEN, INTER, VOCAB, BLOCKS = 4096, 11008, 32000, 32
TINY = {"hidden": 256, "inter": 688, "vocab": 2000}  # the same aspect ratios, small
CHUNK = 4 << 20  # values generated at once (8 MB of fp16)


def tensor_specs(blocks: int, hidden: int = HIDDEN, inter: int = INTER, vocab: int = VOCAB
                 ) -> list[list[tuple[str, tuple[int, ...]]]]:
    """The shards of a LLaMA-shaped checkpoint, in model order: the embedding, one shard per
    block, then the final norm and the head; each a list of (tensor name, shape)."""
    shards = [[("model.embed_tokens.weight", (vocab, hidden))]]
    for b in range(blocks):
        p = f"model.layers.{b}."
        shards.append([
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (hidden, hidden)),
            (p + "self_attn.v_proj.weight", (hidden, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ])
    shards.append([("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))])
    return shards


def _chunks(name: str, shape: tuple[int, ...], seed: int):
    """The tensor's fp16 bytes, a chunk at a time: ones for a norm (1-D), else Student-t(3) x
    0.02 from a generator seeded by (seed, the name)."""
    if len(shape) == 1:
        yield np.ones(shape, np.float16).tobytes()
        return
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    rows, cols = shape
    step = max(1, CHUNK // cols)
    for r in range(0, rows, step):
        n = min(step, rows - r)
        yield (rng.standard_t(3.0, size=(n, cols)) * 0.02).astype(np.float16).tobytes()


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], seed: int) -> None:
    """One safetensors file, streamed (header, then each tensor's bytes in chunks), written to a
    temporary name and renamed, so a shard on disk is always whole."""
    header, offset = {}, 0
    for name, shape in tensors:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset,
                                                                                offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in tensors:
            for chunk in _chunks(name, shape, seed):
                f.write(chunk)
    os.replace(tmp, path)


def write_checkpoint(folder: Path, blocks: int, seed: int = 0, *, processes: int = 1,
                     **shape) -> int:
    """A sharded LLaMA-shaped fp16 checkpoint in ``folder`` (reused when its index says it is the
    same one); returns its size in bytes. The index is written last: its presence means whole.
    ``processes`` > 1 writes that many shards at once (the bytes do not depend on it)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "model.safetensors.index.json"
    meta = {"blocks": str(blocks), "seed": str(seed),
            **{k: str(v) for k, v in sorted(shape.items())}}
    if index.exists() and json.loads(index.read_text()).get("metadata") == meta:
        return sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    index.unlink(missing_ok=True)
    shards = tensor_specs(blocks, **shape)
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    jobs = [(folder / name, tensors, seed) for name, tensors in zip(names, shards)]
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(write_shard, *zip(*jobs)))
    else:
        for job in jobs:
            write_shard(*job)
    weight_map = {t: name for name, tensors in zip(names, shards) for t, _ in tensors}
    index.write_text(json.dumps({"metadata": meta, "weight_map": weight_map}))
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


WW_CHILD = (
    "import contextlib, io, json, logging, sys\n"
    "import weightwatcher\n"
    "logging.getLogger('weightwatcher').setLevel(logging.ERROR)\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    d = weightwatcher.WeightWatcher(model=sys.argv[1]).analyze()\n"
    "d.to_csv(sys.argv[2], index=False)\n")


def run_child(cmd: list[str], log: Path, time_limit: float | None = None) -> dict:
    """Run ``cmd`` in a fresh process (stdout and stderr to ``log``); its wall time, exit code and
    peak RSS (the kernel's ru_maxrss of that one child, via wait4). Past ``time_limit`` seconds
    it is interrupted (SIGINT) and ``interrupted`` is True."""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        timer = None
        if time_limit is not None:
            timer = threading.Timer(time_limit, proc.send_signal, (signal.SIGINT,))
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        interrupted = timer is not None and not timer.is_alive()
        if timer is not None:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime, "interrupted": interrupted}


PROGRESS = re.compile(r"^(\d+)/(\d+) layers.*?(\d+):(\d\d):(\d\d) elapsed", re.M)


def last_progress(log: Path) -> tuple[int, int, float] | None:
    """(layers done, layers in all, seconds since the analysis started) from the last progress
    line ``tailscope analyze`` wrote to ``log`` (one every 10 s in a log), or None."""
    found = PROGRESS.findall(log.read_text(errors="replace"))
    if not found:
        return None
    done, total, h, m, s = map(int, found[-1])
    return done, total, 3600 * h + 60 * m + s


def read_table(csv: Path) -> dict:
    import pandas as pd

    d = pd.read_csv(csv)
    alpha = d["alpha"]
    out = {"rows": int(len(d)), "alpha_mean": float(alpha.mean())}
    if "status" in d.columns:
        out["failed"] = int((d["status"] == "failed").sum())
    return out


def tailscope(folder: Path, work: Path, tag: str, time_limit: float | None = None) -> dict:
    csv = work / f"{tag}.csv"
    cmd = [sys.executable, "-m", "tailscope", "analyze", str(folder), "--out", str(csv)]
    r = run_child(cmd, work / f"{tag}.log", time_limit)
    if r["rc"] == 0 and csv.exists():
        r.update(read_table(csv))
    else:
        r["error"] = _last_line(work / f"{tag}.log")
        r["progress"] = last_progress(work / f"{tag}.log")
    return r


def weightwatcher(folder: Path, work: Path, tag: str) -> dict:
    csv = work / f"{tag}.csv"
    r = run_child([sys.executable, "-c", WW_CHILD, str(folder), str(csv)], work / f"{tag}.log")
    if r["rc"] == 0 and csv.exists():
        r.update(read_table(csv))
    else:
        r["error"] = _last_line(work / f"{tag}.log")
    return r


def _last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def show(label: str, r: dict) -> None:
    if r.get("interrupted"):
        print(f"{label:<34s} interrupted at the time limit, {r['wall_s']:.1f} s", flush=True)
        return
    if "error" in r:
        print(f"{label:<34s} failed (exit {r['rc']}): {r['error']}", flush=True)
        return
    print(f"{label:<34s} {r['wall_s']:9.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
          f"{r['rows']:4d} rows  mean alpha {r['alpha_mean']:.4f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=BLOCKS, help="blocks of the full checkpoint "
                                                               "(default: 32, LLaMA-7B)")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tailscope-big"),
                    help="where the checkpoints go (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true",
                    help="small shapes (hidden 256): a smoke run of the whole script")
    ap.add_argument("--no-ww", action="store_true", help="leave WeightWatcher out")
    ap.add_argument("--keep", action="store_true", help="keep the full checkpoint afterwards")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    ap.add_argument("--time-limit", type=float, metavar="SECONDS",
                    help="interrupt the full run after this long and extrapolate from the "
                         "layers it finished (its last progress line)")
    args = ap.parse_args(argv)
    if args.blocks < 1:
        ap.error("--blocks must be at least 1")
    shape = dict(TINY) if args.tiny else {"hidden": HIDDEN, "inter": INTER, "vocab": VOCAB}
    base = Path(args.dir)
    work = base / "runs"
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"shape": shape, "blocks": args.blocks, "load_start": load()}
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {report['load_start']}", flush=True)

    t0 = time.perf_counter()
    one = base / f"llama-{'tiny-' if args.tiny else ''}1block"
    size1 = write_checkpoint(one, 1, args.seed, **shape)
    gen1 = time.perf_counter() - t0
    print(f"1-block checkpoint: {size1 / 2**20:,.0f} MB in {one} ({gen1:.0f} s to generate)",
          flush=True)
    full = base / f"llama-{'tiny-' if args.tiny else ''}{args.blocks}blocks"
    t0 = time.perf_counter()
    size = write_checkpoint(full, args.blocks, args.seed, **shape)
    gen = time.perf_counter() - t0
    print(f"{args.blocks}-block checkpoint: {size / 2**20:,.0f} MB in {full} ({gen:.0f} s to "
          f"generate)", flush=True)
    report.update(size_1block_mb=size1 / 2**20, size_mb=size / 2**20, generate_s=gen)

    if not args.no_ww:
        report["ww_1block"] = r = weightwatcher(one, work, "ww-1block")
        show(f"WeightWatcher {metadata.version('weightwatcher')}, 1 block", r)
    report["ts_1block"] = r1 = tailscope(one, work, "ts-1block")
    show("tailscope analyze, 1 block", r1)
    if not args.no_ww and "error" not in report["ww_1block"] and "error" not in r1:
        ww = report["ww_1block"]
        print(f"  WeightWatcher / tailscope on 1 block: time {ww['wall_s'] / r1['wall_s']:.2f}x, "
              f"peak RSS {ww['peak_rss_mb'] / r1['peak_rss_mb']:.2f}x", flush=True)
    print(f"full run started, {load()}", flush=True)
    report["ts_full"] = rf = tailscope(full, work, f"ts-{args.blocks}blocks", args.time_limit)
    show(f"tailscope analyze, {args.blocks} blocks", rf)
    if rf.get("interrupted") and rf.get("progress") and "error" not in r1:
        done, total, elapsed = rf["progress"]
        start = rf["wall_s"] - elapsed  # start-up and planning before the first layer
        per_layer = elapsed / max(done, 1)
        est = r1["wall_s"] + (total - r1["rows"]) * per_layer
        report["ts_full"].update(layers_done=done, layers_total=total, elapsed_at_done_s=elapsed,
                                 estimate_s=est)
        print(f"  interrupted after {rf['wall_s']:.0f} s: {done} of {total} layers done "
              f"{elapsed:.0f} s into the analysis ({start:.0f} s before it), "
              f"{per_layer:.1f} s per layer; peak RSS so far {rf['peak_rss_mb']:.0f} MB", flush=True)
        print(f"  extrapolated, not measured: the 1-block run + {total - r1['rows']} more layers "
              f"at that rate = {est / 60:.1f} min for all {total} layers", flush=True)
    report["load_end"] = load()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {report['load_end']}", flush=True)

    if "error" not in r1 and "error" not in rf and args.blocks > 1:
        per_block = (rf["wall_s"] - r1["wall_s"]) / (args.blocks - 1)
        rest = r1["wall_s"] - per_block
        est32 = rest + BLOCKS * per_block
        report.update(per_block_s=per_block, embed_head_s=rest, estimate_32_s=est32)
        print(f"from the two runs: {per_block:.1f} s per block of 7 matrices, {rest:.1f} s for "
              f"the embedding, the head and start-up; {BLOCKS} blocks: "
              f"{'measured' if args.blocks == BLOCKS else 'extrapolated'} "
              f"{(rf['wall_s'] if args.blocks == BLOCKS else est32) / 60:.1f} min", flush=True)
        # the shared tensors (block 0, embedding, head) must give the same alphas in both runs
        import pandas as pd

        a = pd.read_csv(work / "ts-1block.csv").set_index("name")["alpha"]
        b = pd.read_csv(work / f"ts-{args.blocks}blocks.csv").set_index("name")["alpha"]
        common = a.index.intersection(b.index)
        same = bool(np.allclose(a[common], b[common], rtol=1e-12, equal_nan=True))
        report["shared_layers_equal"] = same
        print(f"the {len(common)} layers both checkpoints share: alphas "
              f"{'equal' if same else 'DIFFER'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if not args.keep:
        shutil.rmtree(full, ignore_errors=True)
        print(f"deleted {full}", flush=True)
    ok = "error" not in r1 and ("error" not in rf or rf.get("interrupted"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
