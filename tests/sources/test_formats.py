"""ONNX, Keras (h5py, no TensorFlow) and Hugging Face ids: read right, or fail in one line."""

import io
import json
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

import tailscope
from tailscope.datasets import fetch_wheel_file
from tailscope.sources import SourceError, open_source
from tailscope.sources.split import expand

SILERO = "silero-vad==6.2.3"
RNG = np.random.default_rng(7)


def gram_evals(w):
    w = np.asarray(w, dtype=np.float64)
    if w.shape[0] < w.shape[1]:
        w = w.T
    return np.linalg.eigvalsh(w.T @ w)


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


# --- ONNX ---------------------------------------------------------------------------------------
def _onnx_model(w: dict):
    """x -> Gemm(transB=0) -> Gemm(transB=1) -> MatMul -> LSTM, GRU; a Conv on the side."""
    inits = [numpy_helper.from_array(v, name=k) for k, v in w.items()]
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight"], ["h1"], name="fc1", transB=0),
        helper.make_node("Gemm", ["h1", "fc2.weight"], ["h2"], name="fc2", transB=1),
        helper.make_node("MatMul", ["h2", "onnx::MatMul_9"], ["h3"], name="/proj/MatMul"),
        helper.make_node("Unsqueeze", ["h3", "axes1"], ["seq"]),
        helper.make_node("LSTM", ["seq", "lstm.W", "lstm.R"], ["y", "yh"], name="/rnn/LSTM",
                         hidden_size=6),
        helper.make_node("GRU", ["seq", "gru.W", "gru.R"], ["z", "zh"], name="/gru/GRU",
                         hidden_size=5, direction="bidirectional"),
        helper.make_node("Conv", ["img", "conv.weight"], ["c"], name="/conv/Conv"),
    ]
    w_axes = numpy_helper.from_array(np.array([1], dtype=np.int64), name="axes1")
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 20]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
        initializer=[*inits, w_axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def onnx_weights():
    f = np.float32
    return {
        "fc1.weight": RNG.standard_normal((20, 30)).astype(f),   # Gemm B (K, N), transB=0
        "fc2.weight": RNG.standard_normal((25, 30)).astype(f),   # Gemm B (N, K), transB=1
        "onnx::MatMul_9": RNG.standard_normal((25, 16)).astype(f),
        "lstm.W": RNG.standard_normal((1, 24, 16)).astype(f),    # [dirs, 4H, in], gates iofc
        "lstm.R": RNG.standard_normal((1, 24, 6)).astype(f),
        "gru.W": RNG.standard_normal((2, 15, 16)).astype(f),     # bidirectional, gates zrh
        "gru.R": RNG.standard_normal((2, 15, 5)).astype(f),
        "conv.weight": RNG.standard_normal((12, 3, 3, 3)).astype(f),
    }


def test_onnx_weights_names_layouts_and_gates(tmp_path, onnx_weights):
    w = onnx_weights
    path = tmp_path / "model.bin"  # content decides, not the extension
    onnx.save(_onnx_model(w), str(path))
    src = open_source(path)
    assert src.format == "onnx"
    refs = {r.name: r for r in expand(src)}
    np.testing.assert_array_equal(refs["fc1.weight"].load(), w["fc1.weight"].T)  # to (out, in)
    np.testing.assert_array_equal(refs["fc2.weight"].load(), w["fc2.weight"])
    assert refs["fc1.weight"].shape == (30, 20)
    # an anonymous initializer is named after its node
    np.testing.assert_array_equal(refs["/proj/MatMul.B"].load(), w["onnx::MatMul_9"].T)
    np.testing.assert_array_equal(refs["conv.weight"].load(), w["conv.weight"])
    # ONNX LSTM gate order i, o, f, c along the rows (the ONNX operator spec)
    for k, g in enumerate("iofc"):
        np.testing.assert_array_equal(refs[f"/rnn/LSTM.W[{g}]"].load(), w["lstm.W"][0, 6 * k:6 * (k + 1)])
        np.testing.assert_array_equal(refs[f"/rnn/LSTM.R[{g}]"].load(), w["lstm.R"][0, 6 * k:6 * (k + 1)])
    # GRU z, r, h; the reverse direction is its own stack
    for k, g in enumerate("zrh"):
        np.testing.assert_array_equal(refs[f"/gru/GRU.W_reverse[{g}]"].load(),
                                      w["gru.W"][1, 5 * k:5 * (k + 1)])
    assert refs["/gru/GRU.R"].role == "recurrent" and refs["/gru/GRU.R"].split_into


def test_onnx_quantized_weights_are_dequantized(tmp_path):
    """A QDQ model: MatMul's B = DequantizeLinear(int8, per-column scale, zero point)."""
    q = RNG.integers(-128, 127, size=(24, 18), dtype=np.int8)
    scale = RNG.uniform(0.01, 0.1, size=18).astype(np.float32)
    zero = RNG.integers(-3, 3, size=18, dtype=np.int8)
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(zero, "w_zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    ref, *params = open_source(path)  # the weight, then its scale and zero point (skipped)
    assert ref.name == "/fc/MatMul.B" and ref.shape == (18, 24) and ref.dtype == "float32"
    assert [(r.name, r.role) for r in params] == [("w_scale", "constant"), ("w_zero", "constant")]
    expected = (q.astype(np.float32) - zero.astype(np.float32)) * scale
    np.testing.assert_allclose(ref.load(), expected.T, rtol=1e-6)


def test_onnx_external_data_loaded_beside_the_model_and_missing_fails(tmp_path, onnx_weights):
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(_onnx_model(onnx_weights), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    refs = {r.name: r for r in open_source(path)}
    np.testing.assert_array_equal(refs["fc2.weight"].load(), onnx_weights["fc2.weight"])
    np.testing.assert_array_equal(refs["/rnn/LSTM.R"].load(), onnx_weights["lstm.R"][0])
    (folder / "model.onnx.data").unlink()
    with pytest.raises(SourceError, match="external data file model.onnx.data .* is missing") as e:
        open_source(path)
    assert "\n" not in str(e.value)


def test_truncated_onnx_fails_in_one_line(tmp_path):
    blob = fetch_wheel_file(SILERO, "silero_vad/data/silero_vad.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(SourceError, match="not a readable ONNX model") as e:
        open_source(path)
    assert "\n" not in str(e.value)


def test_silero_onnx_equals_its_torchscript_weights():
    """silero-vad 6.2.3 ships the same model as ONNX and as TorchScript (silero_vad.jit).

    Names: the ONNX graph holds both sample rates in an If node: 'If_0_then_branch__Inline_0__X'
    is the jit's '_model.X' (16 kHz) and 'If_0_else_branch__Inline_0__X' its '_model_8k.X'. The
    LSTM weights are folded from the exporter's Slice/Concat nodes into '<LSTM node>.W' / '.R'
    (torch's weight_ih / weight_hh) with ONNX's gate order: torch gate g is ONNX gate c, and i, f,
    o keep their letters. Matched here by content; every matrix must give the same row.
    """
    onnx_path = fetch_wheel_file(SILERO, "silero_vad/data/silero_vad.onnx")
    jit_path = fetch_wheel_file(SILERO, "silero_vad/data/silero_vad.jit")
    a_onnx, a_jit = tailscope.analyze(onnx_path), tailscope.analyze(jit_path)
    by_shape = {}
    for r in expand(open_source(onnx_path)):
        by_shape.setdefault(r.shape, []).append(r)
    d_onnx = a_onnx.details.set_index("name")
    matched = 0
    for ref in expand(open_source(jit_path)):
        if ref.name not in set(a_jit.details["name"]):
            continue
        w = ref.load()
        twin = [r.name for r in by_shape.get(ref.shape, []) if np.array_equal(r.load(), w)]
        assert len(twin) == 1, ref.name
        row, other = a_jit.details.set_index("name").loc[ref.name], d_onnx.loc[twin[0]]
        for col in ("layer_type", "N", "M", "num_evals", "status"):
            assert row[col] == other[col], (ref.name, col)
        for col in ("alpha", "D", "xmin", "lambda_max", "log_norm", "stable_rank"):
            assert row[col] == pytest.approx(other[col], rel=1e-12, abs=1e-12), (ref.name, col)
        matched += 1
    assert matched == len(a_onnx.details) == 26  # 2 rates x (stft, 4 convs, 2 x 4 LSTM gates)


def test_silero_safetensors_is_a_different_set_of_values():
    """The 16k safetensors of the same wheel (for its tinygrad model) has the ONNX model's
    16 kHz structure under names of its own (conv1..4, lstm_cell) but different trained values:
    only the fixed STFT basis is equal, so it cannot be the 'same weights' reference."""
    onnx_refs = [r for r in expand(open_source(fetch_wheel_file(
        SILERO, "silero_vad/data/silero_vad.onnx"))) if not r.split_into]
    st_path = fetch_wheel_file(SILERO, "silero_vad/data/silero_vad_16k.safetensors")
    analysed = set(tailscope.analyze(st_path).details["name"])
    assert {f"lstm_cell.weight_ih[{g}]" for g in "ifgo"} <= analysed
    equal = []
    for ref in expand(open_source(st_path)):
        if ref.name in analysed:
            same_shape = [r for r in onnx_refs if r.shape == ref.shape]
            assert same_shape, ref.name
            if any(np.array_equal(r.load(), ref.load()) for r in same_shape):
                equal.append(ref.name)
    assert equal == ["stft_conv.weight"]


# --- Keras --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_weights():
    f = np.float32
    return {
        "dense": RNG.standard_normal((40, 20)).astype(f),           # (in, out)
        "conv": RNG.standard_normal((3, 3, 10, 14)).astype(f),      # (kh, kw, in, out)
        "embed": RNG.standard_normal((50, 16)).astype(f),
        "lstm_k": RNG.standard_normal((16, 48)).astype(f),          # (in, 4H), gates i f c o
        "lstm_r": RNG.standard_normal((12, 48)).astype(f),          # (H, 4H)
        "gru_k": RNG.standard_normal((12, 33)).astype(f),           # (in, 3H), gates z r h
        "gru_r": RNG.standard_normal((11, 33)).astype(f),
        "query": RNG.standard_normal((24, 2, 8)).astype(f),        # MHA (E, heads, head_dim)
        "attention_output": RNG.standard_normal((2, 8, 24)).astype(f),  # (heads, head_dim, E)
    }


def _legacy_h5(path, w):
    """Keras' legacy model.save('m.h5') layout (TF-Keras names with ':0')."""
    layers = {
        "dense": [("dense/kernel:0", w["dense"]), ("dense/bias:0", np.zeros(20, np.float32))],
        "conv": [("conv/kernel:0", w["conv"])],
        "tok_embedding": [("tok_embedding/embeddings:0", w["embed"])],
        "lstm": [("lstm/lstm_cell/kernel:0", w["lstm_k"]),
                 ("lstm/lstm_cell/recurrent_kernel:0", w["lstm_r"]),
                 ("lstm/lstm_cell/bias:0", np.zeros(48, np.float32))],
        "gru": [("gru/gru_cell/kernel:0", w["gru_k"]), ("gru/gru_cell/recurrent_kernel:0", w["gru_r"]),
                ("gru/gru_cell/bias:0", np.zeros((2, 33), np.float32))],
        "mha": [("mha/query/kernel:0", w["query"]), ("mha/query/bias:0", np.zeros((2, 8), np.float32)),
                ("mha/attention_output/kernel:0", w["attention_output"])],
    }
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer, ws in layers.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = np.array([n.encode() for n, _ in ws])
            for n, v in ws:
                g.create_dataset(n, data=v)
        f.create_group("optimizer_weights").create_dataset("adam/dense_kernel_momentum", data=w["dense"])


def _keras3_zip(path, w):
    """Keras 3's .keras zip: config.json + model.weights.h5 with layers/<class>/vars/<i>."""
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"name": "input"}},
        {"class_name": "Embedding", "config": {"name": "tok_embedding"}},
        {"class_name": "LSTM", "config": {"name": "lstm"}},
        {"class_name": "GRU", "config": {"name": "gru"}},
        {"class_name": "Conv2D", "config": {"name": "conv"}},
        {"class_name": "MultiHeadAttention", "config": {"name": "mha"}},
        {"class_name": "Dense", "config": {"name": "dense"}},
        {"class_name": "Bidirectional", "config": {"name": "bi"}},
    ]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        def var_group(path, name, values):
            g = f.create_group(path)
            g.attrs["name"] = name
            for i, v in enumerate(values):
                g.create_dataset(str(i), data=v)
        var_group("layers/dense/vars", "dense", [w["dense"], np.zeros(20, np.float32)])
        var_group("layers/conv2d/vars", "conv", [w["conv"]])
        var_group("layers/embedding/vars", "tok_embedding", [w["embed"]])
        var_group("layers/lstm/vars", "lstm", [])
        var_group("layers/lstm/cell/vars", "lstm_cell", [w["lstm_k"], w["lstm_r"], np.zeros(48, np.float32)])
        var_group("layers/gru/vars", "gru", [])
        var_group("layers/gru/cell/vars", "gru_cell", [w["gru_k"], w["gru_r"], np.zeros((2, 33), np.float32)])
        var_group("layers/multi_head_attention/vars", "mha", [])
        var_group("layers/multi_head_attention/output_dense/vars", "attention_output",
                  [w["attention_output"]])
        var_group("layers/multi_head_attention/query_dense/vars", "query",
                  [w["query"], np.zeros((2, 8), np.float32)])
        # Bidirectional: Keras 3 names both cells 'lstm_cell'; their layers say the direction
        var_group("layers/bidirectional/vars", "bi", [])
        for side in ("backward", "forward"):
            var_group(f"layers/bidirectional/{side}_layer/vars", f"{side}_lstm", [])
            var_group(f"layers/bidirectional/{side}_layer/cell/vars", "lstm_cell",
                      [w["lstm_k"][:, ::-1] if side == "backward" else w["lstm_k"], w["lstm_r"],
                       np.zeros(48, np.float32)])
        var_group("optimizer/vars", "adam", [w["dense"], w["dense"]])
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buf.getvalue())


