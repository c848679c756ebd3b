"""Mixture-of-Experts checkpoints -> one matrix per expert.

(Being built: issue 22. Today every source passes through unchanged.)
"""

from __future__ import annotations

from .base import Source


def with_experts(src: Source) -> Source:
    """``src`` with its fused expert stacks split into one matrix per expert (``expert`` set);
    unchanged when it has none."""
    return src
