"""Writing output files safely: never a half-written file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path, write: Callable[[str], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written file.

    ``write(tmp_path)`` writes the content; a missing folder, a full disk or a folder that cannot
    be written is a one-line ``ValueError`` naming ``path``.
    """
    path = Path(path)
    if not path.parent.exists():
        raise ValueError(f"{path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: name the file the user gave
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return path
