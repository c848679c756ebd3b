"""open_source: every format, detected by content, in model order; bad files fail in one line."""

import json
import re
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

from tailscope.sources import SourceError, open_source


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "layers.10.weight": rng.standard_normal((20, 12)).astype(np.float32),
        "layers.9.weight": rng.standard_normal((16, 12)).astype(np.float32),
        "layers.2.bias": rng.standard_normal(16).astype(np.float32),
        "embed.weight": rng.standard_normal((50, 12)).astype(np.float16),
        "conv.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float64),
    }


def test_safetensors_numeric_aware_order_and_values(tmp_path):
    w = weights()
    path = tmp_path / "model.safetensors"
    save_numpy(w, str(path))
    src = open_source(path)
    names = [r.name for r in src]
    assert names == ["conv.weight", "embed.weight", "layers.2.bias", "layers.9.weight",
                     "layers.10.weight"]
    assert [r.index for r in src] == list(range(5))
    for ref in src:
        np.testing.assert_array_equal(ref.load(), w[ref.name])
        assert ref.dtype == str(w[ref.name].dtype) and ref.shape == w[ref.name].shape
    assert src.format == "safetensors"


def test_safetensors_bfloat16_without_torch_equals_torch(tmp_path):
    t = torch.randn(24, 10, dtype=torch.float32).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    save_torch({"w": t}, str(path))
    ref = open_source(path)[0]
    assert ref.dtype == "bfloat16"
    np.testing.assert_array_equal(ref.load(), t.float().numpy())


