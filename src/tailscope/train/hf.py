"""A Hugging Face ``transformers.Trainer`` callback over :class:`tailscope.train.Monitor` (needs
the hf extra).

    Trainer(model, args, train_dataset=ds, callbacks=[AlphaTrainerCallback(every=100)])
"""

from __future__ import annotations

from ..util.optional import require
from .monitor import DEFAULT_EVERY, Monitor

_tf = require("transformers", "tailscope.train.hf")


class AlphaTrainerCallback(_tf.TrainerCallback):
    """Runs a :class:`Monitor` on the Trainer's model: one step per optimizer step
    (``on_step_end``), with the Trainer's optimizer for a ``schedule``. Keyword arguments are the
    Monitor's; :attr:`monitor` is the Monitor."""

    def __init__(self, every: int = DEFAULT_EVERY, **monitor_options):
        self.every = every
        self.options = monitor_options
        self.monitor: Monitor | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.monitor = Monitor(model, every=self.every, **self.options)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.monitor is not None:
            self.monitor.step(optimizer)

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
