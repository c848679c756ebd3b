"""Quantized checkpoints (issue 22): files written by the reference libraries' own quantizers and
packers, dequantized by tailscope and compared with the library's own float32 dequantization;
alphas compared with analysing the library's output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tailscope
from tailscope.sources import open_source
from tailscope.sources.quantized import E2M1, unpack_bits

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")


def _transformers(module: str, name: str):
    """A dequantizer of transformers' integrations (5.x), or a skip where it is not there."""
    mod = pytest.importorskip(f"transformers.integrations.{module}")
    if not hasattr(mod, name):
        pytest.skip(f"transformers {mod.__name__} has no {name}")
    return getattr(mod, name)


def _write(folder, tensors: dict, qc: dict | None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    st_torch.save_file({k: v.contiguous() for k, v in tensors.items()},
                       str(folder / "model.safetensors"))
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    if qc is not None:
        config["quantization_config"] = qc
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _trained(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A heavy-tailed matrix (a fit has a tail to find)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, rows, generator=g))[0]
    v = torch.linalg.qr(torch.randn(cols, cols, generator=g))[0]
    k = min(rows, cols)
    s = torch.arange(1, k + 1, dtype=torch.float32) ** -0.7 * 3
    w = (u[:, :k] * s) @ v[:, :k].T + 0.02 * torch.randn(rows, cols, generator=g)
    return w.float()


def _check(folder, expected: dict[str, np.ndarray], quant_prefix: str):
    """Each dequantized weight equals the library's float32 output (to one rounding), its
    ``quant`` starts as expected, and the alphas equal analysing the library's output."""
    src = open_source(folder)
    refs = {r.name: r for r in src}
    for name, want in expected.items():
        ref = refs[name]
        assert ref.quant.startswith(quant_prefix), ref.quant
        assert ref.shape == want.shape and ref.is_float
        got = ref.load()
        np.testing.assert_allclose(got, want, rtol=2 ** -23, atol=0)
    ours = tailscope.analyze(folder).details.set_index("name")
    theirs = tailscope.analyze({k: v.astype(np.float32) for k, v in expected.items()})
    theirs = theirs.details.set_index("name")
    for name in expected:
        assert ours.loc[name, "quant"].startswith(quant_prefix)
        assert abs(ours.loc[name, "alpha"] - theirs.loc[name, "alpha"]) < 1e-9
    return src


