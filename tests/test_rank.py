"""Rank selection on real text: equal to powerlaw 1.5 on the same eigenvalues; the adaptive mode
equals the exact one; PowerLawSVD is a proper scikit-learn transformer."""

import functools
import subprocess
import sys

import numpy as np
import pytest
from oracles import news_tfidf, planted_spectrum, powerlaw_fit

from tailscope import select_rank
from tailscope.rank import gavish_donoho_rank, knee, localization_ratios


@functools.cache
def news(n_docs=900):
    return news_tfidf(n_docs)


@pytest.mark.slow  # powerlaw on the full news spectrum
def test_k_xmin_alpha_equal_powerlaw_on_real_text():
    X = news()
    sel = select_rank(X, exact=True)
    sv = np.linalg.svd(X.toarray(), compute_uv=False)  # independent eigenvalues
    ev = sv**2
    ref = powerlaw_fit(ev[ev > 1e-10 * ev.max()])
    assert sel.k == int(ref.n_tail) == int(np.sum(sel.eigenvalues >= sel.fit.xmin))
    assert sel.fit.xmin == pytest.approx(ref.xmin, rel=1e-9)
    assert sel.fit.alpha == pytest.approx(ref.alpha, rel=1e-8)
    assert sel.fit.D == pytest.approx(ref.D, rel=1e-6)
    np.testing.assert_allclose(sel.eigenvalues[:50], ev[:50], rtol=1e-10)


@pytest.mark.slow  # exact SVDs of a 4200 x 5000 matrix: ~1-2 min
def test_adaptive_equals_exact():
    large = planted_spectrum(4200, 5000, seed=0)
    for X in (large, planted_spectrum(seed=1, k=20), news()):
        exact = select_rank(X, exact=True, vectors=False)
        adaptive = select_rank(X, exact=False, vectors=False)
        assert adaptive.k == exact.k
        assert adaptive.fit.xmin == pytest.approx(exact.fit.xmin, rel=1e-9)
        assert adaptive.fit.alpha == pytest.approx(exact.fit.alpha, rel=1e-9)
    planted = select_rank(large, exact=False, vectors=False)
    assert not planted.exact and planted.eigenvalues.size < 300  # it stopped early
    assert planted.alternatives["Gavish-Donoho threshold"] is None
    assert planted.alternatives["detX-K"] is None and planted.alternatives["ECS-K"] is None


@pytest.mark.slow  # the news corpus's TF-IDF and its rank selection
def test_alternatives_and_table():
    sel = select_rank(news())
    table = sel.table()
    assert list(table["method"])[0].startswith("power-law")
    assert set(sel.alternatives) == {"explained variance elbow", "cumulative variance elbow",
                                     "localization ratio elbow", "Marchenko-Pastur edge",
                                     "Gavish-Donoho threshold", "detX-K", "ECS-K"}
    assert all(isinstance(v, int) and v >= 1 for v in sel.alternatives.values())
    assert sel.explained_variance_ratio.sum() == pytest.approx(1.0, rel=1e-9)
    assert "RankSelection(k=" in repr(sel)


def test_rules_on_known_cases():
    assert knee(np.array([10.0, 9.0, 1.0, 0.9, 0.8, 0.7])) == 3
    v = np.zeros((100, 2))
    v[0, 0] = 1.0
    v[:, 1] = 0.1
    np.testing.assert_allclose(localization_ratios(v), [1.0, 100.0])
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((400, 200))
    signal = 30 * np.outer(rng.standard_normal(400), rng.standard_normal(200)) / 20
    sv = np.linalg.svd(noise + signal, compute_uv=False)
    assert gavish_donoho_rank(sv, (400, 200)) == 1
    assert gavish_donoho_rank(np.linalg.svd(noise, compute_uv=False), (400, 200)) == 0


