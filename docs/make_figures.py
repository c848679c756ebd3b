"""Draw the figures the README and the docs show (committed under docs/_static/); rerun after a
change that moves them: ``python docs/make_figures.py``. Real weights: all-MiniLM-L6-v2."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import tailscope  # noqa: E402
from tailscope.datasets import minilm_path  # noqa: E402
from tailscope.report import plots  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static"

if __name__ == "__main__":
    analysis = tailscope.analyze(minilm_path(), seed=0)
    fig = plots.alpha_per_layer(analysis)
    fig.set_size_inches(9, 3.6)
    fig.savefig(OUT / "minilm-alpha.png", dpi=100, bbox_inches="tight")
    fig = plots.layer_figure(analysis, "encoder.layer.0.attention.self.query")
    fig.savefig(OUT / "minilm-layer.png", dpi=80, bbox_inches="tight")
    print("wrote", sorted(p.name for p in OUT.glob("*.png")))
