"""TFLite through the ``tflite`` package. The test models are written here by LiteRT's own tools
(``ai-edge-litert``, TensorFlow Lite's runtime: its schema object API and flatbuffer writer), the
int8 model by TensorFlow Lite's own post-training quantizer (its calibration wrapper, per-channel
int8 weights); no TensorFlow. Every weight read equals the values LiteRT's interpreter reads from
the same file (dequantized here from its int8 values, scales and zero points), and the alphas
equal those of the same arrays read from safetensors."""

import numpy as np
import pytest

pytest.importorskip("tflite")
litert = pytest.importorskip("ai_edge_litert")
from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration  # noqa: E402
from ai_edge_litert import schema_py_generated as fb  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402

import tailscope  # noqa: E402
from tailscope.sources import SourceError, open_source  # noqa: E402
from tailscope.sources.safetensors import write_safetensors  # noqa: E402

RNG = np.random.default_rng(1516)
OPTS = fb.BuiltinOptions


def _float_model(w: dict) -> bytes:
    """input (1,8,8,3) -> CONV_2D -> RESHAPE -> FULLY_CONNECTED x2; a GATHER of an embedding
    table and a DEQUANTIZE'd float16 FULLY_CONNECTED on a second input."""
    m = fb.ModelT()
    m.version, m.description, m.buffers = 3, "tailscope test", [fb.BufferT()]
    g = fb.SubGraphT()
    g.tensors, g.operators, g.name = [], [], "main"
    codes: dict[int, int] = {}

    def tensor(name, shape, ttype, data=None):
        b = fb.BufferT()
        if data is not None:
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        m.buffers.append(b)
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, len(m.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    def const(name, a):
        types = {np.float32: fb.TensorType.FLOAT32, np.float16: fb.TensorType.FLOAT16,
                 np.int32: fb.TensorType.INT32}
        return tensor(name, a.shape, types[a.dtype.type], a)

    def op(code, ins, outs, kind=0, opts=None):
        codes.setdefault(code, len(codes))
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes[code], ins, outs
        o.builtinOptionsType, o.builtinOptions = kind, opts
        g.operators.append(o)

    F = fb.TensorType.FLOAT32
    x, ids, v = tensor("input", (1, 8, 8, 3), F), tensor("ids", (1, 4), fb.TensorType.INT32), \
        tensor("v", (1, 32), F)
    conv = fb.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = fb.Padding.VALID, 1, 1
    c = tensor("conv/out", (1, 6, 6, 16), F)
    op(fb.BuiltinOperator.CONV_2D, [x, const("conv/filter", w["conv"]),
                                    const("conv/bias", np.zeros(16, np.float32))], [c],
       OPTS.Conv2DOptions, conv)
    r = tensor("flat", (1, 576), F)
    reshape = fb.ReshapeOptionsT()
    reshape.newShape = [1, 576]
    op(fb.BuiltinOperator.RESHAPE, [c, const("shape", np.array([1, 576], np.int32))], [r],
       OPTS.ReshapeOptions, reshape)
    h = tensor("dense/out", (1, 64), F)
    op(fb.BuiltinOperator.FULLY_CONNECTED, [r, const("dense/kernel", w["fc1"]),
                                            const("dense/bias", np.zeros(64, np.float32))], [h],
       OPTS.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    y = tensor("output", (1, 40), F)
    op(fb.BuiltinOperator.FULLY_CONNECTED, [h, const("dense_1/kernel", w["fc2"]),
                                            const("dense_1/bias", np.zeros(40, np.float32))], [y],
       OPTS.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    e = tensor("embed/out", (1, 4, 24), F)
    op(fb.BuiltinOperator.GATHER, [const("embed/table", w["embed"]), ids], [e],
       OPTS.GatherOptions, fb.GatherOptionsT())
    if "fp16" in w:  # a float16 weight behind DEQUANTIZE (TFLite's float16 quantization)
        deq = tensor("proj/kernel_dequantized", w["fp16"].shape, F)
        op(fb.BuiltinOperator.DEQUANTIZE, [const("proj/kernel", w["fp16"])], [deq])
        p = tensor("proj/out", (1, 20), F)
        op(fb.BuiltinOperator.FULLY_CONNECTED, [v, deq, -1], [p],
           OPTS.FullyConnectedOptions, fb.FullyConnectedOptionsT())
        g.outputs = [y, e, p]
    else:
        g.outputs = [y, e]
    g.inputs = [x, ids, v]
    m.subgraphs = [g]
    m.operatorCodes = []
    for code in sorted(codes, key=codes.get):
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        m.operatorCodes.append(oc)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _weights(fp16: bool):
    w = {"conv": RNG.standard_normal((16, 3, 3, 3)).astype(np.float32),  # OHWI
         "fc1": RNG.standard_normal((64, 576)).astype(np.float32),
         "fc2": RNG.standard_normal((40, 64)).astype(np.float32),
         "embed": RNG.standard_normal((50, 24)).astype(np.float32)}
    if fp16:
        w["fp16"] = RNG.standard_normal((20, 32)).astype(np.float16)
    return w


def _interpreter_values(blob: bytes) -> dict:
    """name -> the constant's values as LiteRT's interpreter reads them, int8 ones dequantized
    here with the scales and zero points it reports, per its quantized dimension."""
    it = Interpreter(model_content=blob)
    it.allocate_tensors()
    out = {}
    for d in it.get_tensor_details():
        try:
            a = it.get_tensor(d["index"])
        except ValueError:  # activations
            continue
        q = d["quantization_parameters"]
        if a.dtype == np.int8 and q["scales"].size:
            shape = [1] * a.ndim
            shape[q["quantized_dimension"]] = -1
            s = q["scales"].astype(np.float32).reshape(shape if q["scales"].size > 1 else ())
            z = q["zero_points"].astype(np.float32).reshape(
                shape if q["zero_points"].size > 1 else ())
            a = (a.astype(np.float32) - z) * s
        out[d["name"]] = np.array(a)
    return out


def _torch_layout(name, a):
    return a.transpose(0, 3, 1, 2) if name == "conv/filter" else a


def _check_against_safetensors(path, expected, tmp_path):
    st = tmp_path / "same.safetensors"
    write_safetensors(st, expected)
    ours = tailscope.analyze(path).details.set_index("name")
    other = tailscope.analyze(st).details.set_index("name")
    assert set(ours.index) == set(other.index)
    for name in other.index:
        a, b = ours.loc[name], other.loc[name]
        assert (a.layer_type, a.N, a.M, a.rf) == (b.layer_type, b.N, b.M, b.rf), name
        if b.status == "success":
            assert a.alpha == pytest.approx(b.alpha, rel=1e-12, abs=1e-12), name
    assert ours.loc["conv/filter", "layer_type"] == "conv2d"
    assert ours.loc["embed/table", "layer_type"] == "embedding"
    assert (ours.status == "success").sum() >= 3


def test_float_model_equals_the_interpreters_values(tmp_path):
    w = _weights(fp16=True)
    blob = _float_model(w)
    path = tmp_path / "float.tflite"
    path.write_bytes(blob)
    seen = _interpreter_values(blob)
    src = open_source(path)
    assert src.format == "tflite"
    refs = {r.name: r for r in src if r.role != "constant"}
    assert list(refs) == ["conv/filter", "dense/kernel", "dense_1/kernel", "embed/table",
                          "proj/kernel"]
    # every other constant is a row of its own, after the weights (skipped)
    assert [r.name for r in src if r.role == "constant"] == ["conv/bias", "shape", "dense/bias",
                                                              "dense_1/bias"]
    for name, ref in refs.items():
        if name == "proj/kernel":  # the interpreter keeps float16 constants as they are
            np.testing.assert_array_equal(ref.load(), w["fp16"])
            assert ref.dtype == "float16"
            continue
        expected = _torch_layout(name, seen[name])
        assert ref.shape == expected.shape and ref.dtype == "float32"
        np.testing.assert_array_equal(ref.load(), expected)
    assert refs["conv/filter"].shape == (16, 3, 3, 3)
    expected = {n: _torch_layout(n, seen[n]) for n in refs if n != "proj/kernel"}
    expected["proj/kernel"] = w["fp16"]
    _check_against_safetensors(path, expected, tmp_path)


def test_int8_model_quantized_by_tflite_is_dequantized(tmp_path):
    blob = _float_model(_weights(fp16=False))
    cal = calibration.CalibrationWrapper(blob, [], [])
    cal.Prepare()
    for _ in range(4):
        cal.FeedTensor([RNG.standard_normal((1, 8, 8, 3)).astype(np.float32),
                        RNG.integers(0, 50, (1, 4)).astype(np.int32),
                        RNG.standard_normal((1, 32)).astype(np.float32)])
    quantized = bytes(cal.QuantizeModel(np.dtype(np.float32).num, np.dtype(np.float32).num, True,
                                        np.dtype(np.int8).num, np.dtype(np.int32).num, False,
                                        False))
    path = tmp_path / "int8.tflite"
    path.write_bytes(quantized)
    seen = _interpreter_values(quantized)
    refs = {r.name: r for r in open_source(path)}
    assert refs["dense/kernel"].dtype == "float32 (int8)"  # quantized by TFLite, per channel
    expected = {}
    for name, ref in refs.items():
        e = _torch_layout(name, seen[name])
        assert ref.shape == e.shape, name
        np.testing.assert_array_equal(ref.load(), e)
        expected[name] = e
    _check_against_safetensors(path, expected, tmp_path)


def test_damaged_tflite_fails_in_one_line(tmp_path):
    blob = _float_model(_weights(fp16=False))
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(SourceError, match="TFLite") as info:
        src = open_source(cut)
        for r in src:
            r.load()
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"nothing like a flatbuffer")
    with pytest.raises(SourceError, match="TFLite"):
        open_source(junk)


def test_corrupted_bytes_fail_in_one_line_or_read(tmp_path):
    """Seeded byte flips anywhere in the flatbuffer: a one-line SourceError, never another error."""
    blob = _float_model(_weights(fp16=True))
    rng = np.random.default_rng(3)
    path = tmp_path / "bad.tflite"
    for _ in range(150):
        bad = bytearray(blob)
        for at in rng.integers(0, len(bad), rng.choice([1, 3, 10])):
            bad[at] = rng.integers(0, 256)
        path.write_bytes(bytes(bad))
        try:
            for ref in open_source(path):
                ref.load()
        except SourceError as exc:
            assert "\n" not in str(exc)


# --- real trained models: MediaPipe's TFLite files, shipped in its wheel ------------------------
MEDIAPIPE = "mediapipe==0.10.14"
MP_FILES = ["face_detection/face_detection_short_range.tflite",  # float16 weights + DEQUANTIZE
            "face_detection/face_detection_full_range_sparse.tflite",  # sparse weights + DENSIFY
            "iris_landmark/iris_landmark.tflite"]  # float32


def _reference_values(path) -> dict:
    """name -> each constant as LiteRT's interpreter holds it; a sparse constant as its DENSIFY
    op's output after a run (no delegate, all tensors kept), under the sparse tensor's name."""
    from ai_edge_litert.interpreter import OpResolverType

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
    details = it.get_tensor_details()
    out = {d["name"]: np.array(it.get_tensor(d["index"])) for d in details}
    for op in it._get_ops_details():  # noqa: SLF001 - LiteRT's documented debugging view
        if op["op_name"] == "DENSIFY":
            out[details[op["inputs"][0]]["name"]] = np.array(it.get_tensor(op["outputs"][0]))
    return out


@pytest.mark.parametrize("member", MP_FILES, ids=lambda m: m.split("/")[-1])
def test_mediapipe_models_equal_litert_and_safetensors(member, tmp_path):
    from tailscope.datasets import fetch_wheel_file

    path = fetch_wheel_file(MEDIAPIPE, f"mediapipe/modules/{member}")
    seen = _reference_values(path)
    src = open_source(path)
    expected = {}
    for ref in src:
        v = seen[ref.name]
        if v.ndim == 4:  # TFLite OHWI conv filters / (1, kh, kw, out) depthwise -> PyTorch's
            v = v.transpose(3, 0, 1, 2) if v.shape[0] == 1 and ref.shape[1] == 1 else \
                v.transpose(0, 3, 1, 2)
        assert ref.shape == v.shape, ref.name
        np.testing.assert_array_equal(ref.load(), v)
        expected[ref.name] = v
    assert len(expected) >= 30
    st = tmp_path / "same.safetensors"
    write_safetensors(st, expected)
    ours = tailscope.analyze(path).details.set_index("name")
    other = tailscope.analyze(st).details.set_index("name")
    assert set(ours.index) == set(other.index) and (ours.status == "success").sum() >= 10
    for name in other.index:
        a, b = ours.loc[name], other.loc[name]
        assert (a.N, a.M, a.rf, a.status) == (b.N, b.M, b.rf, b.status), name
        if b.status == "success":
            assert a.alpha == pytest.approx(b.alpha, rel=1e-12, abs=1e-12), name
