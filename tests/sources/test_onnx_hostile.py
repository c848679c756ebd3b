"""ONNX weights behind DequantizeLinear, and external data, under hostile or unusual input.

Dequantized weights (per tensor, per axis, blocked as opset 21 defines it, int4/uint4/int8/uint8,
with and without zero point) equal what onnxruntime computes running the same graph. A weight
whose quantization cannot be computed is a failed row with its reason (see test_accounting.py).
External data: wrong field types, negative values, a symlink out of the model's folder, a FIFO
or a folder are one line naming the file, checked in a subprocess under a memory cap and a
timeout (a FIFO opened for reading would block).
"""

import os
import resource
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from tailscope.sources import SourceError, open_source  # noqa: E402

RNG = np.random.default_rng(2728)
CAP = 2 << 30
RANGES = {T.INT4: (-8, 8), T.UINT4: (0, 16), T.INT8: (-128, 128), T.UINT8: (0, 256)}


def _dq_model(path, qtype, shape, axis, block, zero, scale_shape=None):
    """x @ DequantizeLinear(q, scale[, zero]) with the dequantized weight also an output."""
    lo, hi = RANGES[qtype]
    if scale_shape is None:
        if block:
            scale_shape = list(shape)
            scale_shape[axis] = -(-shape[axis] // block)
        else:
            scale_shape = [shape[axis]]
    inits = [helper.make_tensor("q", qtype, shape, RNG.integers(lo, hi, shape).ravel().tolist()),
             numpy_helper.from_array(RNG.uniform(0.01, 0.1, scale_shape).astype(np.float32), "s")]
    ins = ["q", "s"]
    if zero:
        inits.append(helper.make_tensor("z", qtype, scale_shape,
                                        RNG.integers(lo, hi, scale_shape).ravel().tolist()))
        ins.append("z")
    kw = {"axis": axis, **({"block_size": block} if block else {})}
    nodes = [helper.make_node("DequantizeLinear", ins, ["w"], **kw),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT,
                                                                         [1, shape[0]])],
                              [helper.make_tensor_value_info("w", T.FLOAT, None),
                               helper.make_tensor_value_info("y", T.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))


def _weight(path):
    """The model's one weight; its scale and zero point are rows of their own (skipped)."""
    ref, *params = open_source(path)
    assert all(r.role == "constant" for r in params), params
    return ref


@pytest.mark.parametrize("qtype", [T.INT4, T.UINT4, T.INT8, T.UINT8])
@pytest.mark.parametrize("axis, block", [(0, 4), (1, 4), (-1, 3), (0, 5), (1, 0), (0, 0)])
@pytest.mark.parametrize("zero", [True, False])
def test_dequantize_linear_equals_onnxruntime(tmp_path, qtype, axis, block, zero):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "q.onnx"
    _dq_model(path, qtype, (10, 7), axis, block, zero)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = sess.run(["w"], {"x": np.ones((1, 10), np.float32)})[0]
    ref = _weight(path)
    assert ref.name == "fc.B" and ref.shape == (7, 10) and ref.dtype == "float32"
    np.testing.assert_array_equal(ref.load(), expected.T)


