"""Optional dependencies: imported only when used, and named with their extra when missing.

``EXTRAS`` is the one table of which import needs which ``pip install 'tailscope[extra]'``; the
extras themselves are declared in ``pyproject.toml`` (a test holds the two together).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# import name -> (the package users install, the tailscope extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch"),
    "pyarrow": ("pyarrow", "parquet"),
    "sklearn": ("scikit-learn", "rank"),
    "matplotlib": ("matplotlib", "plots"),
    "onnx": ("onnx", "onnx"),
    "h5py": ("h5py", "keras"),
    "huggingface_hub": ("huggingface_hub", "hub"),
    "distributed": ("dask[distributed]", "zoo"),
    "sqlalchemy": ("SQLAlchemy", "zoo"),
    "yaml": ("pyyaml", "zoo"),
    "lightning": ("lightning", "lightning"),
    "transformers": ("transformers", "hf"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "gguf": ("gguf", "gguf"),
    "tflite": ("tflite", "tflite"),
    "tensorflow": ("tensorflow", "tf"),
    "ipykernel": ("ipykernel", "notebook"),
    "nbclient": ("nbclient", "notebook"),
    "nbformat": ("nbformat", "notebook"),
}


class MissingExtra(ImportError, ValueError):
    """An optional dependency is not installed: a one-line message naming the extra (CLI exit 2)."""


def install_hint(module: str) -> str:
    """``"pip install 'tailscope[extra]'"`` for an import name of ``EXTRAS``."""
    _, extra = EXTRAS[module.split(".")[0]]
    return f"pip install 'tailscope[{extra}]'"


def require(module: str, purpose: str, *, error: type[Exception] = MissingExtra) -> ModuleType:
    """Import ``module`` (a key of ``EXTRAS``, or a submodule of one), or raise ``error`` with
    ``"<purpose> needs <package>: pip install 'tailscope[<extra>]'"``.

    ``purpose`` says what the user asked for ("reading ONNX models"); ``error`` lets a layer keep
    its own error type (``SourceError`` in ``sources``).
    """
    top = module.split(".")[0]
    package, _ = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error(f"{purpose} needs {package}: {install_hint(top)}") from None
