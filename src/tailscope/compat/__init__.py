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
"""

from .watcher import WeightWatcher

__all__ = ["WeightWatcher"]
