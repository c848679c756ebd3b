"""WeightWatcher's derived layers: ``stacked=True`` (every layer's matrices in one padded
matrix) and ``intra=True`` (the overlap X = W0 S W1 of consecutive layers), built from the
layers ``describe`` lists, in WeightWatcher's orientation, then analysed by tailscope as plain
matrices.

WeightWatcher's matrices of a layer (its ``Wmats``): a dense layer's weight as stored (out x in);
a conv layer's rf slices ``W[:, :, i, j]``, each turned tall. ``stacked``: each layer's matrices
side by side, standardised by its median and median absolute deviation, zero-padded on the right
to the widest, stacked and turned tall. ``intra``: for consecutive layers W0, W1 (first matrices,
aligned on their shared dimension) X = W0 S W1 / (||W0|| ||W1|| + sqrt(||S||)) with S a random
0/1 matrix (``sparsify=True``; WeightWatcher's is unseeded, the facade's is drawn from ``seed``)
or X = W0 W1 / (||W0|| ||W1||); a pair that cannot be aligned gives no row, as in WeightWatcher;
the ESD of an intra row is the singular values of X (WeightWatcher's convention), not their
squares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.options import make_options
from ..engine.run import Work, recipe, run

STACKED_NAME = "Stacked Layer"


def ww_matrices(ref, w: np.ndarray) -> list[np.ndarray]:
    """WeightWatcher's matrices of one torch-layout tensor."""
    if getattr(ref, "layout", "torch") != "torch":
        raise ValueError(f"{ref.name}: stacked/intra read PyTorch-layout tensors only")
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 2:
        return [w]
    if w.ndim == 4:
        mats = []
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                m = w[:, :, i, j]
                mats.append(m.T if m.shape[0] < m.shape[1] else m)
        return mats
    raise ValueError(f"{ref.name}: a {w.ndim}-D tensor has no WeightWatcher matrices here")


class WWMatrices(Work):
    """One layer's WeightWatcher matrices (a failure raises: stacked/intra need them all)."""

    feature = "stacked/intra"

    def layer(self, ref, plan, o, backend) -> list[np.ndarray]:
        return ww_matrices(ref, ref.load())

    def failed(self, ref, plan, exc):
        raise exc


def layer_matrices(model, options: dict, *, base_model=None, peft=False) -> list[list]:
    """The matrices of every layer ``analyze`` would fit, in model order."""
    o = make_options(**options)
    rec = recipe(model, base_model=base_model, peft=peft, feature="stacked/intra")
    return run(rec, WWMatrices(), o).outputs


def stacked_matrix(layers: list[list[np.ndarray]]) -> np.ndarray:
    """WeightWatcher's stacked matrix of all layers."""
    from scipy import stats

    mats = [np.hstack(m) if len(m) > 1 else m[0] for m in layers]
    width = max(m.shape[1] for m in mats)
    padded = [np.pad((m - np.median(m)) / stats.median_abs_deviation(m),  # per column
                     ((0, 0), (0, width - m.shape[1]))) for m in mats]
    w = np.vstack(padded)
    return w.T if w.shape[0] < w.shape[1] else w


def _align(w0: np.ndarray, w1: np.ndarray):
    shapes = [w0.shape[0], w0.shape[1], w1.shape[0], w1.shape[1]]
    rest = list(shapes)
    for x in np.unique(shapes):
        rest.remove(x)
    if rest:
        shared = max(rest)
        if w0.shape[1] != shared:
            w0 = w0.T
        if w1.shape[0] != shared:
            w1 = w1.T
    return w0, w1


def intra_matrices(layers: list[list[np.ndarray]], *, sparsify: bool = True,
                   seed=None) -> list[tuple[int, np.ndarray]]:
    """``(index of the second layer, X)`` for each alignable pair of consecutive layers."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, len(layers)):
        w0, w1 = _align(layers[k - 1][0].astype(np.float64), layers[k][0].astype(np.float64))
        if w0.shape[1] != w1.shape[0]:
            continue
        norm = np.linalg.norm(w0) * np.linalg.norm(w1)
        if sparsify:
            m = w1.shape[0]
            s = rng.integers(0, 2, size=(m, m)).astype(np.float64)
            x = w0 @ s @ w1 / (norm + np.sqrt(np.linalg.norm(s)))
        else:
            x = w0 @ w1 / norm
        out.append((k, singular_value_matrix(x)))
    return out


def singular_value_matrix(x: np.ndarray) -> np.ndarray:
    """An N x M matrix whose ESD is the singular values of ``x`` (N x M, turned tall): WeightWatcher
    fits an intra layer's singular values, not their squares."""
    x = x.T if x.shape[0] < x.shape[1] else x
    n, m = x.shape
    y = np.zeros((n, m))
    y[np.arange(m), np.arange(m)] = np.sqrt(np.linalg.svd(x, compute_uv=False))
    return y


