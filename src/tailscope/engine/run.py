"""The runner: the one loop over a model's layers, under every per-layer feature.

A feature (``analyze``, ``smooth``, ``sharpen``, ``traps``, ``remove_traps``, ``prune``,
``distances``, compat's per-layer paths) declares only what it computes for one layer: a
:class:`Work` whose ``layer(ref, plan, o, backend)`` returns that layer's output (a
``LayerResult``, rows, an :class:`Edit`) and whose ``failed(ref, plan, exc)`` says what a layer
that raised gives instead. The runner owns the rest, the same way for every feature:

- opening, always through :class:`Recipe` (``sources.open_source`` and ``sources.derived.derive``),
  so ``base_model``, ``peft`` and ``trust_pickle`` mean the same everywhere, or are refused in one
  line naming the feature (``Work.derived`` says which derivations it accepts);
- planning: selection (``layers=``, sizes), splits and heads (``engine.plan``), the skipped rows;
- running in this thread (same-shape layers batched on a torch device when the work batches),
  in ``o.jobs`` threads, or as Dask tasks: a task carries the recipe and the layer's position in
  the plan, and the worker re-plans from the recipe (cached per process), so it computes exactly
  what this process would; a source that is not on disk (a module, a state dict, arrays) travels
  as the planned layer itself, its tensors read here;
- one failure row per failed layer, progress after each layer, results in model order;
- for edits, the model's own tensors with the edited ones in place and split parts joined back;
  when the analysed tensor is derived (W - W_base), the edit is applied to the fine-tuned weights:
  W + (edited - analysed), never the delta itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..sources import LayerPlan, LayerRef, Source, open_source
from ..sources.derived import derive
from ..sources.moe import restack
from ..sources.split import expand
from .plan import planned

Progress = Callable[[int, int, str], None]  # (done, total, name of the last layer)

DERIVATIONS = ("base_model", "peft")


# --- what is opened ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How to open the model a feature runs on: the source, the base model a fine-tune is taken
    from (``W - W_base``), the LoRA adapter mode (``peft``) and whether pickles that run code are
    trusted. Picklable: a Dask worker opens the same thing from it."""

    source: Any
    base_model: Any = None
    peft: Any = False
    trust_pickle: bool = False

    @property
    def derived(self) -> bool:
        """Whether the analysed tensors are derived (a fine-tune delta, LoRA updates)."""
        return self.base_model is not None or bool(self.peft)

    @property
    def on_disk(self) -> bool:
        """Whether every worker can open it again (paths and hub ids, not objects in memory)."""
        return all(x is None or isinstance(x, (str, os.PathLike))
                   for x in (self.source, self.base_model))

    def open(self) -> Source:
        """The source analysed: the model, its delta from ``base_model``, or its LoRA layers."""
        src = open_source(self.source, trust_pickle=self.trust_pickle)
        base = None if self.base_model is None else \
            open_source(self.base_model, trust_pickle=self.trust_pickle)
        return derive(src, base=base, peft=self.peft)

    def open_model(self) -> Source:
        """The model's own tensors (what an edit writes back), whatever is analysed."""
        return open_source(self.source, trust_pickle=self.trust_pickle)

    def describe_base(self) -> str | None:
        """The base model as text, for a result's options."""
        b = self.base_model
        if b is None:
            return None
        return str(b) if isinstance(b, (str, Path)) else type(b).__name__

    def resolved(self) -> Recipe:
        """Paths made absolute (a worker may run in another folder)."""
        def absolute(x):
            if isinstance(x, (str, os.PathLike)) and Path(x).expanduser().exists():
                return str(Path(x).expanduser().resolve())
            return x
        return replace(self, source=absolute(self.source), base_model=absolute(self.base_model))


def recipe(source, *, base_model=None, peft=False, trust_pickle: bool = False,
           feature: str = "analyze", derived: tuple[str, ...] = DERIVATIONS) -> Recipe:
    """A :class:`Recipe`, refusing in one line the derivations ``feature`` does not take."""
    for name, value in (("base_model", base_model), ("peft", peft)):
        if name not in derived and value is not None and value is not False:
            raise ValueError(f"{feature}: {name}= is not supported ({_WHY[name]})")
    return Recipe(source, base_model, peft, bool(trust_pickle))


