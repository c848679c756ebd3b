"""tailscope.compat's layer ids, names, types, filters, iterators and helpers against WeightWatcher
0.7.7 live, on seeded random-init models of its test architectures (VGG11's and ResNet18's module
structure at small widths, BERT and ALBERT from transformers with small configs), on state dicts,
and on safetensors / pytorch-bin folders written here."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
ww = pytest.importorskip("weightwatcher")
if ww.__version__ != "0.7.7":
    pytest.skip(f"needs weightwatcher 0.7.7 (found {ww.__version__})", allow_module_level=True)

from tailscope.compat import WeightWatcher  # noqa: E402

logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)
IDS = ["layer_id", "name", "longname", "layer_type", "N", "M", "rf"]


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


# --- the architectures ---------------------------------------------------------------------------
class VGG11(nn.Module):
    """torchvision's vgg11 module structure (features, avgpool, classifier) at small widths."""

    def __init__(self, w=(8, 16, 32, 32)):
        super().__init__()
        cfg = [w[0], "M", w[1], "M", w[2], w[2], "M", w[3], w[3], "M", w[3], w[3], "M"]
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(c * 4, 64), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64, 10))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))


class ResNet18(nn.Module):
    """torchvision's resnet18 module structure at small widths."""

    def __init__(self, w=(8, 16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = w[0]
        for i, width in enumerate(w):
            blocks = nn.Sequential(BasicBlock(c, width, 1 if i == 0 else 2),
                                   BasicBlock(width, width))
            setattr(self, f"layer{i + 1}", blocks)
            c = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, 10)


def bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=48,
                                  max_position_embeddings=40, type_vocab_size=2)
    torch.manual_seed(1)
    return transformers.BertModel(cfg).eval()


def albert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AlbertConfig(vocab_size=120, embedding_size=16, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=48, max_position_embeddings=40)
    torch.manual_seed(2)
    return transformers.AlbertModel(cfg).eval()


