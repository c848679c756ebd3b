"""The reader registry: formats declared once, messages generated from them; the safetensors
writer; read_array. (The package's imports are checked with the whole house in
tests/test_architecture.py.)"""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tailscope.sources import READERS, SourceError, open_source
from tailscope.sources.hub import is_repo_id
from tailscope.sources.numpy import read_array
from tailscope.sources.registry import NO_WEIGHTS, UNKNOWN, recognise
from tailscope.sources.safetensors import write_safetensors

RNG = np.random.default_rng(7)


def test_readers_in_folder_preference_order_and_messages_list_them():
    assert [r.name for r in READERS] == ["safetensors", "torch", "numpy", "onnx", "keras",
                                       "gguf", "tflite", "flax", "tensorflow"]
    for r in READERS:
        assert r.phrase in UNKNOWN and all(s.startswith(".") for s in r.suffixes)
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.npz", "*.npy", "*.onnx",
                    "*.keras", "*.h5", "*.gguf", "*.tflite", "*.msgpack", "*.hdf5", "*.ckpt", "*.pth.tar",
                    "saved_model.pb", "*.index"):
        assert pattern in NO_WEIGHTS
    assert {r.extra for r in READERS} == {"", "torch", "onnx", "keras", "gguf", "tflite", "tf"}


def test_model_ids_and_file_names():
    assert is_repo_id("owner/model")
    for suffix in [s for r in READERS for s in r.suffixes] + [".json", ".csv"]:
        assert not is_repo_id(f"owner/model{suffix}")


def test_zip_archives_recognised_by_their_members(tmp_path):
    npz = tmp_path / "a.npz"
    np.savez(npz, w=np.ones((2, 2)))
    assert recognise(npz)[1] == "npz"
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(SourceError, match="zip archive that is neither"):
        open_source(other)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(SourceError, match="damaged"):
        open_source(damaged)
    onnx_named = tmp_path / "model.onnx"  # a zip is judged by its members, never by its name
    onnx_named.write_bytes(other.read_bytes())
    with pytest.raises(SourceError, match="zip archive that is neither"):
        open_source(onnx_named)


def test_a_damaged_onnx_file_gets_the_onnx_readers_message(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"this is not protobuf at all")
    assert recognise(bad)[0].name == "onnx"
    text = tmp_path / "m.txt"
    text.write_bytes(b"this is not protobuf at all")
    with pytest.raises(SourceError, match="unknown format"):
        open_source(text)


# --- the safetensors writer ----------------------------------------------------------------------
def test_write_safetensors_round_trips_every_dtype_bit_equal(tmp_path):
    tensors = {
        "f64": RNG.standard_normal((3, 4)),
        "f32": RNG.standard_normal((5,)).astype(np.float32),
        "f16": RNG.standard_normal((2, 3, 2)).astype(np.float16),
        "i8": RNG.integers(-128, 127, (7,), dtype=np.int8),
        "i16": RNG.integers(-1000, 1000, (2, 2), dtype=np.int16),
        "i32": RNG.integers(-10**6, 10**6, (3,), dtype=np.int32),
        "i64": RNG.integers(-10**12, 10**12, (4, 1), dtype=np.int64),
        "u8": RNG.integers(0, 255, (6,), dtype=np.uint8),
        "bool": RNG.random((3, 3)) > 0.5,
        "big_endian": RNG.standard_normal((2, 2)).astype(">f4"),
        "strided": RNG.standard_normal((4, 6)).astype(np.float32)[:, ::2],
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = tmp_path / "w.safetensors"
    write_safetensors(path, tensors)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8:9] == b"{"
    src = open_source(path)
    assert src.format == "safetensors"
    assert sorted(r.name for r in src) == sorted(tensors)
    for ref in src:
        want = np.ascontiguousarray(tensors[ref.name]).astype(tensors[ref.name].dtype.newbyteorder("="))
        got = ref.load()
        assert got.dtype == want.dtype and got.shape == want.shape and ref.dtype == want.dtype.name
        assert got.tobytes() == want.tobytes()
    # the safetensors package reads it too
    from safetensors.numpy import load_file

    loaded = load_file(str(path))
    np.testing.assert_array_equal(loaded["f16"], tensors["f16"])