_WHY = {"peft": "a LoRA update B·A cannot be written back as its factors; edit the merged model",
        "base_model": "it compares two models itself"}


# --- what a feature declares ---------------------------------------------------------------------
class Work:
    """What a feature computes for one layer. Subclasses are module-level and picklable (they
    travel to Dask workers): they hold their parameters as fields, never closures."""

    feature = "analyze"
    edits = False  # layer() returns an Edit whose tensor replaces the layer's (None: unchanged)

    def layer(self, ref: LayerRef, plan: LayerPlan, o, backend) -> Any:
        raise NotImplementedError

    def failed(self, ref: LayerRef, plan: LayerPlan, exc: BaseException) -> Any:
        """The output of a layer whose ``layer()`` raised (or whose Dask task was lost)."""
        raise NotImplementedError

    def groups(self, todo: list[tuple[LayerRef, LayerPlan]], o, backend) -> list[list]:
        """How consecutive layers are run together in this thread (default: one by one)."""
        return [[item] for item in todo]

    def batch(self, group: list[tuple[LayerRef, LayerPlan]], o, backend) -> list:
        """The outputs of one group of :meth:`groups` (a batched eigensolve on a device)."""
        return [layer_output(self, ref, plan, o, backend) for ref, plan in group]


@dataclass(frozen=True)
class Edit:
    """One layer's edit: its detail rows and the new tensor (None: left as it was), in the
    analysed tensor's shape and dtype."""

    rows: tuple[dict, ...]
    tensor: np.ndarray | None = None


def identity(ref: LayerRef, plan: LayerPlan) -> dict:
    """The identity columns every per-layer table starts with."""
    return {"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type,
            "N": plan.N, "M": plan.M, "rf": plan.rf}


def tensor_row(ref: LayerRef, plan: LayerPlan) -> dict:
    """The identity of a tensor as stored (the tables of what is, or is not, analysed)."""
    return {"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type,
            "shape": "x".join(map(str, ref.shape)), "dtype": ref.dtype, "quant": ref.quant}


def skipped_row(ref: LayerRef, plan: LayerPlan, reason: str) -> dict:
    """A tensor that is not analysed, and why."""
    return {**tensor_row(ref, plan), "reason": reason}


def describe_row(ref: LayerRef, plan: LayerPlan, reason: str) -> dict:
    """``describe``'s row of one tensor (or part): its plan, and whether it is analysed."""
    return {**tensor_row(ref, plan), "expert": ref.expert, "N": plan.N, "M": plan.M, "rf": plan.rf,
            "num_evals": plan.num_evals, "analyze": not reason, "reason": reason}


# --- the run -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Run:
    """What the runner gives back: the source analysed, the layers run as (ref, plan), each one's
    output (in the same order), the skipped tensors' rows, the options (the drawn seed included)
    and, for edits, the model's tensors with the edits in place."""

    source: Source
    todo: list
    outputs: list
    skipped: list[dict]
    options: Any
    seconds: float
    weights: dict[str, np.ndarray] | None = None
    layouts: dict[str, str] = field(default_factory=dict)


def describe(rec: Recipe, o) -> list[dict]:
    """The plan of every tensor (and every part of a split one), nothing read."""
    return [describe_row(ref, lp, reason) for ref, lp, reason in planned(rec.open(), o)]


def run(rec: Recipe, work: Work, o, *, scheduler=None, progress: Progress | None = None,
        select: Callable | None = None, seeded: bool = False) -> Run:
    """Run ``work`` on every planned layer of the model ``rec`` opens.

    ``select(ref, plan, reason) -> reason`` overrides the plan's choice ('' = run it).
    ``seeded``: the work draws random numbers; a seed of None becomes fresh entropy, recorded in
    the run's options, so the run can be repeated."""
    t0 = time.perf_counter()
    if seeded and o.seed is None:
        o = replace(o, seed=int(np.random.SeedSequence().entropy))
    src = rec.open()
    items = list(planned(src, o))
    if select is not None and hasattr(select, "check"):
        select.check([ref for ref, *_ in items])
    chosen = []
    skipped = []
    for pos, (ref, lp, reason) in enumerate(items):
        if select is not None:
            reason = select(ref, lp, reason)
        if reason:
            skipped.append(skipped_row(ref, lp, reason))
        else:
            chosen.append(pos)
    todo = [(items[p][0], items[p][1]) for p in chosen]
    if scheduler is not None:
        outputs = _run_dask(rec, work, o, items, chosen, scheduler, progress)
    else:
        from ..spectrum import get_backend

        outputs = run_layers(work, todo, o, get_backend(o.device), progress)
    weights = layouts = None
    if work.edits:
        weights, layouts = _edited_weights(rec, src, items, todo, outputs, o)
    return Run(src, todo, outputs, skipped, o, time.perf_counter() - t0, weights, layouts or {})


