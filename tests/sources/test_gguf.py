"""GGUF through the gguf package: files written here by gguf's own GGUFWriter; dimensions, names,
types and every dequantized value checked against arrays computed in this test from the stored
ints and scales (ggml's reference layouts, written out independently below), and the alphas
against the same arrays read from safetensors."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import quantize  # noqa: E402

import tailscope  # noqa: E402
from tailscope.sources import SourceError, open_source  # noqa: E402
from tailscope.sources.safetensors import write_safetensors  # noqa: E402

RNG = np.random.default_rng(15)
F16 = np.float16


# --- ggml's block layouts, dequantized here in float32 as ggml's reference C code does ----------
def deq_q8_0(raw):  # block of 32: d (f16), qs int8[32]
    b = raw.reshape(-1, 34)
    d = b[:, :2].copy().view(F16).astype(np.float32)
    return (d * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)


def deq_q4_0(raw):  # block of 32: d (f16), qs[16]: low nibbles x[0:16], high nibbles x[16:32]
    b = raw.reshape(-1, 18)
    d = b[:, :2].copy().view(F16).astype(np.float32)
    qs = b[:, 2:]
    q = np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    return (d * q.astype(np.float32)).reshape(-1)


def _scale_min_k4(j, s):
    if j < 4:
        return s[:, j] & 63, s[:, j + 4] & 63
    return ((s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4),
            (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4))


def deq_q4_k(raw):  # block of 256: d, dmin (f16), scales[12] (6-bit), qs[128]
    b = raw.reshape(-1, 144)
    d = b[:, 0:2].copy().view(F16).astype(np.float32)[:, 0]
    dmin = b[:, 2:4].copy().view(F16).astype(np.float32)[:, 0]
    sc, qs = b[:, 4:16], b[:, 16:]
    out = np.empty((len(b), 256), np.float32)
    for k in range(4):  # 64 values per step: two sub-blocks with their own scale and min
        q = qs[:, 32 * k:32 * (k + 1)]
        for half, nib in ((0, q & 0xF), (1, q >> 4)):
            s, m = _scale_min_k4(2 * k + half, sc)
            d1 = d * s.astype(np.float32)
            m1 = dmin * m.astype(np.float32)
            out[:, 64 * k + 32 * half:64 * k + 32 * (half + 1)] = \
                d1[:, None] * nib.astype(np.float32) - m1[:, None]
    return out.reshape(-1)


def deq_q6_k(raw):  # block of 256: ql[128], qh[64], scales int8[16], d (f16)
    b = raw.reshape(-1, 210)
    ql, qh, sc = b[:, :128], b[:, 128:192], b[:, 192:208].view(np.int8).astype(np.float32)
    d = b[:, 208:210].copy().view(F16).astype(np.float32)[:, 0]
    out = np.empty((len(b), 256), np.float32)
    for n in range(2):
        L, H, S = ql[:, 64 * n:64 * (n + 1)], qh[:, 32 * n:32 * (n + 1)], sc[:, 8 * n:8 * (n + 1)]
        for l in range(32):
            i = l // 16
            qs = (((L[:, l] & 0xF) | ((H[:, l] >> 0) & 3) << 4),
                  ((L[:, l + 32] & 0xF) | ((H[:, l] >> 2) & 3) << 4),
                  ((L[:, l] >> 4) | ((H[:, l] >> 4) & 3) << 4),
                  ((L[:, l + 32] >> 4) | ((H[:, l] >> 6) & 3) << 4))
            for k, q in enumerate(qs):
                out[:, 128 * n + l + 32 * k] = (d * S[:, i + 2 * k]) * \
                    (q.astype(np.int16) - 32).astype(np.float32)
    return out.reshape(-1)


def _k_blocks(rows, cols, size, d_at):
    """Random K-quant blocks with sane f16 scales at the byte offsets ``d_at``."""
    raw = RNG.integers(0, 256, size=(rows * cols // 256, size), dtype=np.uint8)
    for at in d_at:
        raw[:, at:at + 2] = RNG.uniform(0.001, 0.02, len(raw)).astype(F16)[:, None].view(np.uint8)
    return raw.reshape(rows, -1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small llama-shaped GGUF (written by gguf.GGUFWriter) and the float32 arrays it holds,
    dequantized independently here, keyed by GGUF name."""
    folder = tmp_path_factory.mktemp("gguf")
    f32 = RNG.standard_normal((100, 64)).astype(np.float32)  # token_embd: vocab x embd
    f16 = RNG.standard_normal((64, 48)).astype(F16)
    bf = RNG.standard_normal((40, 64)).astype(np.float32)
    w8 = RNG.standard_normal((48, 64)).astype(np.float32)
    w4 = RNG.standard_normal((64, 96)).astype(np.float32)
    exps = RNG.standard_normal((3, 32, 64)).astype(np.float32)
    raw = {
        "token_embd.weight": (f32, None),
        "blk.0.attn_norm.weight": (np.ones(64, np.float32), None),
        "blk.0.attn_q.weight": (f16, None),
        "blk.0.attn_k.weight": (quantize(bf, Q.BF16), Q.BF16),
        "blk.0.attn_v.weight": (quantize(w8, Q.Q8_0), Q.Q8_0),
        "blk.0.attn_output.weight": (quantize(w4, Q.Q4_0), Q.Q4_0),
        "blk.0.ffn_up.weight": (_k_blocks(72, 256, 144, (0, 2)), Q.Q4_K),
        "blk.0.ffn_down.weight": (_k_blocks(256, 512, 210, (208,)), Q.Q6_K),
        "blk.0.ffn_up_exps.weight": (quantize(exps, Q.Q8_0), Q.Q8_0),
        "output.weight": (RNG.standard_normal((100, 64)).astype(np.float32), None),
    }
    path = folder / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for name, (a, qt) in raw.items():
        w.add_tensor(name, a, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    deq = {Q.Q8_0: deq_q8_0, Q.Q4_0: deq_q4_0, Q.Q4_K: deq_q4_k, Q.Q6_K: deq_q6_k,
           Q.BF16: lambda r: (r.view(np.uint16).astype(np.uint32) << 16).view(np.float32)}
    shapes = {"blk.0.attn_k.weight": (40, 64), "blk.0.attn_v.weight": (48, 64),
              "blk.0.attn_output.weight": (64, 96), "blk.0.ffn_up.weight": (72, 256),
              "blk.0.ffn_down.weight": (256, 512), "blk.0.ffn_up_exps.weight": (3, 32, 64)}
    arrays = {n: a if qt is None else deq[qt](np.ascontiguousarray(a).reshape(-1)).reshape(shapes[n])
              for n, (a, qt) in raw.items()}
    return path, arrays


def test_names_shapes_types_and_values_equal_independent_dequantization(model):
    path, arrays = model
    src = open_source(path)
    assert src.format == "gguf" and "llama" in src.describe()
    refs = {r.name: r for r in src}
    assert list(refs)[:3] == ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight"]
    for name, a in arrays.items():
        if a.ndim == 3:  # an expert stack: one matrix per expert
            for e in range(a.shape[0]):
                ref = refs[f"{name}[e{e}]"]
                assert ref.shape == a.shape[1:]
                np.testing.assert_array_equal(ref.load(), a[e])
            continue
        assert refs[name].shape == a.shape, name  # GGUF's ne order reversed to numpy's
        np.testing.assert_array_equal(refs[name].load(), a)
    assert refs["blk.0.ffn_up.weight"].dtype == "float32 (q4_k)"
    assert refs["blk.0.attn_q.weight"].dtype == "float16"
    assert refs["blk.0.attn_k.weight"].dtype == "bfloat16"


def test_alphas_equal_the_same_arrays_read_from_safetensors(model, tmp_path):
    path, arrays = model
    flat = {}
    for name, a in arrays.items():
        if a.ndim == 3:
            flat.update({f"{name}[e{e}]": a[e] for e in range(a.shape[0])})
        else:
            flat[name] = a
    st = tmp_path / "same.safetensors"
    write_safetensors(st, flat)
    ours = tailscope.analyze(path).details.set_index("name")
    other = tailscope.analyze(st).details.set_index("name")
    assert len(ours) == len(flat) - 1  # every matrix but the norm vector
    for name in ours.index:
        a, b = ours.loc[name], other.loc[name]
        assert (a.N, a.M, a.rf) == (b.N, b.M, b.rf)
        assert a.alpha == pytest.approx(b.alpha, rel=1e-12, abs=1e-12), name
    assert ours.loc["token_embd.weight", "layer_type"] == "embedding"
    assert ours.loc["output.weight", "layer_type"] == "dense"
    assert (ours.loc["blk.0.ffn_down.weight", "N"], ours.loc["blk.0.ffn_down.weight", "M"]) == (512, 256)


def test_damaged_gguf_fails_in_one_line(model, tmp_path):
    path, _ = model
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SourceError, match="GGUF") as info:
        open_source(cut)
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.gguf"  # no magic: the suffix gives the GGUF reader's message
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(SourceError, match="GGUF"):
        open_source(junk)


