"""WeightWatcher 0.7.7's ``normalize_params`` on the facade, against the installed 0.7.7."""

import copy

import pytest

from tailscope.compat import WeightWatcher

CASES = [{"fit": f, "channels": c, "fix_fingers": ff} for f in ("PL", "TPL", "E_TPL", "power_law",
                                                               "truncated_power_law", "other")
         for c in (None, "first", "last", "") for ff in (False, "clip_xmax")]


def _ww():
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher

        assert weightwatcher.__version__ == "0.7.7"
        return weightwatcher.WeightWatcher()


def test_normalize_params_equals_weightwatcher077():
    mine, theirs = WeightWatcher(), _ww()
    for params in CASES:
        ours_in, ref_in = copy.deepcopy(params), copy.deepcopy(params)
        ours = mine.normalize_params(ours_in)
        ref = theirs.normalize_params(ref_in)
        assert ours is ours_in and ours == ref and ours_in == ref_in, params  # in place, same


@pytest.mark.parametrize("missing", ["fit", "channels"])
def test_missing_keys_raise_like_weightwatcher(missing):
    params = {"fit": "PL", "channels": None}
    del params[missing]
    with pytest.raises(KeyError):
        _ww().normalize_params(dict(params))
    with pytest.raises(KeyError):
        WeightWatcher().normalize_params(dict(params))
