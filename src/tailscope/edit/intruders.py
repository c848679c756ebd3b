"""Intruder dimensions of a fine-tune (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion
of Equivalence", arXiv 2410.21228) and their reduction (HF PEFT's
``peft.tuners.lora.intruders.reduce_intruder_dimension``), for any tuned/base pair.

Per layer, with W_ft the tuned weight and W_base its base, both as stored ((out, in) for torch,
as PEFT), and U, S, V^T their thin SVDs: for each of the top-k left singular vectors u_j of W_ft,
c_j = max_i |u_j . u_i(W_base)| over every left singular vector of W_base; j is an intruder where
c_j < epsilon. ``reduce_intruders`` writes W' = W_ft + (lambda - 1) sum_{j intruder} s_j u_j v_j^T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.options import make_options
from ..engine.run import Edit, Recipe, Work, identity, recipe, run
from ..sources import LayerPlan, LayerRef, SourceError
from ..util.errors import one_line
from .distances import name_index
from .model import EditedModel, edited_model

COLUMNS = ["layer_id", "name", "layer_type", "N", "M", "rf", "top_k", "num_intruders",
           "intruders", "cos_sim", "sv", "status", "reason"]

def intruder_dimensions(w_ft: np.ndarray, w_base: np.ndarray, top_k: int, epsilon: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(c_j for the top-k left singular vectors of ``w_ft``, their singular values, the intruder
    indices, the SVD (U, S, Vt) of ``w_ft``) as PEFT computes them, in float64."""
    u_base = np.linalg.svd(w_base, full_matrices=False)[0]
    u, s, vt = np.linalg.svd(w_ft, full_matrices=False)
    k = min(top_k, s.size)
    cos = np.abs(u[:, :k].T @ u_base).max(axis=1)
    return cos, s[:k], np.flatnonzero(cos < epsilon), (u, s, vt)


@dataclass(frozen=True)
class Intruders(Work):
    """The work of ``intruders`` / ``reduce_intruders``: one tuned layer against its base
    (``lambda_`` None: find only)."""

    base: Recipe
    top_k: int
    epsilon: float
    lambda_: float | None = None
    feature = "intruders"

    @property
    def edits(self) -> bool:  # type: ignore[override]
        return self.lambda_ is not None

    def layer(self, ref: LayerRef, plan: LayerPlan, o, backend):
        row = {**identity(ref, plan), "top_k": self.top_k, "num_intruders": 0,
               "intruders": [], "cos_sim": [], "sv": [], "status": "unchanged", "reason": ""}
        new = None
        try:
            w = np.asarray(ref.load())
            if w.ndim != 2:
                raise SourceError(f"a {w.ndim}-D tensor: intruder dimensions are defined for "
                                  "matrices")
            if w.dtype.kind != "f":
                raise SourceError(f"a {w.dtype} tensor is not floating-point weights")
            other, why = name_index(self.base).find(ref.name)
            if other is None:
                raise SourceError(why)
            wb = np.asarray(other.load())
            if wb.shape != w.shape:
                raise SourceError(f"shape {w.shape} here but {wb.shape} in the base model "
                                  f"({other.name!r})")
            w64, wb64 = w.astype(np.float64), wb.astype(np.float64)
            if not (np.isfinite(w64).all() and np.isfinite(wb64).all()):
                raise SourceError("the weights hold NaN or inf")
            cos, sv, idx, (u, s, vt) = intruder_dimensions(w64, wb64, self.top_k, self.epsilon)
            row.update(num_intruders=int(idx.size), intruders=idx.tolist(),
                       cos_sim=cos.tolist(), sv=sv.tolist())
            if self.lambda_ is not None and idx.size:
                change = (u[:, idx] * s[idx]) @ vt[idx, :]
                new = (w64 + (self.lambda_ - 1.0) * change).astype(w.dtype)
                row["status"] = "edited"
        except Exception as exc:  # noqa: BLE001 - the layer is left as it was, with why
            row.update(status="failed", reason=one_line(exc))
        return Edit((row,), new) if self.edits else [row]

    def failed(self, ref: LayerRef, plan: LayerPlan, exc: BaseException):
        row = {**identity(ref, plan), "top_k": self.top_k, "num_intruders": 0, "intruders": [],
               "cos_sim": [], "sv": [], "status": "failed", "reason": one_line(exc)}
        return Edit((row,)) if self.edits else [row]