@pytest.mark.parametrize("layout", ["h5", "keras"])
def test_keras_esds_equal_numpy(tmp_path, keras_weights, layout):
    w = keras_weights
    path = tmp_path / f"model.{layout}"
    (_legacy_h5 if layout == "h5" else _keras3_zip)(path, w)
    a = tailscope.analyze(path)
    d = a.details.set_index("name")
    assert d.loc["dense/kernel", "layer_type"] == "dense" and d.loc["dense/kernel", "N"] == 40
    np.testing.assert_allclose(a.esd("dense/kernel"), gram_evals(w["dense"]), rtol=1e-10)
    assert d.loc["tok_embedding/embeddings", "layer_type"] == "embedding"
    np.testing.assert_allclose(a.esd("tok_embedding/embeddings"), gram_evals(w["embed"]), rtol=1e-10)
    # Conv2D (kh, kw, in, out): 9 slices W[i, j] pooled, halved (conv2d_norm)
    slices = np.sort(np.concatenate([gram_evals(w["conv"][i, j]) for i in range(3) for j in range(3)]))
    assert d.loc["conv/kernel", "rf"] == 9
    np.testing.assert_allclose(a.esd("conv/kernel"), slices / 2, rtol=1e-10)
    # recurrent kernels: gates along the last axis, i f c o (LSTM) and z r h (GRU)
    for stack, key, gates, h in (("lstm/lstm_cell/kernel", "lstm_k", "ifco", 12),
                                 ("lstm/lstm_cell/recurrent_kernel", "lstm_r", "ifco", 12),
                                 ("gru/gru_cell/kernel", "gru_k", "zrh", 11),
                                 ("gru/gru_cell/recurrent_kernel", "gru_r", "zrh", 11)):
        for k, g in enumerate(gates):
            name = f"{stack}[{g}]"
            assert d.loc[name, "layer_type"] == "recurrent"
            np.testing.assert_allclose(a.esd(name), gram_evals(w[key][:, k * h:(k + 1) * h]),
                                       rtol=1e-10)
    # MultiHeadAttention kernels read as (E, heads*head_dim) and (heads*head_dim, E)
    q, o = w["query"].reshape(24, 16), w["attention_output"].reshape(16, 24)
    np.testing.assert_allclose(a.esd("mha/query/kernel"), gram_evals(q), rtol=1e-10)
    np.testing.assert_allclose(a.esd("mha/attention_output/kernel"), gram_evals(o), rtol=1e-10)
    # optimizer state is never read; biases are vectors
    assert not any("momentum" in n or "optimizer" in n for n in a.skipped["name"])
    assert {"gru/gru_cell/bias", "mha/query/bias"} <= set(a.skipped["name"])
    if layout == "keras":
        names = list(d.index)
        fwd, bwd = names.index("bi/forward_lstm/lstm_cell/kernel[i]"), \
            names.index("bi/backward_lstm/lstm_cell/kernel[i]")
        assert names.index("dense/kernel") < fwd < bwd  # config order, then Keras' part order
        np.testing.assert_allclose(a.esd("bi/backward_lstm/lstm_cell/kernel[o]"),
                                   gram_evals(w["lstm_k"][:, ::-1][:, 36:48]), rtol=1e-10)
    assert len(d) == 5 + 14 + (16 if layout == "keras" else 0)
    # heads: Keras kernels are (in, out), so q heads are column blocks, the output's row blocks
    refs = {r.name: r for r in expand(open_source(path), heads=2)}
    np.testing.assert_array_equal(refs["mha/query/kernel[h1]"].load(), q[:, 8:16])
    np.testing.assert_array_equal(refs["mha/attention_output/kernel[h1]"].load(), o[8:16])


