"""The GPU path, end to end: a LLaMA-7B-shaped checkpoint analysed with ``--device cuda``, its alphas
checked against the CPU path, timed. One prepared script for a one-GPU machine (within 8 minutes
on an H200 with 16 cores).

1. Writes a sharded fp16 LLaMA-7B-shaped checkpoint (bench/big_model.py's: hidden 4096,
   intermediate 11008, vocab 32000, ``--blocks`` blocks, 32 by default; about 12.6 GB) with one
   process per core.
2. ``tailscope analyze DIR --device cuda`` on the whole checkpoint, in a fresh process (the CLI's
   own ``main``): wall time, peak RSS, GPU memory (``torch.cuda.max_memory_allocated``).
3. The subset (the embedding and block 0: 8 matrices) with ``--device cpu`` (numpy) and again
   with ``--device cuda``: alpha (and D, xmin, lambda_max) of every subset layer must agree to
   1e-6 relative (both paths are float64); the CPU/GPU wall-time ratio on that subset.

Without CUDA it says so in one line and exits 0 (with ``--tiny`` after writing its small
checkpoint, so the CPU-side setup is exercised). ``--device torch:cpu`` runs every step with the
torch code path on the CPU instead of CUDA (how the tests check this script without a GPU).

Run: python bench/gpu.py [--blocks 32] [--dir /tmp/tailscope-gpu] [--tiny] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from big_model import BLOCKS, HIDDEN, INTER, TINY, VOCAB, write_checkpoint  # noqa: E402

SUBSET = "model.embed_tokens.weight,model.layers.0.*"
RTOL = 1e-6
COMPARED = ("alpha", "D", "xmin", "lambda_max")

# the CLI in a fresh process; what the CLI cannot print (GPU memory) written to a JSON file
CHILD = (
    "import json, resource, sys, time\n"
    "t0 = time.perf_counter()\n"
    "from tailscope.cli import main\n"
    "rc = main(sys.argv[2:])\n"
    "out = {'rc': rc, 'seconds': time.perf_counter() - t0,\n"
    "       'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}\n"
    "if 'torch' in sys.modules and sys.modules['torch'].cuda.is_available():\n"
    "    torch = sys.modules['torch']\n"
    "    out['gpu_max_allocated_mb'] = torch.cuda.max_memory_allocated() / 2**20\n"
    "    out['gpu_max_reserved_mb'] = torch.cuda.max_memory_reserved() / 2**20\n"
    "    out['gpu'] = torch.cuda.get_device_name()\n"
    "open(sys.argv[1], 'w').write(json.dumps(out))\n"
    "sys.exit(rc)\n")


def cuda_state() -> tuple[bool, str]:
    """(CUDA usable, a phrase saying what is there)."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA " \
                 f"{torch.version.cuda})"


def analyze(folder: Path, work: Path, tag: str, device: str, layers: str | None = None) -> dict:
    """``tailscope analyze`` in a fresh process; its numbers and its table (--out CSV)."""
    csv, stats = work / f"{tag}.csv", work / f"{tag}.json"
    args = ["analyze", str(folder), "--device", device, "--out", str(csv)]
    if layers:
        args += ["--layers", layers]
    t0 = time.perf_counter()
    with open(work / f"{tag}.log", "wb") as log:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(stats), *args], stdout=log,
                              stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not stats.exists() or not csv.exists():
        lines = (work / f"{tag}.log").read_text(errors="replace").strip().splitlines()
        raise SystemExit(f"gpu.py: {tag} failed (exit {proc.returncode}): "
                         f"{lines[-1] if lines else 'no output'}")
    import pandas as pd

    out = json.loads(stats.read_text())
    out["wall_s"] = wall
    out["table"] = pd.read_csv(csv)
    return out


