import os
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


GPTQMODEL = Path(__file__).resolve().parents[1] / ".cache" / "gptqmodel"


@pytest.fixture(scope="module")
def gptqmodel():
    """gptqmodel 7.6.0 from the venv or from .cache/gptqmodel; in CI (CI=true) a missing copy is
    a failure, never a skip."""
    try:
        import gptqmodel
    except ImportError:
        if not GPTQMODEL.is_dir():
            message = (f"gptqmodel 7.6.0 is not installed at {GPTQMODEL}: `make` puts it there "
                       "(pip install --no-deps --target .cache/gptqmodel gptqmodel==7.6.0 "
                       "defuser==0.0.28 device_smi==0.5.7 logbar==0.4.15 pypcre==0.6.4 "
                       "tokenicer==0.0.14)")
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(message)
            pytest.skip(message)
        sys.path.append(str(GPTQMODEL))
        appended = True
        import gptqmodel  # a broken copy fails here: no skip
    else:
        appended = False
    assert gptqmodel.__version__ == "7.6.0", gptqmodel.__version__
    yield gptqmodel
    if appended:  # gone again: libraries that probe for gptqmodel (PEFT) must not find it later
        sys.path.remove(str(GPTQMODEL))
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(GPTQMODEL)):
                del sys.modules[name]
        peft_probe = getattr(sys.modules.get("peft.import_utils"), "is_gptqmodel_available", None)
        if hasattr(peft_probe, "cache_clear"):
            peft_probe.cache_clear()
