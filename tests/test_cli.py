"""The command line, run as a user runs it: in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
from oracles import pareto, powerlaw_fit


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                          text=True, input=stdin, timeout=300)


@pytest.fixture
def values_file(tmp_path):
    x = pareto(1500, 2.5, seed=3)
    path = tmp_path / "values.txt"
    path.write_text("# eigenvalues\n" + "\n".join(repr(float(v)) for v in x) + "\n\n")
    return path, x


def test_fit_prints_the_fit(values_file):
    path, x = values_file
    res = run("fit", str(path))
    assert res.returncode == 0, res.stderr
    ref = powerlaw_fit(x)
    assert f"{ref.alpha:.6g}" in res.stdout and f"{ref.xmin:.6g}" in res.stdout
    assert "1500 values" in res.stdout


def test_fit_json_equals_powerlaw(values_file, tmp_path):
    path, x = values_file
    npy = tmp_path / "values.npy"
    np.save(npy, x)
    for source in (str(path), str(npy)):
        res = run("fit", source, "--json")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        ref = powerlaw_fit(x)
        assert out["xmin"] == ref.xmin and out["n_tail"] == len(ref.data)
        assert out["alpha"] == pytest.approx(ref.alpha, rel=1e-9)
        assert out["status"] == "success"


def test_fit_from_stdin():
    x = pareto(300, 3.0, seed=1)
    res = run("fit", "-", "--json", stdin="\n".join(repr(float(v)) for v in x))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["alpha"] == pytest.approx(powerlaw_fit(x).alpha, rel=1e-9)


@pytest.mark.slow  # fresh processes
def test_fit_compare_and_bootstrap(values_file):
    path, _ = values_file
    res = run("fit", str(path), "--compare", "--bootstrap", "20", "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    names = {c["distribution"] for c in out["compare"]}
    assert {"truncated_power_law", "lognormal", "exponential"} <= names
    assert 0.0 <= out["bootstrap"]["p_value"] <= 1.0 and out["bootstrap"]["n_boot"] == 20
    text = run("fit", str(path), "--compare", "lognormal", "--bootstrap", "10", "--seed", "1")
    assert text.returncode == 0 and "lognormal" in text.stdout and "bootstrap p" in text.stdout


def test_fit_options(values_file):
    path, x = values_file
    res = run("fit", str(path), "--xmin-range", "1.5", "3", "--xmax", "max", "--json")
    out = json.loads(res.stdout)
    assert res.returncode == 0 and 1.5 <= out["xmin"] <= 3 and out["xmax"] == x.max()
    res = run("fit", str(path), "--fix-fingers", "clip_xmax")
    assert res.returncode == 0 and "fingers clip_xmax" in res.stdout


@pytest.mark.parametrize("content,message", [
    ("1\n2\nabc\n", "line 3"),
    ("1\n-2\n3\n", "<= 0"),
    ("\n# nothing\n", "no numbers"),
    ("1\nnan\n3\n", "NaN"),
    ("2\n2\n2\n", "all values are equal"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    res = run("fit", str(path))
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


def test_missing_file_and_bad_options(tmp_path):
    res = run("fit", str(tmp_path / "nope.txt"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    good = tmp_path / "v.txt"
    good.write_text("1\n2\n3\n4\n")
    assert run("fit", str(good), "--xmax", "force").returncode == 2
    assert run("fit", str(good), "--bootstrap", "0").returncode == 2
    assert run("fit", str(good), "--compare", "gamma").returncode == 2
    assert run("nope").returncode == 2
    version = run("--version")
    assert version.returncode == 0 and "tailscope" in version.stdout


@pytest.mark.slow  # five fresh processes
def test_analyze_prints_the_table_and_writes_files(tmp_path):
    from oracles import mtcnn_path

    path = mtcnn_path("onet")
    out = tmp_path / "details.csv"
    res = run("analyze", str(path), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "dense5" in res.stdout and "mean  alpha" in res.stdout and "over-trained" in res.stdout
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 6 and (table["status"] == "success").all()
    for ext in ("json", "parquet"):
        res = run("analyze", str(path), "--quiet", "--out", str(tmp_path / f"d.{ext}"))
        assert res.returncode == 0 and res.stdout == "" and (tmp_path / f"d.{ext}").exists()
    res = run("analyze", str(path), "--layers", "conv2d", "--no-pool", "--jobs", "2")
    assert res.returncode == 0 and "slice_id" in res.stdout and "dense5" not in res.stdout
    res = run("describe", str(path))
    assert res.returncode == 0 and "conv1.weight" in res.stdout and "would be analysed" in res.stdout


@pytest.mark.slow  # six fresh processes
def test_analyze_bad_input_exit_2_without_output(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 8 + b"{" + bytes(20))
    out = tmp_path / "out.csv"
    for args in (["analyze", str(bad), "--out", str(out)],
                 ["analyze", str(tmp_path / "missing")],
                 ["analyze", str(tmp_path), "--out", str(out)],
                 ["describe", str(bad)],
                 ["analyze", str(bad), "--out", str(tmp_path / "x.xlsx")],
                 ["analyze", str(bad), "--out", str(tmp_path / "no" / "x.csv")],
                 ["analyze", str(bad), "--device", "cuda"]):
        res = run(*args)
        assert res.returncode == 2, args
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert not out.exists()


@pytest.mark.slow  # fresh processes
def test_pickle_needing_code_is_refused_then_trusted(tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    # the tensor itself needs code (a tensor subclass): foreign metadata alone reads untrusted
    script = ("import torch, collections\n"
              "class Box(torch.Tensor): pass\n"
              "b = torch.ones(20, 20).as_subclass(Box)\n"
              f"torch.save({{'state_dict': {{'w': b}}}}, {str(path)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    res = run("analyze", str(path))
    assert res.returncode == 2 and "--trust-pickle" in res.stderr
    assert torch is not None
