"""Every weight tensor of a file ends in exactly one row: analysed, failed (with its reason) or
skipped (with its reason). For each reader a file is written here with the format's own library
(tensors of every kind: matrices, biases, scalars, integers, empty, 5-D, half precision,
quantized, malformed quantization), its tensors are counted with that library, and
``analyze`` (in a subprocess under a 2 GiB address-space cap and a timeout) must give as many
rows, each with a status and, when not analysed, a reason.
"""

import json
import resource
import subprocess
import sys

import numpy as np
import pytest

RNG = np.random.default_rng(2727)
CAP = 2 << 30
ROWS = """
import json, sys
import tailscope
a = tailscope.analyze(sys.argv[1], split=False, min_evals=0)
d, s = a.details, a.skipped
print(json.dumps({"rows": [[n, st, r] for n, st, r in zip(d.name, d.status, d.reason)]
                  + [[n, "skipped", r] for n, r in zip(s.name, s.reason)]}))
"""


def _capped():
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def rows(path) -> list:
    """[name, status, reason] of every row of ``analyze(path)``, computed under the cap."""
    res = subprocess.run([sys.executable, "-c", ROWS, str(path)], capture_output=True, text=True,
                         timeout=120, preexec_fn=_capped)
    assert res.returncode == 0, res.stderr[-1500:]
    return json.loads(res.stdout.strip().splitlines()[-1])["rows"]


def accounts_for(path, count: int) -> list:
    """analysed + failed + skipped rows = ``count``; a row not analysed says why."""
    got = rows(path)
    assert len(got) == count, (count, got)
    assert len({n for n, _, _ in got}) == len(got), got
    for name, status, reason in got:
        assert status in ("success", "failed", "skipped"), (name, status)
        assert status == "success" or reason, (name, status)
    return got


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def tensors():
    """Tensors of every kind a state dict holds."""
    return {"fc.weight": f32(30, 20), "fc.bias": f32(30), "conv.weight": f32(16, 3, 3, 3),
            "conv3d.weight": f32(4, 3, 2, 2, 2), "step": np.array(7, np.int64),
            "ids": RNG.integers(0, 9, (4, 6)), "empty.weight": np.zeros((0, 5), np.float32),
            "half.weight": f32(24, 12).astype(np.float16), "scale": np.float32(2.5),
            "row.weight": f32(1, 40), "rank1.weight": np.ones((25, 25), np.float32)}


def test_safetensors(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors().items()}, str(path))
    with safe_open(str(path), "np") as f:
        count = len(list(f.keys()))
    accounts_for(path, count)


def test_torch_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "m.pt"
    sd = {k: torch.from_numpy(np.array(v)) for k, v in tensors().items()}
    sd["bf16.weight"] = torch.randn(20, 10).to(torch.bfloat16)
    torch.save(sd, path)
    count = sum(isinstance(v, torch.Tensor) for v in torch.load(path, weights_only=True).values())
    accounts_for(path, count)


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_numpy(tmp_path, kind):
    if kind == "npz":
        path = tmp_path / "m.npz"
        np.savez(path, **tensors())
        with np.load(path) as z:
            count = len(z.files)
    else:
        path = tmp_path / "m.npy"
        np.save(path, f32(30, 20))
        count = np.load(path).ndim >= 0  # one array
    accounts_for(path, int(count))


