"""analyze(mp_fit=, randomize=, detX=) on real trained weights equals WeightWatcher 0.7.5.5.

The shuffles: WeightWatcher draws them from ``np.random.shuffle`` on the global, unseeded state.
To make both tools shuffle with the same permutations, WeightWatcher runs with ``np.random.shuffle``
monkeypatched to ``x[:] = gen.permutation(x)``, where ``gen`` is the generator tailscope gives that
layer (``default_rng([seed, layer_id])``, set by a wrapper around WeightWatcher's
``apply_random_esd`` when it starts each layer). Both tools then draw, per layer, the replicas
(matrix by matrix) and then one fresh shuffle, in the same order, from the same generator.
"""

import contextlib
import functools
import io
import logging
import math

import numpy as np
import pytest
import torch
from oracles import minilm_path, mtcnn_path
from safetensors.numpy import save_file

from tailscope import analyze
from tailscope.compat import WeightWatcher

SEED = 20261127
MP = ["sigma_mp", "mp_softrank", "W_scale", "bulk_max", "bulk_min"]
RAND_MP = ["rand_" + c for c in MP] + ["max_rand_eval", "rand_distance", "ww_softrank",
                                       "ww_maxdist"]
DETX = ["detX_val", "detX_val_unrescaled"]
# WeightWatcher's layer ids in MiniLM: position embeddings (no MP bulk: WeightWatcher reports a
# fit in which every sigma scored its penalty), a square attention matrix (Q = 1, the quarter
# circle), and an MLP matrix (Q = 4, stored wide: shuffled as stored)
MINILM_WW_IDS = {1: "embeddings.position_embeddings", 7: "encoder.layer.0.attention.self.query",
                 11: "encoder.layer.0.output.dense"}


def weightwatcher_with_our_shuffles(model, ids: dict, **kwargs):
    """WeightWatcher's analyze, each layer's shuffles drawn from tailscope's generator for it."""
    import weightwatcher

    assert weightwatcher.__version__ == "0.7.7"
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    original = weightwatcher.WeightWatcher.apply_random_esd
    state = {}

    def apply_random_esd(self, ww_layer, params=None):
        state["rng"] = np.random.default_rng([SEED, ids[ww_layer.name]])
        return original(self, ww_layer, params)

    def shuffle(x):
        x[...] = state["rng"].permutation(x)

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        mp.setattr(weightwatcher.WeightWatcher, "apply_random_esd", apply_random_esd)
        mp.setattr(np.random, "shuffle", shuffle)
        return weightwatcher.WeightWatcher(model=model).analyze(**kwargs)


@functools.cache
def minilm_pair():
    ours = analyze(minilm_path(), layers=[f"{n}.weight" for n in MINILM_WW_IDS.values()],
                   mp_fit=True, randomize=True, detX=True, seed=SEED).details
    ids = dict(zip(ours["module"], ours["layer_id"]))
    ref = weightwatcher_with_our_shuffles(str(minilm_path().parent), ids,
                                          layers=list(MINILM_WW_IDS), mp_fit=True,
                                          randomize=True, detX=True)
    assert list(ref["name"]) == list(MINILM_WW_IDS.values())
    return ours.set_index("module").loc[ref["name"]], ref.set_index("name")


@functools.cache
def mtcnn_pair(net):
    ours = analyze(mtcnn_path(net), mp_fit=True, randomize=True, detX=True, seed=SEED).details
    ids = dict(zip(ours["module"], ours["layer_id"]))
    sd = torch.load(mtcnn_path(net), weights_only=True)
    ref = weightwatcher_with_our_shuffles(sd, ids, mp_fit=True, randomize=True, detX=True)
    return ours.set_index("module").loc[ref["name"]], ref.set_index("name")


def assert_same(ours, ref, columns, rtol):
    for col in columns:
        np.testing.assert_allclose(ours[col].astype(float), ref[col].astype(float), rtol=rtol,
                                   atol=1e-12, err_msg=col)


@pytest.mark.slow  # WeightWatcher's MP fits on MiniLM layers (minilm_pair)
def test_minilm_mp_fit_equals_weightwatcher():
    ours, ref = minilm_pair()
    fitted = [n for n in ref.index if n != "embeddings.position_embeddings"]
    assert (ours.loc[fitted, "mp_reason"] == "").all()
    np.testing.assert_array_equal(ours.loc[fitted, "num_spikes"].astype(int),
                                  ref.loc[fitted, "num_spikes"].astype(int))
    np.testing.assert_allclose(ours.loc[fitted, "sigma_mp"].astype(float),
                               ref.loc[fitted, "sigma_mp"], atol=1e-3)
    assert_same(ours.loc[fitted], ref.loc[fitted], MP, rtol=1e-6)
    assert ours.loc["encoder.layer.0.attention.self.query", "Q"] == 1.0  # the quarter circle