def test_write_safetensors_refuses_an_unsupported_dtype_naming_the_tensor(tmp_path):
    with pytest.raises(ValueError, match="phase.*complex64"):
        write_safetensors(tmp_path / "c.safetensors",
                          {"ok": np.ones(2, np.float32), "phase": np.ones(2, np.complex64)})


# --- read_array ----------------------------------------------------------------------------------
def test_read_array_npy_sparse_npz_and_one_array_npz(tmp_path):
    a = RNG.standard_normal((5, 4))
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npy"), a)
    np.savez(tmp_path / "one.npz", x=a)
    np.testing.assert_array_equal(read_array(str(tmp_path / "one.npz")), a)
    m = sp.random(20, 10, density=0.2, format="csr", random_state=1)
    sp.save_npz(tmp_path / "s.npz", m)
    got = read_array(tmp_path / "s.npz")
    assert sp.issparse(got) and (got != m).nnz == 0


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("text", "not a numpy .npy or .npz"),
    ("objects", "Python objects"),
    ("two", "an .npz with 2 arrays"),
    ("damaged", "damaged"),
])
def test_read_array_refuses_in_one_line(tmp_path, case, message):
    path = tmp_path / f"{case}.npz"
    if case == "text":
        path.write_text("1\n2\n")
    elif case == "objects":
        path = tmp_path / "objects.npy"
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "two":
        np.savez(path, a=np.ones(2), b=np.ones(3))
    elif case == "damaged":
        np.save(tmp_path / "d.npy", np.ones((100, 100)))
        path = tmp_path / "d.npy"
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SourceError, match=message) as e:
        read_array(path)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


# --- every reader recognises its own files; every folder pattern is reachable ---------------------
def _safetensors(path):
    write_safetensors(path, {"a.weight": RNG.standard_normal((12, 8)).astype(np.float32)})


def _torch(path, legacy=False):
    import torch

    torch.save({"a.weight": torch.randn(12, 8)}, str(path),
               _use_new_zipfile_serialization=not legacy)


def _torchscript(path):
    import torch

    torch.jit.save(torch.jit.script(torch.nn.Linear(8, 12)), str(path))


def _npz(path):
    with open(path, "wb") as f:  # a file object: np.savez would add .npz to the name
        np.savez(f, w=RNG.standard_normal((12, 8)))


def _npy(path):
    with open(path, "wb") as f:
        np.save(f, RNG.standard_normal((12, 8)))


def _onnx(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(RNG.standard_normal((8, 12)).astype(np.float32), "fc.weight")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc.weight"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    onnx.save(helper.make_model(graph), str(path))


def _h5(path):
    import h5py

    with h5py.File(path, "w") as f:
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"dense"])
        g = mw.create_group("dense")
        g.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        g.create_dataset("dense/kernel:0", data=RNG.standard_normal((8, 12)).astype(np.float32))


def _keras(path):
    import io
    import json

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "dense"
        g.create_dataset("0", data=RNG.standard_normal((8, 12)).astype(np.float32))
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "dense"}}]}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buf.getvalue())


