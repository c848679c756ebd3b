"""Layer-wise schedules against the published formulas (TempBalance tb_linear_map, AlphaDecay),
written here independently in float64."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tailscope  # noqa: E402
from tailscope.train import layer_learning_rates, layer_weight_decays, tb_linear_map  # noqa: E402


def hill_mid(w: np.ndarray) -> float:
    """PL_Alpha_Hill of the research code: ascending eigenvalues of W^T W, i = int(L/2),
    alpha = 1 + n / (sum ln x[i:] - n ln x[i])."""
    ev = np.sort(np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False) ** 2)
    i = int(len(ev) / 2)
    n = len(ev) - i
    return 1 + n / (np.log(ev[i:]).sum() - n * np.log(ev[i]))


def linear(a, amin, amax, lo, hi):
    """The tb_linear_map of one score, by hand (np.interp's value at amin == amax is hi)."""
    if amax == amin:
        return hi
    return lo + (a - amin) * (hi - lo) / (amax - amin)


class Net(torch.nn.Module):
    """Names as in TempBalance's CNNs: conv<k> followed by bn<k>."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv0 = torch.nn.Conv2d(3, 16, 3)
        self.conv1 = torch.nn.Conv2d(16, 32, 3)
        self.bn1 = torch.nn.BatchNorm2d(32)
        self.fc1 = torch.nn.Linear(128, 96)
        self.fc2 = torch.nn.Linear(96, 80)
        self.small = torch.nn.Linear(80, 40)  # 40 eigenvalues: below AlphaDecay's 50
        self.norm = torch.nn.LayerNorm(40)
        self.head = torch.nn.Linear(40, 10)
        with torch.no_grad():  # heavier tails in fc2 so the alphas differ
            self.fc2.weight.copy_(torch.distributions.StudentT(2.5).sample(self.fc2.weight.shape)
                                  * 0.05)


def _param_ids(groups):
    return [id(p) for g in groups for p in g["params"]]


def test_learning_rates_equal_tb_linear_map():
    net = Net()
    a = tailscope.analyze(net, hill=True)
    groups = layer_learning_rates(a, 0.1, module=net)
    # every parameter exactly once
    ids = _param_ids(groups)
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    d = a.details.set_index("name")
    sched = ["conv1", "fc1", "fc2", "small"]  # first (conv0) and last (head) are left out
    alphas = {m: float(d.loc[f"{m}.weight", "alpha_hill"]) for m in sched}
    amin, amax = min(alphas.values()), max(alphas.values())
    assert amax > amin
    by_name = {g["name"]: g for g in groups}
    for m in sched:
        want = linear(alphas[m], amin, amax, 0.05, 0.15)
        assert abs(by_name[m]["lr"] - want) <= 1e-12
        assert {id(p) for p in by_name[m]["params"]} == {id(p) for p in
                                                         getattr(net, m).parameters()}
    # the batch norm follows its conv by name; the rest is one group at the base lr
    assert by_name["bn1"]["lr"] == by_name["conv1"]["lr"]
    rest = groups[-1]
    assert rest["name"] is None and rest["lr"] == 0.1
    assert {id(p) for p in rest["params"]} == {id(p) for m in (net.conv0, net.norm, net.head)
                                               for p in m.parameters()}
    # the extremes hit the ends of the range
    lrs = [by_name[m]["lr"] for m in sched]
    assert min(lrs) == pytest.approx(0.05, abs=1e-15) and max(lrs) == pytest.approx(0.15,
                                                                                    abs=1e-15)


def test_alpha_hill_used_is_the_research_formula():
    net = Net()
    groups = layer_learning_rates(net, 1.0)  # analysed here
    for g in groups[:-1]:
        if g["name"].startswith("fc") or g["name"] == "small":
            w = getattr(net, g["name"]).weight.detach().numpy()
            assert g["metric"] == pytest.approx(hill_mid(w), rel=1e-9)


def test_custom_range_and_slope():
    net = Net(1)
    a = tailscope.analyze(net, hill=True)
    groups = layer_learning_rates(a, 3e-4, lr_min_ratio=0.2, lr_slope=2.5, module=net,
                                  skip_first=False, skip_last=False)
    named = [g for g in groups if g["name"] is not None and g["name"] != "bn1"]
    vals = np.array([g["metric"] for g in named])
    for g in named:
        want = linear(g["metric"], vals.min(), vals.max(), 0.2 * 3e-4, 2.7 * 3e-4)
        assert abs(g["lr"] - want) <= 1e-12
    assert "conv0" in {g["name"] for g in named} and "head" in {g["name"] for g in named}


def test_all_alphas_equal_gives_the_top_of_the_range():
    """np.interp on a zero-width range returns the right end: TempBalance gives every layer
    (lr_min_ratio + lr_slope) * lr when all alphas are equal (here: one scheduled layer)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 60), torch.nn.ReLU(), torch.nn.Linear(60, 60),
                              torch.nn.ReLU(), torch.nn.Linear(60, 5))
    groups = layer_learning_rates(net, 0.01)
    assert [g["name"] for g in groups] == ["2", None]
    assert groups[0]["lr"] == pytest.approx(0.015, abs=1e-15)
    np.testing.assert_array_equal(tb_linear_map([2.0, 2.0, 2.0], 1.0, 3.0), [3.0, 3.0, 3.0])


