"""The analysis options, each declared once: name, default, meaning, validation, CLI flag,
WeightWatcher's name, and whether it changes results.

Everything that lists options is generated from ``OPTIONS``: the :class:`Options` value the engine
runs on, ``analyze``'s and ``describe``'s docstrings, the command line's option groups (see
``tailscope.cli``), ``tailscope.compat``'s pass-through of WeightWatcher's keywords, and the zoo's
resume key. Adding an option is one :class:`Option` here; a test holds every consumer to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# option groups, in the order they are documented and shown in --help
GROUPS = {
    "source": "what is read (the model, its base, a LoRA adapter)",
    "select": "which layers, and how they are cut into matrices",
    "esd": "how eigenvalues are computed",
    "fit": "the power-law fit",
    "diagnostics": "further diagnostics (each adds columns)",
}

FITS = {"PL": "PL", "power_law": "PL", "TPL": "TPL", "truncated_power_law": "TPL",
        "E_TPL": "E_TPL"}
COMPARE_DEFAULT = ("truncated_power_law", "lognormal", "exponential")
# every alternative ``compare`` accepts -> the tag of its R_<tag>, p_<tag> columns
COMPARE_TAGS = {"truncated_power_law": "TPL", "TPL": "TPL", "lognormal": "lognormal",
                "exponential": "exponential", "stretched_exponential": "stretched_exponential",
                "lognormal_positive": "lognormal_positive"}
LAYER_TYPES = ("dense", "embedding", "conv1d", "conv2d", "conv3d", "recurrent", "expert",
               "router", "shared_expert")
PEFT_MODES = (False, True, "only", "with_base")
ESD_METHODS = ("gram", "svd")  # how eigenvalues are computed (``method``)
FINGER_FIXES = ("clip_xmax", "xmin_peak")  # WeightWatcher's ``fix_fingers`` values


@dataclass(frozen=True)
class Flag:
    """How an option appears on the command line.

    ``names``: the flag and its aliases; ``kwargs``: argparse's (type, choices, action, nargs,
    metavar); ``parse``: the flag's value -> the option's value (default: as given);
    ``help``: defaults to the option's first sentence.
    """

    names: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    parse: Callable[[Any], Any] | None = None
    help: str = ""


@dataclass(frozen=True)
class Option:
    """One analysis option.

    ``group``: a key of ``GROUPS``. ``type`` and ``doc``: its docstring entry. ``check``: the value
    -> an error text ('' when valid). ``flag``: its CLI form (None only with ``api_only``, the
    reason it has none). ``ww``: WeightWatcher's keyword for the same option ('' when it is
    tailscope's own; ``tailscope.compat`` accepts it under its own name then). ``key``: whether it
    changes what is computed (part of the zoo's resume key). ``aliases``: other accepted names.
    ``field``: an :class:`Options` field (False: a keyword of ``analyze`` itself, such as the base
    model, which is opened before the analysis runs).
    """

    name: str
    default: Any
    type: str
    doc: str
    group: str
    check: Callable[[Any], str] | None = None
    flag: Flag | None = None
    ww: str = ""
    api_only: str = ""
    key: bool = True
    aliases: tuple[str, ...] = ()
    field: bool = True

    @property
    def help(self) -> str:
        return (self.flag.help if self.flag and self.flag.help else
                self.doc.split(". ")[0].rstrip(".").replace("``", ""))


# --- validation ---------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _bool(name: str) -> Callable[[Any], str]:
    def check(v) -> str:
        ok = isinstance(v, (bool, np.bool_)) or (_is_int(v) and v in (0, 1))
        return "" if ok else f"{name} must be True or False; got {v!r}"
    return check


def _count(name: str, low: int = 0, none: bool = True) -> Callable[[Any], str]:
    def check(v) -> str:
        if v is None and none:
            return ""
        if _is_int(v) and v >= low:
            return ""
        return f"{name} must be {'None or ' if none else ''}an int >= {low}; got {v!r}"
    return check


def _number(name: str, positive: bool = True, none: bool = True) -> Callable[[Any], str]:
    def check(v) -> str:
        if v is None and none:
            return ""
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
                and np.isfinite(v) and (v > 0 or not positive):
            return ""
        return f"{name} must be {'None or ' if none else ''}a{' positive' if positive else ''} " \
               f"number; got {v!r}"
    return check


def _choice(name: str, choices, text: str) -> Callable[[Any], str]:
    def check(v) -> str:
        try:
            ok = v in choices
        except TypeError:  # unhashable
            ok = False
        return "" if ok else f"{name} must be {text}; got {v!r}"
    return check


def _check_xmax(x) -> str:
    if x is None or (isinstance(x, str) and x in ("force", "max")) or \
            (_is_int(x) and x < 0) or (isinstance(x, (float, np.floating)) and 0 < x < np.inf):
        return ""
    return ("xmax must be None, 'force' (the largest eigenvalue), a negative int -k (drop the top "
            f"k eigenvalues) or a positive finite number; got {x!r}")


def _check_device(v) -> str:
    return "" if v is None or isinstance(v, str) else f"device must be a string; got {v!r}"


def layer_rules(layers) -> tuple[list, list]:
    """WeightWatcher's ``layers=`` as (keep rules, skip rules), each ('id', int), ('type', str)
    or ('glob', str): ids (all >= 0 keep, all < 0 skip), types, or name globs ('-glob' skips);
    keep-lists and skip-lists cannot be mixed (ValueError)."""
    if layers is None or (isinstance(layers, (list, tuple)) and not layers):
        return [], []
    items = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
    keeps: list = []
    skips: list = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise ValueError(f"layers: {item!r} is not a layer id, type or name")
        if isinstance(item, (int, np.integer)):
            (skips if item < 0 else keeps).append(("id", abs(int(item))))
        elif isinstance(item, str) and item:
            neg = item.startswith("-")
            text = item[1:] if neg else item
            if not text.strip():
                raise ValueError(f"layers: {item!r} names no layer")
            kind = "type" if text.lower() in LAYER_TYPES else "glob"
            (skips if neg else keeps).append((kind, text.lower() if kind == "type" else text))
        else:
            raise ValueError(f"layers: {item!r} is not a layer id, type or name")
    if keeps and skips:
        raise ValueError("layers: give either layers to keep or layers to skip ('-' or negative "
                         "ids), not both")
    return keeps, skips


def _check_layers(v) -> str:
    try:
        layer_rules(v)
    except ValueError as exc:
        return str(exc)
    return ""


def compare_names(value) -> tuple[str, ...]:
    """The alternatives named by ``compare`` (True: TPL, lognormal, exponential; 'all': every
    one), as tail-model names; ValueError for anything else."""
    if value is None or value is False:
        return ()
    if value is True:
        return COMPARE_DEFAULT
    if isinstance(value, str) and value == "all":
        value = tuple(dict.fromkeys(COMPARE_TAGS.values()))
    names = (value,) if isinstance(value, str) else tuple(value) \
        if isinstance(value, (list, tuple)) else None
    if names and "all" in names:
        return compare_names("all")
    if not names or any(not isinstance(n, str) or n not in COMPARE_TAGS for n in names):
        raise ValueError(f"compare must be True, 'all' or names among {sorted(COMPARE_TAGS)}; "
                         f"got {value!r}")
    return tuple(dict.fromkeys("truncated_power_law" if n == "TPL" else n for n in names))


def _check_compare(v) -> str:
    try:
        compare_names(v)
    except ValueError as exc:
        return str(exc)
    return ""


# --- CLI value parsers ----------------------------------------------------------------------------
def parse_layers(items: list[str] | None):
    """--layers 3,5,7 | -2 | dense | 'encoder.*' | '-*.embeddings.*' (repeatable)"""
    if items is None:
        return None
    out: list = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                out.append(part)
    if not out:
        raise ValueError(f"{' '.join(items)!r} names no layer")
    return out


def parse_xmax(text: str):
    """'force' or 'max' (the largest value), a number, or -k (drop the top k values)."""
    import argparse

    if text in ("force", "max"):
        return "force"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'force', a number or -k, got {text!r}"
                                         ) from None
    if not np.isfinite(value) or value == 0:
        raise argparse.ArgumentTypeError(f"expected 'force', a positive finite number or -k, "
                                         f"got {text!r}")
    return int(value) if value < 0 and value.is_integer() else value


def parse_compare(names: list[str]):
    """--compare (the default alternatives), --compare all, --compare lognormal exponential"""
    return tuple(names) or True


def _negated(v: bool) -> bool:
    return not v


# --- the options ----------------------------------------------------------------------------------
OPTIONS: tuple[Option, ...] = (
    # what is read
    Option("base_model", None, "path, torch.nn.Module, state dict or array, optional",
           "Analyse the fine-tuning update W - W_base instead of W, layers matched by name (exact, "
           "then without prefixes such as 'model.' or 'base_model.model.', then a unique dotted "
           "suffix); any format, not necessarily the model's. A layer with no base counterpart or "
           "another shape is a failed row saying so. With ``peft='with_base'``: the base the LoRA "
           "updates are added to.",
           "source", flag=Flag(("--base",), {"metavar": "BASE"},
                               help="analyse the fine-tuning update W - W_base, layers matched by "
                                    "name (any format)"),
           ww="base_model", field=False),
    Option("peft", False, "False, True, 'only' or 'with_base'",
           "For a LoRA adapter: True/'only' analyse one ``<module>.lora_BA`` layer per "
           "lora_A/lora_B pair, the update scale·B·A (scale = lora_alpha / r from "
           "adapter_config.json, else 1), from its r nonzero eigenvalues; 'with_base' analyses every "
           "base layer and, after each adapted one, its ``lora_BA`` and ``lora_W_plus_AB`` = "
           "W_base + scale·B·A.",
           "source", check=_choice("peft", PEFT_MODES + ("peft_only",),
                                   "False, True, 'only' or 'with_base'"),
           flag=Flag(("--peft",), {"choices": [m for m in PEFT_MODES if isinstance(m, str)]},
                     help="a LoRA adapter: only its B·A updates, or also the base layers and "
                          "W_base + B·A (with_base needs --base unless SOURCE holds the base)"),
           ww="peft", field=False),
    Option("trust_pickle", False, "bool",
           "Allow pickles whose tensors need code execution to load (PyTorch tensor "
           "subclasses, an .npy of Python objects; never by default: only for files you "
           "trust). Checkpoints whose metadata alone names other classes (Lightning "
           "hyper-parameters, optimizer or scheduler objects) are read without it, those "
           "classes replaced by inert stand-ins.",
           "source", check=_bool("trust_pickle"),
           flag=Flag(("--trust-pickle",), {"action": "store_true"},
                     help="allow pickles whose tensors need code execution (only for files "
                          "you trust)"),
           field=False),
    # which layers
    Option("layers", None, "list, optional",
           "Layer ids (all >= 0 keep; all < 0 skip), types ('dense', 'embedding', 'conv1d', "
           "'conv2d', 'conv3d', 'recurrent', 'expert', 'router', 'shared_expert') or name globs ('-glob' "
           "skips), as WeightWatcher's ``layers``.",
           "select", check=_check_layers,
           flag=Flag(("--layers",), {"action": "append", "metavar": "SPEC"}, parse_layers,
                     help="layer ids, types (dense, embedding, conv1d, conv2d, conv3d, recurrent, expert, "
                          "router, shared_expert) or name globs, comma-separated; '-' in front "
                          "(or negative ids) skips instead"),
           ww="layers"),
    Option("min_evals", 10, "int",
           "Skip layers with fewer eigenvalues (M * rf when pooled; WeightWatcher's 10).",
           "select", check=_count("min_evals"),
           flag=Flag(("--min-evals",), {"type": int, "metavar": "N"}), ww="min_evals"),
    Option("max_evals", 15000, "int",
           "Skip layers with more eigenvalues (M * rf when pooled; WeightWatcher's 15000).",
           "select", check=_count("max_evals"),
           flag=Flag(("--max-evals",), {"type": int, "metavar": "N"}), ww="max_evals"),
    Option("max_N", 50000, "int",
           "Skip layers whose larger side N is larger (WeightWatcher's 50000).",
           "select", check=_count("max_N"),
           flag=Flag(("--max-N",), {"type": int, "metavar": "N"}), ww="max_N"),
    Option("pool", True, "bool",
           "Pool a conv layer's slice ESDs into one row (default) or give one row per slice "
           "(``slice_id``).",
           "select", check=_bool("pool"),
           flag=Flag(("--no-pool",), {"action": "store_true"}, _negated,
                     help="one row per conv slice"), ww="pool"),
    Option("split", True, "bool",
           "Analyse recurrent gate stacks (LSTM, GRU) gate by gate and fused attention "
           "``in_proj_weight`` as q, k, v (default True); the fused tensor is listed as skipped.",
           "select", check=_bool("split"),
           flag=Flag(("--no-split",), {"action": "store_true"}, _negated,
                     help="analyse LSTM/GRU gate stacks and fused attention in_proj_weight whole "
                          "(default: gate by gate, and q, k, v)")),
    Option("heads", None, "int, optional",
           "Split q/k/v/o attention projections into this many per-head matrices.",
           "select", check=_count("heads", low=1),
           flag=Flag(("--heads",), {"type": int, "metavar": "N"},
                     help="split q/k/v/o attention projections into N per-head matrices")),
    # how eigenvalues are computed
    Option("conv2d_norm", True, "bool",
           "Scale conv2d eigenvalues by 1/2 when pooled, rf/2 per slice (WeightWatcher's default).",
           "esd", check=_bool("conv2d_norm"),
           flag=Flag(("--no-conv2d-norm",), {"action": "store_true"}, _negated,
                     help="do not scale conv2d eigenvalues (1/2 pooled, rf/2 per slice)"),
           ww="conv2d_norm"),
    Option("normalize", False, "bool", "Divide eigenvalues by N.",
           "esd", check=_bool("normalize"),
           flag=Flag(("--normalize",), {"action": "store_true"}), ww="normalize"),
    Option("method", "gram", "'gram' or 'svd'",
           "Eigenvalues from the float64 Gram matrix (default) or a full SVD (WeightWatcher's "
           "``svd_method='accurate'``).",
           "esd", check=_choice("method", ESD_METHODS, "'gram' or 'svd'"),
           flag=Flag(("--method",), {"choices": list(ESD_METHODS)},
                     help="eigenvalues from the float64 Gram matrix (default) or a full SVD"),
           ww="svd_method"),
    Option("device", "auto", "str",
           "'auto' (CUDA through torch when available, else numpy), 'cpu', 'cuda', 'cuda:N', "
           "'torch:cpu'.",
           "esd", check=_check_device,
           flag=Flag(("--device",), {"metavar": "DEVICE"},
                     help="auto (CUDA when available), cpu, cuda, cuda:N, torch:cpu"),
           key=False),
    Option("jobs", 1, "int",
           "Layers analysed at once (threads; BLAS threads are divided among them).",
           "esd", check=_count("jobs", low=1, none=False),
           flag=Flag(("--jobs",), {"type": int, "metavar": "N"}, help="layers analysed at once"),
           key=False),
    Option("tolerance", 1e-6, "float",
           "Eigenvalues below it count in ``weak_rank_loss`` (WeightWatcher's 1e-6).",
           "esd", check=_number("tolerance", none=False),
           flag=Flag(("--tolerance",), {"type": float, "metavar": "X"}), ww="tolerance"),
    # the fit
    Option("fit", "PL", "'PL', 'TPL' or 'E_TPL'",
           "The power law (default); the truncated power law x^-alpha e^(-Lambda x), with xmin "
           "chosen by its own KS distance as WeightWatcher's ``fit='TPL'`` (adds ``Lambda``; "
           "``sigma`` is NaN; alpha >= 1 and Lambda > 0 as in ``powerlaw``); or the truncated "
           "power law with ``fix_fingers='xmin_peak'`` (WeightWatcher's 'E_TPL').",
           "fit", check=_choice("fit", tuple(FITS), "'PL', 'TPL' or 'E_TPL'"),
           flag=Flag(("--fit",), {"choices": list(FITS)},
                     help="power law (default), truncated power law (adds Lambda), or TPL with "
                          "xmin near the ESD peak"),
           ww="fit"),
    Option("xmax", None, "None, 'force', float or -k",
           "Upper truncation of the fit: none, the largest eigenvalue, a value, or drop the top k.",
           "fit", check=_check_xmax,
           flag=Flag(("--xmax",), {"type": parse_xmax},
                     help="'force' (the largest eigenvalue), a number, or -k to drop the top k "
                          "eigenvalues"),
           ww="xmax"),
    Option("fix_fingers", None, "None, 'clip_xmax' or 'xmin_peak'",
           "WeightWatcher's finger fixes (see :func:`tailscope.fit_power_law`): refit without the "
           "largest eigenvalues, or search xmin near the ESD's peak.",
           "fit", check=_choice("fix_fingers", (None, False, *FINGER_FIXES),
                                "None, 'clip_xmax' or 'xmin_peak'"),
           flag=Flag(("--fix-fingers",), {"choices": list(FINGER_FIXES)},
                     help="WeightWatcher's finger fixes"),
           ww="fix_fingers"),
    Option("small_n", False, "bool",
           "For ESDs with fewer than 20 eigenvalues (above 1e-5): the small-sample power-law fit, "
           "alpha = 1 + (n - 1) / sum(ln(x / xmin)) on tails of at least 8, xmin chosen by "
           "minimising J = D - 0.868 / sqrt(n) (see :func:`tailscope.fit_power_law`); "
           "WeightWatcher 0.7.7's small-N fit as it is meant to work (its own release re-chooses "
           "xmin by D). Larger ESDs, ``xmax`` and TPL fits are unchanged.",
           "fit", check=_bool("small_n"),
           flag=Flag(("--small-n",), {"action": "store_true"},
                     help="small-sample fit for ESDs under 20 eigenvalues (bias-corrected alpha, "
                          "xmin by D - 0.868/sqrt(n))")),
    Option("ww_fingers", False, "bool",
           "The finger fixes exactly as WeightWatcher 0.7.7 runs them (``tailscope.compat``'s): "
           "'clip_xmax' removes 2, 3, ... largest eigenvalues and reports one fewer, with "
           "``max_fingers`` replaced by 10 unless it is at least half the ESD; 'xmin_peak' and "
           "``fit='E_TPL'`` search xmin in WeightWatcher's range, whose lower bound is "
           "log10(0.95 p) (see :func:`tailscope.fit.fingers.ww_xmin_peak_range`).",
           "fit", check=_bool("ww_fingers"),
           api_only="WeightWatcher's conventions, for tailscope.compat; the CLI has tailscope's"),
    Option("xmin_max", None, "float, optional",
           "With ``fix_fingers='xmin_peak'``: the upper end of the xmin search (default 1.5 times "
           "the ESD's peak).",
           "fit", check=_number("xmin_max"),
           flag=Flag(("--xmin-max",), {"type": float, "metavar": "X"}), ww="xmin_max"),
    Option("max_fingers", 10, "int",
           "With ``fix_fingers='clip_xmax'``: at most this many - 1 largest eigenvalues removed.",
           "fit", check=_count("max_fingers", low=1, none=False),
           flag=Flag(("--max-fingers",), {"type": int, "metavar": "N"}), ww="max_fingers"),
    Option("finger_thresh", 1.0, "float",
           "With ``fix_fingers='clip_xmax'``: a refit is kept when alpha drops by more than this.",
           "fit", check=_number("finger_thresh", positive=False, none=False),
           flag=Flag(("--finger-thresh",), {"type": float, "metavar": "X"}), ww="finger_thresh"),
    # further diagnostics
    Option("compare", False, "bool, 'all' or tuple of str",
           "Likelihood-ratio tests of the power law against alternatives on its tail: True means "
           "('TPL', 'lognormal', 'exponential'), 'all' every alternative; also "
           "'stretched_exponential', 'lognormal_positive'. Adds ``R_<name>`` (> 0 favours the "
           "power law) and ``p_<name>`` per alternative, with ``R_TPL, p_TPL`` for the truncated "
           "power law. With ``fit='TPL'`` they still use the power-law fit's tail.",
           "diagnostics", check=_check_compare,
           flag=Flag(("--compare",), {"nargs": "*", "metavar": "DIST"}, parse_compare,
                     help="likelihood-ratio columns R_<dist>, p_<dist> of the power law against "
                          "DIST (default: TPL lognormal exponential; 'all' for every one)")),
    Option("gof", 0, "int",
           "Bootstrap replicates for the goodness-of-fit p-value ``p_gof`` of the power law (CSN; "
           "0, the default, skips it; the power law is ruled out when p_gof <= 0.1).",
           "diagnostics", check=_count("gof", none=False),
           flag=Flag(("--gof",), {"type": int, "metavar": "N"},
                     help="the bootstrap goodness-of-fit p-value p_gof from N replicates")),
    Option("vectors", False, "bool",
           "Eigenvector localization (symmetric eigensolver): WeightWatcher's ``bulk_mean_``, "
           "``bulk_var_``, ``tail_mean_``, ``tail_var_`` of ``vec_entropy``, ``loc_ratio`` and "
           "``part_ratio``, the tail being the ``num_pl_spikes`` largest eigenvalues (see "
           ":mod:`tailscope.spectrum.vectors`).",
           "diagnostics", check=_bool("vectors"),
           flag=Flag(("--vectors",), {"action": "store_true"},
                     help="eigenvector localization columns (bulk_/tail_ mean/var)"),
           ww="vectors"),
    Option("mp_fit", False, "bool",
           "Marchenko-Pastur fit of each ESD's bulk (:func:`tailscope.spectrum.mp.mp_fit`): columns "
           "num_spikes, sigma_mp, mp_softrank, W_scale, bulk_max, bulk_min and mp_reason (why a "
           "layer has no fit; its columns are then NaN).",
           "diagnostics", check=_bool("mp_fit"),
           flag=Flag(("--mp-fit",), {"action": "store_true"},
                     help="Marchenko-Pastur fit of each ESD's bulk (num_spikes, sigma_mp, ...)"),
           ww="mp_fit"),
    Option("randomize", False, "bool",
           "The ESD of each layer's element-shuffled matrices (correlation traps): max_rand_eval, "
           "rand_num_spikes, num_traps (its WeightWatcher 0.7.7 name), rand_sigma_mp, "
           "rand_mp_softrank, rand_W_scale, rand_bulk_max, rand_bulk_min, rand_distance, "
           "ww_softrank, ww_maxdist, rand_reason.",
           "diagnostics", check=_bool("randomize"),
           flag=Flag(("--randomize",), {"action": "store_true"},
                     help="the ESD of each layer's element-shuffled matrices (correlation traps)"),
           ww="randomize"),
    Option("detX", False, "bool",
           "(alias ``ERG``) WeightWatcher's det X = 1 tail: detX_num, detX_val, "
           "detX_val_unrescaled (WeightWatcher's name for the *rescaled* value), num_ERG_spikes, "
           "ERG_gap = detX_num - num_pl_spikes.",
           "diagnostics", check=_bool("detX"),
           flag=Flag(("--detX", "--ERG"), {"action": "store_true"},
                     help="the det X = 1 tail (detX_num, ERG_gap)"),
           ww="detX", aliases=("ERG",)),
    # the research code's estimators (Hill at the median; FARMS)
    Option("hill", False, "bool",
           "``alpha_hill``: the Hill estimator with xmin at the median eigenvalue, "
           "``PL_Alpha_Hill`` of AlphaPruning, TempBalance, FARMS (their ``fix_fingers="
           "'xmin_mid'``), in float64, every eigenvalue counted as they count them (see "
           ":func:`tailscope.fit.hill_alpha`).",
           "diagnostics", check=_bool("hill"),
           flag=Flag(("--hill",), {"action": "store_true"},
                     help="alpha_hill: the Hill estimator with xmin at the median (PL_Alpha_Hill)")),
    Option("farms", False, "bool",
           "``alpha_farms``: FARMS (Hu et al., ICML 2025), the Hill estimator at the median on "
           "the pooled eigenvalues of 100 x 200 windows slid over each matrix (10 positions per "
           "side), which removes alpha's dependence on the aspect ratio; conv2d layers by row "
           "division of their slices, alphas averaged (see "
           ":func:`tailscope.spectrum.window_eigenvalues`).",
           "diagnostics", check=_bool("farms"),
           flag=Flag(("--farms",), {"action": "store_true"},
                     help="alpha_farms: FARMS, alpha from fixed-aspect windows (no shape bias)")),
    # alpha's uncertainty and the SETOL metrics (issue 13, part D)
    Option("alpha_ci", 0, "int",
           "Replicates of a seeded parametric-bootstrap interval of the reported alpha, the xmin "
           "search re-run in every replicate (:func:`tailscope.fit.alpha_interval`; about 0.07 s "
           "per 384-eigenvalue layer for 200): columns ``alpha_ci_low``, "
           "``alpha_ci_high`` at level ``alpha_ci_level`` (0, the default, skips it; layer i "
           "draws from the seed ``[seed, layer_id, slice_id]``).",
           "diagnostics", check=_count("alpha_ci", none=False),
           flag=Flag(("--alpha-ci",), {"type": int, "metavar": "N"},
                     help="a bootstrap interval of alpha from N replicates (alpha_ci_low, "
                          "alpha_ci_high)")),
    Option("alpha_ci_level", 0.9, "float",
           "The two-sided level of the ``alpha_ci`` interval, in (0, 1).",
           "diagnostics", check=lambda v: "" if isinstance(v, (float, int, np.floating))
           and not isinstance(v, bool) and 0 < v < 1
           else f"alpha_ci_level must be a number in (0, 1); got {v!r}",
           flag=Flag(("--alpha-ci-level",), {"type": float, "metavar": "P"})),
    Option("setol", False, "bool",
           "SETOL's metrics (Martin & Hinrichs 2025): ``delta_lambda_min`` = xmin - detX_val (the "
           "power-law tail's start minus the det X = 1 tail's), ``alpha_minus_2``, the effective "
           "correlation space ranks ``ecs_rank`` = floor((num_pl_spikes + detX_num) / 2), "
           "``ecs_num_sc`` (the self-consistent trace-log rank, "
           ":func:`tailscope.spectrum.metrics.ecs_self_consistent`) and ``ecs_rank_sc`` = "
           "floor((num_pl_spikes + ecs_num_sc) / 2).",
           "diagnostics", check=_bool("setol"),
           flag=Flag(("--setol",), {"action": "store_true"},
                     help="SETOL metrics: delta_lambda_min, alpha_minus_2, ECS ranks")),
    Option("seed", None, "int, optional",
           "The seed of every random draw: the shuffles of ``randomize`` (each layer's generator "
           "is ``default_rng([seed, layer_id])``; None draws fresh entropy, recorded in "
           "``Analysis.options['seed']``) and the bootstraps of ``gof`` and ``alpha_ci`` (layer i "
           "uses the seed ``[seed, layer_id, slice_id]``).",
           "diagnostics", check=_count("seed"),
           flag=Flag(("--seed",), {"type": int, "metavar": "N"},
                     help="seed of --randomize, --gof and --alpha-ci (default: fresh, recorded)")),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
ALIASES: dict[str, str] = {a: o.name for o in OPTIONS for a in o.aliases}
FIELDS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.field)


# --- the value the engine runs on -------------------------------------------------------------------
def _compare_names(self) -> tuple[str, ...]:
    """The alternatives named by ``compare`` (True: TPL, lognormal, exponential)."""
    return compare_names(self.compare)


def _compare_tags(self) -> tuple[str, ...]:
    """The tags of the R_<tag>, p_<tag> columns, in ``compare``'s order."""
    return tuple(COMPARE_TAGS[n] for n in compare_names(self.compare))


def _check(self) -> None:
    """Raise a ValueError naming the option for a bad value or a meaningless combination."""
    for opt in FIELDS:
        text = opt.check(getattr(self, opt.name)) if opt.check else ""
        if text:
            raise ValueError(text)
    if FITS[self.fit] != "PL" and self.fix_fingers == "clip_xmax":
        raise ValueError(f"fix_fingers='clip_xmax' refits a power law; it does not combine "
                         f"with fit={self.fit!r} (use fix_fingers='xmin_peak' or fit='E_TPL')")
    if self.min_evals and self.max_evals and self.min_evals > self.max_evals:
        raise ValueError(f"min_evals={self.min_evals} > max_evals={self.max_evals}")


def _as_dict(self) -> dict:
    return {o.name: getattr(self, o.name) for o in FIELDS}


Options = dataclasses.make_dataclass(
    "Options", [(o.name, Any, dataclasses.field(default=o.default)) for o in FIELDS],
    frozen=True,
    namespace={"__doc__": "The analysis options (see ``OPTIONS`` for their meaning).",
               "compare_names": _compare_names, "compare_tags": _compare_tags,
               "check": _check, "as_dict": _as_dict})
Options.__module__ = __name__  # picklable by name (make_dataclass's module= needs Python 3.12)


def resolve_aliases(kwargs: dict) -> dict:
    """``kwargs`` with aliases (``ERG``) under their option's name; a conflict is a ValueError."""
    out = dict(kwargs)
    for alias, name in ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            if name in out and bool(out[name]) != bool(value):
                raise ValueError(f"{alias}={value!r} and {name}={out[name]!r} disagree "
                                 f"({alias} is another name for {name})")
            out[name] = out.get(name) or value
    return out


def make_options(**kwargs) -> Options:
    """A checked :class:`Options` from keyword arguments (aliases accepted; an unknown name is a
    ValueError that suggests the closest option)."""
    kwargs = resolve_aliases(kwargs)
    unknown = [k for k in kwargs if k not in BY_NAME or not BY_NAME[k].field]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(BY_NAME) + list(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown option {name!r}{hint}")
    o = Options(**kwargs)
    o.check()
    return o


def result_key(o) -> dict:
    """The options that change what is computed (the zoo's resume key)."""
    return {opt.name: getattr(o, opt.name) for opt in FIELDS if opt.key}


def docstring(names=None, indent: str = "    ") -> str:
    """The numpydoc ``Parameters`` entries of the options (all, or ``names``), in ``OPTIONS``'
    order."""
    chosen = [o for o in OPTIONS if names is None or o.name in names]
    out = []
    for o in chosen:
        out.append(f"{indent}{o.name} : {o.type}")
        out.extend(textwrap.wrap(o.doc, 96 - 2 * len(indent), initial_indent=indent * 2,
                                 subsequent_indent=indent * 2, break_on_hyphens=False))
    return "\n".join(out)
