"""The training monitor: every N optimizer steps, the model's layers analysed in memory, logged
(CSV, TensorBoard, the zoo store), warned about once, and optionally re-scheduled."""

from __future__ import annotations

import csv as _csv
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..util.optional import require
from . import schedule as sched

# One check (alpha, alpha_hill, traps: hill=True, randomize=True) of the digits network of
# `tailscope validate` (64-256-256-256-10) costs as much as about 200 of its SGD steps at batch 16
# (0.15 s against 0.7 ms on one core); every 5000 steps keeps it near 4% of the training time
# (bench/monitor_overhead.py measures it). Larger networks cost more per step too.
DEFAULT_EVERY = 5000
COLUMNS = ("step", "layer_id", "name", "alpha", "alpha_hill", "num_traps", "lr", "weight_decay",
           "status", "reason")
SCHEDULES = (None, "lr", "weight_decay", "both")


class TrainingWarning(UserWarning):
    """A layer looked over-trained during training: alpha < 2, or correlation traps appeared."""


class Monitor:
    """Watch a torch model while it trains.

    Call :meth:`step` after each ``optimizer.step()`` (or use the monitor as a context manager and
    call :meth:`step` inside; leaving it closes the files). Every ``every`` steps the model is
    analysed in memory (``hill=True, randomize=True, seed=seed``: ``alpha``, ``alpha_hill`` and
    ``num_traps``, WeightWatcher's ``rand_num_spikes``), one row per layer is added to
    :attr:`history` and written to ``log_dir/tailscope-monitor.csv`` (``csv``), to TensorBoard
    (``tensorboard``: scalars ``alpha/<layer>``, ``alpha_hill/<layer>``, ``num_traps/<layer>``,
    ``lr/<layer>``, ``weight_decay/<layer>`` in ``log_dir``) and to a zoo results store (``store``:
    a path, URL or :class:`tailscope.zoo.Store`; one model ``<run>/step<N>`` per check).

    ``schedule``: ``"lr"`` (TempBalance), ``"weight_decay"`` (AlphaDecay) or ``"both"`` re-maps
    the optimizer's groups at each check; the optimizer must be built from
    :func:`layer_learning_rates`/:func:`layer_weight_decays` groups and passed to ``step``. The
    base values are ``base_lr``/``base_weight_decay``, else those the groups were built with.

    A :class:`TrainingWarning` is issued once per layer when its alpha first drops below 2, and
    once per layer when it first shows a correlation trap.
    """

    def __init__(self, model, every: int = DEFAULT_EVERY, log_dir=None, csv: bool = True,
                 tensorboard: bool = False, store=None, schedule: str | None = None, *,
                 seed: int = 0, run: str = "train", base_lr: float | None = None,
                 base_weight_decay: float | None = None, lr_min_ratio: float = 0.5,
                 lr_slope: float = 1.0, wd_min_ratio: float = sched.WD_MIN_RATIO,
                 wd_max_ratio: float = sched.WD_MAX_RATIO, metric: str = "alpha_hill",
                 warn: bool = True):
        torch = require("torch", "tailscope.train.Monitor")
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"Monitor needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of None, 'lr', 'weight_decay', 'both'; "
                             f"got {schedule!r}")
        if tensorboard and log_dir is None:
            raise ValueError("tensorboard=True needs a log_dir")
        self.model, self.every, self.seed, self.run = model, every, int(seed), str(run)
        self.schedule, self.metric, self.warn = schedule, metric, bool(warn)
        self.base_lr, self.base_weight_decay = base_lr, base_weight_decay
        self.ratios = (float(lr_min_ratio), float(lr_slope), float(wd_min_ratio),
                       float(wd_max_ratio))
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.csv_path = (self.log_dir / "tailscope-monitor.csv"
                         if self.log_dir is not None and csv else None)
        self.steps = 0
        self.checks = 0
        self.seconds = 0.0  # time spent in checks
        self.last = None  # the last Analysis
        self._rows: list[dict] = []
        self._warned: set[tuple[str, str]] = set()
        self._writer = None
        self._store = None
        self._run_id = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            require("tensorboard", "TensorBoard logging")
            tb = require("torch.utils.tensorboard", "TensorBoard logging")
            self._writer = tb.SummaryWriter(log_dir=str(self.log_dir))
        if store is not None:
            from ..zoo import open_store

            self._store = open_store(store)

    # --- the loop ------------------------------------------------------------------------------
    def step(self, optimizer=None) -> pd.DataFrame | None:
        """Count one optimizer step; every ``every`` steps, check. Returns the check's rows or
        None."""
        self.steps += 1
        if self.steps % self.every:
            return None
        return self.check(optimizer)

    def check(self, optimizer=None) -> pd.DataFrame:
        """Analyse the model now (at step :attr:`steps`), apply the schedule, log and warn."""
        from ..analysis import analyze

        t0 = time.perf_counter()
        if self.schedule is not None and optimizer is None:
            raise ValueError(f"schedule={self.schedule!r} needs the optimizer: "
                             "monitor.step(optimizer)")
        was = self.model.training
        try:
            a = analyze(self.model, hill=True, randomize=True, seed=self.seed)
        finally:
            self.model.train(was)
        self.last = a
        applied = self._apply(a, optimizer) if self.schedule is not None else {}
        d = a.details
        if "slice" in d.columns:
            d = d[d["slice"].isna()]
        rows = []
        for rec in d.to_dict("records"):
            module = str(rec["name"]).rsplit(".", 1)[0]
            lr, wd = applied.get(module, (math.nan, math.nan))
            traps = rec.get("rand_num_spikes")
            rows.append({"step": self.steps, "layer_id": int(rec["layer_id"]),
                         "name": str(rec["name"]), "alpha": _num(rec.get("alpha")),
                         "alpha_hill": _num(rec.get("alpha_hill")),
                         "num_traps": _num(traps), "lr": lr, "weight_decay": wd,
                         "status": rec.get("status", ""), "reason": rec.get("reason") or ""})
        self._rows.extend(rows)
        self._write(rows, a)
        self._warn(rows)
        self.checks += 1
        self.seconds += time.perf_counter() - t0
        return pd.DataFrame(rows, columns=list(COLUMNS))

    @property
    def history(self) -> pd.DataFrame:
        """Every check's per-layer rows: step, layer_id, name, alpha, alpha_hill, num_traps, the
        lr and weight_decay the schedule applied (NaN when none), status, reason."""
        return pd.DataFrame(self._rows, columns=list(COLUMNS))

    def close(self) -> None:
        """Flush and close TensorBoard and the store."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if self._store is not None:
            if self._run_id is not None:
                self._store.finish_run(self._run_id, self.checks, 0, 0)
            self._store.close()
            self._store = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the parts -----------------------------------------------------------------------------
    def _apply(self, a, optimizer) -> dict[str, tuple[float, float]]:
        lr_min, slope, wd_min, wd_max = self.ratios
        out: dict[str, list[float]] = {}
        if self.schedule in ("lr", "both"):
            base = self.base_lr if self.base_lr is not None else _base(optimizer, "lr")
            m = sched.layer_metrics(a, self.model, self.metric)
            v = sched.learning_rate_values(m, base, lr_min, slope)
            sched.apply_values(optimizer, self.model, v, "lr", base)
            for k, x in v.items():
                out.setdefault(k, [math.nan, math.nan])[0] = x
        if self.schedule in ("weight_decay", "both"):
            base = (self.base_weight_decay if self.base_weight_decay is not None
                    else _base(optimizer, "weight_decay"))
            m = sched.layer_metrics(a, self.model, self.metric, min_eigs=sched.MIN_EIGS)
            v = sched.weight_decay_values(m, base, wd_min, wd_max)
            sched.apply_values(optimizer, self.model, v, "weight_decay", base)
            for k, x in v.items():
                out.setdefault(k, [math.nan, math.nan])[1] = x
        return {k: (v[0], v[1]) for k, v in out.items()}

    def _write(self, rows: list[dict], a) -> None:
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with open(self.csv_path, "a", newline="") as f:
                w = _csv.DictWriter(f, fieldnames=list(COLUMNS))
                if new:
                    w.writeheader()
                w.writerows(rows)
        if self._writer is not None:
            for r in rows:
                for k in ("alpha", "alpha_hill", "num_traps", "lr", "weight_decay"):
                    if np.isfinite(r[k]):
                        self._writer.add_scalar(f"{k}/{r['name']}", r[k], self.steps)
        if self._store is not None:
            st = self._store
            if self._run_id is None:
                from .._version import __version__

                self._run_id = st.start_run(self._key(), __version__, {"monitor": self.run},
                                            "", "tailscope.train.Monitor", 0)
            summary = a.summary()
            ok = summary.get("success", 0) > 0
            st.write_model(self._key(), self._run_id,
                           {"name": f"{self.run}/step{self.steps:09d}",
                            "source": f"tailscope.train.Monitor: {self.run}", "group": self.run,
                            "quality": {"step": self.steps}},
                           {"status": "success" if ok else "failed",
                            "reason": "" if ok else "no layer was fitted", "summary": summary,
                            "details": a.details, "read": a.source,
                            "worker": "tailscope.train.Monitor"})

    def _key(self) -> str:
        return f"train:{self.run}"

    def _warn(self, rows: list[dict]) -> None:
        if not self.warn:
            return
        for r in rows:
            name = r["name"]
            if r["alpha"] < 2 and (name, "alpha") not in self._warned:
                self._warned.add((name, "alpha"))
                warnings.warn(f"tailscope: layer {name} alpha {r['alpha']:.3f} < 2 at step "
                              f"{r['step']} (over-trained: heavy tail; warned once per layer)",
                              TrainingWarning, stacklevel=4)
            if r["num_traps"] > 0 and (name, "traps") not in self._warned:
                self._warned.add((name, "traps"))
                warnings.warn(f"tailscope: layer {name} has {int(r['num_traps'])} correlation "
                              f"trap(s) at step {r['step']} (rand_num_spikes; warned once per "
                              "layer)", TrainingWarning, stacklevel=4)


def _num(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def _base(optimizer, key: str) -> float:
    """The base value the groups were built with (``base_<key>``), else the optimizer's default."""
    for g in optimizer.param_groups:
        if f"base_{key}" in g:
            return float(g[f"base_{key}"])
    return float(optimizer.defaults[key])