def test_weight_decays_equal_alphadecay():
    net = Net(2)
    a = tailscope.analyze(net, hill=True)
    groups = layer_weight_decays(a, 0.05, module=net)
    by_name = {g["name"]: g for g in groups}
    assert "small" not in by_name  # 40 eigenvalues < 50
    d = a.details.set_index("name")
    sched = ["conv1", "fc1", "fc2"]
    alphas = {m: float(d.loc[f"{m}.weight", "alpha_hill"]) for m in sched}
    amin, amax = min(alphas.values()), max(alphas.values())
    for m in sched:
        want = linear(alphas[m], amin, amax, 0.6666 * 0.05, 3.0 * 0.05)
        assert abs(by_name[m]["weight_decay"] - want) <= 1e-12
    assert groups[-1]["weight_decay"] == 0.05
    assert sorted(_param_ids(groups)) == sorted(id(p) for p in net.parameters())
    # usable as they are
    opt = torch.optim.AdamW(groups, lr=1e-3)
    assert len(opt.param_groups) == len(groups)


def test_a_failed_layer_is_not_scheduled():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 60), torch.nn.Linear(60, 60),
                              torch.nn.Linear(60, 60), torch.nn.Linear(60, 60),
                              torch.nn.Linear(60, 5))
    with torch.no_grad():
        net[2].weight.zero_()
    a = tailscope.analyze(net, hill=True)
    assert not math.isfinite(float(a.details.set_index("name").loc["2.weight", "alpha_hill"]))
    groups = layer_learning_rates(a, 0.1, module=net)
    assert [g["name"] for g in groups] == ["1", "3", None]
    assert {id(p) for p in net[2].parameters()} <= {id(p) for p in groups[-1]["params"]}


@pytest.mark.parametrize("kw, match", [
    (dict(base_lr=-1), "base_lr"), (dict(base_lr=float("nan")), "base_lr"),
    (dict(base_lr=0.1, lr_slope="x"), "lr_slope"), (dict(base_lr=0.1, metric="nope"), "metric"),
])
def test_bad_input_is_one_line(kw, match):
    net = Net()
    with pytest.raises(ValueError, match=match) as err:
        layer_learning_rates(net, **kw)
    assert "\n" not in str(err.value)


def test_analysis_needs_its_module():
    net = Net()
    a = tailscope.analyze(net, hill=True)
    with pytest.raises(ValueError, match="module="):
        layer_learning_rates(a, 0.1)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        layer_weight_decays([1, 2], 0.1)
