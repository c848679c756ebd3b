"""Writing output files safely: never a half-written file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path, write: Callable[[str], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written file.

    ``write(tmp_path)`` writes the content; a missing folder is a one-line ``ValueError``.
    """
    path = Path(path)
    if not path.parent.exists():
        raise ValueError(f"{path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
