"""tailscope.compat.WeightWatcher: WeightWatcher users' calls, with WeightWatcher's numbers."""

import numpy as np
import pytest
import torch
from oracles import minilm_path, mtcnn_path, weightwatcher_details

from tailscope.compat import WeightWatcher


def test_the_usual_calls_give_weightwatchers_numbers():
    sd = torch.load(mtcnn_path("rnet"), weights_only=True)
    watcher = WeightWatcher(model=sd)
    details = watcher.analyze()
    ref = weightwatcher_details(sd)
    assert list(details["name"]) == list(ref["name"])
    assert {"layer_id", "name", "longname", "alpha", "D", "has_esd", "warning"} <= set(details)
    np.testing.assert_allclose(details["alpha"], ref["alpha"], rtol=1e-6)
    summary = watcher.get_summary()
    for key in ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                "stable_rank"):
        assert summary[key] == pytest.approx(ref[key].mean(), rel=1e-6)
    assert watcher.get_details() is details
    esd = watcher.get_ESD(layer="dense4")
    assert esd.size == int(details.set_index("name").loc["dense4", "num_evals"])
    table = watcher.describe()
    assert list(table["longname"]) == list(ref["name"])


def test_options_are_translated_or_refused():
    watcher = WeightWatcher()
    with pytest.raises(ValueError, match="no model"):
        watcher.analyze()
    with pytest.raises(ValueError, match="call analyze"):
        watcher.get_details()
    path = mtcnn_path("onet")
    unpooled = watcher.analyze(model=path, ww2x=True, svd_method="accurate", plot=False,
                               savefig="ww-img", pl_package="ww", fix_fingers=False)
    assert "slice_id" in unpooled.columns
    with pytest.raises(ValueError, match="not supported"):
        watcher.analyze(model=path, inverse=True)
    with pytest.raises(ValueError, match="unknown WeightWatcher option"):
        watcher.analyze(model=path, colour="red")
    with pytest.raises(ValueError, match="peft must be"):
        watcher.analyze(model=path, peft="maybe")


def test_failed_layers_are_not_averaged_in(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((60, 30)).astype(np.float32),
               "b.weight": np.zeros((60, 30), np.float32)}, str(path))
    watcher = WeightWatcher(model=path)
    details = watcher.analyze()
    assert list(details["status"]) == ["success", "failed"]
    assert watcher.get_summary()["alpha"] == pytest.approx(details["alpha"].iloc[0])


@pytest.mark.slow  # MiniLM's 39 layers through the facade
def test_minilm_through_the_facade():
    details = WeightWatcher(model=minilm_path()).analyze(layers=["*.attention.self.*"])
    assert len(details) == 18 and (details["status"] == "success").all()


def test_get_esd_is_what_analyze_fitted_unlike_weightwatcher():
    """WeightWatcher's get_ESD skips conv2d_norm: its conv ESDs are twice those it fits."""
    import contextlib
    import io
    import logging

    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    sd = torch.load(mtcnn_path("onet"), weights_only=True)
    ours = WeightWatcher(model=sd)
    ours.analyze()
    with contextlib.redirect_stdout(io.StringIO()):
        ref = weightwatcher.WeightWatcher(model=sd).get_ESD(layer="conv2")
    mine = ours.get_ESD(layer="conv2")
    np.testing.assert_allclose(ref, 2 * mine, rtol=1e-9)
    lam_max = ours.get_details().set_index("name").loc["conv2", "lambda_max"]
    assert mine.max() == pytest.approx(lam_max)


# --- WeightWatcher 0.7.7's defaults: declared once (compat/numbers.py), held to the oracle -------
def _defaults(function) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _empty_as_tuple(d: dict) -> dict:  # WeightWatcher's mutable [] defaults are () here
    return {k: () if isinstance(v, list) and not v else v for k, v in d.items()}


def test_the_declared_defaults_are_weightwatcher_077s_own():
    ww = pytest.importorskip("weightwatcher")
    from weightwatcher import constants

    from tailscope.compat import numbers

    assert ww.__version__ == "0.7.7"
    assert numbers.DEFAULT_PARAMS == constants.DEFAULT_PARAMS
    assert numbers.START_IDS in constants.DEFAULT_PARAMS
    analyzed = _empty_as_tuple(_defaults(ww.WeightWatcher.analyze))
    assert numbers.ANALYZE == {k: v for k, v in analyzed.items() if k != "model"}
    described = _empty_as_tuple(_defaults(ww.WeightWatcher.describe))
    assert {k: v for k, v in described.items() if k != "model"} == \
        {k: numbers.ANALYZE[k] for k in described if k != "model"}


def test_the_facades_signatures_have_weightwatcher_077s_defaults():
    ww = pytest.importorskip("weightwatcher")
    import inspect

    # not WeightWatcher's: empty layer lists as None or () (no mutable default); extract_pytorch_bins
    # writes under the system's temporary folder ($TMPDIR), not '/tmp'; the delta iterator's class
    # is WeightWatcher's own
    own = {"layers", "filters", "tmp_dir", "Iterator_Class"}
    checked = 0
    for name, method in inspect.getmembers(WeightWatcher, callable):
        if name.startswith("_") or not hasattr(ww.WeightWatcher, name):
            continue
        theirs = _defaults(getattr(ww.WeightWatcher, name))
        for key, value in _defaults(method).items():
            if key in theirs and key not in own:
                assert value == theirs[key], f"{name}({key}={value!r}): WeightWatcher's is " \
                                             f"{theirs[key]!r}"
                checked += 1
    assert checked > 20