@pytest.mark.parametrize("axis, block", [(1, 0), (0, 4)])
def test_float16_scale_gives_float16_values_as_onnxruntime(tmp_path, axis, block):
    """DequantizeLinear's output has its scale's type: float16 values, read as float32."""
    ort = pytest.importorskip("onnxruntime")
    q = RNG.integers(-128, 128, (10, 7)).astype(np.int8)
    s = RNG.uniform(0.001, 0.1, [3, 7] if block else [7]).astype(np.float16)
    kw = {"axis": axis, **({"block_size": block} if block else {})}
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], **kw),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT16, [1, 10])],
                              [helper.make_tensor_value_info("w", T.FLOAT16, None),
                               helper.make_tensor_value_info("y", T.FLOAT16, None)],
                              initializer=[numpy_helper.from_array(q, "q"),
                                           numpy_helper.from_array(s, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    path = tmp_path / "h.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = sess.run(["w"], {"x": np.ones((1, 10), np.float16)})[0]
    ref = _weight(path)
    np.testing.assert_array_equal(ref.load(), expected.T.astype(np.float32))


@pytest.mark.parametrize("scale_shape, axis, block, words", [
    ([5], 1, 0, "does not fit"),               # per axis, wrong length
    ([2, 7], 1, 0, "does not fit"),            # a 2-D scale without block_size
    ([2, 7], 0, 4, "blocked scale"),           # ceil(10 / 4) = 3 blocks, not 2
    ([10, 7], 0, 4, "blocked scale"),
    ([3, 7], 5, 4, "axis=5"),                  # an axis the weight does not have
    ([3, 7], 0, -2, "negative"),
])
def test_quantization_that_does_not_fit_is_a_failed_row(tmp_path, scale_shape, axis, block, words):
    import tailscope

    path = tmp_path / "q.onnx"
    _dq_model(path, T.INT8, (10, 7), axis, block, False, scale_shape=scale_shape)
    ref = _weight(path)
    with pytest.raises(SourceError, match=words) as info:
        ref.load()
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    d = tailscope.analyze(path, min_evals=0).details
    assert list(d.status) == ["failed"] and words in d.reason[0]  # the scale: a skipped row


# --- external data ---------------------------------------------------------------------------
W = RNG.standard_normal((12, 8)).astype(np.float32)


def _external(folder, name="m.onnx", dims=None, **fields):
    """A model whose MatMul weight lives in external data with the given fields."""
    t = numpy_helper.from_array(W, "fc.weight")
    t.ClearField("raw_data")
    t.data_location = T.EXTERNAL
    if dims is not None:
        t.ClearField("dims")
        t.dims.extend(dims)
    info = {"location": "m.data", "offset": "0", "length": str(W.nbytes), **fields}
    for k, v in info.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"], name="fc")],
                              "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 12])],
                              [helper.make_tensor_value_info("y", T.FLOAT, None)],
                              initializer=[t])
    path = folder / name
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "model"
    f.mkdir()
    (f / "m.data").write_bytes(W.tobytes())
    return f


def test_external_data_reads(folder):
    (ref,) = open_source(_external(folder))
    np.testing.assert_array_equal(ref.load(), W.T)


def _capped():
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def test_hostile_external_data_is_one_line_naming_the_file(folder, tmp_path):
    """In one capped subprocess (with a timeout: a FIFO opened for reading blocks)."""
    os.mkfifo(folder / "fifo")
    (folder / "sub").mkdir()
    (tmp_path / "outside.data").write_bytes(W.tobytes())
    os.symlink(tmp_path / "outside.data", folder / "link")
    os.symlink("loop", folder / "loop")
    cases = [
        (_external(folder, "neg_offset.onnx", offset="-48"), "offset '-48' is not a whole"),
        (_external(folder, "float_offset.onnx", offset="1.5"), "offset '1.5' is not a whole"),
        (_external(folder, "text_length.onnx", length="abc"), "length 'abc' is not a whole"),
        (_external(folder, "neg_length.onnx", length="-1"), "length '-1' is not a whole"),
        (_external(folder, "short_length.onnx", length="8"), "smaller than its 384 bytes"),
        (_external(folder, "neg_dims.onnx", dims=[-12, -8]), "negative dimension"),
        (_external(folder, "huge_dims.onnx", dims=[2 ** 40, 2 ** 40]), "smaller than its"),
        (_external(folder, "far_offset.onnx", offset=str(2 ** 62)), "shorter than"),
        (_external(folder, "fifo.onnx", location="fifo"), "not a regular file (a pipe)"),
        (_external(folder, "dir.onnx", location="sub"), "is a folder"),
        (_external(folder, "link.onnx", location="link"), "outside the model's folder"),
        (_external(folder, "dotdot.onnx", location="../outside.data"), "outside the model's"),
        (_external(folder, "abs.onnx", location=str(tmp_path / "outside.data")), "outside"),
        (_external(folder, "loop.onnx", location="loop"), "cannot be opened"),
        (_external(folder, "none.onnx", location="nope"), "is missing"),
    ]
    script = ("import sys\nfrom tailscope.sources import SourceError, open_source\n"
              "for p in sys.argv[1:]:\n"
              "    try:\n"
              "        [r.load() for r in open_source(p)]\n        print('READ', p)\n"
              "    except SourceError as e:\n        print('ERR', str(e).replace('\\n', '|'))\n")
    res = subprocess.run([sys.executable, "-c", script, *(str(p) for p, _ in cases)],
                         capture_output=True, text=True, timeout=60, preexec_fn=_capped)
    assert res.returncode == 0, res.stderr[-800:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(cases), res.stdout
    for line, (path, words) in zip(lines, cases):
        assert line.startswith(f"ERR {path}: ") and "|" not in line, line
        assert words in line and "internal error" not in line and "invalid literal" not in line


def test_hostile_external_data_through_the_cli(folder):
    path = _external(folder, offset="-48")
    res = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(path)],
                         capture_output=True, text=True, timeout=60, preexec_fn=_capped)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert str(path) in lines[0] and "offset" in lines[0]