def _onnx_model(path):
    """Gemm, MatMul, Conv (2-D and 3-D), a bidirectional LSTM, a batched MatMul, a weight
    computed by Mul, and DequantizeLinear weights: per axis, blocked (opset 21, int4 and int8),
    a scale that does not fit, a scale that is a graph input, a blocked scale of the wrong
    shape."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    q8 = lambda *s: RNG.integers(-100, 100, s).astype(np.int8)  # noqa: E731
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "gemm.w": f32(20, 16), "gemm.b": f32(20), "mm.w": f32(16, 12), "conv.w": f32(8, 3, 3, 3),
        "conv3.w": f32(4, 3, 2, 2, 2), "lstm.W": f32(2, 24, 12), "lstm.R": f32(2, 24, 6),
        "bmm.w": f32(3, 12, 5), "mul.w": f32(12, 9), "mul.s": f32(9),
        "axis.q": q8(12, 10), "axis.s": f32(10) * 0.01,
        "blk8.q": q8(12, 11), "blk8.s": f32(3, 11) * 0.01, "blk8.z": q8(3, 11) // 20,
        "bad.q": q8(12, 7), "bad.s": f32(5), "nc.q": q8(12, 6),
        "badblk.q": q8(12, 8), "badblk.s": f32(2, 8)}.items()]
    inits += [helper.make_tensor("blk4.q", T.INT4, (12, 9), RNG.integers(-8, 8, 108).tolist()),
              numpy_helper.from_array(f32(12, 3) * 0.01, "blk4.s"),
              helper.make_tensor("blk4.z", T.INT4, (12, 3), RNG.integers(-8, 8, 36).tolist())]
    dq = lambda q, ins, out, **kw: helper.make_node("DequantizeLinear", [q, *ins], [out], **kw)  # noqa: E731
    mm = lambda w, out: helper.make_node("MatMul", ["h2", w], [out], name=out)  # noqa: E731
    nodes = [helper.make_node("Gemm", ["x", "gemm.w", "gemm.b"], ["h1"], transB=1, name="gemm"),
             helper.make_node("MatMul", ["h1", "mm.w"], ["h2"], name="mm"),
             helper.make_node("Conv", ["img", "conv.w"], ["c"], name="conv"),
             helper.make_node("Conv", ["vol", "conv3.w"], ["c3"], name="conv3"),
             helper.make_node("LSTM", ["seq", "lstm.W", "lstm.R"], ["ys"], hidden_size=6,
                              direction="bidirectional", name="lstm"),
             mm("bmm.w", "o_bmm"),
             helper.make_node("Mul", ["mul.w", "mul.s"], ["mw"]), mm("mw", "o_mul"),
             dq("axis.q", ["axis.s"], "aw", axis=1), mm("aw", "o_axis"),
             dq("blk8.q", ["blk8.s", "blk8.z"], "b8", axis=0, block_size=5), mm("b8", "o_blk8"),
             dq("blk4.q", ["blk4.s", "blk4.z"], "b4", axis=1, block_size=4), mm("b4", "o_blk4"),
             dq("bad.q", ["bad.s"], "bw", axis=1), mm("bw", "o_bad"),
             dq("nc.q", ["scale_in"], "ncw"), mm("ncw", "o_nc"),
             dq("badblk.q", ["badblk.s"], "bbw", axis=0, block_size=4), mm("bbw", "o_badblk")]
    outs = ["c", "c3", "ys"] + [n.output[0] for n in nodes if n.output[0].startswith("o_")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, T.FLOAT, None)
                     for n in ("x", "img", "vol", "seq", "scale_in")],
        [helper.make_tensor_value_info(n, T.FLOAT, None) for n in outs], initializer=inits)
    graph.sparse_initializer.append(helper.make_sparse_tensor(  # a sparse MatMul weight
        numpy_helper.from_array(f32(3), "sparse.w"),
        numpy_helper.from_array(np.array([1, 40, 77], np.int64), "sparse.idx"), [12, 8]))
    graph.node.append(mm("sparse.w", "o_sparse"))
    graph.output.append(helper.make_tensor_value_info("o_sparse", T.FLOAT, None))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))


def _onnx_weights(path) -> int:
    """Counted with onnx: every initializer (weights, biases, scales, zero points), an
    LSTM/GRU/RNN weight being one matrix per direction (the spec's first axis)."""
    import onnx

    m = onnx.load(str(path))
    recurrent = {i for n in m.graph.node if n.op_type in ("LSTM", "GRU", "RNN")
                 for i in n.input[1:3]}
    return sum(t.dims[0] if t.name in recurrent else 1 for t in m.graph.initializer) + \
        len(m.graph.sparse_initializer)


def test_onnx_with_quantized_and_malformed_weights(tmp_path):
    pytest.importorskip("onnx")
    path = tmp_path / "m.onnx"
    _onnx_model(path)
    got = {n: (s, r) for n, s, r in accounts_for(path, _onnx_weights(path))}
    for name in ("o_bad.B", "o_nc.B", "o_badblk.B", "o_mul.B", "bmm.w", "sparse.w"):
        assert got[name][0] == "failed", (name, got[name])
    assert "does not fit" in got["o_bad.B"][1] and "not a constant" in got["o_nc.B"][1]
    assert "blocked scale" in got["o_badblk.B"][1] and "Mul" in got["o_mul.B"][1]
    for name in ("o_axis.B", "o_blk8.B", "o_blk4.B", "gemm.w", "mm.w"):
        assert got[name][0] == "success", (name, got[name])
    for name in ("gemm.b", "mul.s", "axis.s", "blk8.s", "blk8.z", "bad.s"):  # rows of their own
        assert got[name][0] == "skipped" and got[name][1], (name, got[name])


def test_keras_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.h5"
    layers = {"dense": [("dense/kernel:0", f32(20, 30)), ("dense/bias:0", f32(30))],
              "conv": [("conv/kernel:0", f32(3, 3, 4, 16)), ("conv/bias:0", f32(16))],
              "emb": [("emb/embeddings:0", f32(50, 12))],
              "lstm": [("lstm/lstm_cell/kernel:0", f32(12, 32)),
                       ("lstm/lstm_cell/recurrent_kernel:0", f32(8, 32)),
                       ("lstm/lstm_cell/bias:0", f32(32))],
              "odd": [("odd/table:0", RNG.integers(0, 5, (6, 6))), ("odd/cube:0", f32(2, 2, 2, 2, 2))]}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer, ws in layers.items():
            g = mw.create_group(layer)
            g.attrs["weight_names"] = np.array([n.encode() for n, _ in ws])
            for n, v in ws:
                g.create_dataset(n, data=v)
    with h5py.File(path, "r") as f:
        found = []
        f["model_weights"].visititems(lambda n, o: found.append(n)
                                      if isinstance(o, h5py.Dataset) else None)
    accounts_for(path, len(found))


def test_keras3_zip(tmp_path):
    """Keras 3's .keras zip (config.json + model.weights.h5, layers/<class>/vars/<i>); counted
    with h5py: every dataset under ``layers/`` (the optimizer's are not weights)."""
    import io
    import json
    import zipfile

    h5py = pytest.importorskip("h5py")
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "Dense", "config": {"name": "dense"}},
        {"class_name": "Conv2D", "config": {"name": "conv"}},
        {"class_name": "LSTM", "config": {"name": "lstm"}},
        {"class_name": "Custom", "config": {"name": "odd"}}]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        def var_group(where, name, values):
            g = f.create_group(where)
            g.attrs["name"] = name
            for i, v in enumerate(values):
                g.create_dataset(str(i), data=v)
        var_group("layers/dense/vars", "dense", [f32(20, 30), f32(30)])
        var_group("layers/conv2d/vars", "conv", [f32(3, 3, 4, 8), f32(8)])
        var_group("layers/lstm/vars", "lstm", [])
        var_group("layers/lstm/cell/vars", "lstm_cell", [f32(12, 32), f32(8, 32), f32(32)])
        var_group("layers/custom/vars", "odd", [RNG.integers(0, 3, (4, 4)), f32(2, 2, 2, 2, 2),
                                                np.float32(1.5)])
        var_group("optimizer/vars", "adam", [f32(20, 30)])
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buf.getvalue())
    with h5py.File(io.BytesIO(buf.getvalue()), "r") as f:
        found = []
        f["layers"].visititems(lambda n, o: found.append(n)
                               if isinstance(o, h5py.Dataset) else None)
    accounts_for(path, len(found))


