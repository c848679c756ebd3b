"""Hostile input, third campaign: library warnings, Ctrl-C during the zoo, the zoo's outputs
against its inputs, rank of a matrix with no spectrum, fits whose numbers are not finite on every
path, and seeds named in their errors. Inputs are generated here; a run that could hang or
allocate runs in a subprocess under an address-space cap and a timeout.
"""

import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import user_error

import tailscope
from tailscope.sources.safetensors import write_safetensors

RNG = np.random.default_rng(2729)


def _capped(gib: int = 2):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))
    return limit


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"fc1.weight": RNG.standard_normal((120, 60)).astype(np.float32),
                             "fc2.weight": RNG.standard_normal((80, 60)).astype(np.float32)})
    return path


# --- warnings from the libraries never reach the terminal -----------------------------------
NOISY = """
import multiprocessing
import sys
import warnings
import numpy as np
import tailscope.analysis as analysis
from tailscope.cli import main

real = analysis.analyze


def analyze(*args, **kwargs):
    # real warnings of torch, numpy, scipy and matplotlib, then the real analysis
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    torch.from_numpy(np.frombuffer(b"0" * 16, np.float32))  # UserWarning: not writable
    fig = plt.figure()
    fig.text(0.5, 0.5, "\U0001F600")  # UserWarning: glyph missing from the font
    fig.canvas.draw()
    plt.close(fig)
    # a worker process started during the command (as validate and Dask start theirs)
    child = multiprocessing.get_context("spawn").Process(target=warnings.warn,
                                                         args=("a worker warns",))
    child.start()
    child.join()
    if sys.argv[2] == "doubtful":
        from scipy import integrate
        np.float32(3e38) * np.float32(10)  # RuntimeWarning: overflow
        integrate.quad(lambda x: 1 / x, 0, 1)  # IntegrationWarning: probably divergent
    return real(*args, **kwargs)


if __name__ == "__main__":
    analysis.analyze = analyze
    sys.exit(main(["analyze", sys.argv[1], "--quiet"]))
"""


def _noisy(model, doubtful: bool):
    pytest.importorskip("torch")
    script = model.parent / "noisy.py"  # a file: spawned children import their __main__
    script.write_text(NOISY)
    res = subprocess.run([sys.executable, str(script), str(model),
                          "doubtful" if doubtful else "harmless"], capture_output=True,
                         text=True, timeout=300, preexec_fn=_capped(4))
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stderr


def test_library_warnings_are_not_shown(model):
    assert _noisy(model, doubtful=False) == ""


def test_numerical_warnings_become_one_note(model):
    err = _noisy(model, doubtful=True)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tailscope: note: numerical warning"), err
    assert "overflow" in lines[0] and "(and 1 more)" in lines[0]
    assert "Warning" not in err


def test_a_real_run_prints_nothing_but_its_results(tmp_path):
    """In a subprocess with every warning turned into an error: a warning anywhere on the path
    (reading, fitting, plotting a name matplotlib cannot draw) would be an internal error."""
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"\U0001F600 $x$.weight": RNG.standard_normal((90, 40)).astype(
        np.float32), "big.weight": (RNG.standard_normal((60, 60)) * 1e18).astype(np.float32)})
    res = subprocess.run([sys.executable, "-W", "error", "-m", "tailscope", "analyze", str(path),
                          "--quiet", "--plot", str(tmp_path / "figs"), "--randomize", "--seed",
                          "1"], capture_output=True, text=True, timeout=300,
                         preexec_fn=_capped(4))
    assert res.returncode == 0 and res.stderr == "", res.stderr[-2000:]


# --- Ctrl-C during the zoo --------------------------------------------------------------------
def _zoo_manifest(tmp_path, n=6):
    for i in range(n):
        write_safetensors(tmp_path / f"m{i}.safetensors",
                          {f"l{j}.weight": RNG.standard_normal((300, 200)).astype(np.float32)
                           for j in range(4)})
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("source,name,acc\n" + "".join(f"m{i}.safetensors,m{i},{i}\n"
                                                      for i in range(n)))
    return manifest


def _interrupted_zoo(tmp_path, wait_for: str | None, delay: float):
    """``tailscope zoo`` in its own process group, sent SIGINT as a terminal's Ctrl-C would
    (the whole group: the Dask workers too) ``delay`` seconds after ``wait_for`` appears on its
    stderr (or after it starts)."""
    manifest = _zoo_manifest(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "tailscope", "zoo", str(manifest), "--workers",
                          "2", "--store", str(tmp_path / "r.db")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=_capped(8))
    seen = ""
    try:
        if wait_for:
            deadline = time.time() + 120
            while wait_for not in seen and time.time() < deadline and p.poll() is None:
                seen += p.stderr.read(1)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return p.returncode, seen + err


@pytest.mark.slow
@pytest.mark.parametrize("wait_for, delay", [(None, 2.0), (None, 5.0), ("models", 0.5)])
def test_ctrl_c_during_zoo_prints_interrupted_alone(tmp_path, wait_for, delay):
    pytest.importorskip("distributed")
    code, err = _interrupted_zoo(tmp_path, wait_for, delay)
    if code == 0:  # the run finished before the signal: nothing to check
        pytest.skip("the zoo finished before Ctrl-C")
    assert code == 130, err[-2000:]
    assert err.rstrip().endswith("tailscope: interrupted"), err[-2000:]
    assert "Traceback" not in err and "Error" not in err and "Exception" not in err, err[-2000:]