def _check(top_k, epsilon, lambda_=None) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer; got {top_k!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
            or not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be a number in [0, 1]; got {epsilon!r}")
    if lambda_ is not None and (isinstance(lambda_, bool)
                                or not isinstance(lambda_, (int, float))
                                or not math.isfinite(lambda_)):
        raise ValueError(f"lambda_ must be a finite number; got {lambda_!r}")


def _run(tuned, base, work_args, layers, trust_pickle, progress, scheduler, options, feature):
    o = make_options(layers=layers, **options)
    rec = recipe(tuned, trust_pickle=trust_pickle, feature=feature, derived=())
    other = Recipe(base, trust_pickle=bool(trust_pickle))
    other = other.resolved() if other.on_disk else other
    return run(rec, Intruders(other, *work_args), o, scheduler=scheduler, progress=progress)


def intruders(tuned, base, top_k: int = 10, epsilon: float = 0.5, *, layers=None,
              trust_pickle: bool = False, progress=None, scheduler=None,
              **options) -> pd.DataFrame:
    """Intruder dimensions per layer of a fine-tune against its base model.

    Parameters
    ----------
    tuned, base : path, torch.nn.Module, state dict or array
        The fine-tuned model (a full fine-tune, or a LoRA merged into its base) and the base, in
        any formats; layers are matched by name as ``distances`` matches them.
    top_k : int
        How many of the tuned matrix's top left singular vectors are examined (PEFT: 10).
    epsilon : float
        c_j below it is an intruder (PEFT's ``threshold_epsilon``: 0.5).
    layers, progress, scheduler, **options
        As :func:`tailscope.analyze` (the layers analyze would fit; ``jobs=`` threads).

    Returns
    -------
    pandas.DataFrame
        One row per layer: ``name``, ``num_intruders``, ``intruders`` (their indices among the
        top-k), ``cos_sim`` (c_j, j < top_k), ``sv`` (their singular values), ``status``,
        ``reason`` (a layer without a same-shape base counterpart, or not a matrix, has its
        reason and no numbers).
    """
    _check(top_k, epsilon)
    done = _run(tuned, base, (int(top_k), float(epsilon)), layers, trust_pickle, progress,
                scheduler, options, "intruders")
    rows = [row for out in done.outputs for row in out]
    return pd.DataFrame(rows, columns=COLUMNS)


def reduce_intruders(tuned, base, top_k: int = 10, epsilon: float = 0.5,
                     lambda_: float = 0.75, *, layers=None, trust_pickle: bool = False,
                     progress=None, scheduler=None, **options) -> EditedModel:
    """The fine-tune with its intruder dimensions scaled by ``lambda_`` (PEFT's
    ``reduce_intruder_dimension``, ``mitigation_lambda``): W' = W + (lambda - 1) sum over the
    layer's intruders of s_j u_j v_j^T (the SVD of the tuned W; see :func:`intruders`).

    PEFT then refactorises W' - W_base into the adapter's rank r (its B, A); this returns the
    full-rank W' itself, for any tuned/base pair. Returns an :class:`EditedModel` (every tensor of
    ``tuned``, edited layers replaced; ``details`` as :func:`intruders`' rows).
    """
    _check(top_k, epsilon, lambda_)
    done = _run(tuned, base, (int(top_k), float(epsilon), float(lambda_)), layers,
                trust_pickle, progress, scheduler, options, "reduce_intruders")
    return edited_model(done, COLUMNS)


__all__ = ["COLUMNS", "Intruders", "intruder_dimensions", "intruders", "reduce_intruders"]
