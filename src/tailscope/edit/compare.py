"""A fine-tune against its base, layer by layer: alpha before and after, its change, the
correlation traps of each, the intruder dimensions, and the power-law fit of W - W_base (the
table behind ``tailscope report TUNED --base BASE``)."""

from __future__ import annotations

import pandas as pd

from ..engine.layer import Analyze
from ..engine.options import make_options
from ..engine.result import details_frame
from ..engine.run import recipe, run
from .intruders import intruders

COLUMNS = ["name", "alpha_base", "alpha", "delta_alpha", "alpha_delta", "num_traps_base",
           "num_traps", "delta_traps", "num_intruders", "status", "reason"]


def _details(source, base_model, o, trust_pickle, scheduler) -> pd.DataFrame:
    rec = recipe(source, base_model=base_model, trust_pickle=trust_pickle,
                 feature="compare_to_base", derived=("base_model",))
    done = run(rec, Analyze(), o, scheduler=scheduler, seeded=bool(o.randomize))
    return details_frame(done.outputs, done.options)


def compare_to_base(tuned, base, *, top_k: int = 10, epsilon: float = 0.5,
                    randomize: bool = True, layers=None, trust_pickle: bool = False,
                    scheduler=None, **options) -> pd.DataFrame:
    """Per layer of a fine-tune: what changed from its base model.

    Parameters
    ----------
    tuned, base : path, torch.nn.Module, state dict or array
        The fine-tuned model (a full fine-tune or a merged LoRA) and its base, in any formats,
        matched by name as ``analyze(base_model=)`` matches them.
    top_k, epsilon
        As :func:`tailscope.intruders`.
    randomize : bool
        Count the correlation traps of each model (``rand_num_spikes``: one shuffled ESD per
        layer and model); False leaves those columns NaN.
    layers, scheduler, **options
        As :func:`tailscope.analyze`, for all three analyses.

    Returns
    -------
    pandas.DataFrame
        One row per layer of ``tuned``: ``alpha_base``, ``alpha`` (tuned), ``delta_alpha`` =
        alpha - alpha_base, ``alpha_delta`` (the power-law alpha of W - W_base),
        ``num_traps_base``, ``num_traps``, ``delta_traps``, ``num_intruders``, and ``status``
        ('success', or 'failed' with the ``reason`` of the first analysis that failed on the
        layer).
    """
    o = make_options(layers=layers, randomize=randomize, **options)
    tuned_d = _details(tuned, None, o, trust_pickle, scheduler)
    base_d = _details(base, None, o, trust_pickle, scheduler).set_index("name")
    delta_d = _details(tuned, base, o, trust_pickle, scheduler).set_index("name")
    intr = intruders(tuned, base, top_k=top_k, epsilon=epsilon, layers=layers,
                     trust_pickle=trust_pickle, scheduler=scheduler, **options).set_index("name")
    rows = []
    for _, r in tuned_d.iterrows():
        name = r["name"]
        b = base_d.loc[name] if name in base_d.index else None
        dd = delta_d.loc[name] if name in delta_d.index else None
        it = intr.loc[name] if name in intr.index else None
        traps = "rand_num_spikes"
        row = {"name": name, "alpha": r["alpha"],
               "alpha_base": b["alpha"] if b is not None else float("nan"),
               "alpha_delta": dd["alpha"] if dd is not None else float("nan"),
               "num_traps": r.get(traps, float("nan")),
               "num_traps_base": b.get(traps, float("nan")) if b is not None else float("nan"),
               "num_intruders": (it["num_intruders"] if it is not None
                                 and it["status"] != "failed" else float("nan"))}
        row["delta_alpha"] = row["alpha"] - row["alpha_base"]
        row["delta_traps"] = row["num_traps"] - row["num_traps_base"]
        why = [str(x["reason"]) for x in (r, b, dd, it) if x is not None and x.get("reason")]
        if b is None:
            why.insert(0, "no layer of this name in the base model")
        row["status"] = "failed" if why else "success"
        row["reason"] = why[0] if why else ""
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


__all__ = ["COLUMNS", "compare_to_base"]
