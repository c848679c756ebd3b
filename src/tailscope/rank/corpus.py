"""The inputs of rank selection: the corpora and matrices ``tailscope rank`` reads, and TF-IDF.

scikit-learn (the ``rank`` extra) is needed only for TF-IDF and the 20newsgroups corpus.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..sources.numpy import read_array
from ..util.errors import first_line
from ..util.optional import require


def load_input(source: str, *, text_column: str | None = None):
    """What ``tailscope rank`` reads: ('texts', list of str, names) or ('matrix', X, None).

    A folder of text files; a CSV (``text_column``, default 'text'); the name '20newsgroups'
    (scikit-learn's loader, which needs the internet the first time); or a matrix file (.npy
    dense, .npz scipy sparse).
    """

    if source == "20newsgroups":
        datasets = require("sklearn.datasets", "the 20newsgroups corpus")
        try:
            data = datasets.fetch_20newsgroups(subset="all", remove=("headers", "footers", "quotes"))
        except Exception as exc:  # URLError and friends when offline
            raise ValueError("20newsgroups could not be downloaded (offline?): "
                             f"{type(exc).__name__}: {exc}; pass a folder of text files or a "
                             "CSV instead") from None
        return "texts", list(data.data), None
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{source}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{source}: the folder holds no files")
        return "texts", [p.read_text(errors="replace") for p in files], [str(p) for p in files]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError, EmptyDataError
            raise ValueError(f"{source}: not a readable CSV file ({first_line(exc)})") from None
        column = text_column or "text"
        if column not in frame.columns:
            raise ValueError(f"{source}: no column {column!r} (columns: "
                             f"{', '.join(map(str, frame.columns[:12]))}); use --text-column")
        return "texts", frame[column].fillna("").astype(str).tolist(), None
    if suffix in (".npy", ".npz"):
        return "matrix", read_array(path), None
    raise ValueError(f"{source}: unknown input; give a folder of text files, a .csv, "
                     "'20newsgroups', or a .npy/.npz matrix")


def tfidf(texts: list[str], *, min_df: int | None = None, stop_words: str | None = "english"):
    """TF-IDF document-term matrix and its vectorizer (scikit-learn).

    ``min_df``: ignore terms in fewer documents; None: 2, or 1 for a corpus of fewer than 4
    documents. A given ``min_df`` is used as it is; more than the number of documents is a
    ValueError (it would leave no term)."""
    TfidfVectorizer = require("sklearn.feature_extraction.text", "TF-IDF of texts").TfidfVectorizer

    if not texts or not any(t.strip() for t in texts):
        raise ValueError("the corpus is empty")
    if min_df is None:
        min_df = 2 if len(texts) >= 4 else 1
    elif isinstance(min_df, bool) or not isinstance(min_df, int) or min_df < 1:
        raise ValueError(f"min_df must be a whole number >= 1; got {min_df!r}")
    elif min_df > len(texts):
        raise ValueError(f"min_df {min_df} is more than the {len(texts)} documents: no term "
                         "would be left")
    vec = TfidfVectorizer(min_df=min_df, stop_words=stop_words)
    try:
        X = vec.fit_transform(texts)
    except ValueError as exc:  # "empty vocabulary; perhaps the documents only contain stop words"
        raise ValueError(f"no terms left after vectorizing ({exc})") from None
    return X, vec
