"""tailscope.compat.WeightWatcher against weightwatcher 0.7.7 live: describe()'s and analyze()'s
tables (columns, order, rows), plot=True's figure files, SVDSmoothing/SVDSharpness, distances,
get_ESD(params=, random=) and the vector helpers, on seeded random-init torch models defined here
(VGG11's module structure at 1/8 width, a small BERT with hand-built LoRA layers in peft's
layout).

Layers are matched by ``longname`` (the module path), not by ``layer_id``, so these tests hold the
tables' shapes whatever numbering the ids follow.
"""

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from tailscope.compat import WeightWatcher


@pytest.fixture(scope="module")
def ww():
    import weightwatcher

    assert weightwatcher.__version__ == "0.7.7", "these tests compare with weightwatcher 0.7.7"
    logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)
    return weightwatcher


def quiet(call, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return call(*args, **kwargs)


# --- models --------------------------------------------------------------------------------------
class VGG(nn.Module):
    """torchvision's VGG11 module structure (features / avgpool / classifier), 1/8 the width."""

    def __init__(self, width=8, hidden=128, classes=100, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        layers, c = [], 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v // width, 3, padding=1), nn.ReLU(True)]
                c = v // width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, hidden),
            nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, classes))


class LoraLinear(nn.Module):
    """peft's lora.Linear layout: base_layer and the lora_A / lora_B ModuleDicts per adapter."""

    def __init__(self, base: nn.Linear, r: int = 16):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(r, base.out_features, bias=False)})
        nn.init.normal_(self.lora_B["default"].weight, std=0.05)


def bert_with_lora(seed=0):
    """A 2-layer BERT for sequence classification, LoRA on query and value, wrapped as
    PeftModel wraps it (base_model.model.*)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=64, num_labels=3)
    bert = BertForSequenceClassification(cfg).eval()
    for layer in bert.bert.encoder.layer:
        att = layer.attention.self
        att.query, att.value = LoraLinear(att.query), LoraLinear(att.value)
    wrapper = nn.Module()
    wrapper.base_model = nn.Module()
    wrapper.base_model.model = bert
    return wrapper


def small(seed=0):
    """Two dense layers and a conv layer: quick to analyse with every option."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Conv2d(12, 16, 2), nn.Linear(40, 20))


@pytest.fixture(scope="module")
def vgg():
    return VGG()


def ids_by_longname(table):
    return dict(zip(table["longname"], table["layer_id"]))


# --- describe ------------------------------------------------------------------------------------
SHAPE = ["longname", "layer_type", "N", "M", "Q", "rf", "num_evals"]


@pytest.mark.parametrize("kwargs", [{}, {"pool": False, "min_evals": 1}, {"min_evals": 30},
                                    {"max_evals": 1000}])
