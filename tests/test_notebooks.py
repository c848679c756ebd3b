"""Notebooks: how results show in Jupyter (the Analysis's HTML opened for real in headless
Chromium; the fit, rank selection and validation reprs against independent numbers) and the
example notebooks executed by a real kernel, their outputs checked for content."""

import base64
import os
import re
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbclient  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from oracles import minilm_path, news_tfidf, pareto, powerlaw_fit  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from scipy import stats  # noqa: E402
from test_report import chromium  # noqa: E402 - the report tests' headless Chromium

import tailscope  # noqa: E402
from tailscope import analyze, fit_power_law, select_rank  # noqa: E402
from tailscope.zoo import correlate  # noqa: E402
from tailscope.zoo.quality import Validation  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = ("01_why_weightwatcher_works", "02_minilm_end_to_end", "03_zoo_correlations")

# The page around the fragment: the fragment has no script of its own; this probe reports what
# the browser made of it (rows, marked rows, whether the figure decoded) into the dumped DOM.
PROBE = """<script>
window.addEventListener('load', function(){
  var img = document.querySelector('.tailscope img.alpha-per-layer'), b = document.body;
  b.setAttribute('data-rows', document.querySelectorAll('.tailscope table.layers tbody tr').length);
  var over = document.querySelectorAll('.tailscope tr.over');
  b.setAttribute('data-over', Array.prototype.map.call(over, function(r){
    return r.cells[1].textContent; }).join('|'));
  b.setAttribute('data-under', document.querySelectorAll('.tailscope tr.under').length);
  b.setAttribute('data-img', img && img.complete ? img.naturalWidth + 'x' + img.naturalHeight : 'none');
});
</script>"""


@pytest.fixture(scope="module")
def minilm():
    return analyze(minilm_path())