# --- FP8 ------------------------------------------------------------------------------------------
def _fp8_blocks(w: torch.Tensor, block=(128, 128), dtype=torch.float8_e4m3fn):
    """DeepSeek-V3's block quantization (its fp8_cast / act_quant recipe): one scale per block,
    a partial last block its own."""
    rows, cols = w.shape
    br, bc = block
    rb, cb = math.ceil(rows / br), math.ceil(cols / bc)
    fmax = torch.finfo(dtype).max
    scale = torch.empty(rb, cb)
    q = torch.empty(rows, cols, dtype=dtype)
    for i in range(rb):
        for j in range(cb):
            blk = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
            s = blk.abs().max() / fmax
            scale[i, j] = s
            q[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = (blk / s).to(dtype)
    return q, scale


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_block_scaled_partial_blocks(tmp_path, dtype):
    _dequantize_fp8_weight = _transformers("finegrained_fp8", "_dequantize_fp8_weight")
    dt = getattr(torch, dtype)
    w = _trained(300, 200)  # 3 x 2 blocks, the last ones partial
    q, s = _fp8_blocks(w, dtype=dt)
    folder = _write(tmp_path / "m", {"model.layers.0.mlp.down_proj.weight": q,
                                     "model.layers.0.mlp.down_proj.weight_scale_inv": s,
                                     "model.layers.0.mlp.down_proj.input_scale": torch.ones(1)},
                    {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
                     "activation_scheme": "dynamic"})
    want = _dequantize_fp8_weight(q, s, [128, 128], torch.float32).numpy()
    src = _check(folder, {"model.layers.0.mlp.down_proj.weight": want},
                 f"fp8-{dtype[7:].removesuffix('fn')} block 128x128")
    names = [r.name for r in src]
    assert names == ["model.layers.0.mlp.down_proj.weight"]  # scales absorbed, not weights
    assert "2 companion tensors" in src.note
    # transformers' loading-time Fp8Dequantize refuses a partial block; the backward-pass
    # dequantizer used above handles it, and agrees with the weights before quantization
    assert np.max(np.abs(want - w.numpy())) < 0.15 * np.abs(w.numpy()).max()


def test_fp8_per_tensor_and_channel(tmp_path):
    w = _trained(96, 160)
    t_scale = w.abs().max() / 448
    c_scale = w.abs().amax(1, keepdim=True) / 448
    qt, qc_ = (w / t_scale).to(torch.float8_e4m3fn), (w / c_scale).to(torch.float8_e4m3fn)
    folder = _write(tmp_path / "m", {"a.weight": qt, "a.weight_scale": t_scale.reshape(()),
                                     "b.weight": qc_, "b.weight_scale": c_scale}, None)
    src = _check(folder, {"a.weight": (qt.float() * t_scale).numpy()}, "fp8-e4m3 tensor")
    assert {r.name: r.quant for r in src}["b.weight"] == "fp8-e4m3 channel"
    np.testing.assert_array_equal({r.name: r for r in src}["b.weight"].load(),
                                  (qc_.float() * c_scale).numpy())


# --- compressed-tensors -----------------------------------------------------------------------------
CT_CASES = [
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=False, strategy="group",
                            group_size=32), "int4 packed group 32 asym"),
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="group",
                            group_size=32), "int4 packed group 32"),
    ("pack-quantized", dict(num_bits=3, type="int", symmetric=True, strategy="channel"),
     "int3 packed channel"),
    ("pack-quantized", dict(num_bits=4, type="int", symmetric=True, strategy="channel"),
     "int4 packed channel"),  # 150 inputs: not a whole number of words (weight_shape says)
    ("pack-quantized", dict(num_bits=2, type="int", symmetric=False, strategy="channel"),
     "int2 packed channel asym"),
    ("pack-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="channel"),
     "int8 packed channel asym"),
    ("int-quantized", dict(num_bits=8, type="int", symmetric=True, strategy="channel"),
     "int8 channel"),
    ("naive-quantized", dict(num_bits=8, type="int", symmetric=False, strategy="group",
                             group_size=32), "int8 group 32 asym"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="channel"),
     "fp8-e4m3 channel"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="tensor"),
     "fp8-e4m3 tensor"),
    ("float-quantized", dict(num_bits=8, type="float", symmetric=True, strategy="block",
                             block_structure=[64, 64]), "fp8-e4m3 block 64x64"),
]