def test_describe_is_weightwatchers_table(ww, vgg, kwargs):
    ref = quiet(ww.WeightWatcher(model=vgg).describe, **kwargs)
    ours = WeightWatcher(model=vgg).describe(**kwargs)
    assert list(ours.columns) == list(ref.columns)
    assert len(ours) == len(ref)
    cols = SHAPE + (["slice_id"] if "slice_id" in ref else [])
    for c in cols:
        np.testing.assert_array_equal(ours[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    if kwargs.get("pool") is False:
        assert len(ours) == 8 * 9 + 3  # VGG11: 8 conv layers of 9 slices, 3 dense layers


def test_describe_savefig_is_checked_as_weightwatcher_checks_it(ww, vgg):
    for bad in (-1, 1.5, ["x"]):
        with pytest.raises(Exception, match="params not valid"):
            quiet(ww.WeightWatcher(model=vgg).describe, savefig=bad)
        with pytest.raises(ValueError, match="savefig"):
            WeightWatcher(model=vgg).describe(savefig=bad)
    for good in (True, False, "tmpdir"):
        assert len(WeightWatcher(model=vgg).describe(savefig=good)) == \
            len(quiet(ww.WeightWatcher(model=vgg).describe, savefig=good))
    with pytest.raises(ValueError, match="conv2d_fft"):
        WeightWatcher(model=vgg).describe(pool=False, conv2d_fft=True)


@pytest.mark.parametrize("peft", [False, True, "peft_only", "with_base"])
def test_describe_peft_rows_and_column(ww, peft):
    model = bert_with_lora()
    ref = quiet(ww.WeightWatcher(model=model).describe, peft=peft)
    ours = WeightWatcher(model=model).describe(peft=peft)
    assert list(ours.columns) == list(ref.columns)
    assert list(ours["longname"]) == list(ref["longname"])
    for c in SHAPE[1:] + (["peft"] if peft else []):
        np.testing.assert_array_equal(ours[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    if peft:
        assert ours["peft"].any()


# --- analyze's columns ---------------------------------------------------------------------------
OPTION_SETS = {
    "default": {},
    "clip_xmax": {"fix_fingers": "clip_xmax"},
    "detX": {"detX": True},
    "ERG": {"ERG": True},
    "randomize": {"randomize": True},
    "mp_fit": {"mp_fit": True},
    "vectors": {"vectors": True},
    "pool": {"pool": False},
    "tpl": {"fit": "TPL", "pl_package": "powerlaw", "xmax": "force"},
    "all": {"ERG": True, "mp_fit": True, "randomize": True},
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "tpl" else n
                                  for n in OPTION_SETS])  # tpl: powerlaw's TPL fits, ~5 s
def test_analyze_columns_are_weightwatchers(ww, name):
    model = small()
    kwargs = OPTION_SETS[name]
    ref = quiet(ww.WeightWatcher(model=model).analyze, **kwargs)
    ours = WeightWatcher(model=model).analyze(**kwargs)
    assert list(ours.columns) == list(ref.columns)
    assert list(ours["longname"]) == list(ref["longname"])
    assert list(ours["status"]) == list(ref["status"])
    np.testing.assert_array_equal(ours["has_esd"], ref["has_esd"])
    np.testing.assert_allclose(ours["Q"], ref["Q"])
    if "num_traps" in ref:
        np.testing.assert_array_equal(ours["num_traps"], ours["rand_num_spikes"])


def test_analyze_peft_columns_and_order(ww):
    model = bert_with_lora()
    ref = quiet(ww.WeightWatcher(model=model).analyze, peft="with_base",
                layers=list(quiet(ww.WeightWatcher(model=model).describe, peft="with_base")
                            ["layer_id"][2:5]))
    ours = WeightWatcher(model=model).analyze(peft="with_base")
    ours = ours[ours["longname"].isin(ref["longname"])]
    assert list(ours.columns) == list(ref.columns)
    assert list(ours["longname"]) == list(ref["longname"])
    np.testing.assert_array_equal(ours["peft"], ref["peft"])


# --- figures -------------------------------------------------------------------------------------
def figure_files(folder: Path, details) -> set:
    """(row's longname, slice or None, figure) of each saved file."""
    names = {str(k): v for k, v in zip(details["layer_id"], details["longname"])}
    out = set()
    for f in os.listdir(folder):
        assert f.startswith("ww.layer") and f.endswith(".png"), f
        pid, fig = f[len("ww.layer"):-len(".png")].split(".", 1)
        lid, _, sid = pid.partition(":")
        out.add((names[lid], sid or None, fig))
    return out


@pytest.mark.parametrize("kwargs", [{"randomize": True, "detX": True, "deltas": True},
                                    {"pool": False, "mp_fit": True}, {"vectors": True}])
@pytest.mark.slow  # WeightWatcher's figures, drawn and saved
def test_plot_saves_weightwatchers_files(ww, tmp_path, kwargs):
    torch.manual_seed(0)
    if kwargs.get("pool") is False:  # a dense layer and 2 conv slices
        model = nn.Sequential(nn.Linear(24, 40), nn.Conv2d(12, 16, (1, 2)))
    else:  # a square layer (mpfit1 is drawn for square ones only)
        model = nn.Sequential(nn.Linear(32, 32))
    ref = quiet(ww.WeightWatcher(model=model).analyze, plot=True, savefig=str(tmp_path / "ww"),
                **kwargs)
    watcher = WeightWatcher(model=model)
    ours = watcher.analyze(plot=True, savefig=str(tmp_path / "ts"), **kwargs)
    import matplotlib.pyplot as plt

    plt.close("all")
    theirs = figure_files(tmp_path / "ww", ref)
    mine = figure_files(tmp_path / "ts", ours)
    assert mine == theirs
    assert sorted(watcher.figures) == sorted(tmp_path / "ts" / f for f in os.listdir(
        tmp_path / "ts"))


def test_plot_true_saves_to_ww_img_and_false_saves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = nn.Sequential(nn.Linear(30, 50))
    WeightWatcher(model=model).analyze(plot=True, savefig=False)
    assert not any(tmp_path.iterdir())
    WeightWatcher(model=model).analyze(plot=True, savefig=True)
    assert {f.name for f in (tmp_path / "ww-img").iterdir()} == \
        {f"ww.layer1.{n}.png" for n in ("esd", "esd2", "esd3", "esd4", "esd5")}  # its id: 1
    WeightWatcher(model=model).analyze(plot=False, savefig="elsewhere")
    assert not (tmp_path / "elsewhere").exists()


# --- SVDSmoothing, SVDSharpness --------------------------------------------------------------------
def nonzero(esd):
    return int(np.sum(np.asarray(esd) > 1e-10))


@pytest.mark.parametrize("kwargs", [{"method": "svd", "percent": 0.2},
                                    {"method": "svd", "percent": -0.2}, {}])
def test_svd_smoothing_edits_the_model_in_place_as_weightwatcher(ww, kwargs):
    fc2 = "classifier.3"
    theirs_model, our_model = VGG(), VGG()
    theirs = ww.WeightWatcher(model=theirs_model)
    ours = WeightWatcher(model=our_model)
    lid_w = ids_by_longname(quiet(theirs.describe))[fc2]
    lid_o = ids_by_longname(ours.describe())[fc2]
    before = our_model.classifier[3].weight
    out_w = quiet(theirs.SVDSmoothing, layers=[lid_w], **kwargs)
    out_o = ours.SVDSmoothing(layers=[lid_o], **kwargs)
    assert out_w is theirs_model and out_o is our_model
    assert our_model.classifier[3].weight is before  # the same Parameter, new values
    kept_w = nonzero(quiet(theirs.get_ESD, layer=lid_w))
    kept_o = nonzero(ours.get_ESD(layer=lid_o))
    assert kept_o == kept_w
    if kwargs.get("method") == "svd":
        assert kept_o == (25 if kwargs["percent"] > 0 else 128 - 25)  # int(0.2 * 128) = 25
    # the other layers are untouched
    torch.testing.assert_close(our_model.classifier[0].weight, VGG().classifier[0].weight)


def test_svd_smoothing_of_a_state_dict_and_of_a_conv_layer(ww):
    sd_w, sd_o = VGG().state_dict(), VGG().state_dict()
    theirs, ours = ww.WeightWatcher(model=sd_w), WeightWatcher(model=sd_o)
    conv = "features.8"
    lid_w = ids_by_longname(quiet(theirs.describe))[conv]
    lid_o = ids_by_longname(ours.describe())[conv]
    quiet(theirs.SVDSmoothing, layers=[lid_w], method="svd", percent=0.3)
    assert ours.SVDSmoothing(layers=[lid_o], method="svd", percent=0.3) is sd_o
    for i in range(3):  # every slice keeps ceil(int(0.3 * 32 * 9) / 9) = 10 components
        for j in range(3):
            s_w = np.linalg.svd(sd_w["features.8.weight"][:, :, i, j].numpy(), compute_uv=False)
            s_o = np.linalg.svd(sd_o["features.8.weight"][:, :, i, j].numpy(), compute_uv=False)
            assert nonzero(s_o ** 2) == nonzero(s_w ** 2) == 10
            np.testing.assert_allclose(s_o[:10], s_w[:10], rtol=1e-4)


def test_svd_sharpness_returns_what_weightwatcher_returns(ww):
    fc2 = "classifier.3"
    model_w, model_o = VGG(), VGG()
    theirs, ours = ww.WeightWatcher(model=model_w), WeightWatcher(model=model_o)
    lid_w = ids_by_longname(quiet(theirs.describe))[fc2]
    lid_o = ids_by_longname(ours.describe())[fc2]
    # plant a trap: one large entry, which a shuffle keeps as a spike
    for m in (model_w, model_o):
        with torch.no_grad():
            m.classifier[3].weight[3, 7] = 25.0
    before = ours.get_ESD(layer=lid_o).max()
    assert quiet(theirs.SVDSharpness, layers=[lid_w]) is None
    assert ours.SVDSharpness(layers=[lid_o]) is None
    after_w, after_o = quiet(theirs.get_ESD, layer=lid_w).max(), ours.get_ESD(layer=lid_o).max()
    assert after_o < before - 2.0 and after_w < before - 2.0
    assert ours.edited.details.set_index("name").loc["classifier.3.weight", "removed"] >= 1
    assert ours.SVDSharpness(model=model_o, layers=[lid_o]) is model_o
    with pytest.raises(ValueError, match="pool=True"):
        ours.SVDSharpness(pool=False)


# --- get_ESD ---------------------------------------------------------------------------------------
def test_get_esd_with_params_and_random(ww, vgg):
    from weightwatcher.constants import DEFAULT_PARAMS

    theirs, ours = ww.WeightWatcher(model=vgg), WeightWatcher(model=vgg)
    fc1 = "classifier.0"
    lid_w = ids_by_longname(quiet(theirs.describe))[fc1]
    lid_o = ids_by_longname(ours.describe())[fc1]
    params = DEFAULT_PARAMS.copy()
    esd_w = np.sort(quiet(theirs.get_ESD, layer=lid_w, params=params))
    esd_o = np.sort(ours.get_ESD(layer=lid_o, params=params))
    np.testing.assert_allclose(esd_o, esd_w, rtol=1e-4)
    rand_w = quiet(theirs.get_ESD, layer=lid_w, random=True)
    rand_o = ours.get_ESD(layer=lid_o, random=True)
    assert rand_o.shape == rand_w.shape == esd_o.shape  # (one replica for M >= 100)
    # a shuffle of W's elements keeps its Frobenius norm: the eigenvalues' sum
    assert rand_o.sum() == pytest.approx(esd_o.sum(), rel=1e-6)
    assert not np.allclose(np.sort(rand_o), esd_o)
    # an unknown layer: WeightWatcher logs and returns [], the facade returns [] and warns
    assert len(quiet(theirs.get_ESD, layer=9999)) == 0
    with pytest.warns(UserWarning, match="no layer 9999"):
        assert len(ours.get_ESD(layer=9999)) == 0


# --- distances -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["raw", "euclidean", "cka"])
def test_distances_pool_false_and_bias_zero(ww, method):
    def net(seed):
        torch.manual_seed(seed)  # conv layers (whose biases WeightWatcher does not read) and a
        return nn.Sequential(  # dense layer without biases: its delta_b is 0 there
            nn.Conv2d(3, 16, 3), nn.Conv2d(16, 24, 3), nn.Linear(64, 48), nn.Linear(48, 32),
            nn.Linear(32, 20, bias=False))

    a, b = net(0), net(1)
    for pool in (True, False):
        ref = quiet(ww.WeightWatcher().distances, a, b, method=method, pool=pool)
        ours = WeightWatcher().distances(a, b, method=method, pool=pool)
        assert len(ours[2]) == len(ref[2])
        np.testing.assert_allclose(ours[2]["delta_W"].to_numpy(),  # WW's CKA: float32
                                   ref[2]["delta_W"].to_numpy(), rtol=1e-4)
        np.testing.assert_allclose(ours[2]["delta_b"].to_numpy(),
                                   ref[2]["delta_b"].to_numpy(), rtol=1e-5, atol=1e-12)
        assert ours[0] == pytest.approx(ref[0], rel=1e-4)
        assert ours[1] == pytest.approx(ref[1], rel=1e-6, abs=1e-12)
        if method != "raw":
            assert ours[1] == 0.0


# --- vectors -------------------------------------------------------------------------------------
VECTORS = [np.array([0.0, 1, 2, 3, 4]), np.array([[0.0, 1, 2, 3, 4], [1.0, -2, 0.5, 3, 7]]),
           [np.array([0.0, 1, 2, 3, 4]), np.array([0.3, 0.1]), np.arange(1.0, 40.0)]]


def test_vector_helpers_are_weightwatchers(ww):
    theirs, ours = ww.WeightWatcher(), WeightWatcher()
    for v in [None, 1, "x", [np.ones(3), 2.0]] + VECTORS:
        assert ours.valid_vectors(v) == theirs.valid_vectors(v)
        assert WeightWatcher.valid_vectors(v) == theirs.valid_vectors(v)
    for v in VECTORS:
        got = list(ours.iterate_vectors(v))
        want = list(theirs.iterate_vectors(v))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        ref = quiet(theirs.vector_metrics, v)
        mine = ours.vector_metrics(v)
        assert list(mine.columns) == ["length", "entropy", "discrete_entropy",
                                      "localization_ratio", "participation_ratio"]
        for c in ("length", "entropy", "localization_ratio", "participation_ratio"):
            np.testing.assert_allclose(mine[c].astype(float), ref[c].astype(float), rtol=1e-12)
        # WeightWatcher writes the discrete entropy under a misspelt column
        np.testing.assert_allclose(mine["discrete_entropy"], ref["discete_entropy"].astype(float),
                                   rtol=1e-12)
    with pytest.raises(ValueError, match="vectors"):
        ours.vector_metrics(None)


# --- stacked, intra ------------------------------------------------------------------------------
def chain(seed=0):
    torch.manual_seed(seed)  # the last pair shares no dimension: no intra row for it
    return nn.Sequential(nn.Linear(40, 64), nn.Linear(64, 64), nn.Linear(64, 30),
                         nn.Linear(50, 20))


def test_stacked_is_weightwatchers_stacked_layer(ww, vgg):
    ref = quiet(ww.WeightWatcher(model=vgg).describe, stacked=True)
    ours = WeightWatcher(model=vgg).describe(stacked=True)
    assert list(ours.columns) == list(ref.columns)
    for c in ref.columns:
        assert ours[c].tolist() == ref[c].tolist(), c
    model = chain()
    ref = quiet(ww.WeightWatcher(model=model).analyze, stacked=True)
    ours = WeightWatcher(model=model).analyze(stacked=True)
    assert list(ours.columns) == list(ref.columns)
    for c in ("layer_id", "name", "longname", "layer_type", "N", "M", "rf"):
        assert ours[c].tolist() == ref[c].tolist(), c
    # WeightWatcher keeps only the top M(first layer) = 40 of the 64 eigenvalues; the tail is
    # inside them here, so the fit is the same
    for c in ("alpha", "D", "xmin", "lambda_max", "sv_max", "num_pl_spikes"):
        np.testing.assert_allclose(ours[c], ref[c], rtol=1e-6, err_msg=c)
    assert ref["num_evals"].iloc[0] == 40 and ours["num_evals"].iloc[0] == 64


def test_intra_is_weightwatchers_overlap_of_consecutive_layers(ww):
    model = chain()
    ref = quiet(ww.WeightWatcher(model=model).analyze, intra=True, sparsify=False)
    ours = WeightWatcher(model=model).analyze(intra=True, sparsify=False)
    assert list(ours.columns) == list(ref.columns)
    assert len(ours) == len(ref) == 2 and ours["Xflag"].all()
    for c in ("longname", "layer_type", "N", "M", "rf", "num_evals"):
        assert ours[c].tolist() == ref[c].tolist(), c
    # WeightWatcher fits the singular values of X (not their squares)
    for c in ("alpha", "D", "xmin", "lambda_max", "sv_max", "norm", "log_norm"):
        np.testing.assert_allclose(ours[c], ref[c], rtol=1e-5, err_msg=c)
    ids = ours["layer_id"].tolist()
    assert ours["name"].tolist()[1] == f"{ids[0]} X {ids[1]} "
    sparse = WeightWatcher(model=model).analyze(intra=True, seed=3)
    assert list(sparse.columns) == list(ref.columns)
    again = WeightWatcher(model=model).analyze(intra=True, seed=3)
    np.testing.assert_array_equal(sparse["alpha"], again["alpha"])  # seeded, unlike WW's
    with pytest.raises(ValueError, match="intra"):
        WeightWatcher(model=model).analyze(intra=True, randomize=True)
    # WeightWatcher's describe(intra=True) always raises (its default params turn randomize on);
    # the facade lists the pairs analyze fits
    with pytest.raises(Exception, match="params not valid"):
        quiet(ww.WeightWatcher(model=model).describe, intra=True)
    table = WeightWatcher(model=model).describe(intra=True)
    assert table[["longname", "N", "M"]].values.tolist() == \
        ref[["longname", "N", "M"]].values.tolist()


# --- conv2d_fft ----------------------------------------------------------------------------------
@pytest.mark.slow  # WeightWatcher's conv2d_fft on the VGG-like net
def test_conv2d_fft_is_weightwatchers(ww, vgg):
    ref_d = quiet(ww.WeightWatcher(model=vgg).describe, conv2d_fft=True)
    ours_d = WeightWatcher(model=vgg).describe(conv2d_fft=True)
    assert list(ours_d.columns) == list(ref_d.columns)
    for c in SHAPE:
        np.testing.assert_array_equal(ours_d[c].to_numpy(), ref_d[c].to_numpy(), err_msg=c)
    kwargs = {"conv2d_fft": True, "max_evals": 500}  # ignored with conv2d_fft, as WW ignores it
    ref = quiet(ww.WeightWatcher(model=vgg).analyze, **kwargs)
    ours = WeightWatcher(model=vgg).analyze(**kwargs)
    assert list(ours.columns) == list(ref.columns)
    for c in SHAPE:
        np.testing.assert_array_equal(ours[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    for c in ("alpha", "D", "xmin", "lambda_max", "sv_max", "norm", "num_pl_spikes"):
        np.testing.assert_allclose(ours[c], ref[c], rtol=1e-5, err_msg=c)  # WW: float32 FFT
    assert (ours["layer_type"] == "conv2d").sum() == 8
