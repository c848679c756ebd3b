"""A WeightWatcher-shaped facade over :mod:`tailscope.analysis`: switching is one import.

    from tailscope.compat import WeightWatcher      # was: from weightwatcher import WeightWatcher
    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    summary = watcher.get_summary()

Differences, on purpose: the summary averages successful layers only (WeightWatcher averages failed
fits in as alpha = -1); failed layers carry NaN, not -1, and no 'over-trained' warning;
``get_ESD`` returns the eigenvalues ``analyze`` used (WeightWatcher's skips ``conv2d_norm``, so its
conv2d ESDs are twice those it fits). ``base_model`` gives the update W - W_base of every layer
matched by name (WeightWatcher's substring match on the layer order silently analyses an unmatched
layer's own W); ``peft`` analyses LoRA updates as WeightWatcher does, ``'with_base'`` with the full
spectrum of W + BA (WeightWatcher keeps only its top r eigenvalues). Options tailscope does not
offer yet raise a ``ValueError`` instead of being silently ignored. ``mp_fit``, ``randomize`` and
``detX`` (alias ``ERG``, as in WeightWatcher 0.7.7) are passed on, with ``seed=`` for reproducible
shuffles (an extra option: WeightWatcher's shuffles cannot be seeded).

The numbers are WeightWatcher 0.7.7's (see ``numbers``): ``min_evals=8``, its small-sample fit for
ESDs under 20 eigenvalues with xmin chosen by its J objective as its code intends (0.7.7 itself
re-chooses xmin by D), its finger conventions (``clip_xmax`` removes 2, 3, ... eigenvalues and
reports one fewer; ``max_fingers`` replaced by 10 unless it is at least half the ESD;
``xmin_peak``/``E_TPL`` search its xmin range) and ``num_traps``. ``xmax='force'`` keeps the exact
truncated maximum-likelihood alpha, and TPL, E_TPL and xmin_peak run with ``pl_package='ww'``;
each warns at the call.
"""

from .watcher import WeightWatcher

__all__ = ["WeightWatcher"]
