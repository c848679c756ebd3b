"""Flax msgpack checkpoints: written here by flax.serialization itself (to_bytes of a real
flax.linen model's variables, bfloat16 too, and chunked arrays), read without JAX. Every array
equals what flax.serialization.msgpack_restore reads back, and the alphas equal those of the same
arrays (in PyTorch's layout) read from safetensors."""

import numpy as np
import pytest

flax = pytest.importorskip("flax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import serialization  # noqa: E402

import tailscope  # noqa: E402
from tailscope.sources import SourceError, open_source  # noqa: E402
from tailscope.sources.safetensors import write_safetensors  # noqa: E402


class Net(nn.Module):
    @nn.compact
    def __call__(self, ids, img):
        e = nn.Embed(120, 48, name="embed")(ids)
        e = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=48, name="attn")(e, e)
        c = nn.Conv(32, (3, 3), name="conv")(img)
        c = nn.BatchNorm(use_running_average=True, name="bn")(c)
        h = nn.Dense(64, name="fc1")(jnp.concatenate([e.reshape(2, -1), c.reshape(2, -1)], 1))
        return nn.Dense(40, name="fc2")(nn.relu(h))


@pytest.fixture(scope="module")
def variables():
    v = Net().init(jax.random.PRNGKey(0), jnp.zeros((2, 6), jnp.int32), jnp.zeros((2, 8, 8, 3)))
    return jax.tree_util.tree_map(np.asarray, v)


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else k
        out.update(_flat(v, name) if isinstance(v, dict) else {name: np.asarray(v)})
    return out


def _as_read(name, a):
    """What the reader gives for a Flax kernel: attention kernels flattened to 2-D."""
    parts = name.split("/")
    if parts[-1] == "kernel" and a.ndim == 3 and parts[-2] in ("query", "key", "value"):
        return a.reshape(a.shape[0], -1)
    if parts[-1] == "kernel" and a.ndim == 3 and parts[-2] == "out":
        return a.reshape(-1, a.shape[2])
    return a


def _torch_layout(a):
    return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a  # (kh, kw, in, out) -> (out, in, kh, kw)


def _check(path, restored, tmp_path):
    refs = {r.name: r for r in open_source(path)}
    expected = {n: _as_read(n, np.asarray(a, dtype=np.float32) if a.dtype.name == "bfloat16" else a)
                for n, a in _flat(restored).items()}
    assert list(refs) == list(expected)
    for name, a in expected.items():
        assert refs[name].shape == a.shape, name
        np.testing.assert_array_equal(refs[name].load(), a)
    st = tmp_path / "same.safetensors"
    write_safetensors(st, {n: _torch_layout(a) for n, a in expected.items()})
    ours = tailscope.analyze(path).details.set_index("name")
    other = tailscope.analyze(st).details.set_index("name")
    assert set(ours.index) == set(other.index)
    for name in other.index:
        a, b = ours.loc[name], other.loc[name]
        assert (a.N, a.M, a.rf, a.status) == (b.N, b.M, b.rf, b.status), name
        if b.status == "success":
            assert a.alpha == pytest.approx(b.alpha, rel=1e-12, abs=1e-12), name
    return ours


def test_train_state_params_only_and_values_equal_flax(variables, tmp_path):
    state = {"step": 7, "params": variables["params"], "batch_stats": variables["batch_stats"],
             "opt_state": {"mu": variables["params"], "count": np.int32(7)}}
    path = tmp_path / "checkpoint.msgpack"
    path.write_bytes(serialization.to_bytes(state))
    src = open_source(path)
    assert src.format == "flax (msgpack)" and "params only" in src.describe()
    assert not any("opt_state" in r.name or "batch_stats" in r.name for r in src)
    ours = _check(path, {"params": serialization.msgpack_restore(path.read_bytes())["params"]},
                  tmp_path)
    assert ours.loc["params/embed/embedding", "layer_type"] == "embedding"
    assert ours.loc["params/conv/kernel", "layer_type"] == "conv2d"
    assert (ours.loc["params/conv/kernel", "N"], ours.loc["params/conv/kernel", "M"],
            ours.loc["params/conv/kernel", "rf"]) == (32, 3, 9)
    assert ours.loc["params/attn/query/kernel", ["N", "M"]].tolist() == [48, 48]
    assert (ours.status == "success").sum() >= 5


def test_bfloat16_and_chunked_arrays(variables, tmp_path, monkeypatch):
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), variables["params"])
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 4096)  # force the chunked form
    blob = serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, params))
    assert b"__msgpack_chunked_array__" in blob
    path = tmp_path / "flax_model.msgpack"  # Hugging Face's name: the params dict itself
    path.write_bytes(blob)
    restored = serialization.msgpack_restore(blob)
    ours = _check(path, restored, tmp_path)
    assert ours.loc["fc1/kernel", "dtype"] == "bfloat16"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "flax_model.msgpack").write_bytes(blob)
    assert open_source(folder).format == "flax (msgpack)"  # the folder pattern finds it


def test_damaged_or_foreign_msgpack_fails_in_one_line(variables, tmp_path):
    blob = serialization.to_bytes({"params": variables["params"]})
    for i, bad in enumerate([blob[: len(blob) // 2], blob + b"\x00",
                             serialization.msgpack_serialize({"a": [1, 2, "x"]})]):
        path = tmp_path / f"bad{i}.msgpack"
        path.write_bytes(bad)
        with pytest.raises(SourceError) as info:
            open_source(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_corrupted_bytes_fail_in_one_line_or_read(variables, tmp_path):
    blob = serialization.to_bytes({"params": variables["params"]})
    rng = np.random.default_rng(5)
    path = tmp_path / "bad.msgpack"
    for _ in range(150):
        bad = bytearray(blob)
        for at in rng.integers(0, len(bad), rng.choice([1, 3, 10])):
            bad[at] = rng.integers(0, 256)
        path.write_bytes(bytes(bad[: rng.integers(len(bad) // 2, len(bad) + 1)]))
        try:
            for ref in open_source(path):
                ref.load()
        except SourceError as exc:
            assert "\n" not in str(exc)