@pytest.mark.slow  # minilm_pair
def test_no_mp_bulk_is_nan_and_a_reason_where_weightwatcher_reports_a_penalised_fit():
    """Position embeddings: the KDE peaks at 0, so every sigma's lambda- > peak scores 1000 per
    point; WeightWatcher still reports that sigma (its residual is 1000^2 x points)."""
    from weightwatcher.RMT_Util import resid_mp

    ours, ref = minilm_pair()
    name = "embeddings.position_embeddings"
    assert all(math.isnan(ours.loc[name, c]) for c in MP + ["num_spikes"])
    assert "bulk edge" in ours.loc[name, "mp_reason"]
    assert ours.loc[name, "status"] == "success"  # the power-law fit stands
    ev = analyze(minilm_path(), layers=[f"{name}.weight"]).esd(f"{name}.weight")
    scaled = ev * ref.loc[name, "W_scale"] ** 2
    penalised = resid_mp(np.array([ref.loc[name, "sigma_mp"]]), scaled, 512 / 384, 0.1, False)
    good = penalised / 1000.0 ** 2
    assert good == int(good) and good > 0  # every residual point was the penalty


@pytest.mark.slow  # minilm_pair
def test_minilm_detx_equals_weightwatcher():
    ours, ref = minilm_pair()
    np.testing.assert_array_equal(ours["detX_num"].astype(int), ref["detX_num"].astype(int))
    assert_same(ours, ref, DETX, rtol=1e-9)
    # WeightWatcher 0.7.7's ERG columns
    np.testing.assert_array_equal(ours["num_ERG_spikes"], ours["detX_num"])
    np.testing.assert_array_equal(ours["ERG_gap"], ours["detX_num"] - ours["num_pl_spikes"])


@pytest.mark.slow  # minilm_pair
def test_minilm_randomized_esd_equals_weightwatcher_on_the_same_shuffles():
    ours, ref = minilm_pair()
    np.testing.assert_array_equal(ours["rand_num_spikes"].astype(int),
                                  ref["rand_num_spikes"].astype(int))
    assert_same(ours, ref, RAND_MP, rtol=1e-6)
    assert (ours["rand_reason"] == "").all()


def test_mtcnn_conv_nets_equal_weightwatcher():
    """Conv layers: slices shuffled one by one, 5 replicas below 100 eigenvalues."""
    ours, ref = mtcnn_pair("pnet")
    assert (ours["num_evals"] < 100).any()  # the 5-replica path is exercised
    for col in ("num_spikes", "rand_num_spikes", "detX_num"):
        np.testing.assert_array_equal(ours[col].astype(int), ref[col].astype(int), err_msg=col)
    np.testing.assert_allclose(ours["sigma_mp"].astype(float), ref["sigma_mp"], atol=1e-3)
    assert_same(ours, ref, MP + RAND_MP, rtol=1e-6)
    assert_same(ours, ref, DETX, rtol=1e-9)


def test_seed_reproduces_and_none_is_recorded():
    path = mtcnn_path("pnet")
    first = analyze(path, randomize=True, seed=7)
    again = analyze(path, randomize=True, seed=7)
    cols = ["max_rand_eval", "rand_distance", "rand_sigma_mp"]
    np.testing.assert_array_equal(first.details[cols], again.details[cols])
    assert first.options["seed"] == 7
    fresh = analyze(path, randomize=True)
    seed = fresh.options["seed"]
    assert isinstance(seed, int)
    np.testing.assert_array_equal(fresh.details[cols],
                                  analyze(path, randomize=True, seed=seed).details[cols])
    other = analyze(path, randomize=True, seed=8)
    assert not np.array_equal(first.details["max_rand_eval"], other.details["max_rand_eval"])
    # the randomized ESD is kept: it pools 5 replicas of a 27-eigenvalue layer
    name = first.details["name"].iloc[0]
    rand = first.random_esd(name)
    assert rand.size == 5 * int(first.details["num_evals"].iloc[0])
    assert rand.max() == pytest.approx(first.details["max_rand_eval"].iloc[0])
    with pytest.raises(ValueError, match="seed"):
        analyze(path, randomize=True, seed=-1)


