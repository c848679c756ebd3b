"""Hostile GGUF, Flax msgpack and TFLite files, generated here (nothing binary is committed).

Every declared size is checked before it is used: a claim larger than the file is a one-line
SourceError (CLI exit 2), never a loop over 2**64 items, a huge allocation, a wrapped offset or a
read of another tensor's bytes. Tensors are read, not memory-mapped: a file cut short after it was
opened is a failed row with its reason, never a SIGBUS. A parse that could hang or allocate runs
in a subprocess under a 2 GiB address-space cap and a timeout, so a regression fails instead.
"""

import os
import resource
import struct
import subprocess
import sys

import numpy as np
import pytest

import tailscope
from tailscope.sources import SourceError, open_source

RNG = np.random.default_rng(1515)
CAP = 2 << 30


def _capped():
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def refused(path, *words):
    """``tailscope describe PATH`` under a 2 GiB cap: exit 2, one line naming the file."""
    res = subprocess.run([sys.executable, "-m", "tailscope", "describe", str(path)],
                         capture_output=True, text=True, timeout=60, preexec_fn=_capped)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-800:])
    assert len(lines) == 1 and lines[0].startswith("tailscope: error:"), res.stderr[-800:]
    assert str(path) in lines[0] and "internal error" not in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


BATCH = """
import sys
from tailscope.sources import SourceError, open_source
for p in sys.argv[1:]:
    try:
        for ref in open_source(p):
            ref.load()
        print("READ", p)
    except SourceError as exc:
        print("ERR", str(exc).replace("\\n", "|"))
"""


def all_refused(cases):
    """Each (path, words...) opened and loaded in one subprocess under a 2 GiB cap: each a
    one-line SourceError naming the file and containing the words."""
    res = subprocess.run([sys.executable, "-c", BATCH, *(str(c[0]) for c in cases)],
                         capture_output=True, text=True, timeout=60, preexec_fn=_capped)
    assert res.returncode == 0, (res.returncode, res.stderr[-800:])
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(cases), res.stdout
    for line, (path, *words) in zip(lines, cases):
        assert line.startswith(f"ERR {path}: ") and "|" not in line, line
        for w in words:
            assert w in line, line


def cut_after_open(path, keep: int):
    """Open ``path``, cut it to ``keep`` bytes, then load: a SourceError, and ``analyze`` of the
    opened source gives failed rows with the reason (and returns normally)."""
    src = open_source(path)
    os.truncate(path, keep)
    with pytest.raises(SourceError, match="cut short|past the end") as info:
        for ref in src:
            ref.load()
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    details = tailscope.analyze(src).details
    failed = details[details.status == "failed"]
    assert len(failed) >= 1
    assert failed.reason.str.contains("cut short|past the end").all(), failed.reason.tolist()
    assert failed.alpha.isna().all()