def _gguf(path):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.ffn_up.weight", RNG.standard_normal((12, 8)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tflite(path):
    """One FULLY_CONNECTED op, written by LiteRT's schema object API and flatbuffer writer."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    m, g = fb.ModelT(), fb.SubGraphT()
    m.version, m.buffers, g.tensors = 3, [fb.BufferT()], []
    for name, shape, data in (("x", [1, 8], None), ("fc/kernel", [12, 8],
                                                     RNG.standard_normal((12, 8))), ("y", [1, 12], None)):
        b, t = fb.BufferT(), fb.TensorT()
        if data is not None:
            b.data = np.frombuffer(data.astype(np.float32).tobytes(), np.uint8)
        m.buffers.append(b)
        t.name, t.shape, t.type, t.buffer = name, shape, fb.TensorType.FLOAT32, len(m.buffers) - 1
        g.tensors.append(t)
    op, code = fb.OperatorT(), fb.OperatorCodeT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    g.operators, g.inputs, g.outputs, m.subgraphs, m.operatorCodes = [op], [0], [2], [g], [code]
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(m)))


def _msgpack(path):
    """flax.serialization's encoding (an array is msgpack ext 1 holding (shape, dtype, bytes)),
    written with msgpack directly so that this table needs no JAX (tests/sources/test_flax.py
    writes with flax itself)."""
    import msgpack

    a = RNG.standard_normal((12, 8)).astype(np.float32)
    leaf = msgpack.ExtType(1, msgpack.packb((a.shape, a.dtype.name, a.tobytes()), use_bin_type=True))
    path.write_bytes(msgpack.packb({"params": {"Dense_0": {"kernel": leaf}}}))


# (reader, variant, suffix, writer): one file of every kind each reader recognises
FIXTURES = [("safetensors", "safetensors", ".safetensors", _safetensors),
            ("torch", "torch", ".pt", _torch),
            ("torch", "torch", ".pth", lambda p: _torch(p, legacy=True)),
            ("torch", "torchscript", ".pt", _torchscript),
            ("numpy", "npz", ".npz", _npz),
            ("numpy", "npy", ".npy", _npy),
            ("onnx", "onnx", ".onnx", _onnx),
            ("keras", "hdf5", ".h5", _h5),
            ("keras", "keras", ".keras", _keras),
            ("gguf", "gguf", ".gguf", _gguf),
            ("tflite", "tflite", ".tflite", _tflite),
            ("flax", "msgpack", ".msgpack", _msgpack)]


@pytest.mark.parametrize("name,variant,suffix,write", FIXTURES,
                         ids=[f"{v}{s}" for _, v, s, _ in FIXTURES])
def test_every_reader_recognises_its_own_files_by_content(tmp_path, name, variant, suffix, write):
    path = tmp_path / f"model{suffix}"
    write(path)
    reader, got = recognise(path)
    assert (reader.name, got) == (name, variant)
    disguised = tmp_path / "weights.data"  # the content decides, not the name
    path.rename(disguised)
    assert recognise(disguised)[0].name == name
    src = open_source(disguised)
    assert len(src) >= 1 and any(len(r.shape) == 2 for r in src)


def _tf_index(path):
    """A TensorFlow checkpoint index as far as recognition goes (its table footer's magic)."""
    path.write_bytes(bytes(40) + bytes.fromhex("57fb808b247547db"))


def _saved_model(path):
    """A SavedModel header (schema version 1, one empty MetaGraphDef) and its variables."""
    path.write_bytes(b"\x08\x01\x12\x00")
    (path.parent / "variables").mkdir()
    _tf_index(path.parent / "variables" / "variables.index")


# recognised by name and content together, so not in FIXTURES (whose files are renamed)
NAMED = [("tensorflow", "savedmodel", ".pb", _saved_model),
         ("tensorflow", "index", ".index", _tf_index)]


def _example(reader_name: str, pattern: str):
    """A file name matching ``pattern`` and a writer of that reader's format for it."""
    suffix = "." + pattern.rsplit(".", 1)[1]
    writers = {s: w for n, _, s, w in FIXTURES + NAMED if n == reader_name}
    write = writers.get(suffix) or next(w for n, _, _, w in FIXTURES + NAMED if n == reader_name)
    return pattern.replace("*", "-00001"), write


@pytest.mark.parametrize("name,pattern", [(r.name, p) for r in READERS for p in r.patterns])
def test_every_folder_pattern_is_reachable(tmp_path, name, pattern):
    file, write = _example(name, pattern)
    write(tmp_path / file)
    reader = next(r for r in READERS if r.name == name)
    try:
        src = open_source(tmp_path)
    except SourceError as exc:  # the reader was chosen, and its package is not installed here
        assert f"tailscope[{reader.extra}]" in str(exc) and file in str(exc)
        pytest.importorskip(reader.requires)
        raise
    assert src.note.startswith(f"chose {name} files") and Path(src.files[0]).name == file
