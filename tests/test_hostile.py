"""Hostile input (issue 15, part C): every defect category has a test here that failed before.

User errors are exit 2 with one line naming the file, never 'internal error' (exit 1), a
traceback, a hang, a crash or a made-up number. Commands run in-process (``main``) where that is
safe; in a subprocess where the old behaviour was a hang or a SIGBUS.
"""

import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import cli, user_error
from safetensors.numpy import save_file

from tailscope import analyze
from tailscope.fit import fit_power_law
from tailscope.sources import SourceError, open_source
from tailscope.zoo.manifest import ManifestError, read_manifest

RNG = np.random.default_rng(15)




def sh(*args, stdin=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "tailscope", *map(str, args)], input=stdin,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A valid safetensors file written by the safetensors package itself."""
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_file({"a.weight": RNG.standard_normal((64, 48)).astype(np.float32),
               "b.weight": RNG.standard_normal((80, 40)).astype(np.float32)}, str(path))
    return path


def raw_safetensors(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# --- wrong exit codes ---------------------------------------------------------------------------
N_BYTES = 64 * 48 * 4


@pytest.mark.parametrize("entry", [
    {"dtype": ["F32"], "shape": [64, 48], "data_offsets": [0, N_BYTES]},
    {"dtype": "F32", "shape": None, "data_offsets": [0, N_BYTES]},
    {"dtype": "F32", "shape": [64, 48], "data_offsets": ["0", str(N_BYTES)]},
    {"dtype": "F32", "shape": [-64, -48], "data_offsets": [0, N_BYTES]},   # was N = -48
    {"dtype": "F32", "shape": [64.5, 48], "data_offsets": [0, N_BYTES]},
    {"dtype": "F32", "shape": [64, 48], "data_offsets": [0, 10**30]},
    {"dtype": "F32", "shape": [64, 48], "data_offsets": [0]},
], ids=["dtype-list", "shape-null", "offsets-strings", "negative-shape", "fractional-shape",
        "offsets-out-of-range", "one-offset"])
def test_wrongly_typed_safetensors_header_is_one_line(tmp_path, capsys, entry):
    path = raw_safetensors(tmp_path / "bad.safetensors", {"w": entry}, b"\0" * N_BYTES)
    user_error(capsys, "describe", path, naming=path)
    with pytest.raises(SourceError):
        open_source(path)


def test_os_errors_on_user_paths_are_exit_2(tmp_path, capsys, model):
    long_name = tmp_path / ("a" * 300 + ".safetensors")
    user_error(capsys, "describe", long_name, naming="a" * 40)
    user_error(capsys, "analyze", model, "--out", tmp_path / ("b" * 300 + ".csv"), naming="b" * 40)
    user_error(capsys, "analyze", model, "--out", "/dev/null/x.csv", naming="/dev/null")
    folder = tmp_path / "x.csv"
    folder.mkdir()
    user_error(capsys, "analyze", model, "--out", folder, naming=folder)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.safetensors"
        locked.write_bytes(model.read_bytes())
        locked.chmod(0)
        user_error(capsys, "describe", locked, naming=locked)


def test_a_full_disk_names_the_file_not_the_temporary(tmp_path):
    from tailscope.util.io import atomic_write

    def fill(p):
        with open(p, "wb") as f, open("/dev/full", "wb") as full:
            f.write(b"x")
            full.write(b"x" * 65536)
            full.flush()

    target = tmp_path / "out.csv"
    with pytest.raises(ValueError, match="cannot write .*out.csv: No space left"):
        atomic_write(target, fill)
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary left


@pytest.mark.parametrize("args", [
    ("fit", "{values}", "--seed", "-5"),
    ("fit", "{values}", "--bootstrap", "-1"),
    ("fit", "{values}", "--xmin", "nan"),
    ("fit", "{values}", "--xmax", "inf"),
    ("analyze", "{model}", "--xmax", "inf"),
    ("analyze", "{model}", "--layers", "-"),
    ("analyze", "{model}", "--layers", ","),
    ("analyze", "{model}", "--max-N", "-1"),
    ("rank", "{texts}", "--terms", "-3"),
    ("rank", "{texts}", "--min-df", "100000"),
    ("rank", "{texts}", "--max-components", "0"),
    ("smooth", "{model}", "-o", "{tmp}/s.safetensors", "--percent", "nan"),
    ("traps", "{model}", "--top-k", "-2"),
    ("validate", "--level", "1.5"),
    ("zoo", "{tmp}/z.csv", "--workers", "0"),
], ids=lambda a: " ".join(a[:1] + a[2:]))
def test_options_out_of_range_are_refused(tmp_path, capsys, model, args):
    values = tmp_path / "v.txt"
    values.write_text("\n".join(str(v) for v in RNG.pareto(1.5, 200) + 1))
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(6):
        (texts / f"{i}.txt").write_text(f"document {i} about spectra and power laws, words {i}")
    fill = {"values": values, "model": model, "texts": texts, "tmp": tmp_path}
    user_error(capsys, *(a.format(**fill) for a in args))


# --- no made-up numbers -------------------------------------------------------------------------
def test_fit_over_600_decades_is_computed_in_logarithms():
    x = np.sort(np.exp(RNG.uniform(math.log(1e-300), math.log(1e300), 400)))
    fit = fit_power_law(x, xmin=float(x[0]))
    logs = np.log(x) - math.log(x[0])  # independent: the MLE in log space, no ratio formed
    alpha = 1.0 + x.size / math.fsum(logs)
    assert fit.ok and fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.sigma == pytest.approx((alpha - 1) / math.sqrt(x.size), rel=1e-12) and fit.sigma > 0
    cdf = -np.expm1((1 - alpha) * logs)
    n = x.size
    D = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert fit.D == pytest.approx(D, rel=1e-9)
    scanned = fit_power_law(x)  # the xmin scan works in logarithms as well
    assert scanned.ok and scanned.sigma > 0 and 1 < scanned.alpha < 1.1


def test_decimal_comma_is_an_error(tmp_path, capsys):
    path = tmp_path / "v.txt"
    path.write_text("1,965011\n2,5\n3,25\n")
    user_error(capsys, "fit", path, naming="decimal comma")


@pytest.mark.parametrize("scale, reason", [(1e200, "too large"), (1e-170, "too small")])
def test_extreme_weights_fail_with_the_true_reason(scale, reason):
    w = RNG.standard_normal((60, 40)) * scale
    d = analyze(w).details
    assert (d["status"] == "failed").all()
    assert d["reason"].str.contains(reason).all(), d["reason"].tolist()
    assert not d["reason"].str.contains("NaN or Inf|all-zero").any()
    assert d["alpha"].isna().all()
    # the same matrix at a sane scale is fitted: alpha is scale-free
    assert (analyze(w / scale).details["status"] == "success").all()


def test_model_of_a_failed_fit_is_nan():
    fit = fit_power_law(np.full(20, 3.0))
    assert not fit.ok
    for f in (fit.pdf, fit.cdf, fit.ccdf):
        assert np.isnan(f(np.array([1.0, 3.0, 10.0]))).all()


# --- hangs and crashes --------------------------------------------------------------------------
def test_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    res = sh("describe", fifo, timeout=60)  # it used to block forever on open()
    assert res.returncode == 2 and b"not a regular file (a pipe)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_file_truncated_while_read_is_an_error_not_sigbus(tmp_path, model):
    path = tmp_path / "m.safetensors"
    path.write_bytes(model.read_bytes())
    script = (
        "import os, sys\n"
        "from tailscope.sources import open_source, SourceError\n"
        f"p = {str(path)!r}\n"
        "src = open_source(p)\n"
        "os.truncate(p, 200)  # a training job rewriting its checkpoint\n"
        "try:\n"
        "    [ref.load() for ref in src]\n"
        "except SourceError as exc:\n"
        "    print('ERR', exc); sys.exit(3)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 3, (res.returncode, res.stderr[-500:])  # SIGBUS was -7
    assert "cut short" in res.stdout


def test_model_through_a_pipe(model):
    data = model.read_bytes()
    res = sh("describe", "-", stdin=data)
    assert res.returncode == 0, res.stderr
    assert b"a.weight" in res.stdout and b"b.weight" in res.stdout
    res = sh("describe", "/dev/stdin", stdin=data)  # a pipe by name: one clear line
    assert res.returncode == 2 and b"'-'" in res.stderr and b"corrupt" not in res.stderr


# --- outputs --------------------------------------------------------------------------------------
def test_outputs_are_checked_before_the_computation(tmp_path, capsys, monkeypatch, model):
    import tailscope.analysis
    import tailscope.rank

    def boom(*a, **k):
        raise AssertionError("computed before the output path was checked")

    monkeypatch.setattr(tailscope.rank, "select_rank", boom)
    monkeypatch.setattr(tailscope.analysis, "analyze", boom)
    x = tmp_path / "x.npy"
    np.save(x, RNG.standard_normal((50, 30)))
    missing = tmp_path / "no" / "such"
    user_error(capsys, "rank", x, "--out", missing / "z.npy", naming=missing)
    user_error(capsys, "rank", x, "--plot", missing / "figs", naming=missing)
    user_error(capsys, "analyze", model, "--plot", x)  # a file where a folder is expected
    # report refuses a missing folder as every other command does (it used to create it)
    user_error(capsys, "report", model, "-o", missing / "r.html", naming=missing)
    assert not (tmp_path / "no").exists()


def test_zoo_quality_that_is_not_a_number_names_its_row(tmp_path, model):
    path = tmp_path / "zoo.csv"
    path.write_text(f"source,name,accuracy\n{model},a,0.91\n{model},b,abc\n{model},c,\n")
    with pytest.raises(ManifestError, match="row 3.*'accuracy'.*'abc'"):
        read_manifest(path)
    path.write_text(f"source,name,accuracy\n{model},a,0.91\n{model},c,\n")
    assert read_manifest(path)["accuracy"].isna().tolist() == [False, True]


# --- safety ---------------------------------------------------------------------------------------
def test_control_characters_in_names_never_reach_the_terminal(tmp_path, capsys):
    name = "\x1b[2J\x1b[31mevil\x1b[0m\r.weight"
    path = tmp_path / "m.safetensors"
    save_file({name: RNG.standard_normal((64, 48)).astype(np.float32)}, str(path))
    for command in ("describe", "analyze"):
        code, out, err = cli(capsys, command, path)
        assert code == 0, err
        assert "\x1b" not in out + err and "\r" not in out + err
        assert "\\x1b[31mevil" in out
    odd = tmp_path / "odd\x1b[31m.safetensors"  # a file name, too
    odd.write_bytes(path.read_bytes())
    code, out, err = cli(capsys, "describe", odd)
    assert code == 0 and "\x1b" not in out + err
    bad = raw_safetensors(tmp_path / "b.safetensors",
                          {name: {"dtype": "F32", "shape": None, "data_offsets": [0, 4]}}, b"\0" * 4)
    err = user_error(capsys, "describe", bad)
    assert "\x1b" not in err


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_sharded_index_cannot_reach_outside_the_model_folder(tmp_path, model, where):
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(model.read_bytes())
    shard = {"dotdot": "../secret.safetensors", "absolute": str(outside),
             "symlink": "link.safetensors"}[where]
    if where == "symlink":
        (folder / "link.safetensors").symlink_to(outside)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": shard, "b.weight": shard}}))
    with pytest.raises(SourceError, match="outside the model's folder"):
        open_source(folder)


def test_sharded_index_inside_the_folder_still_reads(tmp_path, model):
    folder = tmp_path / "model"
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "s1.safetensors").write_bytes(model.read_bytes())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": "shards/s1.safetensors",
                                   "b.weight": "./shards/s1.safetensors"}}))
    src = open_source(folder)
    direct = open_source(model)
    assert [r.name for r in src] == [r.name for r in direct]
    for a, b in zip(src, direct):
        np.testing.assert_array_equal(a.load(), b.load())


def test_fake_torchscript_is_one_short_line(tmp_path, capsys):
    import zipfile

    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/constants.pkl", b"junk")
        z.writestr("archive/data.pkl", b"\x80\x02junk")
    err = user_error(capsys, "describe", path, naming=path)
    assert "Could this error message be improved" not in err


def test_damaged_npy_and_csv_inputs_are_one_line(tmp_path, capsys):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 4), }"
    header += " " * (63 - 10 - len(header)) + "\n"
    neg = tmp_path / "neg.npy"  # a negative dimension, as numpy's own header writer spells it
    neg.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
                    + b"\0" * 48)
    user_error(capsys, "describe", neg, naming=neg)
    torn = tmp_path / "torn.npy"  # the header dict cut short: numpy raises a tokenize error
    torn.write_bytes(b"\x93NUMPY\x01\x00\x20\x00{'descr':'<f4','fortran_order':False,\n")
    user_error(capsys, "describe", torn, naming=torn)
    user_error(capsys, "fit", torn, naming=torn)
    csv = tmp_path / "texts.csv"
    csv.write_text('text\n"never closed\n')
    user_error(capsys, "rank", csv, naming=csv)


def test_alpha_does_not_depend_on_scale_and_round_off_is_no_tail():
    """A rank-1 W has one eigenvalue and round-off: no fit at |w| = 1 and none at |w| = 1e12
    (round-off eigenvalues there lie far above 1e-5); a random W fits the same alpha at both."""
    import tailscope

    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(300), rng.standard_normal(200)
    w = rng.standard_t(3, size=(300, 200))
    for scale in (1.0, 1e12):
        d = tailscope.analyze({"r1.weight": np.outer(u, v) * scale, "w.weight": w * scale}
                              ).details.set_index("name")
        assert d.loc["r1.weight", "status"] == "failed"
        assert "nothing to fit" in d.loc["r1.weight", "reason"]
        assert d.loc["w.weight", "status"] == "success"
    a1 = tailscope.analyze({"w.weight": w}).details["alpha"].iloc[0]
    a2 = tailscope.analyze({"w.weight": w * 1e12}).details["alpha"].iloc[0]
    assert a1 == pytest.approx(a2, rel=1e-9)
