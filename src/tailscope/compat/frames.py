"""WeightWatcher 0.7.7's tables from tailscope's: the columns of ``describe()`` and of
``analyze()`` for each option set, in WeightWatcher's order, and its layer identity columns.

WeightWatcher builds ``details`` row by row with ``pd.concat``, which sorts the union of the
columns; it then moves ``layer_id`` and ``name`` to the front. The facade's tables are therefore
``['layer_id', 'name'] + sorted(the rest)``, the rest being exactly WeightWatcher's columns for
the options asked (its own test suite compares the lists exactly), plus the columns of the options
only tailscope has (``hill``, ``farms``, ``compare``, ``gof``, ``alpha_ci``, ``setol``). tailscope's
full table, with each failed layer's ``reason``, stays on ``watcher.analysis.details``.
"""

from __future__ import annotations

import pandas as pd

from ..engine.columns import COLUMNS
from .numbers import START_IDS

LEAD = ("layer_id", "name")

# describe(): WeightWatcher's columns (its WWLayer.get_row and num_evals)
DESCRIBE = ("layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals")

# analyze(): the columns every fitted row has ...
BASE = DESCRIBE + (
    "D", "alpha", "alpha_weighted", "entropy", "has_esd", "lambda_max", "log_alpha_norm",
    "log_norm", "log_spectral_norm", "matrix_rank", "norm", "num_pl_spikes", "rank_loss", "sigma",
    "spectral_norm", "stable_rank", "status", "sv_max", "sv_min", "warning", "weak_rank_loss",
    "xmax", "xmin")
# ... and those an option adds (tailscope's column group -> WeightWatcher's columns), measured on
# weightwatcher 0.7.7 (tests/test_compat_describe.py holds them to it)
GROUPS = {
    "slice": ("slice_id",),
    "tpl": ("Lambda",),
    "fingers": ("num_fingers", "raw_alpha"),
    "mp": ("W_scale", "bulk_max", "bulk_min", "mp_softrank", "num_spikes", "sigma_mp"),
    "rand": ("max_rand_eval", "num_traps", "rand_W_scale", "rand_bulk_max", "rand_bulk_min",
             "rand_distance", "rand_mp_softrank", "rand_num_spikes", "rand_sigma_mp",
             "ww_maxdist", "ww_softrank"),
    "detX": ("ERG_gap", "detX_num", "detX_val", "detX_val_unrescaled", "num_ERG_spikes"),
    "vectors": tuple(c.name for c in COLUMNS if c.group == "vectors"),
}
CORE = ("layer", "spectrum", "fit", "status")
# tailscope's own columns of the groups WeightWatcher also has, kept off the facade's table
OWN = frozenset(c.name for c in COLUMNS if c.group in CORE + tuple(GROUPS)) \
    - frozenset(BASE) - frozenset(x for cols in GROUPS.values() for x in cols)


def ww_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``layer_id``, ``name``, then the other columns sorted, as WeightWatcher's tables."""
    rest = sorted(c for c in frame.columns if c not in LEAD)
    return frame[[c for c in LEAD if c in frame.columns] + rest]


def identify(frame: pd.DataFrame, chosen: list | None = None, reorder: bool = True
             ) -> pd.DataFrame:
    """The one place the facade's tables get WeightWatcher's ``layer_id``, ``name``,
    ``longname`` (and ``layer_type``). With ``chosen`` (WeightWatcher's layers of this input,
    :func:`tailscope.compat.layers.select`): theirs, rows in WeightWatcher's order (a tensor that
    is two of its layers, e.g. tied, gives two rows; ``reorder=False`` keeps tailscope's rows and
    order); without (an input whose ids are not mapped): tailscope's (``layer_id`` the tensor's
    position, ``name`` and ``longname`` its module path). Returns a copy with ``tensor_name``
    keeping tailscope's name."""
    d = frame.copy()
    module = d["module"] if "module" in d else d["name"].str.replace(r"\.weight$", "", regex=True)
    d["tensor_name"] = d["name"]
    d["name"] = module.to_numpy()
    d["longname"] = module.to_numpy()
    if chosen is None:
        return d
    if not reorder:
        first = {}
        for e in chosen:
            first.setdefault(e.tensor, e)
        hit = [first.get(t) for t in d["tensor_name"]]
        for col, attr in (("layer_id", "layer_id"), ("name", "name"), ("longname", "longname"),
                          ("layer_type", "the_type")):
            if col in d:
                d[col] = [getattr(e, attr) if e is not None else v for e, v in zip(hit, d[col])]
        return d
    parts = []
    for e in chosen:
        rows = d[d["tensor_name"] == e.tensor]
        if rows.empty:
            continue
        rows = rows.copy()
        rows["layer_id"], rows["name"] = e.layer_id, e.name
        rows["longname"], rows["layer_type"] = e.longname, e.the_type
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else d.iloc[0:0].copy()


