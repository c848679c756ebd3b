"""powerlaw 2.0.0's own test suite (the ``testing/`` folder of its source distribution on PyPI),
run unchanged against ``tailscope.compat.powerlaw``.

The sdist is fetched with pip into tailscope's data cache (git-ignored) at test time. Each file
runs in a pytest subprocess whose conftest puts the facade in ``sys.modules['powerlaw']`` (and
selects matplotlib's Agg backend): nothing else is adapted (the data come from the facade's
``load_test_dataset``, i.e. the powerlaw 2.0.0 wheel's files).

powerlaw 2.0.0 itself passes the 25 tests of the first six files (measured with the 2.0.0 wheel);
its run of test_synthetic_data.py (22 tests) was stopped by a 25-minute limit on the shared
2-core machine after passing the first 16, so its count below is the upper bound 22 (the facade
passes all 22 in about 4 minutes).
The facade passes them all but one, a deliberate difference:
``test_reference_data.py::TestReferenceData::test_lognormal`` expects the normalised
log-likelihood ratio of the power law against the discrete lognormal on 'words' to be 0.395;
2.0.0's lognormal optimum there (mu = -723.9, sigma = 27.66) is a point its optimiser stopped at,
and the exact maximum is the power-law limit of the lognormal (sigma -> inf), whose likelihood is
higher: the ratio is then 0.056 (checked below against 2.0.0's number).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from powerlaw_sdist import sdist_tarball

from tailscope.datasets import cache_dir

# file -> (tests in it, tests powerlaw 2.0.0 itself passes)
POWERLAW_PASSES = {
    "test_pickle.py": (3, 3), "test_plotting.py": (1, 1), "test_generating_data.py": (7, 7),
    "test_lognormal.py": (1, 1), "test_powerlaw.py": (7, 7), "test_reference_data.py": (6, 6),
    "test_synthetic_data.py": (22, 22),
}
DELIBERATE = {"test_reference_data.py::TestReferenceData::test_lognormal"}
CONFTEST = """\
import sys
import matplotlib
matplotlib.use("Agg")
import tailscope.compat.powerlaw as _facade
sys.modules["powerlaw"] = _facade
"""


def _testing_dir() -> Path:
    root = cache_dir() / "powerlaw-2.0.0-sdist"
    testing = root / "powerlaw-2.0.0" / "testing"
    if testing.is_dir():
        return testing
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with tarfile.open(sdist_tarball()) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith("powerlaw-2.0.0/testing/") and m.isfile()]
            tar.extractall(tmp, members=members, filter="data")
        os.replace(Path(tmp) / "powerlaw-2.0.0", root / "powerlaw-2.0.0")
    return testing


def _run(file: str, tmp_path: Path) -> dict:
    src = _testing_dir()
    work = tmp_path / "testing"
    work.mkdir()
    (work / file).write_bytes((src / file).read_bytes())
    (work / "conftest.py").write_text(CONFTEST)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "-p", "no:logging", "-W", "ignore", file], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1500)
    out = {}
    for status, test in re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", proc.stdout, re.M):
        out[test] = status
    assert out, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


# each file is a subprocess of 8 s or more: all slow but one, the smoke test of the runner
FILES = [pytest.param(f, marks=[] if f == "test_generating_data.py" else [pytest.mark.slow])
         for f in POWERLAW_PASSES]


@pytest.mark.parametrize("file", FILES)
def test_powerlaw2_suite_file(file, tmp_path):
    results = _run(file, tmp_path)
    total, theirs = POWERLAW_PASSES[file]
    assert len(results) == total, results
    ours = sum(v == "PASSED" for v in results.values())
    failed = {t for t, v in results.items() if v != "PASSED"}
    print(f"{file}: facade {ours}/{total}, powerlaw 2.0.0 {theirs}/{total}")
    assert failed <= DELIBERATE, failed
    assert ours + len(failed & DELIBERATE) >= theirs


@pytest.mark.slow
def test_the_deliberate_difference_is_a_better_maximum():
    """'words', discrete, exact alpha: 2.0.0's lognormal (mu -723.88, sigma 27.66, its
    per-point probabilities by erfc differences) has a lower likelihood than ours."""
    from scipy.special import log_ndtr

    import tailscope.compat.powerlaw as facade

    x = facade.load_test_dataset("words")
    fit = facade.Fit(x, discrete=True, estimate_discrete=False)
    t = fit.data
    mu, sigma = -723.8771213864416, 27.65959110183106  # powerlaw 2.0.0's fit (same in 1.5)

    def logsf(v):  # log P(lognormal > v), stable in the far tail
        return log_ndtr(-(np.log(v) - mu) / sigma)

    lo, hi = logsf(t - 0.5), logsf(t + 0.5)
    theirs = float(np.sum(lo + np.log(-np.expm1(hi - lo)) - logsf(fit.xmin - 0.5)))
    ours = float(np.sum(fit.lognormal.loglikelihoods()))
    assert ours > theirs
    R, _ = fit.loglikelihood_ratio("power_law", "lognormal", normalized_ratio=True)
    assert abs(R - 0.395) > 0.1 * 0.395 + 0.01  # why the reference value is not met
