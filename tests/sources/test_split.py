"""Derived matrices: recurrent gate stacks split gate by gate, fused attention into q/k/v and heads."""

import numpy as np
import pytest
import torch
from oracles import powerlaw_fit

import tailscope
from tailscope.datasets import fetch_wheel_file
from tailscope.sources import open_source
from tailscope.sources.split import expand


def _parts(src, **kw):
    return {r.name: r for r in expand(open_source(src), **kw)}


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.attn = torch.nn.MultiheadAttention(16, 4)
        self.lstm = torch.nn.LSTM(10, 12, num_layers=2, bidirectional=True)
        self.gru = torch.nn.GRU(10, 12)
        self.proj = torch.nn.LSTM(10, 12, proj_size=5)
        self.cell = torch.nn.GRUCell(7, 9)


@pytest.fixture(scope="module")
def net():
    return Net()


@pytest.mark.parametrize("saved", [False, True])
def test_torch_gates_follow_torchs_documented_order(net, saved, tmp_path_factory):
    src = net
    if saved:
        src = tmp_path_factory.mktemp("rnn") / "net.pt"
        torch.save(net.state_dict(), src)
    refs = _parts(src)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    # LSTM: weight_ih_l{k} = W_ii | W_if | W_ig | W_io (torch.nn.LSTM docs), H = 12
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1_reverse",
                 "lstm.weight_hh_l1"):
        assert refs[name].split_into == tuple(f"{name}[{g}]" for g in "ifgo")
        for k, g in enumerate("ifgo"):
            np.testing.assert_array_equal(refs[f"{name}[{g}]"].load(), sd[name][k * 12:(k + 1) * 12])
            assert refs[f"{name}[{g}]"].role == "recurrent"
    # GRU: W_ir | W_iz | W_in (torch.nn.GRU docs); GRUCell the same with H = 9
    for name, h in (("gru.weight_ih_l0", 12), ("gru.weight_hh_l0", 12), ("cell.weight_ih", 9),
                    ("cell.weight_hh", 9)):
        for k, g in enumerate("rzn"):
            np.testing.assert_array_equal(refs[f"{name}[{g}]"].load(), sd[name][k * h:(k + 1) * h])
    # proj_size: weight_hh_l0 is (4H, P) with P = 5; H = 12 comes from weight_hr_l0 (P, H)
    assert sd["proj.weight_hh_l0"].shape == (48, 5)
    np.testing.assert_array_equal(refs["proj.weight_hh_l0[g]"].load(), sd["proj.weight_hh_l0"][24:36])
    # MultiheadAttention: in_proj_weight (3E, E) = q | k | v
    w = sd["attn.in_proj_weight"]
    for k, part in enumerate("qkv"):
        np.testing.assert_array_equal(refs[f"attn.in_proj_weight[{part}]"].load(), w[k * 16:(k + 1) * 16])
    assert "attn.out_proj.weight" in refs and not refs["attn.out_proj.weight"].split_into


def test_heads_split_q_k_v_along_rows_and_out_proj_along_columns(net):
    refs = _parts(net, heads=4)
    w = net.attn.in_proj_weight.detach().numpy()
    o = net.attn.out_proj.weight.detach().numpy()
    for h in range(4):
        np.testing.assert_array_equal(refs[f"attn.in_proj_weight[k][h{h}]"].load(),
                                      w[16 + 4 * h:16 + 4 * (h + 1)])
        np.testing.assert_array_equal(refs[f"attn.out_proj.weight[h{h}]"].load(), o[:, 4 * h:4 * (h + 1)])
    assert refs["attn.out_proj.weight"].split_into
    # indices follow the expanded model order
    assert [r.index for r in refs.values()] == list(range(len(refs)))


def test_no_split_keeps_the_stacks_whole(net):
    refs = _parts(net, split=False)
    assert "lstm.weight_ih_l0[i]" not in refs and "attn.in_proj_weight[q]" not in refs
    assert refs["lstm.weight_ih_l0"].shape == (48, 10)