def compare(cpu, gpu) -> tuple[float, int, list[str]]:
    """The largest relative difference of ``COMPARED`` over the layers both fitted, the number of
    layers compared, and the layers that differ by more than ``RTOL`` (or fitted in one only)."""
    a = cpu.set_index("name")
    b = gpu.set_index("name")
    bad, worst = [], 0.0
    if set(a.index) != set(b.index):
        bad.append(f"layers differ: {sorted(set(a.index) ^ set(b.index))}")
    common = [n for n in a.index if n in b.index]
    for name in common:
        if a.loc[name, "status"] != b.loc[name, "status"]:
            bad.append(f"{name}: status {a.loc[name, 'status']} vs {b.loc[name, 'status']}")
            continue
        for col in COMPARED:
            x, y = float(a.loc[name, col]), float(b.loc[name, col])
            if math.isnan(x) and math.isnan(y):
                continue
            rel = abs(x - y) / max(abs(x), 1e-300)
            worst = max(worst, rel if rel == rel else math.inf)
            if not rel <= RTOL:
                bad.append(f"{name}: {col} {x!r} (cpu) vs {y!r} (gpu)")
    return worst, len(common), bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int,
                    help="blocks of the checkpoint (default: 32, LLaMA-7B; 2 with --tiny)")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tailscope-gpu"))
    ap.add_argument("--device", default="cuda",
                    help="the device under test (default: cuda; torch:cpu runs the torch code "
                         "path on the CPU)")
    ap.add_argument("--tiny", action="store_true", help="small shapes (hidden 256): seconds")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                    help="processes writing the checkpoint (default: one per core)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint afterwards")
    args = ap.parse_args(argv)
    if args.blocks is None:
        args.blocks = 2 if args.tiny else BLOCKS
    if args.blocks < 1:
        ap.error("--blocks must be at least 1")
    on_cuda = args.device.startswith("cuda")
    ok, what = cuda_state()
    if on_cuda and not ok and not args.tiny:
        print(f"gpu.py: no GPU here ({what}); nothing measured (run it on a machine with an "
              f"NVIDIA GPU, or --device torch:cpu)")
        return 0
    shape = dict(TINY) if args.tiny else {"hidden": HIDDEN, "inter": INTER, "vocab": VOCAB}
    base = Path(args.dir)
    folder = base / f"llama-{'tiny-' if args.tiny else ''}{args.blocks}blocks"
    work = base / "runs"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    size = write_checkpoint(folder, args.blocks, processes=args.processes, **shape)
    print(f"checkpoint: {args.blocks} blocks, hidden {shape['hidden']}, intermediate "
          f"{shape['inter']}, vocab {shape['vocab']}; {size / 2**20:,.0f} MB written in "
          f"{time.perf_counter() - t0:.0f} s ({args.processes} processes)", flush=True)
    if on_cuda and not ok:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"gpu.py: no GPU here ({what}); the checkpoint was written, nothing measured")
        return 0
    print(f"device under test: {args.device}" + (f" = {what}" if on_cuda else ""), flush=True)
    try:
        full = analyze(folder, work, "full", args.device)
        t = full["table"]
        mem = (f", GPU memory {full['gpu_max_allocated_mb']:,.0f} MB allocated at most "
               f"({full['gpu_max_reserved_mb']:,.0f} MB reserved)"
               if "gpu_max_allocated_mb" in full else "")
        print(f"analyze --device {args.device}, whole checkpoint: {full['wall_s']:.1f} s wall "
              f"({full['seconds']:.1f} s in the CLI), {len(t)} layers "
              f"({int((t['status'] == 'failed').sum())} failed), peak RSS "
              f"{full['peak_rss_mb']:,.0f} MB{mem}; mean alpha {t['alpha'].mean():.4f}",
              flush=True)
        cpu = analyze(folder, work, "subset-cpu", "cpu", SUBSET)
        dev = analyze(folder, work, "subset-dev", args.device, SUBSET)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    worst, n, bad = compare(cpu["table"], dev["table"])
    # the full run's rows of the subset must be the subset run's too
    worst_full, _, bad_full = compare(cpu["table"], t[t["name"].isin(cpu["table"]["name"])])
    print(f"subset ({n} layers: the embedding and block 0), cpu {cpu['wall_s']:.1f} s vs "
          f"{args.device} {dev['wall_s']:.1f} s wall: CPU/GPU ratio "
          f"{cpu['wall_s'] / dev['wall_s']:.2f}x "
          f"(in the CLI {cpu['seconds'] / dev['seconds']:.2f}x)", flush=True)
    print(f"{', '.join(COMPARED)}: largest relative difference cpu vs {args.device} "
          f"{max(worst, worst_full):.2e} (tolerance {RTOL:g})", flush=True)
    for line in bad + bad_full:
        print(f"  DIFFERS: {line}")
    if bad or bad_full or n == 0:
        print("gpu.py: FAILED")
        return 1
    print("gpu.py: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
