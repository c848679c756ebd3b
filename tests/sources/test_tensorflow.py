"""TensorFlow SavedModels and checkpoints without TensorFlow: recognised (never called an ONNX
model) and refused in one line naming the extra to install.

No TensorFlow here to write real files: the saved_model.pb is a SavedModel message (schema
version 1) around a MetaGraphDef serialized with TensorFlow's own proto definition as TensorBoard
ships it; the checkpoint index is a file ending with TensorFlow's table footer magic."""

import subprocess
import sys

import pytest

from tailscope.sources import SourceError, open_source
from tailscope.sources.registry import recognise

MAGIC = bytes.fromhex("57fb808b247547db")


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _saved_model(folder, variables=True):
    meta_graph_pb2 = pytest.importorskip("tensorboard.compat.proto.meta_graph_pb2")
    mg = meta_graph_pb2.MetaGraphDef()
    mg.meta_info_def.tags.append("serve")
    mg.meta_info_def.tensorflow_version = "2.15.0"
    blob = mg.SerializeToString()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01\x12" + _varint(len(blob)) + blob)
    if variables:
        (folder / "variables").mkdir()
        (folder / "variables" / "variables.index").write_bytes(bytes(40) + MAGIC)
        (folder / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(64))
    return folder / "saved_model.pb"


@pytest.fixture
def no_tf(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)


def _one_line_error(path, *words):
    with pytest.raises(SourceError) as info:
        open_source(path)
    text = str(info.value)
    assert "\n" not in text and "ONNX" not in text, text
    for w in words:
        assert w in text, text
    return text


def test_saved_model_recognised_and_refused_naming_the_extra(tmp_path, no_tf):
    pb = _saved_model(tmp_path / "sm")
    assert recognise(pb)[0].name == "tensorflow"
    _one_line_error(pb, "TensorFlow SavedModel", "pip install 'tailscope[tf]'", str(pb))
    _one_line_error(tmp_path / "sm", "TensorFlow SavedModel", "tailscope[tf]")  # the folder


def test_checkpoint_files_recognised(tmp_path, no_tf):
    index = tmp_path / "ckpt-3.index"
    index.write_bytes(bytes(40) + MAGIC)
    data = tmp_path / "ckpt-3.data-00000-of-00001"
    data.write_bytes(bytes(16))
    for path in (index, data):
        assert recognise(path)[0].name == "tensorflow"
        _one_line_error(path, "TensorFlow checkpoint", "tailscope[tf]")
    _one_line_error(tmp_path, "TensorFlow checkpoint", "tailscope[tf]")


def test_saved_model_without_variables_and_foreign_pb(tmp_path):
    pb = _saved_model(tmp_path / "bare", variables=False)
    _one_line_error(pb, "without its variables/ folder")
    other = tmp_path / "graph.pb"  # some other protobuf: not a SavedModel, said in one line
    other.write_bytes(b"\x0a\x03abc")
    _one_line_error(other, "not a TensorFlow SavedModel")


def test_cli_saved_model_exit_2_one_line(tmp_path):
    pb = _saved_model(tmp_path / "sm")
    code = ("import sys; sys.modules['tensorflow'] = None; from tailscope.cli import main; "
            f"sys.exit(main(['describe', {str(pb)!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "tailscope[tf]" in res.stderr


def test_with_tensorflow_variables_are_read_through_its_checkpoint_reader(tmp_path, monkeypatch):
    """TensorFlow is not installed here: a stand-in with tf.train.load_checkpoint's reader API
    checks what we do with what it returns (names, what is left out, Keras layout)."""
    import types

    import numpy as np

    rng = np.random.default_rng(9)
    store = {"layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE": rng.standard_normal((20, 30)),
             "layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE":
                 rng.standard_normal((3, 3, 4, 8)),
             "layer_with_weights-0/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE":
                 rng.standard_normal((20, 30)),
             "_CHECKPOINTABLE_OBJECT_GRAPH": np.array(b"graph"),
             "save_counter/.ATTRIBUTES/VARIABLE_VALUE": np.array(1)}
    asked = []

    class Reader:
        def get_variable_to_shape_map(self):
            return {k: list(np.shape(v)) for k, v in store.items()}

        def get_variable_to_dtype_map(self):
            return {k: types.SimpleNamespace(name=str(np.asarray(v).dtype)) for k, v in store.items()}

        def get_tensor(self, name):
            return store[name]

    def load_checkpoint(prefix):
        asked.append(prefix)
        return Reader()

    fake = types.SimpleNamespace(train=types.SimpleNamespace(load_checkpoint=load_checkpoint))
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    pb = _saved_model(tmp_path / "sm")
    src = open_source(pb)
    assert asked == [str(tmp_path / "sm" / "variables" / "variables")]
    refs = {r.name: r for r in src}
    assert list(refs) == ["layer_with_weights-0/kernel", "layer_with_weights-1/kernel"]
    assert all(r.layout == "keras" for r in src)
    np.testing.assert_array_equal(refs["layer_with_weights-1/kernel"].load(),
                                  store["layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE"])
    index = tmp_path / "ckpt-12.index"
    index.write_bytes(bytes(40) + MAGIC)
    open_source(index)
    assert asked[-1] == str(tmp_path / "ckpt-12")
