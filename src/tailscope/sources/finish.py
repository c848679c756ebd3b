"""The passes every opened model goes through after its reader, in this order:

1. ``config``: the model's Hugging Face ``config.json`` beside its files is read into
   ``Source.config`` (architecture, expert counts, ``quantization_config``).
2. ``quantized.dequantized``: quantized tensors and their companions (scales, zero points,
   packed blocks) become one floating-point ``LayerRef`` each, with ``quant`` saying what was
   stored.
3. ``moe.with_experts``: fused Mixture-of-Experts stacks become one matrix per expert, with
   ``expert`` set.

Nothing here reads a weight tensor.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .base import Source, SourceError
from .moe import with_experts
from .quantized import dequantized

_MAX_CONFIG = 16 * 1024 * 1024


def read_config(folder: Path) -> dict | None:
    """The ``config.json`` of a model folder as a dict; None when there is none.

    Raises
    ------
    SourceError
        When the file is there but is not a JSON object of at most 16 MiB.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > _MAX_CONFIG:
            raise SourceError(f"{path}: larger than {_MAX_CONFIG >> 20} MiB; not a model config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SourceError(f"{path}: not a valid config.json ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SourceError(f"{path}: not a valid config.json (not a JSON object)")
    return config


def with_config(src: Source) -> Source:
    """``src`` with ``config`` read from beside its first file, when it has none yet."""
    if src.config is not None or not src.files:
        return src
    config = read_config(Path(src.files[0]).parent)
    return src if config is None else replace(src, config=config)


def finish(src: Source) -> Source:
    """The passes above, applied to a reader's ``Source``."""
    return with_experts(dequantized(with_config(src)))
