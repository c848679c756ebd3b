"""analyze() on real trained weights equals WeightWatcher 0.7.5.5; options, bad input, output."""

import functools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from oracles import minilm_path, mtcnn_path, weightwatcher_details
from safetensors.numpy import save_file

from tailscope import analyze, describe
from tailscope.analysis import Analysis

EXACT = ["alpha", "D", "xmin", "num_pl_spikes", "lambda_max", "log_norm", "stable_rank",
         "alpha_weighted", "log_alpha_norm", "sigma", "xmax", "log_spectral_norm", "norm",
         "entropy", "sv_max"]
INTEGER = ["num_evals", "N", "M", "rf", "matrix_rank", "rank_loss", "weak_rank_loss"]


@functools.cache
def ww_minilm():
    return weightwatcher_details(str(minilm_path().parent))


@functools.cache
def ww_mtcnn(net):
    return weightwatcher_details(torch.load(mtcnn_path(net), weights_only=True))


def assert_equals_weightwatcher(ours: pd.DataFrame, ref: pd.DataFrame):
    ours = ours.set_index("module")
    ref = ref.set_index("name")
    assert sorted(ours.index) == sorted(ref.index)  # the same layers
    ours = ours.loc[ref.index]
    assert (ours["status"] == "success").all()
    for col in EXACT:
        np.testing.assert_allclose(ours[col].astype(float), ref[col].astype(float), rtol=1e-6,
                                   err_msg=col)
    for col in INTEGER:
        np.testing.assert_array_equal(ours[col].astype(int), ref[col].astype(int), err_msg=col)
    np.testing.assert_allclose(ours["sv_min"], ref["sv_min"], rtol=1e-4)  # small sv via Gram
    expected_warning = ref["warning"].fillna("").astype(str)
    assert list(ours["warning"]) == list(expected_warning)


@pytest.mark.slow  # WeightWatcher on MiniLM's 39 layers: ~1-2 min
def test_minilm_equals_weightwatcher():
    analysis = analyze(minilm_path())
    assert len(analysis.details) == 39
    assert_equals_weightwatcher(analysis.details, ww_minilm())


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_mtcnn_conv_nets_equal_weightwatcher(net):
    assert_equals_weightwatcher(analyze(mtcnn_path(net)).details, ww_mtcnn(net))


def test_unpooled_conv_slices_equal_weightwatcher():
    sd = torch.load(mtcnn_path("onet"), weights_only=True)
    ours = analyze(mtcnn_path("onet"), pool=False).details
    ref = weightwatcher_details(sd, pool=False)
    assert len(ours) == len(ref)
    for name, group in ref.groupby("name"):
        mine = ours[ours["module"] == name]
        np.testing.assert_allclose(np.sort(mine["alpha"]), np.sort(group["alpha"]), rtol=1e-6)
        np.testing.assert_allclose(np.sort(mine["lambda_max"]), np.sort(group["lambda_max"]),
                                   rtol=1e-9)


@pytest.mark.slow  # MiniLM's 39 layers, with WeightWatcher's
def test_summary_means_successful_layers_only():
    analysis = analyze(minilm_path())
    s = analysis.summary()
    d = analysis.details
    assert s["alpha"] == pytest.approx(d["alpha"].mean())
    assert s["layers"] == 39 and s["failed"] == 0 and s["skipped"] == len(analysis.skipped)
    assert s["under_trained"] == int((d["alpha"] > 6).sum())
    ref = ww_minilm()
    assert s["alpha_weighted"] == pytest.approx(ref["alpha_weighted"].mean(), rel=1e-9)


def test_esd_is_the_squared_singular_values():
    analysis = analyze(mtcnn_path("onet"))
    sd = torch.load(mtcnn_path("onet"), weights_only=True)
    w = sd["dense5.weight"].numpy().astype(np.float64)
    ref = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
    row = analysis.details.set_index("module").loc["dense5"]
    for key in (int(row["layer_id"]), "dense5", "dense5.weight"):
        np.testing.assert_allclose(analysis.esd(key), ref, rtol=1e-9)
    conv = sd["conv2.weight"].numpy().astype(np.float64)
    slices = [np.linalg.svd(conv[:, :, i, j], compute_uv=False) ** 2 for i in range(3)
              for j in range(3)]
    np.testing.assert_allclose(analysis.esd("conv2"), np.sort(np.concatenate(slices)) / 2,
                               rtol=1e-9)  # conv2d_norm halves pooled conv eigenvalues
    with pytest.raises(KeyError):
        analysis.esd("nope")