def test_gguf(tmp_path):
    gguf = pytest.importorskip("gguf")
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for name, a, qt in [("token_embd.weight", f32(100, 64), None),
                        ("blk.0.attn_norm.weight", np.ones(64, np.float32), None),
                        ("blk.0.attn_q.weight", f32(64, 64).astype(np.float16), None),
                        ("blk.0.attn_v.weight", quantize(f32(48, 64), Q.Q8_0), Q.Q8_0),
                        ("blk.0.ffn_up_exps.weight", quantize(f32(3, 32, 64), Q.Q8_0), Q.Q8_0),
                        ("blk.0.odd.weight", f32(2, 2, 2, 32), None),
                        ("output.weight", f32(100, 64), None)]:
        w.add_tensor(name, a, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    count = len(gguf.GGUFReader(str(path)).tensors)
    got = rows(path)
    # an expert stack is one row per expert (its parent listed once, skipped as split)
    parents = {n.split("[")[0] for n, _, _ in got}
    assert len(parents) == count, got
    assert all(s in ("success", "failed", "skipped") and (s == "success" or r) for _, s, r in got)


def test_flax_msgpack(tmp_path):
    serialization = pytest.importorskip("flax.serialization")
    path = tmp_path / "m.msgpack"
    tree = {"params": {"Dense_0": {"kernel": f32(20, 30), "bias": f32(30)},
                       "Conv_0": {"kernel": f32(3, 3, 4, 8)}, "Embed_0": {"embedding": f32(40, 8)},
                       "odd": {"ids": RNG.integers(0, 4, (5, 5)), "cube": f32(2, 2, 2, 2, 2),
                               "half": f32(16, 8).astype(np.float16), "scalar": np.float32(1)}}}
    path.write_bytes(serialization.msgpack_serialize(tree))
    restored = serialization.msgpack_restore(path.read_bytes())

    def leaves(t):
        return sum(leaves(v) for v in t.values()) if isinstance(t, dict) else 1
    accounts_for(path, leaves(restored["params"]))


def test_tflite(tmp_path):
    pytest.importorskip("tflite")
    fb = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools import flatbuffer_utils

    m = fb.ModelT()
    m.version, m.buffers = 3, [fb.BufferT()]
    g = fb.SubGraphT()
    g.tensors, g.operators = [], []

    def tensor(name, shape, data=None, ttype=fb.TensorType.FLOAT32):
        b = fb.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        m.buffers.append(b)
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, len(m.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    x = tensor("x", (1, 20))
    h = tensor("h", (1, 30))
    y = tensor("y", (1, 10))
    fc = fb.OperatorT()
    fc.opcodeIndex, fc.outputs = 0, [h]
    fc.inputs = [x, tensor("fc1/kernel", (30, 20), f32(30, 20)), tensor("fc1/bias", (30,), f32(30))]
    fc2 = fb.OperatorT()
    fc2.opcodeIndex, fc2.outputs = 0, [y]
    fc2.inputs = [h, tensor("fc2/kernel", (10, 30), f32(10, 30)), -1]
    tensor("unused/table", (6, 4), f32(6, 4))  # constants no op takes as its weight
    tensor("unused/ids", (5,), np.arange(5, dtype=np.int32), fb.TensorType.INT32)
    tensor("unused/int4", (4, 4), np.zeros(8, np.uint8), fb.TensorType.INT4)
    g.operators = [fc, fc2]
    g.inputs, g.outputs = [x], [y]
    m.subgraphs = [g]
    oc = fb.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    oc.version = 1
    m.operatorCodes = [oc]
    path = tmp_path / "m.tflite"
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(m)))
    # counted with the schema: every constant (buffer-holding) tensor
    model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    sub = model.subgraphs[0]
    count = sum(model.buffers[t.buffer].data is not None for t in sub.tensors)
    accounts_for(path, count)