def test_a_layer_without_mp_bulk_never_stops_the_run(tmp_path):
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((200, 2)), rng.standard_normal((2, 100))
    low_rank = (u @ v + 1e-4 * rng.standard_normal((200, 100))).astype(np.float32)
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_normal((200, 100)).astype(np.float32),
               "b.weight": low_rank, "c.weight": np.zeros((200, 100), np.float32)}, str(path))
    a = analyze(path, mp_fit=True, randomize=True, detX=True, seed=1)
    d = a.details.set_index("name")
    assert d.loc["a.weight", "mp_reason"] == "" and d.loc["a.weight", "num_spikes"] == 0
    assert d.loc["a.weight", "sigma_mp"] == pytest.approx(1.0, abs=0.05)  # a random matrix
    assert "bulk edge" in d.loc["b.weight", "mp_reason"]
    assert np.isnan(d.loc["b.weight", ["num_spikes", "sigma_mp", "bulk_max"]].astype(float)).all()
    assert d.loc["c.weight", "status"] == "failed"
    assert np.isnan(d.loc["c.weight", ["sigma_mp", "rand_distance", "detX_num"]].astype(float)
                    ).all()
    with pytest.raises(KeyError, match="no MP fit"):
        a.mp_fit("b.weight")
    assert a.mp_fit("a.weight").num_spikes == 0
    assert a.summary()["mp_softrank"] == pytest.approx(d.loc["a.weight", "mp_softrank"])


def test_compat_passes_the_options_and_erg_alias():
    path = mtcnn_path("pnet")
    watcher = WeightWatcher(model=path)
    details = watcher.analyze(mp_fit=True, randomize=True, ERG=True)
    for col in ("num_spikes", "sigma_mp", "rand_distance", "detX_num", "num_ERG_spikes",
                "ERG_gap"):
        assert col in details and details[col].notna().all(), col
    assert "mp_softrank" in watcher.get_summary()


@pytest.mark.slow  # two fresh processes with mp_fit and randomize
def test_cli_flags(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    path = mtcnn_path("pnet")
    out = tmp_path / "pnet.csv"
    res = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(path), "--mp-fit",
                          "--randomize", "--seed", "3", "--detX", "--quiet", "--out", str(out),
                          "--plot", str(tmp_path / "figs")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(out)
    ref = analyze(path, mp_fit=True, randomize=True, seed=3, detX=True).details
    for col in ("sigma_mp", "num_spikes", "rand_distance", "max_rand_eval", "detX_num"):
        np.testing.assert_allclose(table[col], ref[col].astype(float), rtol=1e-12, err_msg=col)
    assert len(list((tmp_path / "figs").glob("layer*.png"))) == len(ref)
    bad = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(path), "--randomize",
                          "--seed", "-2"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "seed" in bad.stderr


def test_same_shuffles_whatever_the_jobs_or_the_backend(tmp_path):
    """Each layer's generator comes from (seed, layer_id): threads and the batched torch path
    give the numbers of the plain run."""
    rng = np.random.default_rng(4)
    path = tmp_path / "m.safetensors"
    save_file({f"l{i}.weight": rng.standard_t(4, (120, 60)).astype(np.float32) for i in range(4)},
              str(path))
    opts = dict(mp_fit=True, randomize=True, detX=True, seed=11)
    plain = analyze(path, **opts).details
    cols = ["sigma_mp", "max_rand_eval", "rand_sigma_mp", "rand_distance", "detX_val"]
    for other in (analyze(path, jobs=2, **opts).details,
                  analyze(path, device="torch:cpu", **opts).details):
        np.testing.assert_allclose(other[cols].astype(float), plain[cols].astype(float),
                                   rtol=1e-9)
    assert plain["max_rand_eval"].nunique() == 4  # the layers' shuffles differ


def test_wide_conv_slices_are_shuffled_as_weightwatcher_transposes_them():
    """A conv with fewer outputs than inputs: WeightWatcher transposes each slice before
    flattening it, so the same permutation only gives the same matrix if we do too."""
    gen = torch.Generator().manual_seed(0)
    sd = {"wide.weight": torch.randn(8, 32, 3, 3, generator=gen) ** 3,
          "tall.weight": torch.randn(24, 6, 3, 3, generator=gen) ** 3}
    ours = analyze(sd, randomize=True, mp_fit=True, seed=SEED).details
    ids = dict(zip(ours["module"], ours["layer_id"]))
    ref = weightwatcher_with_our_shuffles(sd, ids, randomize=True, mp_fit=True)
    ours, ref = ours.set_index("module").loc[ref["name"]], ref.set_index("name")
    assert list(ref.index) == ["wide", "tall"]
    np.testing.assert_array_equal(ours["rand_num_spikes"].astype(int),
                                  ref["rand_num_spikes"].astype(int))
    assert_same(ours, ref, RAND_MP, rtol=1e-6)