def peft_flags(longnames: pd.Series) -> pd.Series:
    """WeightWatcher's ``peft`` column: True on the LoRA layers it derives (B·A and W + B·A)."""
    return longnames.str.contains(r"\.lora_(?:BA|W_plus_AB)\b", regex=True)


def peft_order(frame: pd.DataFrame) -> pd.DataFrame:
    """WeightWatcher's row order of LoRA layers: its PEFT iterator yields each merged
    ``lora_W_plus_AB`` layer before the ``lora_BA`` update it follows here."""
    names = list(frame["longname"])
    order = list(range(len(names)))
    for i in range(len(names) - 1):
        a, b = names[order[i]], names[order[i + 1]]
        if ".lora_BA" in a and b == a.replace(".lora_BA", ".lora_W_plus_AB"):
            order[i], order[i + 1] = order[i + 1], order[i]
    return frame.iloc[order]


def analyze_frame(details: pd.DataFrame, *, peft=False, chosen: list | None = None,
                  reorder: bool = True) -> pd.DataFrame:
    """tailscope's ``details`` -> WeightWatcher's: its columns for these options, its order;
    ``chosen``, ``reorder``: as :func:`identify`."""
    d = identify(details, chosen, reorder)
    d["has_esd"] = d["status"] == "success"
    if "rand_num_spikes" in d and "num_traps" not in d:  # 0.7.7: num_traps = rand_num_spikes
        d["num_traps"] = d["rand_num_spikes"]
    if peft:
        d["peft"] = peft_flags(d["longname"])
        d = peft_order(d)
    keep = [c for c in d.columns if c not in OWN and c != "tensor_name"]
    return ww_order(d[keep]).reset_index(drop=True)


def describe_frame(table: pd.DataFrame, *, pool: bool = True, peft=False,
                   chosen: list | None = None) -> pd.DataFrame:
    """tailscope's ``describe`` -> WeightWatcher's: the analysed layers only, ``Q``, and with
    ``pool=False`` one row per conv slice (``slice_id``, ``num_evals`` = M) as its slice
    iterator yields them."""
    d = identify(table[table["analyze"]], chosen)
    d["Q"] = d["N"] / d["M"].where(d["M"] > 0)
    d["Q"] = d["Q"].fillna(-1.0)
    cols = list(DESCRIBE)
    if not pool:
        rf = d["rf"].astype(int).clip(lower=1)
        d = d.loc[d.index.repeat(rf)].copy()
        d["slice_id"] = d.groupby(level=0).cumcount()
        d["num_evals"] = d["M"]
        cols.append("slice_id")
    if peft:
        d["peft"] = peft_flags(d["longname"])
        d = peft_order(d)
        cols.append("peft")
    return ww_order(d[cols]).reset_index(drop=True)


def figure_rows(keys, details: pd.DataFrame) -> list[tuple]:
    """``(analysis key, WeightWatcher plot_id, title)`` of each row of the facade's ``details``
    (its rows are the analysis's, in the same order)."""
    from .figures import plot_id

    out = []
    for key, lid, longname, rf in zip(keys, details["layer_id"], details["longname"],
                                      details["rf"]):
        pid = plot_id(lid, key[1] if rf > 1 else None)  # a dense row's slice 0 keeps its id
        out.append((key, pid, f"Layer {pid} {longname}"))
    return out


# the keys of a WeightWatcher params dict that choose the layers and the ESD (get_ESD(params=))
ESD_PARAMS = ("pool", "conv2d_norm", "min_evals", "max_evals", "max_N", "svd_method",
              "tolerance", "glorot_fix", "peft")


def esd_params(params) -> dict:
    """The options of a WeightWatcher params dict that ``get_ESD`` honours (WeightWatcher's
    DEFAULT_PARAMS turn on randomize, vectors and detX, which get_ESD never computes)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of WeightWatcher parameters; got {params!r}")
    out = {k: params[k] for k in ESD_PARAMS if k in params}
    if START_IDS in params:
        out.setdefault("start_ids", params[START_IDS])
    return out