# --- the zoo's outputs are never its inputs ---------------------------------------------------
def test_zoo_store_and_report_never_overwrite_an_input(tmp_path, capsys):
    manifest = _zoo_manifest(tmp_path, n=2)
    before = manifest.read_bytes()
    model = tmp_path / "m0.safetensors"
    model_bytes = model.read_bytes()
    user_error(capsys, "zoo", manifest, "--store", manifest, naming="--store")
    user_error(capsys, "zoo", manifest, "--store", model, naming="is the input")
    user_error(capsys, "zoo", manifest, "--store", f"sqlite:///{model}", naming="is the input")
    os.link(model, tmp_path / "hard.db")
    user_error(capsys, "zoo", manifest, "--store", tmp_path / "hard.db", naming="is the input")
    user_error(capsys, "zoo", manifest, "--store", tmp_path / "r.html", "--report",
               tmp_path / "r.html", naming="results store")
    user_error(capsys, "zoo", manifest, "--store", tmp_path / "r.db", "--report",
               tmp_path / "no" / "r.html", naming="does not exist")
    assert manifest.read_bytes() == before and model.read_bytes() == model_bytes
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "r.html").exists()


def test_zoo_store_inside_a_model_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "folder_model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors",
                      {"w.weight": RNG.standard_normal((40, 30)).astype(np.float32)})
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("source,name\nfolder_model,a\n")
    user_error(capsys, "zoo", manifest, "--store", folder / "r.db", naming="input folder")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]


# --- rank of a matrix with no spectrum --------------------------------------------------------
@pytest.mark.parametrize("make", ["zeros", "sparse_zeros", "underflow"])
def test_rank_of_a_matrix_without_spectrum_is_one_line(tmp_path, make):
    """Under -W error: a numpy warning on the way would be an internal error, not this line."""
    pytest.importorskip("sklearn")
    if make == "sparse_zeros":
        import scipy.sparse as sp

        x = tmp_path / "x.npz"
        sp.save_npz(x, sp.csr_matrix((60, 25)))
    else:
        x = tmp_path / "x.npy"
        np.save(x, np.zeros((60, 25)) if make == "zeros" else np.full((60, 25), 1e-300))
    out = tmp_path / "latent.npy"
    res = subprocess.run([sys.executable, "-W", "error", "-m", "tailscope", "rank", str(x),
                          "--out", str(out)], capture_output=True, text=True, timeout=120,
                         preexec_fn=_capped(2))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-1500:]
    assert "all zeros" in lines[0] and "no rank to choose" in lines[0]
    assert not out.exists()


# --- fits whose numbers are not finite fail on every path -------------------------------------
HOSTILE = {
    "near 1e6": 1e6 + RNG.integers(0, 5, 200).astype(float),
    "two huge values": np.r_[np.full(100, 1e300), np.full(100, 1.7e308)],
    "one outlier at 1e308": np.r_[1 + RNG.random(99), 1e308],
    "ties at 1e15": 1e15 + RNG.integers(0, 3, 200).astype(float),
    "subnormals": np.r_[5e-324 * (1 + RNG.integers(0, 9, 100))],
}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("fix_fingers", [None, "clip_xmax", "xmin_peak"])
def test_a_successful_fit_has_finite_numbers_on_every_path(name, fix_fingers):
    from tailscope import fit_power_law

    fit = fit_power_law(HOSTILE[name], fix_fingers=fix_fingers)
    if fit.ok:
        assert np.isfinite(fit.alpha) and np.isfinite(fit.D) and fit.alpha > 1, fit
    else:
        assert fit.reason and np.isnan(fit.alpha)


def test_discrete_fit_with_fingers_is_one_line(tmp_path, capsys):
    data = tmp_path / "counts.txt"
    np.savetxt(data, np.floor((1 - RNG.random(400)) ** (-1 / 1.5)))
    user_error(capsys, "fit", data, "--discrete", "--fix-fingers", "clip_xmax",
               naming="fix_fingers")


# --- seeds are named in their errors ----------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 1.5, "x", True])
def test_every_seed_is_named(model, seed):
    from tailscope import fit_power_law, select_rank
    from tailscope.fit.bootstrap import alpha_interval

    fit = fit_power_law((1 - RNG.random(300)) ** (-1 / 1.5))
    for call, word in [(lambda: alpha_interval(fit, 5, seed=seed), "seed"),
                       (lambda: fit.goodness_of_fit(5, seed=seed, n_jobs=1), "seed"),
                       (lambda: tailscope.analyze(model, randomize=True, seed=seed), "seed"),
                       (lambda: select_rank(RNG.standard_normal((40, 30)), random_state=seed),
                        "random_state")]:
        if seed is True and word == "seed":
            continue  # True is 1 to numpy's seeding; only random_state refuses it explicitly
        with pytest.raises(ValueError, match=f"^{word} must be"):
            call()
