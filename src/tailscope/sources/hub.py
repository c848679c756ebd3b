"""Hugging Face model ids (``owner/name``): the weight files downloaded to the usual HF cache.

Only the weights are fetched (safetensors and their index; PyTorch ``.bin`` files when a repo has
no safetensors), never the whole repository. Needs the ``hub`` extra (huggingface_hub), imported
only here and only when a model id is given. Offline (``HF_HUB_OFFLINE=1``), a model id is read
from the cache alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..util.errors import one_line
from ..util.optional import require
from .base import SourceError
from .registry import FILE_SUFFIXES

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_.-]{1,96}")
SAFETENSORS_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "config.json"]
BIN_PATTERNS = ["*.bin", "*.bin.index.json", "config.json"]


def is_repo_id(text: str) -> bool:
    """True for a string shaped like a Hugging Face model id ``owner/name`` (not a file name)."""
    return (bool(_REPO_ID.fullmatch(text)) and ".." not in text and not text.endswith(".")
            and not text.lower().endswith(FILE_SUFFIXES))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cache_dir() -> str | None:
    """The hub cache as huggingface_hub resolves it, read now (its constants are read at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def open_hub(repo_id: str, *, revision: str | None = None) -> Path:
    """Download (or find in the cache) the weight files of ``repo_id``; the snapshot folder.

    Raises
    ------
    SourceError
        huggingface_hub missing, offline without a cached copy, or no such repository.
    """
    local = (f"or download it where the Hub is reachable (huggingface-cli download {repo_id}) "
             "and pass the local folder")
    try:
        hub = require("huggingface_hub", f"{repo_id}: not a local file or folder; reading a "
                      "Hugging Face model id", error=SourceError)
    except SourceError as exc:
        raise SourceError(f"{exc}, {local}") from None
    offline = _offline()
    last = ""
    for patterns in (SAFETENSORS_PATTERNS, BIN_PATTERNS):
        try:
            folder = Path(hub.snapshot_download(repo_id, revision=revision,
                                                allow_patterns=patterns, cache_dir=_cache_dir(),
                                                local_files_only=offline))
        except Exception as exc:  # noqa: BLE001 - network, auth and cache errors all end here
            last = one_line(exc)
            continue
        if _has_weights(folder):
            return folder
        last = "the repository has no .safetensors or .bin weight files"
    if offline:
        raise SourceError(f"{repo_id}: not a local file or folder, and offline (HF_HUB_OFFLINE=1) "
                          f"with no copy in the Hugging Face cache; unset HF_HUB_OFFLINE {local}")
    raise SourceError(f"{repo_id}: not a local file or folder, and the Hugging Face Hub could not "
                      f"provide its weights ({last}); check the id and the network, {local}")