@pytest.mark.parametrize("fmt,args,label", CT_CASES, ids=[c[2] for c in CT_CASES])
def test_compressed_tensors(tmp_path, fmt, args, label):
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.utils import calculate_qparams

    assert ct.__version__.startswith("0.20")
    cols = 150 if label == "int4 packed channel" else 160
    w = _trained(96, cols)
    a = QuantizationArgs(**args)
    scheme = QuantizationScheme(targets=["Linear"], weights=a)
    if a.strategy == "group":
        x = w.unflatten(-1, (-1, a.group_size))
        mn, mx = x.amin(-1), x.amax(-1)
    elif a.strategy == "channel":
        mn, mx = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    elif a.strategy == "tensor":
        mn, mx = w.min().reshape(1), w.max().reshape(1)
    else:
        b = a.block_structure[0]
        rb, cb = math.ceil(96 / b), math.ceil(cols / b)
        xp = torch.nn.functional.pad(w, (0, cb * b - cols, 0, rb * b - 96))
        blk = xp.reshape(rb, b, cb, b).transpose(1, 2)
        mn, mx = blk.amin((-1, -2)), blk.amax((-1, -2))
    scale, zero = calculate_qparams(mn, mx, a)
    sd = {"weight": w.clone(), "weight_scale": scale}
    if not a.symmetric:
        sd["weight_zero_point"] = zero
    comp = BaseCompressor.load_from_registry(fmt)
    stored = comp.compress(sd, scheme)
    want = comp.decompress(dict(stored), scheme)["weight"].float().numpy()
    tensors = {f"model.layers.0.self_attn.o_proj.{k}": v for k, v in stored.items()}
    qc = {"quant_method": "compressed-tensors", "format": fmt,
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": a.model_dump()}}}
    folder = _write(tmp_path / "m", tensors, qc)
    src = _check(folder, {"model.layers.0.self_attn.o_proj.weight": want}, label)
    assert len(src) == 1


# --- bitsandbytes -------------------------------------------------------------------------------------
def _bnb_reference(q, state):
    """bitsandbytes' reference dequantization (its default backend, the one its CUDA kernel
    agrees with), in float32: the nested absmax first, then code[nibble] * absmax per block."""
    import bitsandbytes.functional as bnbf
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    # its eager form (the library compiles it with torch.compile: same arithmetic, 20 s slower)
    compute = getattr(_dequantize_4bit_compute, "__wrapped__", _dequantize_4bit_compute)
    absmax = state.absmax
    if state.nested:
        absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
    return compute(q.reshape(-1), absmax.float(), state.code, state.blocksize, state.shape,
                   torch.float32).numpy()


@pytest.mark.parametrize("kind,nested,cols", [("nf4", True, 160), ("nf4", False, 128),
                                              ("fp4", True, 128), ("fp4", False, 160)])
def test_bitsandbytes_4bit(tmp_path, kind, nested, cols):
    bnbf = pytest.importorskip("bitsandbytes.functional")
    w = _trained(96, cols)
    q, state = bnbf.quantize_4bit(w, blocksize=64, quant_type=kind, compress_statistics=nested)
    want = _bnb_reference(q, state)
    cpu = bnbf.dequantize_4bit(q, state).float().numpy()  # its CPU (AVX) kernel
    if cols % 64 == 0:
        np.testing.assert_allclose(cpu, want, rtol=2 ** -23, atol=0)
    else:
        # bitsandbytes 0.50.2's CPU kernel takes the blocks per row: wrong when a row is not a
        # whole number of blocks (quantize_4bit blocks the flattened tensor); its reference
        # dequantization and tailscope agree, and are nearer the weights quantized
        assert np.abs(cpu - want).max() > 1e-3
        assert np.abs(want - w.numpy()).mean() < np.abs(cpu - w.numpy()).mean()
    tensors = {"model.layers.0.mlp.up_proj.weight": q,
               **{f"model.layers.0.mlp.up_proj.weight.{k}": v
                  for k, v in state.as_dict(packed=True).items()}}
    folder = _write(tmp_path / "m", tensors, {"quant_method": "bitsandbytes",
                                              "load_in_4bit": True,
                                              "bnb_4bit_quant_type": kind})
    src = _check(folder, {"model.layers.0.mlp.up_proj.weight": want},
                 f"bnb {kind} b64" + (" nested" if nested else ""))
    assert len(src) == 1


def test_bitsandbytes_int8(tmp_path):
    bnbf = pytest.importorskip("bitsandbytes.functional")
    w = _trained(96, 160)
    cb, scb, _ = bnbf.int8_vectorwise_quant(w.clone())
    want = bnbf.int8_vectorwise_dequant(cb, scb).float().numpy()
    folder = _write(tmp_path / "m", {"m.weight": cb, "m.SCB": scb,
                                     "m.weight_format": torch.tensor(0, dtype=torch.uint8)},
                    {"quant_method": "bitsandbytes", "load_in_8bit": True})
    _check(folder, {"m.weight": want}, "bnb int8 channel")


# --- MXFP4: no CPU packer; an implementation checked against transformers' dequantizer --------------
def _mxfp4_pack(w: np.ndarray):
    """OCP MX e2m1 quantization of the last axis in blocks of 32 (scale 2**(floor(log2(amax)) -
    2), round to the nearest e2m1 value), packed as gpt-oss stores it."""
    *lead, cols = w.shape
    blocks = w.reshape(*lead, cols // 32, 32)
    amax = np.abs(blocks).max(-1)
    e = np.floor(np.log2(np.maximum(amax, 2.0 ** -126))).astype(np.int32) - 2
    scaled = blocks / np.ldexp(1.0, e)[..., None]
    codes = np.abs(np.abs(scaled)[..., None] - E2M1[:8]).argmin(-1) + np.where(scaled < 0, 8, 0)
    codes = codes.astype(np.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed, (e + 127).astype(np.uint8)


def test_mxfp4_gpt_oss_experts(tmp_path):
    convert_moe_packed_tensors = _transformers("mxfp4", "convert_moe_packed_tensors")
    rng = np.random.default_rng(0)
    experts, hidden, inter2 = 3, 128, 96
    w = rng.standard_t(3, size=(experts, inter2, hidden)).astype(np.float32)
    blocks, scales = _mxfp4_pack(w)
    base = "model.layers.0.mlp.experts.gate_up_proj"
    folder = _write(tmp_path / "m", {base + "_blocks": torch.from_numpy(blocks),
                                     base + "_scales": torch.from_numpy(scales)},
                    {"quant_method": "mxfp4"})
    want = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                      dtype=torch.float32).numpy()
    assert want.shape == (experts, hidden, inter2)
    ref = next(r for r in open_source(folder) if r.name == base)
    assert ref.quant == "mxfp4 e2m1 block 32" and ref.shape == want.shape
    np.testing.assert_array_equal(ref.load(), want)
    for i in range(experts):
        np.testing.assert_array_equal(ref.part_loader(i), want[i])
    # the round trip: close to the weights before quantization (e2m1 has 1 bit of mantissa)
    assert np.median(np.abs(np.swapaxes(want, 1, 2) - w) / (np.abs(w) + 1e-3)) < 0.2


# --- GPTQ / AWQ -------------------------------------------------------------------------------------
def _pack_stream(values: np.ndarray, bits: int) -> np.ndarray:
    """A little-endian bit stream of ``values`` along the last axis into int32 words."""
    *lead, n = values.shape
    words = np.zeros((*lead, math.ceil(n * bits / 32)), dtype=np.uint64)
    for i in range(n):
        k, off = divmod(i * bits, 32)
        v = values[..., i].astype(np.uint64)
        words[..., k] |= (v << np.uint64(off)) & np.uint64(0xFFFFFFFF)
        if off + bits > 32:
            words[..., k + 1] |= v >> np.uint64(32 - off)
    return words.astype(np.uint32).view(np.int32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unpack_bits_round_trip(bits):
    rng = np.random.default_rng(bits)
    v = rng.integers(0, 1 << bits, size=(5, 77))
    np.testing.assert_array_equal(unpack_bits(_pack_stream(v, bits), bits, 77), v)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unpack_bits_matches_compressed_tensors(bits):
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    rng = np.random.default_rng(bits)
    v = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(4, 70))
    words = pack_to_int32(torch.from_numpy(v.astype(np.int8)), bits).numpy()
    np.testing.assert_array_equal(unpack_bits(words, bits, 70).astype(np.int64) - (1 << (bits - 1)), v)


def _minmax_qparams(w: torch.Tensor, g_idx: torch.Tensor, bits: int, sym: bool):
    """GPTQ's min-max grid (its Quantizer.find_params) per (output row, group)."""
    maxq = 2 ** bits - 1
    groups = int(g_idx.max()) + 1
    scales, zeros = torch.empty(w.shape[0], groups), torch.empty(w.shape[0], groups)
    for g in range(groups):
        cols = w[:, g_idx == g]
        lo, hi = cols.min(1).values.clamp(max=0), cols.max(1).values.clamp(min=0)
        if sym:
            hi = torch.maximum(lo.abs(), hi)
            lo = -hi
        s = (hi - lo) / maxq
        scales[:, g] = s.half().float()
        zeros[:, g] = torch.full_like(s, (maxq + 1) // 2) if sym else torch.round(-lo / s)
    return scales, zeros


# gptqmodel 7.6.0 pins numpy 2.2, so it is not in the dev extra: make installs it with --no-deps
# into .cache/gptqmodel (the Makefile's install step), which goes on the end of sys.path here
# the gptqmodel fixture (gptqmodel 7.6.0 from .cache/gptqmodel): tests/conftest.py


@pytest.mark.slow
@pytest.mark.parametrize("bits,sym,act_order,fmt", [(4, False, True, "gptq"), (4, True, False, "gptq"),
                                                    (3, False, True, "gptq"), (2, False, False, "gptq"),
                                                    (8, True, True, "gptq"), (4, False, False, "gptq_v2")])
def test_gptq_gptqmodel(gptqmodel, tmp_path, bits, sym, act_order, fmt):
    """GPTQ checkpoints packed by gptqmodel 7.6 (its TorchLinear.pack; v1 zeros by its own
    converter), compared with its dequantize_weight() in float32."""
    from types import SimpleNamespace

    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.utils.model import convert_gptq_v2_to_v1_format_module

    out_f, in_f, gs = 96, 256, 32
    w = _trained(out_f, in_f, seed=bits)
    g_idx = ((torch.randperm(in_f, generator=torch.Generator().manual_seed(1)) if act_order
              else torch.arange(in_f)) // gs).int()
    scales, zeros = _minmax_qparams(w, g_idx, bits, sym)
    lin = torch.nn.Linear(in_f, out_f, bias=False)
    lin.weight.data = w.clone()
    ql = TorchLinear(bits=bits, group_size=gs, sym=sym, desc_act=act_order, in_features=in_f,
                     out_features=out_f, bias=False)
    ql.pack(lin, scales, zeros, g_idx)
    ql.eval()
    saved = {k: v.clone() for k, v in ql.state_dict().items()}
    ql.scales = ql.scales.float()
    want = ql.dequantize_weight().T.float().numpy()  # [out, in], float32
    if fmt == "gptq":
        convert_gptq_v2_to_v1_format_module(ql, SimpleNamespace(bits=bits, pack_dtype=torch.int32))
        saved["qzeros"] = ql.qzeros.clone()
    folder = _write(tmp_path / "m", {f"model.layers.0.self_attn.q_proj.{k}": v
                                     for k, v in saved.items()},
                    {"quant_method": "gptq", "bits": bits, "group_size": gs, "sym": sym,
                     "desc_act": act_order, "checkpoint_format": fmt})
    src = _check(folder, {"model.layers.0.self_attn.q_proj.weight": want}, f"gptq int{bits} g{gs}")
    assert len(src) == 1


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 3, 8])
def test_awq_gptqmodel(gptqmodel, tmp_path, bits):
    """AWQ GEMM checkpoints packed by gptqmodel 7.6 (AwqTorchLinear.pack), compared with its
    dequantize_gemm in float32."""
    from gptqmodel.nn_modules.qlinear.torch_awq import AwqTorchLinear
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm

    out_f, in_f, gs = 96, 256, 64
    w = _trained(out_f, in_f, seed=10 + bits)
    g_idx = (torch.arange(in_f) // gs).int()
    scales, zeros = _minmax_qparams(w, g_idx, bits, sym=False)
    lin = torch.nn.Linear(in_f, out_f, bias=False)
    lin.weight.data = w.clone()
    ql = AwqTorchLinear(bits=bits, group_size=gs, sym=False, desc_act=False, in_features=in_f,
                        out_features=out_f, bias=False)
    ql.pack(lin, scales, zeros)
    saved = {k: v.clone() for k, v in ql.state_dict().items()}
    want = dequantize_gemm(ql.qweight, ql.qzeros, ql.scales.float(), bits, gs).T.numpy()
    folder = _write(tmp_path / "m", {f"model.layers.0.mlp.gate_proj.{k}": v
                                     for k, v in saved.items()},
                    {"quant_method": "awq", "bits": bits, "group_size": gs, "zero_point": True,
                     "version": "gemm"})
    _check(folder, {"model.layers.0.mlp.gate_proj.weight": want}, f"awq int{bits} g{gs}")
    # the forward pass agrees: x @ W.T through gptqmodel's own kernel
    x = torch.randn(3, in_f)
    y = ql(x.half()).float().numpy()
    ours = next(iter(open_source(folder))).load()
    np.testing.assert_allclose(y, x.numpy() @ ours.T, rtol=0.02, atol=0.02 * np.abs(y).max())


# --- what is listed, refused and compared ----------------------------------------------------------
def _fp8_model(tmp_path):
    """An FP8 checkpoint (DeepSeek-V3's block scales) and the float32 model it came from."""
    rng = torch.Generator().manual_seed(3)
    original = {"model.embed_tokens.weight": torch.randn(200, 64, generator=rng),
                "model.layers.0.mlp.down_proj.weight": _trained(160, 200, seed=4),
                "model.layers.0.mlp.up_proj.weight": _trained(200, 160, seed=5),
                "model.norm.weight": torch.ones(64)}
    tensors = {}
    for name, w in original.items():
        if "mlp" in name:
            q, s = _fp8_blocks(w)
            tensors[name], tensors[name + "_scale_inv"] = q, s
        else:
            tensors[name] = w
    qc = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    return _write(tmp_path / "fp8", tensors, qc), _write(tmp_path / "orig", original, None), \
        tensors


def test_describe_shows_quant_without_reading(tmp_path, monkeypatch):
    folder, _, _ = _fp8_model(tmp_path)
    import tailscope.sources.safetensors as sf

    monkeypatch.setattr(sf, "read_exact", lambda *a, **k: pytest.fail("describe read a tensor"))
    table = tailscope.describe(folder).set_index("name")
    assert table.loc["model.layers.0.mlp.down_proj.weight", "quant"] == "fp8-e4m3 block 128x128"
    assert table.loc["model.layers.0.mlp.down_proj.weight", "analyze"]
    assert table.loc["model.embed_tokens.weight", "quant"] == ""
    assert not any(n.endswith("scale_inv") for n in table.index)


def test_unknown_quant_method_is_a_reason(tmp_path):
    folder = _write(tmp_path / "m", {"a.W_q": torch.zeros(64, 32, dtype=torch.uint8),
                                     "a.scale": torch.ones(64, 4, dtype=torch.float16),
                                     "b.weight": torch.randn(64, 48)},
                    {"quant_method": "hqq", "nbits": 4})
    res = tailscope.analyze(folder)
    skipped = res.skipped.set_index("name")
    for name in ("a.W_q", "a.scale"):
        assert "quant_method 'hqq'" in skipped.loc[name, "reason"]
    assert list(res.details["name"]) == ["b.weight"]  # the plain float weight is analysed


def test_orphan_companion_is_refused(tmp_path):
    folder = _write(tmp_path / "m", {"a.scales": torch.ones(8, 64, dtype=torch.float16),
                                     "b.weight_scale_inv": torch.ones(2, 2)},
                    {"quant_method": "gptq", "bits": 4})
    table = tailscope.describe(folder).set_index("name")
    assert not table["analyze"].any()
    assert all("companion" in r for r in table["reason"])


def test_bad_companion_shapes_fail_with_a_reason(tmp_path):
    w = _trained(96, 160)
    q, s = _fp8_blocks(w)
    folder = _write(tmp_path / "m", {"a.weight": q, "a.weight_scale_inv": s[:, :1].repeat(1, 5)},
                    {"quant_method": "fp8", "weight_block_size": [128, 128]})
    res = tailscope.analyze(folder)
    assert res.details.loc[0, "status"] == "failed"
    assert "does not fit a 96x160 weight" in res.details.loc[0, "reason"]


def test_quantization_damage(tmp_path):
    _dequantize_fp8_weight = _transformers("finegrained_fp8", "_dequantize_fp8_weight")
    folder, orig, tensors = _fp8_model(tmp_path)
    table = tailscope.quantization_damage(folder, orig).set_index("name")
    alone = tailscope.analyze(orig).details.set_index("name")
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"):
        row = table.loc[name]
        deq = _dequantize_fp8_weight(tensors[name], tensors[name + "_scale_inv"], [128, 128],
                                     torch.float32).double().numpy()
        w = st_torch.load_file(f"{orig}/model.safetensors")[name].double().numpy()
        assert row["rel_frobenius"] == pytest.approx(np.linalg.norm(deq - w) / np.linalg.norm(w),
                                                     rel=1e-12)
        assert 0 < row["rel_frobenius"] < 0.1
        assert row["alpha_original"] == alone.loc[name, "alpha"]
        assert row["delta_alpha"] == row["alpha_quantized"] - row["alpha_original"]
        assert row["quant"] == "fp8-e4m3 block 128x128"
    assert table.loc["model.embed_tokens.weight", "rel_frobenius"] == 0
    # base_model= keeps its meaning: the spectrum of W_q - W, the quantization noise
    noise = tailscope.analyze(folder, base_model=orig).details.set_index("name")
    assert noise.loc["model.layers.0.mlp.down_proj.weight", "quant"] == "fp8-e4m3 block 128x128"
    assert noise.loc["model.layers.0.mlp.down_proj.weight", "lambda_max"] < \
        alone.loc["model.layers.0.mlp.down_proj.weight", "lambda_max"] * 1e-2


def test_cli_report_quantized_with_base_shows_the_damage(tmp_path, capsys):
    """`tailscope report FP8 --base ORIGINAL`: the report is of the dequantized model, and its
    comparison section the quantization damage, each layer's relative error that of
    transformers' own FP8 dequantization."""
    import html
    import re

    from cli_helpers import cli

    _dequantize_fp8_weight = _transformers("finegrained_fp8", "_dequantize_fp8_weight")
    folder, orig, tensors = _fp8_model(tmp_path)
    out_html = tmp_path / "r.html"
    code, out, err = cli(capsys, "report", folder, "--base", orig, "-o", out_html,
                         "--no-layer-figures", "--quiet")
    assert code == 0, err
    assert (f"comparing a quantized model (fp8-e4m3 block 128x128) with its original {orig}"
            in out), out
    page = out_html.read_text()
    assert "<h2>Quantization damage: compared to the original model</h2>" in page
    assert "Compared to the base model" not in page
    section = page.split("<h2>Quantization damage")[1]
    head = [html.unescape(c) for c in re.findall(r"<th>(.*?)</th>", section.split("</thead>")[0])]
    assert {"alpha_original", "alpha_quantized", "delta_alpha", "rel_frobenius"} <= set(head)
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>")[1].split("</tbody>")[0]):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr)]
        rows[cells[head.index("name")]] = dict(zip(head, cells))
    alone = tailscope.analyze(orig).details.set_index("name")
    w_all = st_torch.load_file(f"{orig}/model.safetensors")
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"):
        deq = _dequantize_fp8_weight(tensors[name], tensors[name + "_scale_inv"], [128, 128],
                                     torch.float32).double().numpy()
        w = w_all[name].double().numpy()
        assert float(rows[name]["rel_frobenius"]) == pytest.approx(
            np.linalg.norm(deq - w) / np.linalg.norm(w), rel=1e-3)  # shown with 4 digits
        assert float(rows[name]["alpha_original"]) == pytest.approx(alone.loc[name, "alpha"],
                                                                    rel=1e-3)
        assert rows[name]["quant"] == "fp8-e4m3 block 128x128"
    assert float(rows["model.embed_tokens.weight"]["rel_frobenius"]) == 0
    # the report's own analysis is of the dequantized model, not of W_q - W
    main = page.split("<h2>Quantization damage")[0]
    main = main[main.rindex("<thead>"):]
    mhead = [html.unescape(c) for c in re.findall(r"<th[^>]*>(.*?)</th>", main.split("</thead>")[0])]
    mrow = re.search(r"<tr[^>]*><td[^>]*>[^<]*</td><td class='l' "
                     r"data-v='model.layers.0.mlp.down_proj'>.*?</tr>", main).group(0)
    alpha = float(re.findall(r"data-v='([^']*)'", mrow)[mhead.index("alpha")])
    dequantized = tailscope.analyze(folder).details.set_index("name")
    noise = tailscope.analyze(folder, base_model=orig).details.set_index("name")
    name = "model.layers.0.mlp.down_proj.weight"
    assert alpha == dequantized.loc[name, "alpha"] != noise.loc[name, "alpha"]


def test_fp8_fused_experts(tmp_path):
    """transformers 5's fused FP8 experts (FP8Experts: gate_up_proj [E, 2I, H] and
    gate_up_proj_scale_inv per 128 x 128 block of each expert)."""
    _dequantize_fp8_weight = _transformers("finegrained_fp8", "_dequantize_fp8_weight")
    ws = [_trained(192, 160, seed=20 + e) for e in range(3)]
    qs, ss = zip(*(_fp8_blocks(w) for w in ws))
    q, s = torch.stack(qs), torch.stack(ss)
    base = "model.layers.0.mlp.experts.gate_up_proj"
    folder = _write(tmp_path / "m", {base: q, base + "_scale_inv": s},
                    {"quant_method": "fp8", "weight_block_size": [128, 128]})
    want = _dequantize_fp8_weight(q, s, [128, 128], torch.float32).numpy()
    ref = next(r for r in open_source(folder) if r.name.startswith(base))
    assert ref.quant == "fp8-e4m3 block 128x128"
    np.testing.assert_array_equal(ref.load(), want)
    np.testing.assert_array_equal(ref.part_loader(1), want[1])


def test_a_float_model_is_left_alone(tmp_path):
    """No quantization_config and nothing quantized: a tensor named like a companion is the
    model's own (analysed as any float matrix)."""
    folder = _write(tmp_path / "m", {"vit.layer_scales": torch.randn(64, 48),
                                     "b.weight": torch.randn(64, 48)}, None)
    table = tailscope.describe(folder).set_index("name")
    assert table["analyze"].all() and (table["quant"] == "").all()


def test_cli_describe_says_what_was_absorbed(tmp_path, capsys):
    from cli_helpers import cli

    folder, _, _ = _fp8_model(tmp_path)
    code, out, _ = cli(capsys, "describe", folder, "--columns", "name,quant,analyze")
    assert code == 0
    assert "2 quantized weights dequantized (fp8); 2 companion tensors" in out
    assert "fp8-e4m3 block 128x128" in out


def test_mxfp4_gpt_oss_experts_are_expert_rows(tmp_path):
    """The dequantizer and the expert split together: a gpt-oss MXFP4 stack gives one gate and
    one up matrix per expert, each the forward pass's (out x in) matrix of transformers'
    dequantized stack, and its alpha that of the matrix analysed alone."""
    import tailscope

    convert_moe_packed_tensors = _transformers("mxfp4", "convert_moe_packed_tensors")
    rng = np.random.default_rng(1)
    experts, hidden, inter2 = 3, 128, 192
    w = rng.standard_t(3, size=(experts, inter2, hidden)).astype(np.float32)
    blocks, scales = _mxfp4_pack(w)
    base = "model.layers.0.mlp.experts.gate_up_proj"
    folder = tmp_path / "m"
    _write(folder, {base + "_blocks": torch.from_numpy(blocks),
                    base + "_scales": torch.from_numpy(scales)}, {"quant_method": "mxfp4"})
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="gpt_oss", architectures=["GptOssForCausalLM"],
                  num_local_experts=experts, hidden_size=hidden)
    (folder / "config.json").write_text(json.dumps(config))
    want = convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                      dtype=torch.float32).numpy()  # [E, in, out], interleaved
    d = tailscope.analyze(str(folder), seed=0).details
    rows = d[d["expert"].notna()]
    assert len(rows) == 2 * experts and set(rows["layer_type"]) == {"expert"}
    assert set(rows["quant"]) == {"mxfp4 e2m1 block 32"}
    for e in range(experts):
        for kind, cols in (("gate", slice(0, None, 2)), ("up", slice(1, None, 2))):
            row = rows[rows["name"] == f"{base}[e{e}.{kind}]"].iloc[0]
            alone = tailscope.analyze({"m.weight": np.ascontiguousarray(want[e][:, cols].T)},
                                      seed=0).details.iloc[0]
            assert (row["N"], row["M"]) == (alone["N"], alone["M"])
            assert row["alpha"] == pytest.approx(alone["alpha"], rel=1e-12, abs=1e-12)
            assert row["lambda_max"] == pytest.approx(alone["lambda_max"], rel=1e-12)