def _damaged(folder, name, damage, through_cast):
    t = numpy_helper.from_array(W, "fc.weight")
    damage(t)
    nodes = [helper.make_node("MatMul", ["x", "wc" if through_cast else "fc.weight"], ["y"],
                              name="fc")]
    if through_cast:  # a weight folded when the model is opened
        nodes.insert(0, helper.make_node("Cast", ["fc.weight"], ["wc"], to=T.FLOAT))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 12])],
                              [helper.make_tensor_value_info("y", T.FLOAT, None)],
                              initializer=[t])
    path = folder / f"{name}{'_cast' if through_cast else ''}.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def _short(t):
    t.raw_data = t.raw_data[:10]


def _huge(t):
    t.ClearField("dims")
    t.dims.extend([2 ** 40, 2 ** 40])


def _undefined_type(t):
    t.data_type = 99


def _too_few(t):
    t.ClearField("raw_data")
    t.float_data.extend([1.0] * 5)


@pytest.mark.parametrize("through_cast", [False, True])
def test_damaged_inline_tensors_are_one_line_naming_file_and_tensor(tmp_path, through_cast):
    """Values that do not fit their shape or type: one line naming the file and the tensor, when
    the model is opened (a folded weight) or when the tensor is read (a failed row)."""
    cases = [_damaged(tmp_path, f.__name__, f, through_cast)
             for f in (_short, _huge, _undefined_type, _too_few)]
    script = ("import sys\nfrom tailscope.sources import SourceError, open_source\n"
              "for p in sys.argv[1:]:\n"
              "    try:\n"
              "        [r.load() for r in open_source(p) if r.is_float and max(r.shape) < 1e6]\n"
              "        print('READ', p)\n"
              "    except SourceError as e:\n        print('ERR', str(e).replace('\\n', '|'))\n")
    res = subprocess.run([sys.executable, "-c", script, *map(str, cases)], capture_output=True,
                         text=True, timeout=60, preexec_fn=_capped)
    assert res.returncode == 0, res.stderr[-800:]
    lines = res.stdout.strip().splitlines()
    for line, path in zip(lines, cases):
        if line.startswith("READ"):  # listed, not read: an undefined type or absurd shape
            assert not through_cast and ("undefined" in line or "huge" in line), line
            continue
        assert line.startswith(f"ERR {path}: tensor 'fc.weight' cannot be read"), line
        assert "|" not in line
