"""Quantized checkpoints -> floating-point tensors, dequantized as the reference libraries do.

(Being built: issue 22. Today every source passes through unchanged.)
"""

from __future__ import annotations

from .base import Source


def dequantized(src: Source) -> Source:
    """``src`` with its quantized tensors and their companions replaced by one floating-point
    ``LayerRef`` each (``quant`` set); unchanged when nothing is quantized."""
    return src
