"""Quantized ONNX: float models written with onnx's helper, quantized by onnxruntime's own tools
(quantize_dynamic: MatMulInteger, ConvInteger, DynamicQuantizeLSTM; quantize_static in the
QOperator format: QLinearMatMul, QLinearConv; per tensor and per channel). Each weight read equals
(q - zero point) * scale computed here from the stored initializers (found by onnxruntime's
names), and the alphas equal those of the same arrays read from safetensors."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

import tailscope  # noqa: E402
from tailscope.sources import SourceError, open_source  # noqa: E402
from tailscope.sources.safetensors import write_safetensors  # noqa: E402

RNG = np.random.default_rng(1515)
H = 16


def _float_model(path, lstm: bool):
    """x[1,40] -> MatMul fc1 (40x64) -> MatMul fc2 (64x48) [-> LSTM]; img -> Conv (24,3,3,3)."""
    w = {"fc1.weight": RNG.standard_normal((40, 64)).astype(np.float32),
         "fc2.weight": RNG.standard_normal((64, 48)).astype(np.float32),
         "conv.weight": RNG.standard_normal((24, 3, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h1"], name="fc1"),
             helper.make_node("MatMul", ["h1", "fc2.weight"], ["h2"], name="fc2"),
             helper.make_node("Conv", ["img", "conv.weight"], ["c"], name="conv")]
    outs = [helper.make_tensor_value_info("h2", TensorProto.FLOAT, [1, 48]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 24, 6, 6])]
    if lstm:  # and an embedding table, which dynamic quantization turns into int8 Gather + DQ
        w["embed.weight"] = RNG.standard_normal((90, 20)).astype(np.float32)
        nodes.append(helper.make_node("Gather", ["embed.weight", "ids"], ["e"], name="embed"))
        outs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 5, 20]))
    if lstm:
        w["lstm.W"] = RNG.standard_normal((2, 4 * H, 48)).astype(np.float32)
        w["lstm.R"] = RNG.standard_normal((2, 4 * H, H)).astype(np.float32)
        w["axes"] = np.array([0], dtype=np.int64)
        nodes += [helper.make_node("Unsqueeze", ["h2", "axes"], ["seq"]),
                  helper.make_node("LSTM", ["seq", "lstm.W", "lstm.R"], ["y"], name="lstm",
                                   hidden_size=H, direction="bidirectional")]
        outs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40]),
                     helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])],
        outs, initializer=[numpy_helper.from_array(v, k) for k, v in w.items()])
    if lstm:
        graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class _Calibration(CalibrationDataReader):
    def __init__(self):
        self.batches = iter([{"x": RNG.standard_normal((1, 40)).astype(np.float32),
                              "img": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


def _inits(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _deq(q, scale, zero, axis):
    """(q - zero) * scale in float32, written out here: scale/zero one value or one per slice."""
    shape = [1] * q.ndim
    shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape if scale.size > 1 else ())
    z = zero.astype(np.float32).reshape(shape if zero.size > 1 else ())
    return (q.astype(np.float32) - z) * s


def _check(path, expected, tmp_path, ops):
    used = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= used, used
    src = open_source(path)
    refs = {r.name: r for r in src}
    assert set(expected) <= set(refs), sorted(refs)
    for name, a in expected.items():
        assert refs[name].shape == a.shape, name
        np.testing.assert_array_equal(refs[name].load(), a)
    st = tmp_path / "same.safetensors"
    write_safetensors(st, expected)
    ours = tailscope.analyze(path).details.set_index("name")
    other = tailscope.analyze(st).details.set_index("name")
    compared = 0
    for name in other.index:
        a, b = ours.loc[name], other.loc[name]
        assert (a.N, a.M, a.rf, a.status) == (b.N, b.M, b.rf, b.status), name
        if b.status == "success":
            assert a.alpha == pytest.approx(b.alpha, rel=1e-12, abs=1e-12), name
            compared += 1
    assert compared >= 3


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_quantization_integer_ops(tmp_path, per_channel):
    fp, qp = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _float_model(fp, lstm=True)
    quantize_dynamic(str(fp), str(qp), per_channel=per_channel, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Conv", "LSTM", "Gather"])
    t = _inits(qp)
    exp = {}
    for name in ("fc1.weight", "fc2.weight"):  # B [K, N]: per column, read as (N, K)
        exp[name] = _deq(t[f"{name}_quantized"], t[f"{name}_scale"], t[f"{name}_zero_point"], 1).T
    exp["conv.weight"] = _deq(t["conv.weight_quantized"], t["conv.weight_scale"],
                              t["conv.weight_zero_point"], 0)
    exp["embed.weight"] = _deq(t["embed.weight_quantized"], t["embed.weight_scale"],
                               t["embed.weight_zero_point"], 1)
    q, s, z = t["lstm.W_quantized"], t["lstm.W_scale"], t["lstm.W_zero_point"]
    for d, suffix in ((0, ""), (1, "_reverse")):  # [dirs, in, 4H] -> per direction (4H, in)
        sd = s[d] if s.ndim and s.shape[0] == 2 else s
        zd = z[d] if z.ndim and z.shape[0] == 2 else z
        exp[f"lstm_quant.W{suffix}[{'iofc'[0]}]"] = _deq(q[d], sd, zd, 1).T[:H]
    # the gate split is checked through the first gate of each direction
    _check_lstm_and_rest(qp, exp, tmp_path, {"MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM",
                                             "Gather", "DequantizeLinear"})


def _check_lstm_and_rest(path, exp, tmp_path, ops):
    from tailscope.sources.split import expand

    refs = {r.name: r for r in expand(open_source(path))}
    for name in [n for n in exp if "[" in n]:
        np.testing.assert_array_equal(refs[name].load(), exp.pop(name))
    assert refs["lstm_quant.R"].role == "recurrent" and refs["lstm_quant.R"].split_into
    _check(path, exp, tmp_path, ops)


@pytest.mark.parametrize("per_channel", [False, True])
def test_static_quantization_qlinear_ops(tmp_path, per_channel):
    fp, qp = tmp_path / "f.onnx", tmp_path / "q.onnx"
    _float_model(fp, lstm=False)
    quantize_static(str(fp), str(qp), _Calibration(), quant_format=QuantFormat.QOperator,
                    per_channel=per_channel, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)
    t = _inits(qp)
    exp = {n: _deq(t[f"{n}_quantized"], t[f"{n}_scale"], t[f"{n}_zero_point"], 1).T
           for n in ("fc1.weight", "fc2.weight")}
    exp["conv.weight"] = _deq(t["conv.weight_quantized"], t["conv.weight_scale"],
                              t["conv.weight_zero_point"], 0)
    _check(qp, exp, tmp_path, {"QLinearMatMul", "QLinearConv"})


def test_integer_weight_without_a_scale_fails_that_layer_only(tmp_path):
    """A MatMulInteger whose output is used raw: its scale is unknown, so that layer fails with a
    reason (never an undequantized number) and the float layer beside it is analysed."""
    q = RNG.integers(-100, 100, (30, 20), dtype=np.int8)
    f = RNG.standard_normal((20, 12)).astype(np.float32)
    nodes = [helper.make_node("MatMulInteger", ["x", "wq"], ["y"], name="mmi"),
             helper.make_node("Cast", ["y"], ["yf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["yf", "fc.weight"], ["z"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 30])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(q, "wq"),
                                           numpy_helper.from_array(f, "fc.weight")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    d = tailscope.analyze(path).details.set_index("name")
    assert d.loc["wq", "status"] == "failed" and "scale" in d.loc["wq", "reason"]
    assert np.isnan(d.loc["wq", "alpha"])
    assert d.loc["fc.weight", "status"] in ("success", "failed")  # analysed, not skipped
    with pytest.raises(SourceError, match="scale"):
        {r.name: r for r in open_source(path)}["wq"].load()


@pytest.mark.parametrize("per_channel", [False, True])
def test_real_model_quantized_by_onnxruntime(tmp_path, per_channel):
    """Silero VAD's trained ONNX model (from its wheel), quantized by onnxruntime: its conv weights
    become ConvInteger inputs and keep their float names."""
    from tailscope.datasets import fetch_wheel_file

    fp = fetch_wheel_file("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx")
    qp = tmp_path / "q.onnx"
    quantize_dynamic(str(fp), str(qp), per_channel=per_channel, weight_type=QuantType.QInt8)
    t = _inits(qp)
    exp = {n.removesuffix("_quantized"): _deq(a, t[n.replace("_quantized", "_scale")],
                                             t[n.replace("_quantized", "_zero_point")], 0)
           for n, a in t.items() if n.endswith("_quantized") and a.ndim == 3}
    assert {"model.encoder.0.reparam_conv.weight", "model.encoder.3.reparam_conv.weight"} <= set(exp)
    _check(qp, exp, tmp_path, {"ConvInteger"})
