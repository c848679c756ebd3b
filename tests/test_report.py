"""The HTML report: self-contained, every layer listed, opened for real in headless Chromium."""

import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from oracles import minilm_path  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from tailscope import analyze  # noqa: E402
from tailscope.report.plots import ORANGE, layer_figure  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def minilm_report(tmp_path_factory):
    analysis = analyze(minilm_path())
    path = analysis.to_html(tmp_path_factory.mktemp("report") / "minilm.html")
    return analysis, path


def chromium(tmp_path, url, *extra):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           *extra, url], capture_output=True, text=True, timeout=180)


@pytest.mark.slow  # MiniLM's report (~15-30 s), opened in headless Chromium
def test_report_opens_in_chromium_with_every_layer(minilm_report, tmp_path):
    tmp = tmp_path
    analysis, path = minilm_report
    text = path.read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", text)  # no network request
    url = path.as_uri() + "#open-all"  # opens every layer, which draws its figures
    dom = chromium(tmp, url, "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    table = dom.stdout.split("id=\"layers\"")[1].split("</table>")[0]
    assert table.count("<tr") - 1 == len(analysis.details) == 39
    for module in analysis.details["module"]:
        assert module in table
    assert dom.stdout.count('data-drawn="1"') == 39  # every layer's figures were drawn
    shot = tmp / "shot.png"
    res = chromium(tmp, url, "--virtual-time-budget=5000", f"--screenshot={shot}",
                   "--window-size=1280,2000")
    assert res.returncode == 0 and shot.exists()
    log = dom.stderr + res.stderr
    assert "net::ERR" not in log  # no failed request
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", log)  # no console error
    pixels = plt.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.001  # not blank


@pytest.mark.slow  # MiniLM's report (the minilm_report fixture)
def test_report_content(minilm_report):
    analysis, path = minilm_report
    text = path.read_text()
    s = analysis.summary()
    assert f"{s['alpha']:.4g}" in text
    for _, row in analysis.details[analysis.details["warning"] != ""].iterrows():
        assert f"layer {row['layer_id']} {row['module']}" in text
    assert text.count("<details") == 39 and "class='sortable'" in text


def test_failed_layers_are_shown_as_such(tmp_path):
    rng = np.random.default_rng(0)
    model = tmp_path / "m.safetensors"
    save_file({"a.weight": rng.standard_t(3, (80, 40)).astype(np.float32),
               "b.weight": np.zeros((60, 30), np.float32)}, str(model))
    analysis = analyze(model)
    fig = layer_figure(analysis, "b")
    assert not any(matplotlib.colors.same_color(ln.get_color(), ORANGE)
                   for ax in fig.axes for ln in ax.lines)  # no xmin line: there is no fit
    assert any("all-zero" in t.get_text() for t in fig.texts)
    out = analysis.to_html(tmp_path / "new" / "folder" / "r.html")  # missing folders created
    text = out.read_text()
    assert "no fit (an all-zero matrix" in text and "class='failed'" in text
    section = text.split("id='layer-1'")[1].split("</details>")[0]
    assert "No power-law fit" in section and '"fit": null' in section


def run(*args):
    return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow  # three fresh processes
def test_cli_report_and_plot(tmp_path):
    from oracles import mtcnn_path

    out = tmp_path / "r.html"
    res = run("report", str(mtcnn_path("onet")), "-o", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert out.exists() and "wrote" in res.stdout
    bad = run("report", str(mtcnn_path("onet")), "-o", str(tmp_path / "r.txt"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    res = run("analyze", str(mtcnn_path("pnet")), "--quiet", "--plot", str(tmp_path / "figs"))
    assert res.returncode == 0
    assert len(list((tmp_path / "figs").glob("layer*.png"))) == 3


@pytest.mark.parametrize("pool", [True, False])
def test_layer_figures_for_every_row(tmp_path, pool):
    from oracles import mtcnn_path

    from tailscope.report.plots import layer_figures

    analysis = analyze(mtcnn_path("onet"), pool=pool, layers=["conv4", "dense5"])
    paths = layer_figures(analysis, tmp_path)
    assert len(paths) == len(analysis.details)


@pytest.mark.slow  # opened in headless Chromium
def test_report_with_mp_fit_and_randomize_draws_their_panels(tmp_path):
    import json

    from oracles import mtcnn_path

    analysis = analyze(mtcnn_path("pnet"), mp_fit=True, randomize=True, seed=0)
    path = analysis.to_html(tmp_path / "rmt.html")
    text = path.read_text()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", text)  # still self-contained
    assert ">rand_num_spikes</th>" in text and ">mp_reason</th>" in text
    assert f"{analysis.summary()['mp_softrank']:.4g}" in text  # the summary card
    n = len(analysis.details)
    for key in [(int(i), None) for i in analysis.details["layer_id"]]:
        section = text.split(f"id='layer-{key[0]}'")[1].split("</details>")[0]
        data = json.loads(section.split("application/json'>")[1].split("</script>")[0])
        fit = analysis.mp_fit(key)
        w2 = fit.W_scale ** 2
        assert data["mp"]["x"][0] == pytest.approx(fit.bulk_min * w2)
        assert data["mp"]["x"][-1] == pytest.approx(fit.bulk_max * w2)
        np.testing.assert_allclose(data["rand"], analysis.random_esd(key))  # < 4000: all
    dom = chromium(tmp_path, path.as_uri() + "#open-all", "--virtual-time-budget=5000",
                   "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", dom.stderr)  # no console error
    for panel in ("mp", "rand"):
        drawn = re.findall(rf'<canvas data-panel="{panel}"[^>]*data-ok="1"', dom.stdout)
        assert len(drawn) == n, panel