def test_h5_that_is_not_keras_fails_in_one_line(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((3, 3)))
    with pytest.raises(SourceError, match="HDF5 file that is not a Keras model") as e:
        open_source(path)
    assert "\n" not in str(e.value)


# --- the command line ---------------------------------------------------------------------------
@pytest.mark.slow  # fresh processes
def test_cli_bad_models_exit_2_with_one_line(tmp_path, onnx_weights):
    bad = []
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save(_onnx_model(onnx_weights), str(folder / "model.onnx"), save_as_external_data=True,
              location="w.data", size_threshold=0)
    (folder / "w.data").unlink()
    bad.append((folder / "model.onnx", "is missing"))
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("x", data=np.ones(3))
    bad.append((tmp_path / "data.h5", "not a Keras model"))
    blob = fetch_wheel_file(SILERO, "silero_vad/data/silero_vad.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(blob[:5000])
    bad.append((tmp_path / "cut.onnx", "not a readable ONNX model"))
    for path, message in bad:
        res = cli("analyze", str(path))
        assert res.returncode == 2, (path, res.stderr)
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Traceback" not in res.stderr


# --- Hugging Face ids ---------------------------------------------------------------------------
def _hf_cache(home, repo="owner/tiny-model", commit="0123456789abcdef0123456789abcdef01234567"):
    """A model laid out as huggingface_hub's cache keeps it."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    w = {"layers.0.weight": RNG.standard_normal((30, 20)).astype(np.float32),
         "layers.1.weight": RNG.standard_normal((20, 20)).astype(np.float32)}
    save_file(w, str(snap / "model.safetensors"))
    (snap / "config.json").write_text("{}")
    return w


def test_hub_id_read_from_the_hf_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    w = _hf_cache(tmp_path)
    src = open_source("owner/tiny-model")
    assert src.format == "safetensors"
    for ref in src:
        np.testing.assert_array_equal(ref.load(), w[ref.name])
    a = tailscope.analyze("owner/tiny-model")
    np.testing.assert_allclose(a.esd("layers.0"), gram_evals(w["layers.0.weight"]), rtol=1e-10)


def test_hub_offline_and_missing_package_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError, match="offline .* local folder") as e:
        open_source("nobody/not-cached")
    assert "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(SourceError, match=r"tailscope\[hub\]"):
        open_source("nobody/not-cached")
    with pytest.raises(SourceError, match="no such file"):
        open_source("nobody/weights.safetensors")  # a missing file name, not a model id


@pytest.mark.slow  # fresh processes
def test_cli_hub_id_offline(tmp_path):
    env = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    _hf_cache(tmp_path)
    res = cli("describe", "owner/tiny-model", env=env)
    assert res.returncode == 0, res.stderr
    assert "layers.1.weight" in res.stdout
    res = cli("describe", "owner/other-model", env=env)
    assert res.returncode == 2 and "offline" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_missing_optional_packages_name_their_extra(tmp_path, monkeypatch, onnx_weights):
    onnx.save(_onnx_model(onnx_weights), str(tmp_path / "m.onnx"))
    _legacy_h5(tmp_path / "m.h5", {k: RNG.standard_normal(s).astype(np.float32) for k, s in (
        ("dense", (40, 20)), ("conv", (3, 3, 10, 14)), ("embed", (50, 16)), ("lstm_k", (16, 48)),
        ("lstm_r", (12, 48)), ("gru_k", (12, 33)), ("gru_r", (11, 33)), ("query", (24, 2, 8)),
        ("attention_output", (2, 8, 24)))})
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(SourceError, match=r"tailscope\[onnx\]"):
        open_source(tmp_path / "m.onnx")
    with pytest.raises(SourceError, match=r"tailscope\[keras\]"):
        open_source(tmp_path / "m.h5")
