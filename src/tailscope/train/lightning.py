"""A PyTorch Lightning callback over :class:`tailscope.train.Monitor` (needs the lightning extra).

    trainer = lightning.Trainer(callbacks=[AlphaCallback(every=100, log_dir="runs/x")])
"""

from __future__ import annotations

from ..util.optional import require
from .monitor import DEFAULT_EVERY, Monitor

_pl = require("lightning.pytorch", "tailscope.train.lightning")


class AlphaCallback(_pl.Callback):
    """Runs a :class:`Monitor` on the LightningModule: one step per optimizer step (after
    ``optimizer.step()``, at the end of each training batch), with the first optimizer for a
    ``schedule``. Keyword arguments are the Monitor's; :attr:`monitor` is the Monitor."""

    def __init__(self, every: int = DEFAULT_EVERY, **monitor_options):
        super().__init__()
        self.every = every
        self.options = monitor_options
        self.monitor: Monitor | None = None
        self._seen = -1

    def on_fit_start(self, trainer, pl_module) -> None:
        self.monitor = Monitor(pl_module, every=self.every, **self.options)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.monitor is None or trainer.global_step == self._seen:
            return  # gradient accumulation: no optimizer step happened on this batch
        self._seen = trainer.global_step
        opt = trainer.optimizers[0] if trainer.optimizers else None
        self.monitor.step(opt)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()
