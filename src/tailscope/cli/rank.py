"""``tailscope rank``: K for LSA / truncated SVD from the power-law tail of the eigenvalues."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (
    Command,
    add_columns,
    check_folder,
    check_output,
    pick_columns,
    seed_help,
    whole,
)


def arguments(p) -> None:
    p.add_argument("input", help="a folder of text files, a .csv, '20newsgroups', or a .npy/.npz "
                                 "matrix (samples x features)")
    p.add_argument("--text-column", help="the CSV column holding the text (default: text)")
    p.add_argument("--min-df", type=whole(1), metavar="N",
                   help="TF-IDF: ignore terms in fewer documents (default: 2; 1 for fewer than 4 "
                        "documents)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true", help="every eigenvalue (dense Gram)")
    mode.add_argument("--adaptive", action="store_true", help="top eigenvalues in growing blocks")
    p.add_argument("--max-components", type=whole(1), metavar="N")
    p.add_argument("--plot", metavar="DIR", help="write the figures to DIR")
    p.add_argument("--out", metavar="FILE.npy", help="save the K-dimensional latent space")
    p.add_argument("--terms", type=whole(1), metavar="N", help="print the top N terms of the leading "
                                                          "components")
    p.add_argument("--seed", type=whole(0), default=0, metavar="N",
                   help=seed_help("the sparse solver's start vector", "0"))
    add_columns(p, "other rules, K, note")


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to the temporary name
        np.save(f, array)


def run(args) -> int:
    from ..util.optional import require

    require("sklearn", "tailscope rank")  # MissingExtra names tailscope[rank]: exit 2
    from ..rank import PowerLawSVD, load_input, select_rank, tfidf
    from ..util.console import echo, print_table

    if args.out:  # every output checked before the computation
        check_output(args.out, "--out", (".npy",), "the latent space is written as .npy",
                     inputs=(args.input,))
    if args.plot:
        check_folder(args.plot, "--plot", inputs=(args.input,))
    kind, data, _ = load_input(args.input, text_column=args.text_column)
    vectorizer = None
    if kind == "texts":
        X, vectorizer = tfidf(data, min_df=args.min_df)
    else:
        X = data
    exact = True if args.exact else False if args.adaptive else None
    sel = select_rank(X, exact=exact, max_components=args.max_components, random_state=args.seed)
    shape = f"{X.shape[0]} x {X.shape[1]}"
    what = "TF-IDF documents x terms" if kind == "texts" else "matrix"
    echo(f"{args.input}: {what} {shape}; {sel.eigenvalues.size} eigenvalues "
          f"({'all' if sel.exact else 'top, adaptive'})")
    if sel.fit.ok:
        echo(f"K = {sel.k}  (power-law tail: alpha {sel.fit.alpha:.4g}, xmin {sel.fit.xmin:.4g}, "
              f"D {sel.fit.D:.4g})")
    else:
        echo(f"K = {sel.k}: no power-law fit ({sel.fit.reason})")
    others = sel.table().iloc[1:].copy()
    others["k"] = ["-" if k is None or k != k else str(int(k)) for k in others["k"]]
    others = others.rename(columns={"method": "other rules", "k": "K"})
    (cols,) = pick_columns(args, [others], others.columns)
    print_table(others, cols)
    if args.plot:
        from ..report.plots import rank_figures

        paths = rank_figures(sel, args.plot)
        echo(f"figures: {', '.join(str(p) for p in paths)}")
    if args.terms or args.out:
        svd = PowerLawSVD(random_state=args.seed, exact=exact,
                          max_components=args.max_components)
        latent = svd.fit_transform(X)
        if args.terms and vectorizer is not None:
            terms = vectorizer.get_feature_names_out()
            for i, comp in enumerate(svd.components_[: min(svd.n_components_, 10)]):
                top = terms[np.argsort(-comp)[: args.terms]]
                echo(f"  component {i + 1}: {' '.join(top)}")
        if args.out:
            from ..util.io import atomic_write

            out = Path(args.out)
            atomic_write(out, lambda p: _save_npy(p, latent))
            echo(f"wrote {out} ({latent.shape[0]} x {latent.shape[1]})")
    return 0


COMMAND = Command(
    name="rank", help="choose K for LSA / truncated SVD from the power-law tail",
    description="K = the number of eigenvalues of X^T X in the power-law tail (KS choice of "
                "xmin), next to the elbow rules, the Marchenko-Pastur edge and Gavish-Donoho. "
                "Needs scikit-learn: pip install 'tailscope[rank]'.",
    arguments=arguments, run=run)
