"""Hostile pickles (the hostile-input issue): DAGs of shared dicts, cycles, deep nestings,
zero-stride views, damaged and non-checkpoint pickles, refused globals.

Every file is generated here. The CLI runs in a subprocess under a 2 GiB address-space cap and
a timeout, so a regression fails (exit code, memory error) instead of hanging the suite.
"""

from __future__ import annotations

import os
import pickle
import resource
import struct
import subprocess
import sys
import zipfile

import pytest
import torch

import tailscope
from tailscope.sources import SourceError, open_source


def _cap():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def describe(path):
    """(exit code, stdout, stderr) of ``python -m tailscope describe PATH``, capped."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(tailscope.__file__), os.pardir)]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-m", "tailscope", "describe", str(path)],
                          capture_output=True, text=True, timeout=60, preexec_fn=_cap, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(path, *words):
    code, out, err = describe(path)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err[-2000:])
    assert len(lines) == 1 and "internal error" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def dag(levels: int, leaf):
    node = leaf
    for _ in range(levels):
        node = {"a": node, "b": node}
    return node


def test_dag_of_shared_dicts_is_walked_once(tmp_path):
    path = tmp_path / "dag.pt"
    torch.save(dag(40, {"w": torch.randn(8, 6)}), path)
    assert path.stat().st_size < 100_000
    code, out, err = describe(path)
    assert code == 0, err
    assert "a." * 40 + "w" in out and ".b." not in out  # one tensor, under its first name
    assert "0 of 1 tensors" in out
    path = tmp_path / "dag-empty.pt"
    torch.save(dag(40, {"w": 1}), path)
    one_line_error(path, "holds no tensors")


def test_shared_state_dict_and_tied_weights_still_read(tmp_path):
    w = torch.randn(10, 4)
    sd = {"emb.weight": w, "head.weight": w}
    path = tmp_path / "tied.pt"
    torch.save({"model": sd, "ema": sd}, path)
    assert [r.name for r in open_source(path)] == ["emb.weight", "head.weight"]
    head = torch.nn.Linear(4, 10, bias=False)
    net = torch.nn.Sequential(torch.nn.Embedding(10, 4), head)
    net[0].weight = head.weight
    assert [r.name for r in open_source(net)] == ["0.weight", "1.weight"]


def test_dict_containing_itself(tmp_path):
    d = {"w": torch.randn(4, 4)}
    d["self"] = d
    path = tmp_path / "cycle.pt"
    torch.save(d, path)
    one_line_error(path, "contains itself")
    d = {"x": 1}
    d["model"] = d
    torch.save(d, path)
    one_line_error(path, "contains itself")


def test_module_whose_child_contains_itself():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3))
    net[0].add_module("loop", net)
    with pytest.raises(SourceError, match="contains itself") as err:
        tailscope.describe(net)
    assert "\n" not in str(err.value)


def test_module_dag_with_exponential_paths_is_refused():
    node = torch.nn.Linear(2, 2)
    for _ in range(30):
        node = torch.nn.ModuleDict({"a": node, "b": node})
    with pytest.raises(SourceError, match="more than"):
        open_source(node)


def _deep_dict_pickle(depth: int) -> bytes:
    """A pickle of {'a': {'a': ... {}}} ``depth`` deep, written opcode by opcode (pickling it
    would recurse)."""
    key = b"X" + struct.pack("<I", 1) + b"a"
    return (b"\x80\x02" + (b"}" + key) * depth + b"}" + b"s" * depth + b".")


def _checkpoint_with(tmp_path, data_pkl: bytes):
    """A torch.save zip whose data.pkl is replaced."""
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    path = tmp_path / "crafted.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = data_pkl if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info, data)
    return path


def test_deep_nesting_is_one_line(tmp_path):
    path = _checkpoint_with(tmp_path, _deep_dict_pickle(100_000))
    one_line_error(path, "nested more than")
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(SourceError, match="nested more than"):
        open_source(deep)


def test_zero_stride_view_is_refused_before_allocation(tmp_path):
    path = tmp_path / "stride.pt"
    torch.save({"w": torch.as_strided(torch.arange(16.0), (50000, 15000), (0, 0))}, path)
    assert path.stat().st_size < 4000
    one_line_error(path, "repeats or reverses its storage")
    # the same through the restricted unpickler (a foreign class in the metadata)
    path = tmp_path / "stride-meta.pt"
    torch.save({"w": torch.as_strided(torch.arange(65000.0), (50000, 15000), (1, 1)),
                "cfg": Config()}, path)
    one_line_error(path, "repeats or reverses its storage")


class Config:
    width = 3


def test_real_views_still_read(tmp_path):
    base = torch.randn(12, 8)
    path = tmp_path / "views.pt"
    sd = {"t.weight": base.t(), "s.weight": base[2:10, 1:7], "tied.weight": base}
    torch.save(sd, path)
    src = open_source(path)
    for ref in src:
        torch.testing.assert_close(torch.from_numpy(ref.load()), sd[ref.name])


def test_truncated_checkpoint_is_damaged(tmp_path):
    path = tmp_path / "good.pt"
    torch.save({"w": torch.randn(64, 64)}, path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) // 2])
    one_line_error(cut, "damaged")


def test_bare_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "ints.pkl"
    path.write_bytes(pickle.dumps(list(range(10)), protocol=2))
    err = one_line_error(path, "not a model checkpoint", "list")
    assert "trust" not in err


class Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_bare_pickle_with_a_payload_never_runs_it(tmp_path):
    side = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([Payload(side)], protocol=2))
    err = one_line_error(path, "not a model checkpoint")
    assert "trust" not in err
    with pytest.raises(SourceError, match="not a model checkpoint"):
        open_source(path, trust_pickle=True)
    assert not side.exists()


def test_refused_global_gets_the_trust_advice(tmp_path):
    side = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"layer.weight": Payload(side)}}, path)
    one_line_error(path, "trust-pickle", "system")
    assert not side.exists()


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96", b"\x8d"],
                         ids=["binbytes8", "bytearray8", "binunicode8"])
def test_absurd_length_field_is_one_line(tmp_path, opcode):
    # a length field declaring 2**40 bytes, in a bare pickle and in a checkpoint's data.pkl
    field = opcode + struct.pack("<Q", 1 << 40) + b"abc"
    path = tmp_path / "length.pkl"
    path.write_bytes(b"\x80\x04" + field)
    one_line_error(path, "larger than the file")
    path = _checkpoint_with(tmp_path, b"\x80\x02}X\x01\x00\x00\x00a" + field)
    one_line_error(path, "larger than the file")