# --- GGUF, written field by field as the GGUF spec lays it out ---------------------------------
def _s(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def gguf_bytes(kv=(), tensors=(), data=b"", n_tensors=None, n_kv=None, align=32) -> bytes:
    """A GGUF v3 file: ``kv`` as raw encoded entries, ``tensors`` as (name, ne, type, offset)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                                len(kv) if n_kv is None else n_kv)
    out += b"".join(kv)
    for name, ne, ttype, offset in tensors:
        out += _s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + \
            struct.pack("<IQ", ttype, offset)
    out += b"\0" * (-len(out) % align)
    return out + data


ARCH = _s("general.architecture") + struct.pack("<I", 8) + _s("llama")
F32 = 0


@pytest.fixture
def valid_gguf(tmp_path):
    a = RNG.standard_normal((24, 16)).astype(np.float32)
    b = RNG.standard_normal((12, 16)).astype(np.float32)
    data = a.tobytes() + b.tobytes()
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf_bytes([ARCH], [("a.weight", [16, 24], F32, 0),
                                         ("b.weight", [16, 12], F32, a.nbytes)], data))
    return path, a, b


def test_the_hand_written_gguf_reads_as_gguf_reads_it(valid_gguf):
    gguf = pytest.importorskip("gguf")
    path, a, b = valid_gguf
    refs = {r.name: r for r in open_source(path)}
    np.testing.assert_array_equal(refs["a.weight"].load(), a)
    np.testing.assert_array_equal(refs["b.weight"].load(), b)
    theirs = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}
    np.testing.assert_array_equal(theirs["b.weight"], b)


def test_gguf_metadata_array_of_2_64_items_is_refused(tmp_path):
    path = tmp_path / "array.gguf"  # 71 bytes: one uint8 array claiming 2**64-1 items
    kv = _s("a.big") + struct.pack("<IIQ", 9, 0, 2**64 - 1) + b"\0" * 18
    path.write_bytes(gguf_bytes([kv], n_tensors=0, align=1))
    assert len(path.read_bytes()) == 71
    refused(path, "18446744073709551615")  # the CLI: exit 2, one line
    cases = []
    for item in (8, 9):  # arrays of strings and of arrays: looped over only if the bytes are there
        p = tmp_path / f"array{item}.gguf"
        p.write_bytes(gguf_bytes([_s("a.big") + struct.pack("<IIQ", 9, item, 2**64 - 1)]))
        cases.append((p, "items"))
    nested = _s("a.big") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 0, 2**63)
    (tmp_path / "nested.gguf").write_bytes(gguf_bytes([nested]))
    all_refused(cases + [(tmp_path / "nested.gguf", "left in the file")])


def test_gguf_huge_lengths_and_counts_are_refused(tmp_path):
    files = {
        "value": gguf_bytes([_s("general.architecture") + struct.pack("<I", 8) +
                             _s(b"llama", 2**63)]),
        "key": gguf_bytes([_s(b"key", 2**64 - 1)]),
        "name": gguf_bytes([ARCH], [("w", [4, 4], F32, 0)], b"\0" * 64)
        .replace(_s("w"), _s(b"w", 2**40)),
        "tensors": gguf_bytes([ARCH], n_tensors=2**64 - 1),
        "kv": gguf_bytes([ARCH], n_kv=2**62),
        "rank": gguf_bytes([ARCH], [("w", [4], F32, 0)]).replace(
            _s("w") + struct.pack("<I", 1), _s("w") + struct.pack("<I", 2**20)),
    }
    words = {"value": "left in the file", "key": "left in the file", "name": "left in the file",
             "tensors": "tensor infos", "kv": "metadata entries", "rank": "1048576 dimensions"}
    for name, blob in files.items():
        (tmp_path / f"{name}.gguf").write_bytes(blob)
    all_refused([(tmp_path / f"{name}.gguf", words[name]) for name in files])


def test_gguf_tensor_offsets_outside_the_data_or_overlapping_are_refused(tmp_path):
    data = RNG.standard_normal(24 * 16 + 12 * 16).astype(np.float32).tobytes()
    cases = []
    for i, (ne, offset, words) in enumerate([
            ([16, 24], 2**64 - 32, "outside the data section"),  # wraps around 64 bits
            ([16, 24], 1024, "outside the data section"),  # past the data section
            ([2**32, 2**32], 0, "outside the data section"),  # dims claiming 64 GiB
            ([2**32, 2**32, 2**32, 2**32], 0, "outside the data section"),  # 2**128 values
            ([16, 24], 8, "alignment"),
            ([16, 12], 512, "overlap")]):  # inside a's bytes: another tensor's values
        path = tmp_path / f"offset{i}.gguf"
        path.write_bytes(gguf_bytes([ARCH], [("a.weight", [16, 24], F32, 0),
                                             ("b.weight", ne, F32, offset)], data))
        cases.append((path, "b.weight", words))
    for i, (ttype, ne, words) in enumerate([(999, [16, 24], "unknown ggml type"),
                                             (8, [33, 4], "blocks")]):  # Q8_0: blocks of 32
        path = tmp_path / f"type{i}.gguf"
        path.write_bytes(gguf_bytes([ARCH], [("a.weight", ne, ttype, 0)], b"\0" * 2048))
        cases.append((path, "a.weight", words))
    all_refused(cases)


def test_gguf_cut_short_after_open_is_a_failed_row(valid_gguf):
    path, a, _ = valid_gguf
    cut_after_open(path, len(path.read_bytes()) - a.nbytes)


def test_gguf_written_by_gguf_cut_short_after_open(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])
    w.add_tensor("blk.0.ffn_up.weight", RNG.standard_normal((40, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert open_source(path)[0].load().shape == (40, 32)
    cut_after_open(path, len(path.read_bytes()) - 100)


# --- Flax msgpack, in flax.serialization's layout (ext 1: (shape, dtype, bytes)) ---------------
msgpack = pytest.importorskip("msgpack")


def _leaf(a: np.ndarray, shape=None, dtype=None):
    payload = msgpack.packb((list(a.shape) if shape is None else shape,
                             a.dtype.name if dtype is None else dtype, a.tobytes()))
    return msgpack.ExtType(1, payload)


def _chunked(a: np.ndarray, shape: dict, n: int = 2):
    parts = np.array_split(a.reshape(-1), n)
    return {"__msgpack_chunked_array__": True, "shape": shape,
            "chunks": {str(i): _leaf(p) for i, p in enumerate(parts)}}


def _flax(path, tree):
    path.write_bytes(msgpack.packb({"params": tree}))
    return path


def test_flax_layout_written_here_reads(tmp_path):
    a = RNG.standard_normal((24, 16)).astype(np.float32)
    path = _flax(tmp_path / "ok.msgpack", {"Dense_0": {"kernel": _leaf(a)},
                                          "big": {"kernel": _chunked(a, {"0": 24, "1": 16})}})
    refs = {r.name: r for r in open_source(path)}
    np.testing.assert_array_equal(refs["params/Dense_0/kernel"].load(), a)
    np.testing.assert_array_equal(refs["params/big/kernel"].load(), a)


@pytest.mark.parametrize("node, words", [
    ({"__msgpack_chunked_array__": True, "shape": {"0": -48, "1": -8}, "chunks": {}}, "shape"),
    ("chunk", "shape"),  # negative dims whose product matches the chunks: N = -48 once
    ({"__msgpack_chunked_array__": True, "shape": {"x": 24, "1": 16}, "chunks": {}}, "keyed"),
    ({"__msgpack_chunked_array__": True, "shape": {"0": "24", "1": 16}, "chunks": {}}, "shape"),
    ({"__msgpack_chunked_array__": True, "shape": {"0": 24.0, "1": 16}, "chunks": {}}, "shape"),
    ({"__msgpack_chunked_array__": True, "shape": [24, 16], "chunks": {}}, "without shape"),
    ({"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 2}, "chunks": {"0": 7}},
     "not arrays"),
    ({"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 2}, "chunks": {"1": 7}},
     "keyed"),
    ("leaf-negative", "malformed shape"),
    ("leaf-string", "malformed shape"),
])
def test_flax_malformed_fields_are_one_line_naming_file_and_array(tmp_path, node, words):
    """In-process: the files are a few hundred bytes and the walk reads no more than that."""
    a = RNG.standard_normal((24, 16)).astype(np.float32)
    if node == "chunk":
        node = _chunked(a, {"0": -24, "1": -16})
    elif node == "leaf-negative":
        node = _leaf(a, shape=[-24, -16])
    elif node == "leaf-string":
        node = _leaf(a, shape=["24", 16])
    path = _flax(tmp_path / "bad.msgpack", {"ok": {"kernel": _leaf(a)}, "bad": {"kernel": node}})
    with pytest.raises(SourceError) as info:
        open_source(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and words in msg, msg
    assert "'params/bad/kernel'" in msg, msg  # the name the array would have had


def test_flax_negative_chunked_dims_through_the_cli(tmp_path):
    a = RNG.standard_normal((24, 16)).astype(np.float32)
    path = _flax(tmp_path / "neg.msgpack", {"bad": {"kernel": _chunked(a, {"0": -24, "1": -16})}})
    refused(path, "'params/bad/kernel'", "malformed shape")


def test_flax_storage_far_smaller_than_its_shape_is_a_failed_row(tmp_path):
    a = RNG.standard_normal((4, 4)).astype(np.float32)
    path = _flax(tmp_path / "small.msgpack", {"w": {"kernel": _leaf(a, shape=[2**31, 2**31])}})
    src = open_source(path)
    with pytest.raises(SourceError, match="64 bytes for"):
        src[0].load()


def test_flax_cut_short_after_open_is_a_failed_row(tmp_path):
    a = RNG.standard_normal((24, 16)).astype(np.float32)
    b = RNG.standard_normal((12, 16)).astype(np.float32)
    path = _flax(tmp_path / "cut.msgpack", {"a": {"kernel": _leaf(a)}, "b": {"kernel": _leaf(b)}})
    cut_after_open(path, len(path.read_bytes()) - b.nbytes)


# --- TFLite, written with LiteRT's schema object API -------------------------------------------
def _tflite(w: np.ndarray, sparsity=None, values: np.ndarray | None = None) -> bytes:
    fb = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools import flatbuffer_utils

    m = fb.ModelT()
    m.version, m.description = 3, "hostile"
    empty, weights = fb.BufferT(), fb.BufferT()
    stored = w if values is None else values
    weights.data = np.frombuffer(np.ascontiguousarray(stored).tobytes(), np.uint8)
    m.buffers = [empty, fb.BufferT(), weights, fb.BufferT()]
    g = fb.SubGraphT()
    g.name = "main"
    tensors = []
    for name, shape, buf in (("x", [1, w.shape[1]], 1), ("fc/kernel", list(w.shape), 2),
                             ("y", [1, w.shape[0]], 3)):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, fb.TensorType.FLOAT32, buf
        tensors.append(t)
    tensors[1].sparsity = sparsity
    g.tensors, g.inputs, g.outputs = tensors, [0], [2]
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = fb.FullyConnectedOptionsT()
    g.operators = [op]
    m.subgraphs = [g]
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    m.operatorCodes = [code]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _csr(rows: int, cols: int, segments, indices, dense_rows=None):
    """SparsityParameters: rows DENSE, columns SPARSE_CSR (int32 index vectors)."""
    fb = pytest.importorskip("ai_edge_litert.schema_py_generated")
    sp = fb.SparsityParametersT()
    sp.traversalOrder, sp.blockMap = [0, 1], []
    d0, d1 = fb.DimensionMetadataT(), fb.DimensionMetadataT()
    d0.format, d0.denseSize = fb.DimensionType.DENSE, rows if dense_rows is None else dense_rows
    d1.format, d1.denseSize = fb.DimensionType.SPARSE_CSR, 0
    seg, ind = fb.Int32VectorT(), fb.Int32VectorT()
    seg.values, ind.values = list(segments), list(indices)
    d1.arraySegmentsType = d1.arrayIndicesType = fb.SparseIndexVector.Int32Vector
    d1.arraySegments, d1.arrayIndices = seg, ind
    sp.dimMetadata = [d0, d1]
    return sp


@pytest.fixture
def tflite_ok():
    pytest.importorskip("tflite")
    pytest.importorskip("ai_edge_litert")
    return RNG.standard_normal((20, 32)).astype(np.float32)


def test_tflite_sparse_weight_written_here_densifies(tmp_path, tflite_ok):
    dense = np.zeros((4, 6), np.float32)
    dense[0, 1], dense[2, 0], dense[2, 5], dense[3, 3] = 1.5, -2.0, 3.0, 4.5
    path = tmp_path / "sparse.tflite"
    path.write_bytes(_tflite(dense, _csr(4, 6, [0, 1, 1, 3, 4], [1, 0, 5, 3]),
                             np.array([1.5, -2.0, 3.0, 4.5], np.float32)))
    np.testing.assert_array_equal(open_source(path)[0].load(), dense)


SPARSE_CASES = [  # shape, segments, indices, stored values, rows' dense size, words
    ((4, 6), [0, 1, 1, 3, 4], [1, -6, 5, 3], 4, None, "sparse indices outside"),  # wrapped to 0
    ((4, 6), [0, 1, 1, 3, 4], [1, 0, 9, 3], 4, None, "sparse indices outside"),
    ((4, 6), [0, 1, 1, 3, 4], [1, 0, 5, 3], 4, 5, "dense level"),  # rows 5 for a shape of 4
    ((4, 6), [0, 3, 1, 3, 4], [1, 0, 5, 3], 4, None, "out of order"),
    ((4, 6), [0, -1, 1, 3, 4], [1, 0, 5, 3], 4, None, "out of order"),
    ((4, 6), [0, 1, 1, 3, 9], [1, 0, 5, 3], 4, None, "past their indices"),
    ((4, 6), [0, 1], [1], 1, None, "larger than the values or segments"),
    ((4, 6), [0, 1, 1, 3], [1, 0, 5], 3, 3, "dense level"),
    # one stored value claiming a (65536, 65536) dense weight (16 GiB): refused before allocating
    ((65536, 65536), [0, 1] + [1] * 65535, [3], 1, None, "not a sparse weight"),
    ((2**30, 32), [0, 1], [3], 1, None, "not a sparse weight"),
]


def test_tflite_sparse_metadata_that_does_not_fit_is_refused_before_allocation(tmp_path,
                                                                                tflite_ok):
    import tflite

    cases = []
    for i, (shape, segments, indices, values, dense_rows, words) in enumerate(SPARSE_CASES):
        w = np.zeros(shape[:1] + (1,), np.float32) if shape[0] * shape[1] > 10**6 else \
            np.zeros(shape, np.float32)
        blob = _tflite(w, _csr(shape[0], shape[1], segments, indices, dense_rows),
                       np.arange(1, values + 1, dtype=np.float32))
        if w.shape != shape:  # claim the big shape without building it
            t = tflite.Model.GetRootAs(blob, 0).Subgraphs(0).Tensors(1)
            at = t.ShapeAsNumpy().ctypes.data - np.frombuffer(blob, np.uint8).ctypes.data
            blob = blob[:at + 4] + struct.pack("<i", shape[1]) + blob[at + 8:]
        path = tmp_path / f"sparse{i}.tflite"
        path.write_bytes(blob)
        cases.append((path, "fc/kernel", "damaged sparse weights", words))
    all_refused(cases)


def test_tflite_storage_far_smaller_than_its_shape_is_refused_before_reading(tmp_path,
                                                                             tflite_ok):
    import tflite

    blob = _tflite(tflite_ok)
    at = tflite.Model.GetRootAs(blob, 0).Subgraphs(0).Tensors(1).ShapeAsNumpy().ctypes.data - \
        np.frombuffer(blob, np.uint8).ctypes.data
    path = tmp_path / "claims.tflite"
    path.write_bytes(blob[:at] + struct.pack("<ii", 2**30, 2**30) + blob[at + 8:])
    with pytest.raises(SourceError, match="its buffer holds 2560 bytes"):
        open_source(path)[0].load()


def test_tflite_cut_short_after_open_is_a_failed_row(tmp_path, tflite_ok):
    path = tmp_path / "cut.tflite"
    path.write_bytes(_tflite(tflite_ok))
    np.testing.assert_array_equal(open_source(path)[0].load(), tflite_ok)
    cut_after_open(path, 64)