def test_sharded_safetensors_with_index(tmp_path):
    w = weights(1)
    names = sorted(w)
    save_numpy({k: w[k] for k in names[:2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_numpy({k: w[k] for k in names[2:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {
        k: f"model-0000{1 if k in names[:2] else 2}-of-00002.safetensors" for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    src = open_source(tmp_path)
    assert [r.name for r in src][-2:] == ["layers.9.weight", "layers.10.weight"]
    assert len(src.files) == 2 and "2 shards" in src.note
    for ref in src:
        np.testing.assert_array_equal(ref.load(), w[ref.name])
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SourceError, match="missing"):
        open_source(tmp_path)


def _write_raw(path, header: dict, data: bytes, declared_len=None):
    blob = json.dumps(header).encode()
    n = len(blob) if declared_len is None else declared_len
    path.write_bytes(struct.pack("<Q", n) + blob + data)


@pytest.mark.parametrize("case,message", [
    ("header_too_long", "header length"),
    ("offsets_past_end", "past the end"),
    ("shape_mismatch", "has shape"),
    ("not_json", "corrupt safetensors header"),
    ("truncated", "past the end"),
])
def test_corrupt_safetensors_fail_in_one_line(tmp_path, case, message):
    path = tmp_path / "bad.safetensors"
    good = {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}
    if case == "header_too_long":
        _write_raw(path, good, bytes(64), declared_len=10**6)
    elif case == "offsets_past_end":
        _write_raw(path, {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 640]}},
                   bytes(64))
    elif case == "shape_mismatch":
        _write_raw(path, {"w": {"dtype": "F32", "shape": [5, 4], "data_offsets": [0, 64]}},
                   bytes(64))
    elif case == "not_json":
        path.write_bytes(struct.pack("<Q", 5) + b"{nope" + bytes(8))
    else:
        save_numpy({"w": np.ones((64, 64), np.float32)}, str(path))
        path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SourceError, match=message) as info:
        open_source(path)
    assert "\n" not in str(info.value)


def test_torch_checkpoints(tmp_path):
    w = weights(2)
    state = {k: torch.from_numpy(v) for k, v in w.items()}
    plain = tmp_path / "pytorch_model.bin"
    torch.save(state, plain)
    nested = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": state, "optimizer": {}}, nested)
    legacy = tmp_path / "legacy.pt"
    torch.save({"model_state": state}, legacy, _use_new_zipfile_serialization=False)
    for path in (plain, nested, legacy):
        src = open_source(path)
        assert [r.name for r in src] == list(w)  # state-dict order is model order
        for ref in src:
            np.testing.assert_array_equal(ref.load(), w[ref.name])


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 30)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc2 = torch.nn.Linear(30, 5)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class Custom:
    """Pickling this needs code execution to load."""

    def __init__(self):
        self.w = torch.ones(3, 3)


def test_modules_torchscript_and_in_memory(tmp_path):
    torch.manual_seed(0)
    net = Net()
    expected = {k: v.numpy() for k, v in net.state_dict().items()}
    scripted = tmp_path / "net.pt"
    torch.jit.script(net).save(str(scripted))
    for source in (net, net.state_dict(), scripted):
        src = open_source(source)
        assert [r.name for r in src] == list(expected)
        for ref in src:
            np.testing.assert_allclose(ref.load(), expected[ref.name])
    assert open_source(scripted).format == "torchscript"
    numpy_state = open_source({k: v for k, v in expected.items()})
    assert [r.name for r in numpy_state] == list(expected)


def test_pickles_with_foreign_metadata_read_without_trust(tmp_path):
    # the foreign class is an inert stand-in (tests/sources/test_checkpoints.py); trust reads
    # the same tensors by running the pickle
    path = tmp_path / "evil.pt"
    torch.save({"model": Custom(), "state_dict": {"w": torch.ones(4, 4)}}, path)
    assert [r.name for r in open_source(path)] == ["w"]
    src = open_source(path, trust_pickle=True)
    assert [r.name for r in src] == ["w"]


def test_numpy_files(tmp_path):
    w = weights(3)
    npz = tmp_path / "weights.npz"
    np.savez(npz, **w)
    src = open_source(npz)
    assert [r.name for r in src] == list(w)  # archive order
    for ref in src:
        np.testing.assert_array_equal(ref.load(), w[ref.name])
    npy = tmp_path / "w.npy"
    np.save(npy, w["layers.9.weight"])
    (ref,) = open_source(npy)
    assert ref.name == "w" and ref.shape == (16, 12)
    np.testing.assert_array_equal(ref.load(), w["layers.9.weight"])
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError, match="objects"):
        open_source(obj)


def test_content_not_name_decides_the_format(tmp_path):
    w = weights(4)
    disguised = tmp_path / "weights.bin"  # a safetensors file with a torch-like name
    save_numpy(w, str(disguised))
    assert open_source(disguised).format == "safetensors"
    text = tmp_path / "model.safetensors"
    text.write_text("hello, I am not a model")
    with pytest.raises(SourceError, match="unknown format"):
        open_source(text)


def test_folder_picks_weights_and_says_which(tmp_path):
    w = weights(5)
    save_numpy(w, str(tmp_path / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in w.items()}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{}")
    src = open_source(tmp_path)
    assert src.format == "safetensors"
    assert "pytorch_model.bin" in src.note and "safetensors" in src.describe()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no weights")
    with pytest.raises(SourceError, match="no weights found"):
        open_source(empty)


def test_bad_sources(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope.safetensors")
    with pytest.raises(SourceError, match="cannot read a model"):
        open_source(42)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(SourceError, match="Keras"):
        open_source(h5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "bert", "mixtral"])
def test_safetensors_listing_follows_transformers_module_order(tmp_path, arch):
    """A model saved by transformers' save_pretrained (one safetensors file, names sorted) is
    listed in forward order inside each block (attention before MLP, GPT-2's ln_1 / ln_2 around
    them): the order of its matrices is the order transformers registers the modules in."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")

    small = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=48)
    config = {
        "llama": lambda: transformers.LlamaConfig(**small, num_key_value_heads=2),
        "gpt2": lambda: transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4),
        "opt": lambda: transformers.OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=4, ffn_dim=48,
                                              word_embed_proj_dim=32),
        "bert": lambda: transformers.BertConfig(**small),
        "mixtral": lambda: transformers.MixtralConfig(**small, num_key_value_heads=2,
                                                      num_local_experts=2),
    }[arch]()
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config)
    model.save_pretrained(tmp_path)
    saved = {r.name for r in open_source(tmp_path)}
    want = [n for n, p in model.named_parameters() if p.ndim >= 2 and n in saved]
    got = [r.name for r in open_source(tmp_path) if len(r.shape) >= 2 and r.name in set(want)]
    assert len(want) >= 4 * config.num_hidden_layers, (want, sorted(saved))
    assert sorted(got) == sorted(want)

    def parts(names):  # the blocks' parts in order (layers.0.self_attn, ...), name order inside
        seq = [re.sub(r"^(.*?\.\d+\.[^.]+).*", r"\1", n) for n in names
               if re.search(r"\.\d+\.", n)]
        return [p for i, p in enumerate(seq) if i == 0 or seq[i - 1] != p]

    assert parts(got) == parts(want)
    assert len(set(parts(want))) == len(parts(want))  # each part in one run
    if arch == "mixtral":  # saved per expert (block_sparse_moe.experts.N.w1), as before v5
        listed = parts(r.name for r in open_source(tmp_path) if len(r.shape) >= 2)
        assert listed[:2] == ["layers.0.self_attn", "layers.0.block_sparse_moe"], listed
