"""A folder is one model: one file, the complete shards of one checkpoint, or .npy tensors;
several separate models are an error naming them. An ambiguous layer name is never resolved
silently."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from tailscope import analyze
from tailscope.sources import Source, SourceError, open_source
from tailscope.sources.base import numbered


def _onnx(path, seed):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((40, 24)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.weight"], ["y"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, name="fc.weight")])
    onnx.save(helper.make_model(graph), str(path))
    return w


def test_four_onnx_models_side_by_side_are_a_choice_not_one_model(tmp_path):
    for i, name in enumerate(["resnet", "bert", "gpt", "vit"]):
        _onnx(tmp_path / f"{name}.onnx", i)
    with pytest.raises(SourceError, match=r"4 separate onnx models .*bert\.onnx.*pass one "
                                          r"file's path") as err:
        open_source(tmp_path)
    assert "\n" not in str(err.value)
    res = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "pass one file's path" in res.stderr
    one = analyze(tmp_path / "gpt.onnx")  # the way out the message names
    assert list(one.details["name"]) == ["fc.weight"]


def test_complete_shards_are_one_model_and_a_missing_shard_says_so(tmp_path):
    rng = np.random.default_rng(0)
    w = {f"layers.{i}.weight": rng.standard_normal((30, 20)).astype(np.float32) for i in range(3)}
    save_file({k: w[k] for k in list(w)[:2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: w[k] for k in list(w)[2:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    src = open_source(tmp_path)
    assert [r.name for r in src] == list(w) and len(src.files) == 2
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    save_file({"x": w["layers.0.weight"]}, str(tmp_path / "model-00003-of-00003.safetensors"))
    with pytest.raises(SourceError, match="separate|missing"):
        open_source(tmp_path)


def test_missing_shard_is_named(tmp_path):
    w = np.ones((4, 4), np.float32)
    save_file({"a": w}, str(tmp_path / "model-00001-of-00003.safetensors"))
    save_file({"b": w}, str(tmp_path / "model-00003-of-00003.safetensors"))
    with pytest.raises(SourceError, match="shard 2 is missing"):
        open_source(tmp_path)


def test_unrelated_safetensors_files_are_not_merged(tmp_path):
    w = np.random.default_rng(1).standard_normal((30, 20)).astype(np.float32)
    save_file({"fc.weight": w}, str(tmp_path / "a.safetensors"))
    save_file({"fc.weight": w * 2}, str(tmp_path / "b.safetensors"))
    with pytest.raises(SourceError, match="2 separate safetensors models"):
        open_source(tmp_path)


def test_a_folder_of_npy_tensors_is_one_model(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "fc1.npy", rng.standard_normal((30, 20)))
    np.save(tmp_path / "fc2.npy", rng.standard_normal((20, 12)))
    assert [r.name for r in open_source(tmp_path)] == ["fc1", "fc2"]


def test_ambiguous_layer_names_raise(tmp_path):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((40, 20)), rng.standard_normal((40, 20))
    items = [("fc.weight", a.shape, "float64", lambda: a), ("fc.weight", b.shape, "float64",
                                                            lambda: b)]
    res = analyze(Source(numbered(items, "<memory>"), "test", ("<memory>",)))
    assert len(res.details) == 2
    for accessor in (res.esd, res.fit, res.row, res.key):
        with pytest.raises(KeyError, match="names 2 analysed layers"):
            accessor("fc.weight")
    with pytest.raises(KeyError, match="names 2 analysed layers"):
        res.esd("fc")  # the module name too
    np.testing.assert_allclose(res.esd(1), np.sort(np.linalg.eigvalsh(b.T @ b)), rtol=1e-12)
