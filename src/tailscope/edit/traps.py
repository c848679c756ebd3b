"""Correlation traps in depth: one row per trap, and their removal.

A correlation trap is a spike of the *shuffled* ESD: the elements of a weight matrix W are
permuted at random, which destroys every correlation training put in, and the eigenvalues of the
shuffled matrix W_p that still stand above the Marchenko-Pastur bulk edge plus the Tracy-Widom
width are traps (WeightWatcher's ``rand_num_spikes``, its 0.7.7 ``num_traps``): a few large
entries that no permutation can spread out.

The shuffle, the MP fit and its threshold are exactly those of ``analyze(randomize=True)`` for the
same seed (the layer's generator ``layer_rng(seed, layer_id)``, the same draw order, the same
``mp_fit``), so a layer's number of traps here is its ``rand_num_spikes`` there (for a layer with
fewer than 100 eigenvalues analyze pools 5 shuffles and counts the spikes of all 5; the fit here
pools them too and reports that count as ``rand_num_spikes``, but the traps, one row each, are
those of the first shuffle, the one :func:`remove_traps` edits: ``num_traps`` is about a fifth of
``rand_num_spikes`` there, and equal to it everywhere else).

From the shuffled matrix to W (as WeightWatcher's trunk, PRs #343/#367): a trap k of W_p is its
rank-one component T_p = s_k u_k v_k^T (s_k the singular value, u_k and v_k the singular vectors
of W_p). Shuffling is a permutation P of the entries, W_p = P(W), so the trap's component of W is
T = P^-1(T_p): the same numbers put back where the entries came from. Because P is linear,
W - T = P^-1(W_p - T_p): removing T from W removes the trap from the shuffled matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..engine.layer import layer_scale, load_matrices, ww_oriented
from ..engine.options import make_options
from ..engine.run import Edit, Work, identity, recipe, run
from ..sources.layers import matrices
from ..spectrum import MPFitError, eigenvalues_many, gram, mp_fit
from ..spectrum.randomize import REPLICA_LIMIT
from ..util.errors import one_line
from ..util.rng import layer_rng
from .model import DETAIL_COLUMNS, EditedModel, edited_model

TOP_K = 5  # top-k mass of a singular vector: the share of its squared norm on its k largest entries
NOISE = ("rank1", "trunk")

TRAP_COLUMNS = [
    "layer_id", "name", "layer_type", "N", "M", "rf", "slice_id", "trap", "eigenvalue",
    "singular_value", "bulk_max", "spike_threshold", "excess", "excess_tw", "rand_sigma_mp",
    "left_ipr", "right_ipr", "left_top_k_mass", "right_top_k_mass", "top_k", "row", "col",
    "entry", "entry_share", "variance_share", "layer_num_traps", "layer_trap_burden", "status",
    "reason"]
LAYER_COLUMNS = ["layer_id", "name", "layer_type", "N", "M", "rf", "slice_id", "num_traps",
                 "trap_burden", "replicas", "rand_num_spikes", "rand_sigma_mp", "status", "reason"]


# --- one layer ----------------------------------------------------------------------------------
class _Group:
    """One row of analyze's randomize columns (the pooled layer, or one slice): its matrices,
    their first shuffles (permutations and shuffled matrices), the MP fit and its traps."""

    def __init__(self, slice_id, mats, perms, shuffled, evals, fit, pooled):
        self.slice_id, self.mats, self.perms = slice_id, mats, perms
        self.shuffled, self.evals, self.fit = shuffled, evals, fit
        self.pooled, self.replicas = pooled, pooled.size // max(1, sum(e.size for e in evals))


def _groups(ref, plan, o, rng) -> list:
    """Shuffle the layer's matrices with analyze(randomize=True)'s draws; fit MP per row.

    Returns a list of (slice_id, mats, perms, shuffled, first_evals (scaled, per matrix), MPFit or
    MPFitError)."""
    mats = ww_oriented(ref, plan, load_matrices(ref))
    scale = layer_scale(plan, o)
    groups = [(None, list(range(len(mats))))] if o.pool else [(i, [i]) for i in range(len(mats))]
    out = []
    for slice_id, idx in groups:
        gm = [mats[i] for i in idx]
        n = sum(min(m.shape) for m in gm)
        replicas = 5 if n < REPLICA_LIMIT else 1
        pooled, first = [], None
        for r in range(replicas):
            # rng.permutation(n) is the permutation that rng.permutation(w.ravel()) applies: the
            # same draws as spectrum.shuffle_elements, with the indices kept to map traps back
            perms = [rng.permutation(m.size) for m in gm]
            shuffled = [np.asarray(m).ravel()[p].reshape(m.shape) for m, p in zip(gm, perms)]
            ev = [e * scale for e in eigenvalues_many(shuffled, None, o.method)]
            pooled.extend(ev)
            if r == 0:
                first = (perms, shuffled, ev)
        for m in gm:  # randomized_esd's further fresh shuffle: keeps the generator in step
            rng.permutation(m.size)
        pooled = np.sort(np.concatenate(pooled))
        try:
            fit = mp_fit(pooled, plan.N, plan.M)
        except MPFitError as exc:
            fit = exc
        out.append(_Group(slice_id, gm, *first, fit, pooled))
    return out


def _top_pairs(wp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, U, V): the top k singular triplets of wp (descending), from its float64 Gram matrix."""
    from scipy.linalg import eigh

    g = gram(wp)
    m = g.shape[0]
    lam, vec = eigh(g, subset_by_index=[m - k, m - 1])
    lam, vec = lam[::-1], vec[:, ::-1]
    s = np.sqrt(np.maximum(lam, 0.0))
    w = np.asarray(wp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if wp.shape[0] < wp.shape[1]:  # wide: the Gram is W W^T, its vectors are left ones
            u, v = vec, (w.T @ vec) / s
        else:
            v, u = vec, (w @ vec) / s
    return s, u, v


def _locate(wp, s: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat index in wp, share) per trap: the entry that contributes most to the trap's singular
    value, s_k = sum_ij u_ik wp_ij v_jk, and the share u_ik wp_ij v_jk / s_k it contributes. (The
    largest |u| and largest |v| taken apart pair the wrong row and column when a few traps of
    nearly equal size mix their singular vectors.)"""
    w = np.asarray(wp, dtype=np.float64)
    flat = np.empty(s.size, dtype=np.int64)
    share = np.empty(s.size)
    for j in range(s.size):
        c = (u[:, j, None] * w) * v[None, :, j]
        flat[j] = int(np.argmax(c))
        share[j] = c.flat[flat[j]] / s[j] if s[j] > 0 else np.nan
    return flat, share


def _ipr(x: np.ndarray) -> np.ndarray:
    """Inverse participation ratio sum x_i^4 of each unit column (1/n flat, 1 on one entry)."""
    return np.sum(x ** 4, axis=0)


def _top_mass(x: np.ndarray, k: int) -> np.ndarray:
    """The share of each unit column's squared norm on its k largest entries."""
    sq = np.sort(x ** 2, axis=0)
    return sq[sq.shape[0] - min(k, sq.shape[0]):].sum(axis=0)


def _trap_components(group, fit, scale):
    """Per matrix of the group with traps: (matrix index, s, U, V, eigenvalues), descending."""
    thr = fit.spike_threshold
    found = []
    for i, ev in enumerate(group.evals):
        k = int(np.count_nonzero(ev > thr))
        if k:
            s, u, v = _top_pairs(group.shuffled[i], k)
            found.append((i, s, u, v, np.sort(ev)[::-1][:k]))
    return found


def _layer_traps(ref, plan, o, top_k: int) -> tuple[list[dict], list[dict]]:
    """(trap rows, layer rows) of one layer."""
    base = identity(ref, plan)
    rng = layer_rng(o.seed, ref.index)
    scale = layer_scale(plan, o)
    traps, layers = [], []
    for g in _groups(ref, plan, o, rng):
        row = dict(base, slice_id=g.slice_id)
        if isinstance(g.fit, Exception):
            layers.append(dict(row, num_traps=math.nan, trap_burden=math.nan,
                               replicas=g.replicas, rand_num_spikes=math.nan,
                               rand_sigma_mp=math.nan, status="failed",
                               reason=f"no Marchenko-Pastur fit of the shuffled ESD: {g.fit}"))
            continue
        fit = g.fit
        total = float(sum(e.sum() for e in g.evals))
        w2 = fit.W_scale ** 2
        found = _trap_components(g, fit, scale)
        lam_all = np.concatenate([c[4] for c in found]) if found else np.empty(0)
        burden = float(lam_all.sum() / total) if total > 0 else math.nan
        layers.append(dict(row, num_traps=int(lam_all.size), trap_burden=burden,
                           replicas=g.replicas, rand_num_spikes=fit.num_spikes,
                           rand_sigma_mp=fit.sigma_mp, status="success", reason=""))
        rows = []
        for i, s, u, v, lam in found:
            shape = g.mats[i].shape
            flat, share = _locate(g.shuffled[i], s, u, v)
            where = np.unravel_index(g.perms[i][flat], shape)  # back to W's coordinates
            li, ri = _ipr(u), _ipr(v)
            lm, rm = _top_mass(u, top_k), _top_mass(v, top_k)
            for j in range(s.size):
                resc = lam[j] * w2
                rows.append(dict(
                    row, eigenvalue=float(lam[j]), singular_value=float(s[j]),
                    bulk_max=fit.bulk_max, spike_threshold=fit.spike_threshold,
                    excess=float(resc - (fit.bulk_max * w2 + math.sqrt(fit.tw))),
                    excess_tw=float((resc - fit.bulk_max * w2) / math.sqrt(fit.tw)),
                    rand_sigma_mp=fit.sigma_mp, left_ipr=float(li[j]), right_ipr=float(ri[j]),
                    left_top_k_mass=float(lm[j]), right_top_k_mass=float(rm[j]), top_k=top_k,
                    row=int(where[0][j]), col=int(where[1][j]),
                    entry=float(np.asarray(g.mats[i], dtype=np.float64)[where[0][j], where[1][j]]),
                    entry_share=float(share[j]),
                    variance_share=float(lam[j] / total), layer_num_traps=int(lam_all.size),
                    layer_trap_burden=burden, status="success", reason=""))
        rows.sort(key=lambda r: -r["eigenvalue"])
        for n, r in enumerate(rows, 1):
            r["trap"] = n
        traps.extend(rows)
    return traps, layers


def _checked(top_k) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1; got {top_k!r}")


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    for c in ("slice_id", "trap", "row", "col", "layer_num_traps", "num_traps", "replicas",
              "rand_num_spikes"):
        if c in df:
            df[c] = df[c].astype("Int64")
    return df


# --- the public functions ----------------------------------------------------------------------
@dataclass(frozen=True, repr=False, eq=False)
class Traps:
    """The correlation traps of a model: ``traps`` (one row per trap), ``layers`` (one row per
    analysed layer or slice, with or without traps), ``source`` and ``options`` (the seed of the
    shuffles included)."""

    traps: pd.DataFrame
    layers: pd.DataFrame
    source: str
    options: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __len__(self) -> int:
        """The number of traps."""
        return len(self.traps)

    def __repr__(self) -> str:
        failed = int((self.layers["status"] == "failed").sum()) if len(self.layers) else 0
        return (f"Traps({self.source}: {len(self.traps)} traps in {len(self.layers)} layers, "
                f"{failed} failed; seed {self.options.get('seed')})")


@dataclass(frozen=True)
class FindTraps(Work):
    """The work of ``traps``: one layer's (trap rows, layer rows)."""

    top_k: int = TOP_K
    feature = "traps"

    def layer(self, ref, plan, o, backend) -> tuple[list[dict], list[dict]]:
        return _layer_traps(ref, plan, o, self.top_k)

    def failed(self, ref, plan, exc) -> tuple[list[dict], list[dict]]:
        return [], [{**identity(ref, plan), "slice_id": None, "num_traps": math.nan,
                     "trap_burden": math.nan, "replicas": math.nan, "rand_num_spikes": math.nan,
                     "rand_sigma_mp": math.nan, "status": "failed", "reason": one_line(exc)}]


def traps(source, *, layers=None, seed: int | None = None, top_k: int = TOP_K,
          base_model=None, peft=False, trust_pickle: bool = False, progress=None,
          scheduler=None, **options) -> Traps:
    """Correlation traps, one row per trap: the spikes of each layer's element-shuffled ESD.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.analyze` reads.
    layers : list, optional
        As in :func:`tailscope.analyze`; so are the other selection options (min_evals,
        max_evals, max_N, pool, split, conv2d_norm, normalize, method, base_model, peft).
    seed : int, optional
        The seed of the shuffles, as :func:`tailscope.analyze`'s: the same seed gives the same
        shuffles as ``analyze(randomize=True, seed=seed)``, so each layer has
        ``rand_num_spikes`` traps; None draws fresh entropy, recorded in ``Traps.options``.
    top_k : int
        The k of the top-k mass (default 5, as WeightWatcher's trunk ``top_5_mass``).
    progress : callable(done, total, name), optional
        Called after each layer, as :func:`tailscope.analyze`'s.
    scheduler : str or distributed.Client, optional
        Run the layers on Dask, as :func:`tailscope.analyze` (``jobs=`` runs them in threads).

    Returns
    -------
    Traps
        ``traps``: one row per trap, in model order, largest first within a layer (``trap`` = 1, 2, ...):
        ``eigenvalue`` (in the shuffled ESD, on analyze's scale), ``singular_value`` (of the
        shuffled matrix, unscaled), ``bulk_max`` and ``spike_threshold`` (the MP bulk edge and
        the edge plus the Tracy-Widom width, analyze's ``rand_bulk_max`` and its threshold),
        ``excess`` (the eigenvalue minus the threshold, in the MP fit's rescaled units where the
        shuffled ESD has mean 1) and ``excess_tw`` (its distance above the bulk edge in
        Tracy-Widom widths; > 1 for every trap), ``left_ipr`` / ``right_ipr`` (the inverse
        participation ratios sum u_i^4, sum v_j^4 of the trap's unit singular vectors in the
        shuffled matrix: 1/n for a flat vector, 1 for one entry), ``left_top_k_mass`` /
        ``right_top_k_mass`` (the share of sum u_i^2 on its ``top_k`` largest entries),
        ``row``, ``col`` and ``entry`` (the entry of W, as oriented by analyze, that contributes
        most to the trap's singular value s = sum_ij u_i W_p,ij v_j, mapped back through the
        shuffle) and ``entry_share`` (its share u_i W_p,ij v_j / s of s), ``variance_share`` (the trap's
        eigenvalue over the shuffled ESD's sum, which is ||W||_F^2: the share of W's variance it
        carries), ``layer_num_traps`` and ``layer_trap_burden`` (the sum of the layer's shares).
        ``layers``: one row per analysed layer (or slice, with ``pool=False``):
        ``num_traps``, ``trap_burden``, ``replicas`` (shuffles pooled in the MP fit: 5 below
        100 eigenvalues, else 1), ``rand_num_spikes`` (the spikes of all of them, analyze's
        column), ``rand_sigma_mp``, ``status``, ``reason``; a layer
        without traps is there and not in the trap rows; a failed one has NaN and its reason.
    """
    _checked(top_k)
    o = make_options(layers=layers, seed=seed, **options)
    rec = recipe(source, base_model=base_model, peft=peft, trust_pickle=trust_pickle,
                 feature="traps")
    done = run(rec, FindTraps(int(top_k)), o, scheduler=scheduler, progress=progress,
               seeded=True)
    return Traps(traps=_frame([r for t, _ in done.outputs for r in t], TRAP_COLUMNS),
                 layers=_frame([r for _, lr in done.outputs for r in lr], LAYER_COLUMNS),
                 source=done.source.describe(), options=done.options.as_dict(),
                 seconds=done.seconds)


@dataclass(frozen=True)
class RemoveTraps(Work):
    """The work of ``remove_traps``: one layer with its traps replaced by noise."""

    noise: str = "rank1"
    feature = "remove_traps"
    edits = True

    def layer(self, ref, plan, o, backend) -> Edit:
        row = {**identity(ref, plan), "method": f"remove_traps:{self.noise}",
               "components": plan.M, "kept": plan.M, "removed": 0}
        new, removed, reason = _remove_layer(ref, plan, o, self.noise)
        row.update(kept=plan.M - removed if removed <= plan.M else 0, removed=removed,
                   status="edited" if new is not None else "unchanged", reason=reason)
        return Edit((row,), new)

    def failed(self, ref, plan, exc) -> Edit:
        return Edit(({**identity(ref, plan), "method": f"remove_traps:{self.noise}",
                      "components": plan.M, "kept": plan.M, "removed": 0, "status": "failed",
                      "reason": one_line(exc)},))


def remove_traps(source, *, layers=None, seed: int | None = None, noise: str = "rank1",
                 base_model=None, peft=False, trust_pickle: bool = False, progress=None,
                 scheduler=None, **options) -> EditedModel:
    """Replace each correlation trap's rank-one component of W by Gaussian noise: W - T + R.

    The traps are those :func:`traps` reports for the same seed and options. For each matrix
    with traps, T_p = sum_k s_k u_k v_k^T is the traps' part of the shuffled matrix, and
    T = P^-1(T_p) is its part of W (the module docstring says why). R = P^-1(R_p) is seeded
    Gaussian noise (``layer_rng(seed, layer_id, 1)``: the same for a seed):

    - ``noise='rank1'`` (the default): R_p = sum_k r_k u_k v_k^T, r_k ~ N(0, sigma^2), with
      sigma^2 the entry variance of the random bulk (the shuffled ESD's MP fit:
      ``rand_sigma_mp^2 / (scale N rand_W_scale^2)``): each trap's strength s_k is replaced by
      what a random matrix with W's bulk has along the same pair of directions (u^T G v ~
      N(0, sigma^2) for fixed unit u, v). ||W_new - W||_F = ||(s_k - r_k)||_2 ~ ||T||_F.
    - ``noise='trunk'``: WeightWatcher's trunk (PR #343): R has i.i.d. Gaussian entries with the
      mean and variance of T's entries (dense, so ||R||_F ~ ||T||_F and ||W_new - W||_F ~
      sqrt(2) ||T||_F).

    With ``base_model=`` the traps are those of the fine-tune W - W_base and the result is the
    fine-tuned model with them replaced: W - T + R (never the delta itself). ``peft=`` is
    refused: a LoRA update B·A cannot be written back as its factors.

    Parameters
    ----------
    source, layers, seed, base_model, trust_pickle, progress, scheduler, **options
        As :func:`traps`.

    Returns
    -------
    EditedModel
        ``details``: per layer, ``components`` (min(N, M)), ``removed`` (its traps), ``status``
        ('edited', 'unchanged' or 'failed') and ``reason``. Other tensors are copied unchanged.
        ``options['seed']``: the seed used.
    """
    if noise not in NOISE:
        raise ValueError(f"noise must be 'rank1' or 'trunk'; got {noise!r}")
    o = make_options(layers=layers, seed=seed, **options)
    rec = recipe(source, base_model=base_model, peft=peft, trust_pickle=trust_pickle,
                 feature="remove_traps", derived=("base_model",))
    done = run(rec, RemoveTraps(noise), o, scheduler=scheduler, progress=progress, seeded=True)
    return edited_model(done, DETAIL_COLUMNS)


def _remove_layer(ref, plan, o, noise: str):
    """(new tensor or None, number of traps removed, reason)."""
    w = np.asarray(ref.load())
    if w.dtype.kind != "f":
        raise ValueError(f"a {w.dtype} tensor is not floating-point weights")
    rng = layer_rng(o.seed, ref.index)
    noise_rng = layer_rng(o.seed, ref.index, 1)
    scale = layer_scale(plan, o)
    groups = _groups(ref, plan, o, rng)
    fails = [f"no Marchenko-Pastur fit of the shuffled ESD: {g.fit}" for g in groups
             if isinstance(g.fit, Exception)]
    new = np.array(w, dtype=np.float64)
    # the same matrices as _groups, now views of the float64 copy, oriented the same way
    views = ww_oriented(ref, plan, matrices(ref, new))
    count = 0
    for g in groups:
        if isinstance(g.fit, Exception):
            continue
        fit = g.fit
        sigma2 = fit.sigma_mp ** 2 / (scale * plan.N * fit.W_scale ** 2)
        for i, s, u, v, _ in _trap_components(g, fit, scale):
            tp = (u * s) @ v.T
            if noise == "rank1":
                r = noise_rng.normal(0.0, math.sqrt(sigma2), size=s.size)
                rp = (u * r) @ v.T
            else:
                rp = noise_rng.normal(tp.mean(), tp.std(), size=tp.shape)
            delta = np.empty(tp.size)
            delta[g.perms[i]] = (rp - tp).ravel()  # P^-1: entry k of W_p came from perms[k]
            target = _view_of(views, g, i)
            target += delta.reshape(target.shape)
            count += s.size
    if not count:
        return None, 0, "; ".join(fails) or "no correlation trap (no spike in the shuffled ESD)"
    return new.astype(w.dtype, copy=False), count, "; ".join(fails)


def _view_of(views, g, i):
    """The view of the edited copy that corresponds to the group's matrix i."""
    if g.slice_id is not None:
        return views[g.slice_id]
    return views[i]


__all__ = ["Traps", "remove_traps", "traps"]
