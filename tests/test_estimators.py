"""analyze(hill=True) -> alpha_hill and analyze(farms=True) -> alpha_farms: FARMS removes the
aspect-ratio bias of alpha on noise matrices (the acceptance of issue 13), alpha_hill is the
published formula on a real trained model (and the research code's float32 number), and bad
layers are NaN with a reason, never a crash."""

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest
from oracles import minilm_path

import tailscope
from tailscope.spectrum import conv_window_eigenvalues


def published(evals):
    """PL_Alpha_Hill as the papers write it, in plain Python floats: all L eigenvalues sorted
    ascending, xmin = x[i] with i = L // 2, alpha = 1 + n / (sum_{j>=i} ln x_j - n ln x_i)."""
    xs = sorted(float(v) for v in evals)
    i = len(xs) // 2
    n = len(xs) - i
    return 1.0 + n / (math.fsum(math.log(v) for v in xs[i:]) - n * math.log(xs[i]))


# --- the acceptance: FARMS is flat in Q, plain Hill is not ----------------------------------------
QS = (1, 2, 4, 8, 16)
SEEDS = range(5)


@pytest.mark.slow  # ten 2048 x 2048 ESDs (analyze computes them): ~55-65 s per noise on 2 busy cores
@pytest.mark.parametrize("noise", ["gaussian", "student_t3"])
def test_farms_alpha_does_not_drift_with_the_aspect_ratio(noise):
    n_rows = 2048
    arrays = {}
    for q in QS:
        for seed in SEEDS:
            rng = np.random.default_rng([seed, q])
            shape = (n_rows, n_rows // q)
            w = rng.standard_normal(shape) if noise == "gaussian" else rng.standard_t(3, shape)
            arrays[f"q{q}.s{seed}.weight"] = w.astype(np.float32)
    d = tailscope.analyze(arrays, hill=True, farms=True).details
    assert (d["status"] == "success").all() and d["reason"].eq("").all()
    d = d.assign(q=[int(name.split(".")[0][1:]) for name in d["name"]])
    means = d.groupby("q")[["alpha_hill", "alpha_farms"]].mean()
    assert list(means.index) == list(QS)
    farms_spread = means["alpha_farms"].max() - means["alpha_farms"].min()
    hill_spread = means["alpha_hill"].max() - means["alpha_hill"].min()
    print(noise, means.round(3).to_dict())
    assert farms_spread <= 0.1, means
    # the bias FARMS removes: plain Hill at the median rises with Q (2.1 -> 5.9 on Gaussian noise)
    assert hill_spread > 1.5, means
    assert means["alpha_hill"].is_monotonic_increasing or noise != "gaussian"


# --- alpha_hill on a real model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    # the 36 encoder matrices and the pooler (384 x 384 and 1536 x 384); not the embeddings
    return tailscope.analyze(minilm_path(), hill=True, layers=["encoder.*", "pooler.*"])


@pytest.mark.slow  # MiniLM's 37 matrices analysed (the minilm fixture)
def test_alpha_hill_is_the_published_formula_on_minilm(minilm):
    d = minilm.details
    ok = d[d["status"] == "success"]
    assert len(ok) == 37
    for _, row in ok.iterrows():
        expected = published(minilm.esd(int(row["layer_id"])))
        assert row["alpha_hill"] == pytest.approx(expected, rel=1e-12, abs=0), row["name"]


@pytest.mark.slow  # the minilm fixture, float64 SVDs
def test_alpha_hill_on_minilm_from_independent_eigenvalues(minilm):
    """The same number from float64 SVDs of the tensors (not our Gram eigensolver), and the research
    code's own float32 torch lines (AlphaPruning's net_esd_estimator, xmin_mid)."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    from threadpoolctl import threadpool_limits

    tensors = load_file(minilm_path())
    d = minilm.details.set_index("name")
    worst_svd = worst_ref = 0.0
    checked = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 74 small SVDs: threads fighting on busy cores take 40x longer
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            for name, w in tensors.items():
                if name not in d.index or d.loc[name, "status"] != "success" or w.ndim != 2:
                    continue
                s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
                ours = d.loc[name, "alpha_hill"]
                worst_svd = max(worst_svd, abs(ours - published(s ** 2)) / ours)
                eigs = torch.sort(torch.square(torch.linalg.svdvals(torch.from_numpy(w)))).values
                log = torch.log(eigs)
                i = int(len(eigs) / 2)
                n = float(len(eigs) - i)
                ref = float(1 + n / (torch.sum(log[i:]) - n * log[i]))
                worst_ref = max(worst_ref, abs(ours - ref) / ours)
                checked += 1
    finally:
        torch.set_num_threads(threads)
    assert checked == 37
    print(f"alpha_hill on MiniLM: max relative difference {worst_svd:.1e} from float64 SVDs, "
          f"{worst_ref:.1e} from the research code's float32 lines")
    assert worst_svd < 1e-10, worst_svd
    assert worst_ref < 1e-4, worst_ref


# --- bad and odd layers ------------------------------------------------------------------------------
def test_tiny_rank_deficient_and_failed_layers_are_nan_with_a_reason(rng):
    q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    arrays = {"tiny3.weight": rng.standard_normal((3, 3)),
              "tiny2.weight": rng.standard_normal((2, 2)),
              "rank100.weight": rng.standard_normal((300, 100)) @ rng.standard_normal((100, 150)),
              "rank30.weight": rng.standard_normal((300, 30)) @ rng.standard_normal((30, 150)),
              "zero.weight": np.zeros((40, 20)),
              "orthogonal.weight": q,
              "nan.weight": np.full((30, 20), np.nan),
              "fine.weight": rng.standard_normal((250, 120))}
    a = tailscope.analyze(arrays, hill=True, farms=True, min_evals=0)
    d = a.details.set_index("name")
    assert list(d.index) == list(arrays)

    # 3 eigenvalues: Hill's alpha exists; 2: NaN and why
    assert d.loc["tiny3.weight", "alpha_hill"] == pytest.approx(published(a.esd("tiny3.weight")))
    assert math.isnan(d.loc["tiny2.weight", "alpha_hill"])
    assert "alpha_hill: 2 value(s)" in d.loc["tiny2.weight", "reason"]
    assert math.isnan(d.loc["tiny2.weight", "alpha_farms"])
    assert "alpha_farms:" in d.loc["tiny2.weight", "reason"]

    # rank 100 of 150: the zeros count in L (as the research code counts them), xmin = x[75] > 0
    ev = a.esd("rank100.weight")
    assert np.count_nonzero(ev > 1e-9 * ev.max()) == 100
    assert d.loc["rank100.weight", "alpha_hill"] == pytest.approx(
        published(ev[ev > 1e-9 * ev.max()].tolist() + [0.0] * 50), rel=1e-12)
    assert np.isfinite(d.loc["rank100.weight", "alpha_farms"])
    # rank 30 of 150: xmin would be a zero eigenvalue (the reference: log 0, alpha 1 or NaN)
    assert d.loc["rank30.weight", "status"] == "success"  # the power-law fit drops zeros
    assert math.isnan(d.loc["rank30.weight", "alpha_hill"])
    assert "alpha_hill: xmin is 0" in d.loc["rank30.weight", "reason"]

    # an all-zero matrix and an orthogonal one (a constant spectrum): NaN, and the reason
    assert d.loc["zero.weight", "status"] == "failed"
    assert np.isnan(d.loc["zero.weight", ["alpha_hill", "alpha_farms"]].astype(float)).all()
    assert "alpha_hill: xmin is 0" in d.loc["zero.weight", "reason"]
    assert math.isnan(d.loc["orthogonal.weight", "alpha_hill"])
    assert "round-off" in d.loc["orthogonal.weight", "reason"]

    # a layer that fails before its ESD: NaN everywhere and its reason; the run goes on
    assert d.loc["nan.weight", "status"] == "failed" and d.loc["nan.weight", "reason"]
    assert math.isnan(d.loc["nan.weight", "alpha_hill"])
    assert d.loc["fine.weight", "status"] == "success"
    assert 2.0 < d.loc["fine.weight", "alpha_hill"] < 4.0
    assert 2.0 < d.loc["fine.weight", "alpha_farms"] < 4.0
    assert d.loc["fine.weight", "reason"] == ""


def test_conv_layers_per_division_and_per_slice(rng):
    w = rng.standard_t(3, (64, 32, 3, 3))
    slices = [w[:, :, i, j] for i in range(3) for j in range(3)]
    pooled = tailscope.analyze({"conv.weight": w}, farms=True, hill=True).details.iloc[0]
    # two row divisions of the 64 x 32 slices, each pooling 9 windows of 16 x 32; their alphas
    # averaged (the reference's conv branch); conv2d_norm's 1/2 does not move a Hill alpha
    divisions = conv_window_eigenvalues(slices)
    assert len(divisions) == 2
    assert pooled["alpha_farms"] == pytest.approx(np.mean([published(e) for e in divisions]),
                                                  rel=1e-12)
    per = tailscope.analyze({"conv.weight": w}, farms=True, hill=True, pool=False).details
    assert len(per) == 9
    for _, row in per.iterrows():
        own = conv_window_eigenvalues([slices[int(row["slice_id"])]])
        assert row["alpha_farms"] == pytest.approx(np.mean([published(e) for e in own]), rel=1e-12)
        sv = np.linalg.svd(slices[int(row["slice_id"])], compute_uv=False)
        assert row["alpha_hill"] == pytest.approx(published(sv ** 2), rel=1e-10)


def test_off_by_default_and_in_the_summary(rng):
    arrays = {"a.weight": rng.standard_normal((200, 100)), "b.weight": rng.standard_normal((300, 150))}
    plain = tailscope.analyze(arrays)
    assert "alpha_hill" not in plain.details and "alpha_farms" not in plain.details
    a = tailscope.analyze(arrays, hill=True, farms=True)
    s = a.summary()
    assert s["alpha_hill"] == pytest.approx(a.details["alpha_hill"].mean())
    assert s["alpha_farms"] == pytest.approx(a.details["alpha_farms"].mean())


def test_the_cli_flags(tmp_path, rng):
    from tailscope.cli import main
    from tailscope.sources.safetensors import write_safetensors

    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"fc1.weight": rng.standard_normal((256, 128)).astype(np.float32),
                             "fc2.weight": rng.standard_normal((128, 96)).astype(np.float32)})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["analyze", str(path), "--hill", "--farms", "--out", str(tmp_path / "d.csv")])
    assert code == 0
    header = out.getvalue().splitlines()[0].split()
    assert "alpha_hill" in header and "alpha_farms" in header
    mean = next(line for line in out.getvalue().splitlines() if line.startswith("mean"))
    assert "alpha_hill" in mean and "alpha_farms" in mean
    back = pd.read_csv(tmp_path / "d.csv")
    api = tailscope.analyze(path, hill=True, farms=True).details
    np.testing.assert_allclose(back["alpha_hill"], api["alpha_hill"], rtol=1e-12)
    np.testing.assert_allclose(back["alpha_farms"], api["alpha_farms"], rtol=1e-12)


def test_the_estimators_docstring_examples_run():
    import doctest

    from tailscope.fit import hill
    from tailscope.spectrum import windows

    for module in (hill, windows):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.attempted >= 2 and result.failed == 0, (module.__name__, result)


@pytest.mark.slow  # FARMS's reference code on MiniLM
def test_alpha_farms_equals_the_reference_code_on_minilm():
    """FARMS's own code (HUST-AI-HYZ/FARMS: ``fixed_sampling`` with its defaults, then
    ``analysis_esd(fix_fingers='xmin_mid')``), its float32 torch lines written out here, on the
    real MiniLM matrices, whose shapes (384 x 384, 1536 x 384, 384 x 1536) all fit its window."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    from threadpoolctl import threadpool_limits

    def reference(matrix, num_row_samples=100, q_ratio=2.0, ops=10):
        rows, cols = matrix.shape
        num_col_samples = int(num_row_samples * q_ratio)
        row_step = max(1, (rows - num_row_samples) // (ops - 1))
        col_step = max(1, (cols - num_col_samples) // (ops - 1))
        n_rows = min(ops, max(1, (rows - num_row_samples) // row_step + 1))
        n_cols = min(ops, max(1, (cols - num_col_samples) // col_step + 1))
        eigs = []
        for i in range(n_rows):
            for j in range(n_cols):
                r0 = min(i * row_step, rows - num_row_samples)
                c0 = min(j * col_step, cols - num_col_samples)
                sub = matrix[r0:r0 + num_row_samples, c0:c0 + num_col_samples]
                eigs.append(torch.square(torch.linalg.svdvals(sub)))
        eigs = torch.sort(torch.cat(eigs)).values
        log = torch.log(eigs)
        i = int(len(eigs) / 2)
        n = float(len(eigs) - i)
        return float(1 + n / (torch.sum(log[i:]) - n * log[i]))

    # the first block: q, k, v, attention output (384 x 384), intermediate, output
    d = tailscope.analyze(minilm_path(), farms=True, layers=["encoder.layer.0.*"]).details
    d = d.set_index("name")
    tensors = load_file(minilm_path())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    worst = 0.0
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            for name in d.index:
                ref = reference(torch.from_numpy(tensors[name]))
                worst = max(worst, abs(d.loc[name, "alpha_farms"] - ref) / ref)
    finally:
        torch.set_num_threads(threads)
    assert len(d) == 6
    print(f"alpha_farms on MiniLM: max relative difference {worst:.1e} from FARMS's float32 code")
    assert worst < 1e-4, worst