def test_folder_finds_gguf(model, tmp_path):
    path, _ = model
    (tmp_path / "m.gguf").write_bytes(path.read_bytes())
    assert open_source(tmp_path).format == "gguf"


def test_llama_cpp_attention_names_split_into_heads(model):
    from tailscope.sources.split import expand

    path, arrays = model
    refs = {r.name: r for r in expand(open_source(path), heads=4)}
    q = arrays["blk.0.attn_q.weight"]  # (64, 48): 4 heads of 16 rows
    assert refs["blk.0.attn_q.weight"].split_into
    for h in range(4):
        np.testing.assert_array_equal(refs[f"blk.0.attn_q.weight[h{h}]"].load(),
                                      q[16 * h:16 * (h + 1)])
    assert "blk.0.ffn_up.weight[h0]" not in refs


def test_corrupted_bytes_fail_in_one_line_or_read(model, tmp_path):
    """Seeded byte flips in the header and tensor infos: a one-line SourceError or a read."""
    path, _ = model
    blob = path.read_bytes()
    rng = np.random.default_rng(4)
    bad_path = tmp_path / "bad.gguf"
    for _ in range(100):
        bad = bytearray(blob)
        for at in rng.integers(4, 1200, rng.choice([1, 3])):
            bad[at] = rng.integers(0, 256)
        bad_path.write_bytes(bytes(bad))
        try:
            for ref in open_source(bad_path):
                ref.load()
        except SourceError as exc:
            assert "\n" not in str(exc)
