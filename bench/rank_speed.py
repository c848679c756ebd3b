"""Rank selection speed: the adaptive mode against the exact mode and the naive route.

The naive route is what one writes without tailscope: a full dense SVD of X, then
powerlaw.Fit (1.5) of the squared singular values. Cases: the real NewsArticles corpus
(3,824 articles) and a 20-newsgroups-sized synthetic TF-IDF matrix (11,000 documents x 100,000
terms, generated from a Zipfian topic model). The naive route on the synthetic matrix needs a
dense 8.8 GB array and tens of minutes; it runs only with --naive-large.

Run: .venv/bin/python bench/rank_speed.py [--naive-large]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
import scipy.sparse as sp


def synthetic_tfidf(n_docs=11000, n_terms=100000, n_topics=20, doc_len=200, seed=0):
    """Documents from a topic model with Zipfian topics, as a TF-IDF matrix."""
    from sklearn.feature_extraction.text import TfidfTransformer

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_terms + 1, dtype=np.float64)
    base = ranks**-1.07
    cdfs = []
    for _ in range(n_topics):
        p = base[rng.permutation(n_terms)]
        cdfs.append(np.cumsum(p / p.sum()))
    rows, cols = [], []
    for d in range(n_docs):
        mix = rng.dirichlet(np.full(n_topics, 0.1))
        length = max(20, int(rng.poisson(doc_len)))
        topics = rng.choice(n_topics, size=length, p=mix)
        words = np.empty(length, dtype=np.int64)
        for t in np.unique(topics):
            sel = topics == t
            words[sel] = np.searchsorted(cdfs[t], rng.random(sel.sum()))
        rows.append(np.full(length, d))
        cols.append(np.minimum(words, n_terms - 1))
    counts = sp.csr_matrix((np.ones(sum(r.size for r in rows)), (np.concatenate(rows),
                                                                   np.concatenate(cols))),
                           shape=(n_docs, n_terms))
    counts.sum_duplicates()
    return TfidfTransformer().fit_transform(counts)


def planted(n=8000, p=20000, k=30, seed=0):
    """Sparse noise plus k sparse directions with power-law strengths: a small K."""
    from tailscope.datasets import planted_low_rank

    return planted_low_rank(n, p, k, density=0.002, seed=seed)


def naive(X):
    import powerlaw
    from scipy.linalg import svd

    sv = svd(X.toarray(), compute_uv=False, overwrite_a=True, check_finite=False)
    ev = sv**2
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fit = powerlaw.Fit(ev[ev > 1e-10 * ev.max()])
    return int(fit.n_tail), float(fit.alpha)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from tailscope import select_rank
    from tailscope.datasets import news_articles

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--naive-large", action="store_true")
    ap.add_argument("--case", action="append", choices=["news", "planted", "synthetic"],
                    help="run only these cases (repeatable; default: all)")
    args = ap.parse_args(argv)
    wanted = set(args.case or ["news", "planted", "synthetic"])
    texts = news_articles()["text"].fillna("").astype(str).tolist()
    makers = {"news": ("NewsArticles (real)", lambda: TfidfVectorizer(
                  stop_words="english", min_df=2).fit_transform(texts), True),
              "planted": ("planted low rank, sparse", planted, True),
              "synthetic": ("synthetic 20-newsgroups-sized", synthetic_tfidf, args.naive_large)}
    cases = [(name, make(), naive_too) for key, (name, make, naive_too) in makers.items()
             if key in wanted]
    print(f"{'case':32s} {'shape':>16s} {'route':>9s} {'seconds':>8s} {'K':>6s} {'alpha':>7s} "
          f"{'speed-up vs naive':>18s}")
    for name, X, run_naive in cases:
        shape = f"{X.shape[0]}x{X.shape[1]}"
        results = {}
        results["adaptive"] = timed(lambda X=X: select_rank(X, exact=False, vectors=False))
        results["exact"] = timed(lambda X=X: select_rank(X, exact=True, vectors=False))
        t_naive = None
        if run_naive:
            t_naive, (k_naive, a_naive) = timed(lambda X=X: naive(X))
        for route in ("adaptive", "exact"):
            t, sel = results[route]
            ratio = f"{t_naive / t:.1f}x" if t_naive else "-"
            print(f"{name:32s} {shape:>16s} {route:>9s} {t:8.1f} {sel.k:6d} "
                  f"{sel.fit.alpha:7.3f} {ratio:>18s}")
        if t_naive:
            print(f"{name:32s} {shape:>16s} {'naive':>9s} {t_naive:8.1f} {k_naive:6d} "
                  f"{a_naive:7.3f} {'1.0x':>18s}")
        else:
            print(f"{name:32s} {shape:>16s} {'naive':>9s} {'skipped (needs --naive-large)':>40s}")


if __name__ == "__main__":
    main()