@pytest.mark.slow  # MiniLM analysed, then headless Chromium
def test_analysis_html_in_chromium(minilm, tmp_path):
    d = minilm.details
    fragment = minilm._repr_html_()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", fragment)  # no network request
    assert "<script" not in fragment  # shows the same where notebook scripts do not run
    page = tmp_path / "repr.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{fragment}"
                    f"{PROBE}</body></html>")
    dom = chromium(tmp_path, page.as_uri(), "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-(rows|over|under|img)="([^"]*)"', dom.stdout))
    assert int(attrs["rows"]) == len(d) == 39
    for module in d["module"]:
        assert module in dom.stdout
    # the marked rows are the layers with alpha < 2 and alpha > 6 (HT-SR's bounds)
    alpha = d["alpha"].to_numpy(dtype=float)
    over = sorted(attrs["over"].split("|")) if attrs["over"] else []
    assert over == sorted(d.loc[alpha < 2, "module"]) and len(over) >= 1
    assert int(attrs["under"]) == int((alpha > 6).sum()) >= 1
    width, height = map(int, attrs["img"].split("x"))  # the alpha-per-layer figure decoded
    assert width > 300 and height > 150
    shot = tmp_path / "shot.png"
    res = chromium(tmp_path, page.as_uri(), "--virtual-time-budget=5000",
                   f"--screenshot={shot}", "--window-size=1280,1600")
    assert res.returncode == 0 and shot.exists()
    log = dom.stderr + res.stderr
    assert "net::ERR" not in log
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", log)  # no console error
    pixels = plt.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.001  # not blank
    # the summary cards carry the means over the fitted layers
    assert f"{np.nanmean(alpha):.4g}" in fragment


def test_analysis_html_shows_a_failed_layer_as_such(tmp_path):
    rng = np.random.default_rng(0)
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_t(3, (80, 40)).astype(np.float32),
               "b.weight": np.zeros((60, 30), np.float32)}, str(model))
    fragment = analyze(model)._repr_html_()
    assert fragment.count("<tr class='failed'>") == 1
    assert re.search(r"layer \d+ b: no fit \([^)]*all-zero", fragment)


def test_power_law_fit_html_against_powerlaw():
    x = pareto(3000, 2.5, seed=3)
    fit, ref = fit_power_law(x), powerlaw_fit(x)
    text = fit._repr_html_()
    shown = dict(re.findall(r"<th[^>]*>([^<]+)</th><td[^>]*>([^<]+)</td>", text))
    assert float(shown["alpha"]) == pytest.approx(ref.power_law.alpha, rel=1e-5)
    assert float(shown["xmin"]) == pytest.approx(ref.power_law.xmin, rel=1e-5)
    assert float(shown["D (KS distance)"]) == pytest.approx(ref.power_law.D, rel=1e-5)
    assert shown["n_tail / n"] == f"{int(np.sum(x >= ref.power_law.xmin))} / {x.size}"
    failed = fit_power_law(np.ones(20))._repr_html_()
    assert "failed" in failed and "alpha" not in failed  # a reason, never a made-up number


def test_rank_selection_html():
    X = news_tfidf(400)
    sel = select_rank(X)
    text = sel._repr_html_()
    k = int(re.search(r"K = (\d+)", text).group(1))
    assert k == int(np.sum(sel.eigenvalues >= sel.fit.xmin)) == sel.k
    assert f"{X.shape[0]} x {X.shape[1]}" in text
    for name, value in sel.alternatives.items():
        assert re.search(rf"<td>{re.escape(name)}</td>\s*<td>{value}</td>", text), name


def test_validation_html_against_scipy():
    rng = np.random.default_rng(1)
    alpha = rng.uniform(2, 6, 24)
    models = pd.DataFrame({"name": [f"m{i}" for i in range(24)], "group": ["a", "b"] * 12,
                           "status": "success", "alpha": alpha,
                           "test_accuracy": -alpha + rng.normal(0, 0.5, 24)})
    table = correlate(models, "test_accuracy", metrics=["alpha"], bootstrap=200)
    v = Validation(models=models, correlations=table, metrics=("alpha",), missing=(),
                   folder=Path("."), key="k", seconds=1.0, computed=24, resumed=0,
                   notes=("a note",))
    text = v._repr_html_()
    rho = stats.spearmanr(models["alpha"], models["test_accuracy"])[0]
    assert f"alpha: rho {rho:+.3f}" in text and "over all 24 networks" in text
    assert "a note" in text and text.count("<tr>") == 1 + len(table)


# --- the example notebooks, run by a real kernel ---------------------------------------------------
@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Each example notebook executed in a fresh ipykernel (the Python running the tests, with
    this tailscope on its path), and its wall time."""
    src = str(Path(tailscope.__file__).resolve().parents[1])
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH"))
                                                if p))
        mp.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
        for name in NOTEBOOKS:
            nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
            assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
                f"{name}: commit notebooks without outputs"
            t0 = time.perf_counter()
            nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={
                "metadata": {"path": str(tmp_path_factory.mktemp(name))}}).execute()
            out[name] = nb, time.perf_counter() - t0
    return out


def cell(nb, tag):
    hits = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(hits) == 1, tag
    return hits[0]


def images(c) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in c.outputs
            if "image/png" in o.get("data", {})]


def stdout(c) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def one_figure(nb, tag):
    """A figure cell shows exactly one real image (no second copy, no empty canvas)."""
    shown = images(cell(nb, tag))
    assert len(shown) == 1, f"{tag}: {len(shown)} images"
    assert shown[0].startswith(b"\x89PNG")
    pixels = plt.imread(__import__("io").BytesIO(shown[0]))[..., :3]
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 0.05, tag


@pytest.mark.slow  # the example notebooks executed by a kernel
def test_notebooks_print_nothing_unasked_and_run_fast(executed):
    for name, (nb, _) in executed.items():
        for c in nb.cells:
            if c.cell_type != "code":
                continue
            kinds = {o.output_type for o in c.outputs}
            assert "error" not in kinds, name
            assert not any(o.output_type == "stream" and o.name == "stderr" for o in c.outputs), \
                (name, c.source[:60], [o.text for o in c.outputs if o.get("name") == "stderr"])
            if "print(" not in c.source:  # only cells that ask print
                assert not stdout(c), (name, c.source[:60])
    assert sum(s for _, s in executed.values()) < 600  # a guard; measured: see the README


@pytest.mark.slow  # the example notebooks executed by a kernel
def test_seed_notebook(executed):
    nb, _ = executed["01_why_weightwatcher_works"]
    for tag in ("figure-esd", "figure-pdf-cdf", "figure-ks", "figure-elbows"):
        one_figure(nb, tag)
    printed = stdout(cell(nb, "k"))
    k = int(re.search(r"^K = (\d+)$", printed, re.M).group(1))
    # the same corpus, vectorized here independently (no eigenvectors: K does not need them)
    sel = select_rank(news_tfidf(), vectors=False)
    assert k == sel.k == int(np.sum(sel.eigenvalues >= sel.fit.xmin))
    alpha = float(re.search(r"alpha = ([\d.]+)", printed).group(1))
    assert alpha == pytest.approx(sel.fit.alpha, abs=5e-5)
    assert f"K = {sel.k}" in cell(nb, "rank").outputs[0]["data"]["text/html"]
    table = cell(nb, "table").outputs[-1]["data"]["text/html"]
    for rule, value in sel.alternatives.items():
        if value is not None:  # the eigenvector rules are None here
            assert re.search(rf"<td>{re.escape(rule)}</td>\s*<td>{value}</td>", table), rule


@pytest.mark.slow  # the example notebooks executed by a kernel
def test_minilm_notebook(executed, minilm):
    nb, _ = executed["02_minilm_end_to_end"]
    d, s = minilm.details, minilm.summary()
    shown = cell(nb, "analysis").outputs[0]["data"]["text/html"]
    assert shown.count("<tr class=") == len(d) and "alt='alpha per layer'" in shown
    assert f"mean alpha {s['alpha']:.4f}" in stdout(cell(nb, "summary"))
    warned = cell(nb, "warnings").outputs[0]["data"]["text/html"]
    for name in d.loc[(d["alpha"] < 2) | (d["alpha"] > 6), "name"]:
        assert name in warned
    for tag in ("figure-alpha", "figure-metric", "figure-histogram", "figure-layer"):
        one_figure(nb, tag)
    assert d.loc[d["alpha"].idxmin(), "name"] in stdout(cell(nb, "figure-layer"))
    fit = cell(nb, "fit").outputs[0]["data"]["text/html"]
    assert f"{d['alpha'].min():.6g}" in fit
    assert f"{len(d)} layer sections" in stdout(cell(nb, "report"))


@pytest.mark.slow  # the example notebooks executed by a kernel
def test_zoo_notebook(executed):
    nb, _ = executed["03_zoo_correlations"]
    run = cell(nb, "zoo").outputs[0]["data"]["text/html"]
    assert "6 models: 6 analysed, 0 failed" in run and "Summary metrics against accuracy" in run
    rho = float(re.search(r"Spearman rho ([+-][\d.]+) over 6 models",
                          stdout(cell(nb, "rho"))).group(1))
    assert -1 <= rho <= 1
    one_figure(nb, "figure-scatter")