def _model_file(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


def test_one_bad_layer_never_stops_the_run(tmp_path):
    rng = np.random.default_rng(0)
    nan = rng.standard_normal((60, 40)).astype(np.float32)
    nan[3, 4] = np.nan
    inf = rng.standard_normal((60, 40)).astype(np.float32)
    inf[0, 0] = np.inf
    tensors = {
        "a.good.weight": rng.standard_normal((80, 40)).astype(np.float32),
        "b.nan.weight": nan, "c.inf.weight": inf,
        "d.zero.weight": np.zeros((50, 30), np.float32),
        "e.row.weight": rng.standard_normal((1, 50)).astype(np.float32),
        "f.empty.weight": np.zeros((0, 20), np.float32),
        "g.int.weight": rng.integers(0, 5, (30, 30)).astype(np.int64),
        "h.good.weight": rng.standard_normal((70, 35)).astype(np.float32),
    }
    analysis = analyze(_model_file(tmp_path, tensors))
    d = analysis.details.set_index("module")
    assert d.loc["a.good", "status"] == "success" and d.loc["h.good", "status"] == "success"
    for name in ("b.nan", "c.inf"):
        assert d.loc[name, "status"] == "failed" and "NaN or Inf" in d.loc[name, "reason"]
        assert math.isnan(d.loc[name, "alpha"]) and math.isnan(d.loc[name, "lambda_max"])
        assert d.loc[name, "warning"] == ""
    assert d.loc["d.zero", "status"] == "failed" and "all-zero" in d.loc["d.zero", "reason"]
    assert math.isnan(d.loc["d.zero", "alpha"])
    skipped = analysis.skipped.set_index("name")["reason"]
    assert "min_evals" in skipped["e.row.weight"]
    assert "empty" in skipped["f.empty.weight"]
    assert "int64" in skipped["g.int.weight"]
    s = analysis.summary()
    assert s["failed"] == 3 and s["success"] == 2
    assert s["alpha"] == pytest.approx(d.loc[["a.good", "h.good"], "alpha"].mean())
    # with min_evals=0 a 1 x N matrix is analysed, and has no fit
    row = analyze(_model_file(tmp_path, {"w": tensors["e.row.weight"]}), min_evals=0).details
    assert row["status"].iloc[0] == "failed" and "nothing to fit" in row["reason"].iloc[0]


def test_layer_selection(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {f"layers.{i}.{kind}.weight": rng.standard_normal((40, 20)).astype(np.float32)
               for i in (1, 2, 10) for kind in ("attn", "mlp")}
    tensors["embed.weight"] = rng.standard_normal((100, 20)).astype(np.float32)
    path = _model_file(tmp_path, tensors)
    everything = analyze(path).details
    assert list(everything["module"]) == ["embed", "layers.1.attn", "layers.1.mlp",
                                          "layers.2.attn", "layers.2.mlp", "layers.10.attn",
                                          "layers.10.mlp"]
    ids = list(everything["layer_id"])
    assert list(analyze(path, layers=[ids[1], ids[3]]).details["layer_id"]) == [ids[1], ids[3]]
    assert ids[1] not in list(analyze(path, layers=[-ids[1]]).details["layer_id"])
    assert set(analyze(path, layers=["embedding"]).details["layer_type"]) == {"embedding"}
    assert len(analyze(path, layers=["*.mlp.*"]).details) == 3
    assert len(analyze(path, layers=["-*.mlp.*", "-embed"]).details) == 3
    with pytest.raises(ValueError, match="not both"):
        analyze(path, layers=[1, -2])
    with pytest.raises(ValueError, match="not both"):
        analyze(path, layers=["dense", "-embed"])
    table = describe(path, layers=["*.attn.*"])
    assert int(table["analyze"].sum()) == 3


def test_options_change_what_they_should(tmp_path):
    path = mtcnn_path("onet")
    base = analyze(path).details.set_index("module")
    unnormed = analyze(path, conv2d_norm=False).details.set_index("module")
    np.testing.assert_allclose(unnormed.loc["conv2", "lambda_max"],
                               2 * base.loc["conv2", "lambda_max"], rtol=1e-12)
    assert unnormed.loc["dense5", "lambda_max"] == base.loc["dense5", "lambda_max"]
    normalized = analyze(path, normalize=True).details.set_index("module")
    np.testing.assert_allclose(normalized.loc["dense5", "lambda_max"],
                               base.loc["dense5", "lambda_max"] / 1152, rtol=1e-12)
    assert len(analyze(path, max_evals=200).details) < len(base)
    assert len(analyze(path, max_N=100).details) < len(base)
    svd = analyze(path, method="svd").details.set_index("module")
    np.testing.assert_allclose(svd["alpha"], base["alpha"], rtol=1e-9)
    threads = analyze(path, jobs=2).details.set_index("module")
    pd.testing.assert_frame_equal(threads, base)
    torch_path = analyze(path, device="torch:cpu").details.set_index("module")
    np.testing.assert_allclose(torch_path["alpha"], base["alpha"], rtol=1e-9)
    forced = analyze(path, xmax="force").details
    assert (forced["xmax"] == forced["lambda_max"]).all()
    clipped = analyze(path, fix_fingers="clip_xmax").details
    assert {"num_fingers", "raw_alpha"} <= set(clipped.columns)
    dropped = analyze(path, xmax=-2).details.set_index("module")
    assert (dropped["xmax"] < base["lambda_max"]).all()
    for bad in ({"fit": "lognormal"}, {"xmax": 0}, {"fix_fingers": "x"}, {"jobs": 0},
                {"min_evals": 100, "max_evals": 10}, {"method": "qr"}):
        with pytest.raises(ValueError):
            analyze(path, **bad)


def test_in_memory_module_equals_its_file(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32))
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    a, b = analyze(net).details, analyze(path).details
    pd.testing.assert_frame_equal(a, b)


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    analysis = analyze(mtcnn_path("pnet"))
    for ext in ("csv", "json", "parquet"):
        out = analysis.save(tmp_path / f"details.{ext}")
        back = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[ext](out)
        np.testing.assert_allclose(back["alpha"], analysis.details["alpha"], rtol=1e-12)
        assert list(back["name"]) == list(analysis.details["name"])
    with pytest.raises(ValueError, match="does not exist"):
        analysis.to_csv(tmp_path / "missing" / "x.csv")
    with pytest.raises(ValueError, match="unknown output format"):
        analysis.save(tmp_path / "x.xlsx")

    def broken(self, path, **kwargs):
        with open(path, "w") as f:
            f.write("half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(ValueError, match=r"cannot write .*broken\.csv: disk full"):
        analysis.to_csv(tmp_path / "broken.csv")
    assert not list(tmp_path.glob("*broken*")) and not list(tmp_path.glob(".*tmp*"))


def test_describe_reads_no_tensor(tmp_path):
    path = _model_file(tmp_path, {"w.weight": np.ones((30, 20), np.float32),
                                  "b.bias": np.ones(20, np.float32)})
    from tailscope.sources import open_source

    src = open_source(path)
    poisoned = type(src)(tuple(r.__class__(r.name, r.index, r.shape, r.dtype, r.source,
                                           lambda: pytest.fail("loaded a tensor"))
                               for r in src), src.format, src.files)
    table = describe(poisoned)
    assert list(table["analyze"]) == [False, True]
    assert isinstance(analyze(path), Analysis) and "Analysis(" in repr(analyze(path))


def test_torch_device_batches_same_shape_layers_with_the_same_results(tmp_path, monkeypatch):
    from tailscope.engine import layer as layer_module
    from tailscope.spectrum import esd

    rng = np.random.default_rng(4)
    tensors = {f"blocks.{i}.q.weight": rng.standard_t(3, (64, 48)).astype(np.float32)
               for i in range(4)}
    tensors["blocks.1.q.weight"][0, 0] = np.nan  # one bad layer inside a batch
    tensors["head.weight"] = rng.standard_t(3, (90, 48)).astype(np.float32)
    path = _model_file(tmp_path, tensors)
    calls = []
    real = esd.eigenvalues_many

    def spy(mats, backend=None, method="gram"):
        calls.append(len(mats))
        return real(mats, backend, method)

    monkeypatch.setattr(layer_module, "eigenvalues_many", spy)
    on_torch = analyze(path, device="torch:cpu").details
    assert max(calls) == 4  # the four same-shape layers went in one call
    on_numpy = analyze(path, device="cpu").details
    pd.testing.assert_frame_equal(on_torch, on_numpy, rtol=1e-9)
    assert on_torch.set_index("module").loc["blocks.1.q", "status"] == "failed"


def test_xmax_minus_k_drops_the_largest_eigenvalues_or_fails_with_the_reason(tmp_path):
    from tailscope import fit_power_law

    rng = np.random.default_rng(5)
    path = _model_file(tmp_path, {"w.weight": rng.standard_t(3, (80, 30)).astype(np.float32)})
    evals = analyze(path).esd(0)
    row = analyze(path, xmax=-3).details.iloc[0]
    ref = fit_power_law(np.sort(evals[evals > 1e-5])[:-3])
    assert row["alpha"] == ref.alpha and row["xmin"] == ref.xmin
    bad = analyze(path, xmax=-16).details.iloc[0]  # 16 of 30: more than half
    assert bad["status"] == "failed" and np.isnan(bad["alpha"])
    assert bad["reason"] == "xmax=-16 drops more than half of the 30 eigenvalues"