@pytest.mark.parametrize("X,message", [
    (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN"),
    (np.ones((1, 5)), "at least 2"),
    (np.ones(5), "2-D"),
    ([["a", "b"], ["c", "d"]], "numeric"),
])
def test_bad_matrices(X, message):
    with pytest.raises(ValueError, match=message):
        select_rank(X)


def test_degenerate_matrix_gives_a_failed_fit_not_a_number():
    sel = select_rank(np.ones((5, 4)))  # rank 1: one non-zero eigenvalue
    assert sel.k == 0 and sel.fit.status == "failed"


def test_power_law_svd_passes_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    from tailscope import PowerLawSVD

    results = check_estimator(PowerLawSVD(random_state=0), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert not failed
    assert len(results) > 30


def test_pipeline_round_trip(tmp_path):
    import pickle

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    from tailscope import PowerLawSVD
    from tailscope.datasets import news_articles

    texts = news_articles()["text"].fillna("").tolist()[:600]
    pipe = make_pipeline(TfidfVectorizer(stop_words="english", min_df=2),
                         PowerLawSVD(random_state=0))
    Z = pipe.fit_transform(texts)
    svd = pipe[-1]
    assert Z.shape == (600, svd.n_components_) and svd.n_components_ == svd.selection_.k
    np.testing.assert_allclose(pipe.transform(texts), Z, rtol=1e-8, atol=1e-10)
    again = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_allclose(again.transform(texts[:5]), Z[:5], rtol=1e-8, atol=1e-10)
    names = svd.get_feature_names_out()
    assert names[0] == "powerlawsvd0" and len(names) == svd.n_components_
    assert np.all(np.diff(svd.singular_values_) <= 1e-9)
    assert 0 < svd.explained_variance_ratio_.sum() <= 1


def run(*args):
    return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # three fresh processes on the news corpus
def test_cli_rank_on_text_and_matrices(tmp_path):
    from tailscope.datasets import news_articles

    csv = tmp_path / "news.csv"
    news_articles()[["title", "text"]].head(400).to_csv(csv, index=False)
    res = run("rank", str(csv), "--plot", str(tmp_path / "figs"), "--terms", "5", "--out",
              str(tmp_path / "z.npy"))
    assert res.returncode == 0, res.stderr
    assert "K = " in res.stdout and "Gavish-Donoho" in res.stdout and "component 1:" in res.stdout
    k = int(res.stdout.split("K = ")[1].split()[0])
    assert np.load(tmp_path / "z.npy").shape == (400, k)
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= {
        "esd.png", "pdf_cdf.png", "ks_vs_xmin.png", "explained_variance.png", "localization.png"}
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(news_articles()["text"].head(120)):
        (folder / f"{i}.txt").write_text(str(text))
    assert run("rank", str(folder)).returncode == 0
    import scipy.sparse as sp

    sp.save_npz(tmp_path / "m.npz", sp.csr_matrix(planted_spectrum(600, 800, seed=2)))
    assert run("rank", str(tmp_path / "m.npz")).returncode == 0


@pytest.mark.parametrize("setup,message", [
    ("empty_csv", "empty"), ("stopwords", "no terms left"), ("no_column", "no column"),
    ("nan_matrix", "NaN"), ("one_row", "at least 2"), ("missing", "no such file"),
])
def test_cli_rank_bad_input(tmp_path, setup, message):
    path = tmp_path / "in.csv"
    if setup == "empty_csv":
        path.write_text("text\n")
    elif setup == "stopwords":
        path.write_text("text\nthe and of\nthe a an\nof the\n")
    elif setup == "no_column":
        path.write_text("body\nhello world\n")
    elif setup == "nan_matrix":
        path = tmp_path / "m.npy"
        np.save(path, np.array([[1.0, np.nan], [1.0, 2.0]]))
    elif setup == "one_row":
        path = tmp_path / "m.npy"
        np.save(path, np.ones((1, 30)))
    else:
        path = tmp_path / "nope.csv"
    res = run("rank", str(path))
    assert res.returncode == 2, res.stdout
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_20newsgroups_offline_is_a_clear_error(monkeypatch):
    import sklearn.datasets

    from tailscope.rank import load_input

    def offline(**kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(sklearn.datasets, "fetch_20newsgroups", offline)
    with pytest.raises(ValueError, match="offline"):
        load_input("20newsgroups")


def test_without_scikit_learn(monkeypatch):
    """scikit-learn is the optional 'rank' extra: select_rank needs none of it, and what does
    (tfidf, the 20newsgroups corpus, PowerLawSVD) says which extra to install."""
    import tailscope.rank as rank
    from tailscope.util.optional import MissingExtra

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    monkeypatch.delitem(vars(rank), "PowerLawSVD", raising=False)  # no class cached earlier
    monkeypatch.delitem(vars(rank.select), "PowerLawSVD", raising=False)
    X = np.random.default_rng(0).standard_t(2.5, size=(300, 80))
    sel = select_rank(X)
    assert sel.k >= 1 and sel.fit.ok and sel.localization is not None
    with pytest.raises(MissingExtra, match=r"tailscope\[rank\]"):
        rank.tfidf(["one text", "another text"])
    with pytest.raises(MissingExtra, match=r"tailscope\[rank\]"):
        rank.load_input("20newsgroups")
    with pytest.raises(MissingExtra, match=r"tailscope\[rank\]"):
        rank.PowerLawSVD  # noqa: B018


@pytest.mark.slow  # exact SVDs, WeightWatcher
def test_detx_and_ecs_rows_equal_weightwatcher_on_real_text_and_planted_data():
    """detX-K is WeightWatcher's detX_constraint on the same (ascending) spectrum; ECS-K the
    midpoint of it and the power-law K. On planted data (rank 30) both sit above the planted
    rank: the det X = 1 tail reaches into the noise (README)."""
    from weightwatcher.RMT_Util import detX_constraint

    for X in (news(), planted_spectrum(1200, 1500, k=30, seed=3)):
        sel = select_rank(X, exact=True, vectors=False)
        ref_num, _ = detX_constraint(sel.eigenvalues[::-1].copy())
        assert sel.alternatives["detX-K"] == ref_num
        assert sel.alternatives["ECS-K"] == (sel.k + ref_num) // 2
        assert list(sel.table()["method"])[-2:] == ["detX-K", "ECS-K"]