def layer_output(work: Work, ref: LayerRef, plan: LayerPlan, o, backend):
    """One layer's output; any exception becomes the work's failure output."""
    try:
        return work.layer(ref, plan, o, backend)
    except Exception as exc:  # noqa: BLE001 - one bad layer never stops a run
        return work.failed(ref, plan, exc)


def run_layers(work: Work, todo: list, o, backend, progress: Progress | None = None) -> list:
    """In ``o.jobs`` threads when > 1 (and more than one layer), else in this thread."""
    jobs = int(getattr(o, "jobs", 1) or 1)
    if jobs <= 1 or len(todo) <= 1:
        return _serial(work, todo, o, backend, progress)
    return _threads(work, todo, o, backend, min(jobs, len(todo)), progress)


def _serial(work: Work, todo: list, o, backend, progress) -> list:
    out: list = []
    for group in work.groups(todo, o, backend):
        out.extend(work.batch(group, o, backend))
        if progress:
            progress(len(out), len(todo), group[-1][0].name)
    return out


def _threads(work: Work, todo: list, o, backend, jobs: int, progress) -> list:
    """Layers in parallel threads (numpy and LAPACK release the GIL), BLAS threads shared out."""
    results: list = [None] * len(todo)
    with blas_limit(max(1, (os.cpu_count() or 1) // jobs)), \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(layer_output, work, ref, lp, o, backend): i
                   for i, (ref, lp) in enumerate(todo)}
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            results[i] = fut.result()
            if progress:
                progress(done, len(todo), todo[i][0].name)
    return results


def blas_limit(n: int):
    """Limit BLAS threads to ``n`` (while layers run in parallel, or in a Dask task)."""
    return threadpool_limits(limits=n, user_api="blas")


# --- Dask ----------------------------------------------------------------------------------------
def _run_dask(rec: Recipe, work: Work, o, items: list, chosen: list[int], scheduler,
              progress) -> list:
    """The chosen layers as Dask tasks; outputs in the plan's order."""
    from .dask import dask_client

    o = replace(o, jobs=1)
    on_disk = rec.on_disk
    rec = rec.resolved() if on_disk else rec
    with dask_client(scheduler) as client:
        from distributed import as_completed as dask_completed

        futures = {}
        for i, pos in enumerate(chosen):
            ref, lp, _ = items[pos]
            if on_disk:  # the recipe: the worker plans the same layer itself
                fut = client.submit(_task_planned, rec, work, o, pos, ref.name, pure=False)
            else:  # not on disk: the planned layer itself, its tensors read here
                fut = client.submit(_task_layer, ref.materialized(), lp, work, o, pure=False)
            futures[fut] = i
        outputs: list = [None] * len(chosen)
        for done, fut in enumerate(dask_completed(futures), 1):
            i = futures[fut]
            ref, lp, _ = items[chosen[i]]
            try:
                outputs[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker: this layer fails
                outputs[i] = work.failed(ref, lp, exc)
            if progress:
                progress(done, len(chosen), ref.name)
        return outputs


_PLANS: dict = {}  # per worker process: (recipe, planning options, mtimes) -> planned items


def _mtimes(rec: Recipe) -> tuple:
    out = []
    for x in (rec.source, rec.base_model):
        try:
            out.append(os.path.getmtime(x) if x is not None else None)
        except (OSError, TypeError):
            out.append(None)
    return tuple(out)


def worker_plan(rec: Recipe, o) -> list:
    """The planned items of ``rec`` in this process (cached: a worker plans a model once)."""
    key = (rec, repr((o.layers, o.min_evals, o.max_evals, o.max_N, o.pool, o.split, o.heads)),
           _mtimes(rec))
    if key not in _PLANS:
        if len(_PLANS) >= 4:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = list(planned(rec.open(), o))
    return _PLANS[key]


def _task_planned(rec: Recipe, work: Work, o, pos: int, name: str):
    items = worker_plan(rec, o)
    ref, lp, _ = items[pos] if pos < len(items) else (None, None, None)
    if ref is None or ref.name != name:
        raise RuntimeError(f"{rec.source} changed under the run: planned tensor {pos} is "
                           f"{getattr(ref, 'name', None)!r}, not {name!r}")
    return _task_layer(ref, lp, work, o)


def _task_layer(ref: LayerRef, lp: LayerPlan, work: Work, o):
    from ..spectrum import get_backend

    with blas_limit(1):
        return layer_output(work, ref, lp, o, get_backend(o.device))


# --- edits ---------------------------------------------------------------------------------------
def _edited_weights(rec: Recipe, src: Source, items: list, todo: list, outputs: list, o
                    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The model's own tensors with the edits in place, split parts joined back. A derived
    analysis (W - W_base) edits the fine-tuned weights: W + (edited - analysed)."""
    new = {ref.name: out.tensor for (ref, _), out in zip(todo, outputs)
           if out is not None and getattr(out, "tensor", None) is not None}
    if rec.derived:
        model = rec.open_model()
        parts = list(expand(model, split=o.split, heads=o.heads))
        by_name = {r.name: r for r, *_ in items}
        weights = {}
        for ref in parts:
            w = np.asarray(ref.load())
            if ref.name in new:
                analysed = np.asarray(by_name[ref.name].load(), dtype=np.float64)
                change = np.asarray(new[ref.name], dtype=np.float64) - analysed
                w = (w.astype(np.float64) + _aligned(change, w.shape)).astype(w.dtype, copy=False)
            weights[ref.name] = w
        return rejoin(weights, parts, set(new)), {r.name: r.layout for r in model}
    refs = [ref for ref, *_ in items]
    weights = {ref.name: (new[ref.name] if ref.name in new else np.asarray(ref.load()))
               for ref in refs}
    return rejoin(weights, refs, set(new)), {r.name: r.layout for r in refs if not r.parent}


def _aligned(change: np.ndarray, shape: tuple) -> np.ndarray:
    """The change in the model tensor's shape (a base stored transposed gives a turned delta)."""
    if change.shape == tuple(shape):
        return change
    if change.ndim == 2 and change.shape[::-1] == tuple(shape):
        return change.T
    raise ValueError(f"an edit of shape {change.shape} does not fit the tensor's {tuple(shape)}")


def rejoin(weights: dict[str, np.ndarray], refs: list[LayerRef], edited=frozenset()
           ) -> dict[str, np.ndarray]:
    """The model's own tensors from ``weights`` that also hold split parts (gates, q/k/v,
    heads; experts, restacked by ``sources.moe.restack``): each split tensor becomes its parts,
    edited or not, joined back along the axis they were cut from, and the parts go (the edited
    model has the source's tensors, no extra keys). Deepest splits first (heads of a q part,
    then q/k/v of ``in_proj_weight``). A split tensor named in ``edited`` was edited whole: it
    stays as it is."""
    out = dict(weights)
    for ref in reversed(refs):
        if ref.name in edited or not ref.split_into or not all(p in out for p in ref.split_into):
            continue
        parts = [out.pop(p) for p in ref.split_into]
        if ref.layout.startswith("stack:"):  # experts back into their stack, its orientation
            out[ref.name] = restack(ref, parts).astype(out[ref.name].dtype, copy=False)
            continue
        axis = next((i for i, (a, b) in enumerate(zip(ref.shape, parts[0].shape)) if a != b), 0)
        joined = np.concatenate(parts, axis=axis)
        if joined.shape != tuple(ref.shape):
            raise ValueError(f"{ref.name}: its parts join to {joined.shape}, not {ref.shape}")
        out[ref.name] = joined.astype(out[ref.name].dtype, copy=False)
    return {r.name: out[r.name] for r in refs if r.name in out and not r.parent}


