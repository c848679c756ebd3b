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
