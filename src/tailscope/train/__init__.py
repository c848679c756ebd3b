"""Training with the spectra: layer-wise schedules (TempBalance learning rates, AlphaDecay weight
decays) and a training monitor, with thin PyTorch Lightning (:mod:`tailscope.train.lightning`)
and Hugging Face ``Trainer`` (:mod:`tailscope.train.hf`) callbacks over it.

torch is imported only when a function here runs; Lightning and transformers only when their
callback module is imported.
"""

from __future__ import annotations

from .monitor import DEFAULT_EVERY, Monitor, TrainingWarning
from .schedule import layer_learning_rates, layer_weight_decays, tb_linear_map

__all__ = ["DEFAULT_EVERY", "Monitor", "TrainingWarning", "layer_learning_rates",
           "layer_weight_decays", "tb_linear_map"]