def stacked_describe(layers: list[list[np.ndarray]], first: pd.Series) -> pd.DataFrame:
    """WeightWatcher's one describe row of the stacked layer (``first``: the first layer's row)."""
    w = stacked_matrix(layers)
    n, m = w.shape
    return pd.DataFrame([{"layer_id": 0, "name": STACKED_NAME, "M": m, "N": n, "Q": n / m,
                          "layer_type": "stacked", "longname": first["longname"],
                          "num_evals": m, "rf": 1}])


SELECTING = ("layers", "min_evals", "max_evals", "max_N", "pool", "peft", "base_model")


def derived_rows(mode: str, layers: list[list[np.ndarray]], table: pd.DataFrame, *,
                 sparsify: bool = True, seed=None) -> tuple[dict, list[dict]]:
    """The derived matrices (name -> X, to analyse) and the identity of each one's row: its
    WeightWatcher layer_id, name, longname, layer_type, rf (and Xflag for intra)."""
    if mode == "stacked":
        first = table.iloc[0]
        return {"stacked": stacked_matrix(layers)}, [
            {"layer_id": 0, "name": STACKED_NAME, "longname": first["longname"],
             "layer_type": "stacked", "rf": 1}]
    mats, ids = {}, []
    for k, x in intra_matrices(layers, sparsify=sparsify, seed=seed):
        prev, cur = table.iloc[k - 1], table.iloc[k]
        mats[f"intra{k}"] = x
        ids.append({"layer_id": cur["layer_id"], "name": f"{prev['layer_id']} X {cur['layer_id']} ",
                    "longname": cur["longname"], "layer_type": cur["layer_type"],
                    "rf": cur["rf"], "Xflag": True})
    return mats, ids


def with_identity(frame: pd.DataFrame, ids: list[dict]) -> pd.DataFrame:
    """``frame``'s rows (one per derived matrix, in order) with their WeightWatcher identity."""
    d = frame.reset_index(drop=True).copy()
    for col in ids[0] if ids else ():
        d[col] = [i[col] for i in ids]
    return d


# --- conv2d_fft ----------------------------------------------------------------------------------
FFT_GRID = 32


def conv2d_fft_evals(w: np.ndarray) -> np.ndarray:
    """WeightWatcher's ``conv2d_fft`` ESD of a torch-layout conv kernel (out, in, kh, kw),
    before its conv2d_norm: each kernel's 2-D FFT on a 32 x 32 grid, of which (as
    WeightWatcher's cast to float does) the real part, its singular values per (out, in) pair,
    the top rf * N * M of them (rf = min(kh, kw)), squared."""
    w = np.asarray(w, dtype=np.float32)
    n, m, kh, kw = w.shape
    if n + m < kh + kw:
        raise ValueError("conv2d_fft reads (out, in, kh, kw) kernels only")
    coefs = np.fft.fft2(w, (FFT_GRID, FFT_GRID), axes=(2, 3)).real.astype(np.float64)
    sv = np.sort(np.linalg.svd(coefs, compute_uv=False).ravel())
    n_comp = min(kh, kw) * n * m
    return sv[-n_comp:] ** 2


def conv2d_fft_layers(model, options: dict, *, base_model=None, peft=False) -> dict:
    """layer_id -> the :class:`LayerResult` of each conv2d layer's ``conv2d_fft`` ESD, with the
    options' fit and diagnostics."""
    o = make_options(**options)
    rec = recipe(model, base_model=base_model, peft=peft, feature="conv2d_fft")
    done = run(rec, FFTLayer(), o, select=conv2d_only)
    return {ref.index: out for (ref, _), out in zip(done.todo, done.outputs)}, o


def conv2d_only(ref, plan, reason: str) -> str:
    """The runner's selection for conv2d_fft: the conv2d layers analyze would fit."""
    return reason or ("" if plan.layer_type == "conv2d" else "not a conv2d layer")


@dataclass(frozen=True)
class FFTLayer(Work):
    """One conv2d layer's ``conv2d_fft`` ESD, fitted with the options (as one matrix)."""

    feature = "conv2d_fft"

    def layer(self, ref, plan, o, backend):
        from dataclasses import replace

        from ..engine.layer import layer_rows

        return layer_rows(ref, replace(plan, rf=1), o, [conv2d_fft_evals(ref.load())])

    def failed(self, ref, plan, exc):
        from ..engine.layer import LayerResult

        return LayerResult.failed(ref, plan, exc)