def gpt2():
    """Conv1D layers (typed conv1d by WeightWatcher) and an lm_head tied to wte."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                  n_positions=40)
    torch.manual_seed(5)
    return transformers.GPT2LMHeadModel(cfg).eval()


def vgg():
    torch.manual_seed(0)
    return VGG11()


def resnet():
    torch.manual_seed(3)
    return ResNet18()


MODELS = {"vgg11": vgg, "resnet18": resnet, "bert": bert, "albert": albert, "gpt2": gpt2}


def frame(d: pd.DataFrame) -> pd.DataFrame:
    out = d[IDS].reset_index(drop=True).copy()
    for c in ("layer_id", "N", "M", "rf"):
        out[c] = out[c].astype(int)
    out["layer_type"] = out["layer_type"].astype(str)
    return out


def same_layers(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    assert len(theirs) > 0
    pd.testing.assert_frame_equal(frame(ours), frame(theirs))


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


# --- ids, names and types of a torch module ----------------------------------------------------
@pytest.mark.parametrize("start_ids", [0, 1])
def test_describe_ids_names_types_match(model, start_ids):
    theirs = quiet(ww.WeightWatcher(model=model).describe, min_evals=8, start_ids=start_ids)
    ours = WeightWatcher(model=model).describe(min_evals=8, start_ids=start_ids)
    same_layers(ours, theirs)


def test_vgg_ids_are_module_positions():
    d = WeightWatcher(model=vgg()).describe(min_evals=8)
    assert d["layer_id"].tolist() == [2, 5, 8, 10, 13, 15, 18, 20, 25, 28, 31]  # as VGG11's


def test_albert_mapping_in_is_dense():
    d = WeightWatcher(model=albert()).describe(min_evals=8)
    row = d[d["longname"] == "encoder.embedding_hidden_mapping_in"]
    assert row["layer_type"].tolist() == ["dense"]
    theirs = quiet(ww.WeightWatcher(model=albert()).describe, min_evals=8)
    assert theirs.loc[theirs["longname"] == "encoder.embedding_hidden_mapping_in",
                      "layer_type"].tolist() == ["dense"]


def _filters(model):
    d = quiet(ww.WeightWatcher(model=model).describe, min_evals=8)
    ids = d["layer_id"].tolist()
    names = d["name"].tolist()
    return [ids[:2], [-i for i in ids[1:3]], [names[-1]], [f"-{names[0]}"], ["dense"],
            ["conv2d"], ["embedding"], ["Linear"], ["Conv2d"], ["dense", ids[-1]],
            [ids[0], names[-1]], [10 ** 6]]


def test_filters_match(model):
    for flt in _filters(model):
        theirs = quiet(ww.WeightWatcher(model=model).describe, min_evals=8, layers=flt)
        ours = WeightWatcher(model=model).describe(min_evals=8, layers=flt)
        if len(theirs) == 0:
            assert len(ours) == 0, flt
        else:
            same_layers(ours, theirs)


def test_analyze_rows_match_and_alphas_agree():
    m = vgg()
    theirs = quiet(ww.WeightWatcher(model=m).analyze, min_evals=8, layers=[2, 25, 28, 31])
    ours = WeightWatcher(model=m).analyze(min_evals=8, layers=[2, 25, 28, 31])
    same_layers(ours, theirs)
    big = (theirs["M"] * theirs["rf"] >= 20).to_numpy()  # fewer: 0.7.7's small-sample fit
    np.testing.assert_allclose(ours["alpha"][big], theirs["alpha"][big], rtol=1e-6)
    np.testing.assert_allclose(ours["lambda_max"], theirs["lambda_max"], rtol=1e-6)


def test_mixed_sign_ids_raise_as_weightwatcher():
    m = vgg()
    with pytest.raises(Exception, match="params not valid"):
        quiet(ww.WeightWatcher(model=m).describe, layers=[-2, 5])
    with pytest.raises(ValueError):
        WeightWatcher(model=m).describe(layers=[-2, 5])


# --- one layer by id or name --------------------------------------------------------------------
def test_get_weights_framework_layer_and_esd_match():
    m = bert()
    theirs, ours = ww.WeightWatcher(model=m), WeightWatcher(model=m)
    d = quiet(theirs.describe, min_evals=8)
    dense = d[d["layer_type"] == "dense"].iloc[0]
    for layer in (int(dense["layer_id"]), str(dense["name"])):
        w_t = quiet(theirs.get_Weights, layer=layer)
        w_o = ours.get_Weights(layer=layer)
        assert len(w_t) == len(w_o) == 1
        np.testing.assert_array_equal(w_o[0], w_t[0])
        assert ours.get_framework_layer(layer=layer) is quiet(theirs.get_framework_layer,
                                                              layer=layer)
    lid = int(dense["layer_id"])
    esd_t = np.sort(quiet(theirs.get_ESD, layer=lid))
    esd_o = np.sort(ours.get_ESD(layer=lid))
    np.testing.assert_allclose(esd_o[esd_o > 1e-8], esd_t[esd_t > 1e-8], rtol=1e-8)
    assert len(quiet(theirs.get_ESD, layer=10 ** 6)) == len(ours.get_ESD(layer=10 ** 6)) == 0


def test_conv_weights_are_weightwatchers_slices():
    m = vgg()
    w_t = quiet(ww.WeightWatcher(model=m).get_Weights, layer=5)
    w_o = WeightWatcher(model=m).get_Weights(layer=5)
    assert len(w_o) == len(w_t) == 9
    for a, b in zip(w_o, w_t):
        np.testing.assert_array_equal(a, b)


# --- iterators ----------------------------------------------------------------------------------
ATTRS = ("layer_id", "name", "longname", "the_type", "framework", "channels", "plot_id",
         "has_weights", "has_biases", "N", "M", "rf", "num_components", "num_params", "skipped")


def test_layer_iterator_attributes_match(model):
    theirs = list(quiet(lambda: list(ww.WeightWatcher(model=model).make_layer_iterator())))
    ours = list(WeightWatcher(model=model).make_layer_iterator())
    assert [lyr.layer_id for lyr in ours] == [lyr.layer_id for lyr in theirs]
    for a, b in zip(ours, theirs):
        for attr in ATTRS:
            assert getattr(a, attr) == getattr(b, attr), (a.layer_id, attr)
        assert tuple(a.weight_dims) == tuple(b.weight_dims)
        assert len(a.Wmats) == len(b.Wmats)
        np.testing.assert_array_equal(a.Wmats[0], b.Wmats[0])
        if b.has_biases:
            np.testing.assert_array_equal(a.biases, b.biases)
        assert a.get_row() == b.get_row()


def _same_iterators(ours, theirs):
    assert [lyr.layer_id for lyr in ours] == [lyr.layer_id for lyr in theirs]
    assert len(ours) > 0
    for a, b in zip(ours, theirs):
        for attr in ATTRS:
            assert getattr(a, attr) == getattr(b, attr), (a.layer_id, attr)
        assert len(a.Wmats) == len(b.Wmats)
        np.testing.assert_array_equal(a.Wmats[0], b.Wmats[0])
        assert a.get_row() == b.get_row()
        # scripts (and WeightWatcher's own tests) compare the printed class names
        assert str(type(a)) == str(type(b))
        assert str(type(a.framework_layer)) == str(type(b.framework_layer))


@pytest.mark.parametrize("layout", ["state_dict", "sharded_no_index", "bin2", "flat"])
def test_layer_iterator_on_state_dicts_and_folders(tmp_path, layout):
    pytest.importorskip("safetensors")
    sd = {k: v.clone() for k, v in resnet().state_dict().items()}
    if layout == "state_dict":
        model = sd
    elif layout == "flat":
        (tmp_path / "m").mkdir()
        torch.save(sd, tmp_path / "m" / "pytorch_model.bin")
        model = quiet(ww.WeightWatcher.extract_pytorch_bins, model_dir=str(tmp_path / "m"),
                      model_name="resnet", tmp_dir=str(tmp_path))["weights_dir"]
    else:
        _write_folder(sd, tmp_path, layout)
        model = str(tmp_path)
    theirs = quiet(lambda: list(ww.WeightWatcher().make_layer_iterator(model)))
    ours = list(WeightWatcher().make_layer_iterator(model))
    _same_iterators(ours, theirs)


def test_unpooled_layer_iterator_matches():
    m = vgg()
    params = {**ww.DEFAULT_PARAMS, "pool": False}
    theirs = quiet(lambda: list(ww.WeightWatcher(model=m).make_layer_iterator(
        layers=[5, 25], params=dict(params))))
    ours = list(WeightWatcher(model=m).make_layer_iterator(layers=[5, 25], params=dict(params)))
    assert len(ours) == len(theirs) == 10
    for a, b in zip(ours, theirs):
        assert (a.layer_id, a.plot_id, a.slice_id, a.conv2d_count) == \
            (b.layer_id, b.plot_id, b.slice_id, b.conv2d_count)
        np.testing.assert_array_equal(a.Wmats[0], b.Wmats[0])
        assert a.get_row() == b.get_row()


def test_layer_iterator_filters_and_replacement():
    m = vgg()
    ours = list(WeightWatcher(model=m).make_layer_iterator(layers=[28]))
    theirs = quiet(lambda: list(ww.WeightWatcher(model=m).make_layer_iterator(layers=[28])))
    assert [lyr.layer_id for lyr in ours] == [lyr.layer_id for lyr in theirs] == [28]
    layer = ours[0]
    W = np.zeros_like(layer.weights)
    watcher = WeightWatcher(model=m)
    watcher.replace_layer_weights(28, layer.framework_layer, W, B=np.ones_like(layer.biases))
    with torch.no_grad():
        assert float(m.classifier[3].weight.abs().sum()) == 0.0
        assert float(m.classifier[3].bias.sum()) == m.classifier[3].bias.numel()


def test_delta_iterator_matches():
    base, tuned = vgg(), vgg()
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    theirs = quiet(lambda: list(ww.WeightWatcher(model=tuned).make_delta_layer_iterator(
        base, model=tuned)))
    ours = list(WeightWatcher(model=tuned).make_delta_layer_iterator(base, model=tuned))
    assert [lyr.layer_id for lyr in ours] == [lyr.layer_id for lyr in theirs]
    for a, b in zip(ours, theirs):
        for x, y in zip(a.Wmats, b.Wmats):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-7)


# --- state dicts and folders --------------------------------------------------------------------
def test_state_dict_ids_match():
    m = bert()
    sd = m.state_dict()
    theirs = quiet(ww.WeightWatcher(model=sd).describe, min_evals=8)
    ours = WeightWatcher(model=sd).describe(min_evals=8)
    same_layers(ours, theirs)
    assert theirs["layer_id"].min() >= 1  # state dicts count from 1
    nested = {"state_dict": sd}
    same_layers(WeightWatcher(model=nested).describe(min_evals=8),
                quiet(ww.WeightWatcher(model=nested).describe, min_evals=8))


def _save_safetensors(sd: dict, path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def _split(sd: dict, parts: int) -> list[dict]:
    keys = list(sd)
    step = -(-len(keys) // parts)
    return [{k: sd[k] for k in keys[i:i + step]} for i in range(0, len(keys), step)]


def _write_folder(sd: dict, path, layout: str) -> None:
    if layout in ("one", "layer_map"):
        _save_safetensors(sd, path / "model.safetensors")
        if layout == "layer_map":  # a key order other than the sorted one
            (path / "model.layer_map").write_text("\n".join(reversed(list(sd))) + "\n")
    elif layout.startswith("sharded"):
        shards = _split(sd, 3)
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-0000{i + 1}-of-0000{len(shards)}.safetensors"
            _save_safetensors(shard, path / fname)
            weight_map.update({k: fname for k in shard})
        if layout == "sharded_index":
            (path / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        shards = [sd] if layout == "bin" else _split(sd, 2)
        for i, shard in enumerate(shards):
            torch.save(shard, path / f"pytorch_model-0000{i + 1}.bin")


LAYOUTS = ["one", "layer_map", "sharded_index", "sharded_no_index", "bin", "bin2"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_folder_ids_match(tmp_path, layout):
    pytest.importorskip("safetensors")
    sd = {k: v.clone() for k, v in bert().state_dict().items()}
    _write_folder(sd, tmp_path, layout)
    theirs = quiet(ww.WeightWatcher(model=str(tmp_path)).describe, min_evals=8)
    ours = WeightWatcher(model=str(tmp_path)).describe(min_evals=8)
    same_layers(ours, theirs)
    flt = theirs["layer_id"].tolist()[1:4]
    same_layers(WeightWatcher(model=str(tmp_path)).describe(min_evals=8, layers=flt),
                quiet(ww.WeightWatcher(model=str(tmp_path)).describe, min_evals=8, layers=flt))


# --- helpers and remembered models ---------------------------------------------------------------
def test_static_helpers_match(tmp_path):
    pytest.importorskip("safetensors")
    m = vgg()
    for x in (m, m.state_dict(), {"a": 1}, str(tmp_path)):
        assert WeightWatcher.infer_framework(x) == ww.WeightWatcher.infer_framework(x)
    assert WeightWatcher.infer_model_file_format(str(tmp_path)) == \
        ww.WeightWatcher.infer_model_file_format(str(tmp_path))
    _save_safetensors(m.state_dict(), tmp_path / "model.safetensors")
    for x in (str(tmp_path),):
        assert WeightWatcher.infer_framework(x) == ww.WeightWatcher.infer_framework(x)
        assert WeightWatcher.infer_model_file_format(x) == \
            ww.WeightWatcher.infer_model_file_format(x)
    for s in ("norm", "dense", "conv2d", "conv1d", "embedding", "Linear", "", "unknown"):
        assert WeightWatcher.layer_type_from_str(s) == ww.WeightWatcher.layer_type_from_str(s)


def test_valid_params_match():
    base = dict(ww.DEFAULT_PARAMS)
    changes = [{}, {"min_evals": 100, "max_evals": 10}, {"savefig": -1}, {"savefig": "dir"},
               {"layers": [-1, 1]}, {"layers": [1, 2]}, {"svd_method": "bad"},
               {"fix_fingers": "nope"}, {"fix_fingers": "clip_xmax", "fit": "E_TPL"},
               {"fit": "TPL"}, {"fit": "TPL", "pl_package": "powerlaw"}, {"fit": "XX"},
               {"xmax": "force"}, {"xmax": "force", "pl_package": "powerlaw"}, {"xmax": 0},
               {"layer_ids_start": -1}, {"layer_ids_start": 1}, {"pl_package": "other"},
               {"intra": True, "randomize": True}, {"pool": False, "conv2d_fft": True},
               {"channels": "middle"}, {"channels": "first"}, {"max_N": 5}, {"ww2x": True}]
    for change in changes:
        p = {**base, **change}
        assert WeightWatcher.valid_params(dict(p)) == \
            quiet(ww.WeightWatcher.valid_params, dict(p)), change


def test_model_and_base_model_are_remembered():
    m, b = vgg(), vgg()
    watcher = WeightWatcher()
    assert watcher.results is None
    watcher.describe(model=m)
    assert watcher.model is m
    theirs = ww.WeightWatcher()
    quiet(theirs.describe, model=m, base_model=b)
    watcher2 = WeightWatcher()
    watcher2.describe(model=m, base_model=b)
    assert watcher2.model is theirs.model and watcher2.base_model is theirs.base_model is b
    # get_ESD with no model uses the remembered one
    assert len(watcher.get_ESD(layer=31)) == len(quiet(ww.WeightWatcher(model=m).get_ESD,
                                                      layer=31))


def test_unpooled_and_base_model_rows_carry_weightwatchers_ids():
    m, b = vgg(), vgg()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    cols = IDS + ["slice_id"]
    theirs = quiet(ww.WeightWatcher(model=m).analyze, min_evals=8, layers=[5, 25], pool=False)
    ours = WeightWatcher(model=m).analyze(min_evals=8, layers=[5, 25], pool=False)
    pd.testing.assert_frame_equal(frame(ours).assign(slice_id=ours["slice_id"].astype(int)),
                                  frame(theirs).assign(slice_id=theirs["slice_id"].astype(int)),
                                  check_like=True)
    assert cols
    theirs = quiet(ww.WeightWatcher(model=m, base_model=b).analyze, min_evals=20)
    ours = WeightWatcher(model=m, base_model=b).analyze(min_evals=20)
    same_layers(ours, theirs)
    np.testing.assert_allclose(ours["alpha"], theirs["alpha"], rtol=1e-6)


def test_random_esd_of_a_layer():
    m = vgg()
    rand = WeightWatcher(model=m).get_ESD(layer=25, random=True, seed=0)
    esd = WeightWatcher(model=m).get_ESD(layer=25)
    theirs = quiet(ww.WeightWatcher(model=m).get_ESD, layer=25, random=True)
    assert len(rand) == len(theirs) == 5 * len(esd)  # 5 shuffles when under 100 eigenvalues
    # a shuffle keeps the Frobenius norm, the eigenvalues' sum, in each replica
    np.testing.assert_allclose(rand.sum(), 5 * esd.sum(), rtol=1e-6)
    np.testing.assert_allclose(np.sum(theirs), 5 * esd.sum(), rtol=1e-5)


def test_single_safetensors_file_is_numbered_as_its_folder(tmp_path):
    pytest.importorskip("safetensors")
    sd = {k: v.clone() for k, v in albert().state_dict().items()}
    _save_safetensors(sd, tmp_path / "model.safetensors")
    theirs = quiet(ww.WeightWatcher(model=str(tmp_path)).describe, min_evals=8)
    ours = WeightWatcher(model=str(tmp_path / "model.safetensors")).describe(min_evals=8)
    same_layers(ours, theirs)


def test_keras_helper_says_what_it_needs(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        WeightWatcher.read_keras_h5_file(str(tmp_path))
    (tmp_path / "m.h5").write_bytes(b"")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="TensorFlow"):
            WeightWatcher.read_keras_h5_file(str(tmp_path))


def test_extracted_flat_files_match(tmp_path):
    m = vgg()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save(m.state_dict(), model_dir / "pytorch_model.bin")
    (model_dir / "config.json").write_text(json.dumps({"model_type": "vgg"}))
    (tmp_path / "ours").mkdir(), (tmp_path / "theirs").mkdir()
    theirs = quiet(ww.WeightWatcher.extract_pytorch_bins, model_dir=str(model_dir),
                   tmp_dir=str(tmp_path / "theirs"))
    ours = WeightWatcher.extract_pytorch_bins(model_dir=str(model_dir),
                                              tmp_dir=str(tmp_path / "ours"))
    assert set(ours) == set(theirs)
    assert ours["layers"] == theirs["layers"]
    assert ours["model_name"] == theirs["model_name"] == "vgg"
    for lc in ours["layers"].values():
        np.testing.assert_array_equal(np.load(f"{ours['weights_dir']}/{lc['weightfile']}"),
                                      np.load(f"{theirs['weights_dir']}/{lc['weightfile']}"))
    saved = json.loads((tmp_path / "ours" / ours["weights_dir"].split("/")[-1]
                        / "ww_config.json").read_text())
    assert saved["layers"].keys() == {str(k) for k in ours["layers"]}
    assert WeightWatcher.read_pystatedict_config(ours["weights_dir"]) == \
        ww.WeightWatcher.read_pystatedict_config(ours["weights_dir"]) == ours
    d_t = quiet(ww.WeightWatcher(model=theirs["weights_dir"]).analyze, min_evals=20)
    d_o = WeightWatcher(model=ours["weights_dir"]).analyze(min_evals=20)
    same_layers(d_o, d_t)
    np.testing.assert_allclose(d_o["alpha"], d_t["alpha"], rtol=1e-6)
    one = quiet(ww.WeightWatcher.extract_pytorch_statedict_, str(tmp_path / "theirs"), "x",
                str(model_dir / "pytorch_model.bin"), 5)
    assert WeightWatcher.extract_pytorch_statedict_(str(tmp_path / "ours"), "x",
                                                    str(model_dir / "pytorch_model.bin"),
                                                    5) == one


def test_even_kernel_conv_sizes_are_not_swapped():
    """Deliberate difference: WeightWatcher swaps N and M once per slice of an out < in conv2d,
    so a 2x2 kernel (4 slices) ends with N < M and num_evals = 4 * 32 > its 64 eigenvalues."""
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv2d(32, 16, 2), nn.Conv2d(16, 8, 3))
    theirs = quiet(ww.WeightWatcher(model=m).describe)
    ours = WeightWatcher(model=m).describe()
    assert theirs[["N", "M"]].to_numpy().tolist() == [[16, 32], [16, 8]]  # WeightWatcher's swap
    assert ours[["N", "M", "rf"]].to_numpy().tolist() == [[32, 16, 4], [16, 8, 9]]
    assert ours["num_evals"].tolist() == [64, 72]
    esd = WeightWatcher(model=m).get_ESD(layer=1)
    assert len(esd) == 64  # four 32 x 16 slices, 16 eigenvalues each


def test_distances_use_weightwatchers_ids():
    a, b = vgg(), vgg()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for kwargs in ({"layers": [5, 28]}, {"start_ids": 1}, {"layers": [-2, -25]}):
        _, _, theirs = quiet(ww.WeightWatcher().distances, a, b, **kwargs)
        _, _, ours = WeightWatcher().distances(a, b, **kwargs)
        assert ours.index.tolist() == theirs.index.tolist()  # indexed by layer_id, as there
        assert ours["name"].tolist() == theirs["name"].tolist()
        np.testing.assert_allclose(ours["delta_W"], theirs["delta_W"], rtol=1e-5)


def test_permute_and_unpermute_w_as_weightwatcher():
    model = vgg()
    (theirs,) = quiet(lambda: list(ww.WeightWatcher().make_layer_iterator(model, layers=[28])))
    (ours,) = list(WeightWatcher().make_layer_iterator(model, layers=[28]))
    W = ours.Wmats[0].copy()
    np.testing.assert_array_equal(W, theirs.Wmats[0])
    quiet(ww.WeightWatcher().apply_permute_W, theirs)
    WeightWatcher().apply_permute_W(ours)
    for layer in (ours, theirs):  # the same elements, moved
        assert not np.array_equal(layer.Wmats[0], W)
        np.testing.assert_array_equal(np.sort(layer.Wmats[0], axis=None), np.sort(W, axis=None))
    quiet(ww.WeightWatcher().apply_unpermute_W, theirs)
    WeightWatcher().apply_unpermute_W(ours)
    np.testing.assert_array_equal(ours.Wmats[0], W)
    np.testing.assert_array_equal(theirs.Wmats[0], W)
    with pytest.raises(ValueError, match="not permuted"):
        WeightWatcher().apply_unpermute_W(ours)