def test_analyze_and_describe_show_derived_layers(net):
    table = tailscope.describe(net, min_evals=1)
    row = table[table["name"] == "lstm.weight_ih_l0"].iloc[0]
    assert not row["analyze"] and "split into 4 matrices [i], [f], [g], [o]" in row["reason"]
    gates = table[table["name"].str.startswith("lstm.weight_ih_l0[")]
    assert list(gates["name"]) == [f"lstm.weight_ih_l0[{g}]" for g in "ifgo"]
    assert set(gates["layer_type"]) == {"recurrent"} and gates["analyze"].all()
    a = tailscope.analyze(net, min_evals=1, layers=["recurrent"])
    assert set(a.details["layer_type"]) == {"recurrent"}
    w = net.lstm.weight_hh_l0.detach().numpy().astype(np.float64)[24:36]  # gate g
    np.testing.assert_allclose(a.esd("lstm.weight_hh_l0[g]"), np.linalg.eigvalsh(w.T @ w), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.slow  # the real g2p GRU checkpoint, every gate analysed
def test_g2p_gru_checkpoint_split_gate_by_gate():
    """g2p-en's numpy GRU (keys enc_w_ih, enc_w_hh, dec_w_ih, dec_w_hh: (768, 256) = 3 x 256 rows,
    torch's r, z, n order, as its grucell() slices them) analysed gate by gate."""
    path = fetch_wheel_file("g2p-en==2.1.0", "g2p_en/checkpoint20.npz")
    a = tailscope.analyze(path)
    d = a.details.set_index("name")
    with np.load(path) as npz:
        raw = {k: npz[k].astype(np.float64) for k in npz.files}
    for stack in ("enc_w_ih", "enc_w_hh", "dec_w_ih", "dec_w_hh"):
        assert stack in set(a.skipped["name"])
        for k, g in enumerate("rzn"):
            name = f"{stack}[{g}]"
            assert d.loc[name, "layer_type"] == "recurrent" and d.loc[name, "N"] == 256
            w = raw[stack][k * 256:(k + 1) * 256]
            np.testing.assert_allclose(a.esd(name), np.linalg.eigvalsh(w.T @ w), rtol=1e-9, atol=1e-9)
    ev = a.esd("dec_w_hh[n]")
    ref = powerlaw_fit(ev[ev > 1e-5])
    assert d.loc["dec_w_hh[n]", "alpha"] == pytest.approx(ref.alpha, rel=1e-9)
    assert d.loc["dec_w_hh[n]", "xmin"] == pytest.approx(ref.xmin, rel=1e-12)


def test_heads_must_be_positive():
    with pytest.raises(ValueError, match="heads"):
        tailscope.describe(np.ones((4, 4)), heads=0)


def test_heads_with_grouped_kv_use_the_q_head_dim():
    """LLaMA-style names: q_proj (heads*d, E), k/v_proj (kv_heads*d, E), o_proj (E, heads*d)."""
    rng = np.random.default_rng(3)
    p = "model.layers.0.self_attn"
    shapes = {"q_proj": (32, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 32)}
    sd = {f"{p}.{k}.weight": rng.standard_normal(s) for k, s in shapes.items()}
    sd["model.layers.0.mlp.down_proj.weight"] = rng.standard_normal((32, 64))
    refs = _parts(sd, heads=4)
    k_heads = [n for n in refs if n.startswith(f"{p}.k_proj.weight[")]
    assert k_heads == [f"{p}.k_proj.weight[h{i}]" for i in range(2)]
    np.testing.assert_array_equal(refs[f"{p}.k_proj.weight[h1]"].load(), sd[f"{p}.k_proj.weight"][8:16])
    np.testing.assert_array_equal(refs[f"{p}.q_proj.weight[h3]"].load(), sd[f"{p}.q_proj.weight"][24:32])
    np.testing.assert_array_equal(refs[f"{p}.o_proj.weight[h2]"].load(), sd[f"{p}.o_proj.weight"][:, 16:24])
    assert not refs["model.layers.0.mlp.down_proj.weight"].split_into
    assert refs[f"{p}.q_proj.weight[h0]"].module == f"{p}.q_proj[h0]"
