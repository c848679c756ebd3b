"""Training checkpoints whose metadata needs foreign classes: read without running any code.

Real Lightning checkpoints written here by lightning's Trainer, torch.save of a training state
with a module object, an optimizer, a scheduler and custom classes, and malicious pickles whose
reduce would run os.system / eval (the side-effect file must not appear).
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch

from tailscope import analyze
from tailscope.sources import SourceError, open_source


@dataclasses.dataclass
class Config:
    width: int = 12
    tag: str = "run"


class Marker:
    """A custom class whose unpickling would leave a file behind if any of its code ran."""

    path = ""

    def __init__(self, path):
        self.path = str(path)

    def __setstate__(self, state):
        open(state["path"], "w").close()  # noqa: SIM115 - the side effect the test looks for
        self.__dict__.update(state)


class SystemCall:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


class EvalCall:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return eval, (f"open({self.path!r}, 'w').close()",)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.ReLU(),
                                        torch.nn.Linear(40, 16))
        self.head = torch.nn.Linear(16, 4)
        self.register_buffer("scale", torch.ones(4))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)


def _same_tensors(src, expected: dict):
    assert [r.name for r in src] == list(expected)
    for ref in src:
        np.testing.assert_array_equal(ref.load(), expected[ref.name].detach().numpy())


def test_lightning_checkpoint_with_dataclass_and_custom_hparams(tmp_path):
    L = pytest.importorskip("lightning")

    class Module(L.LightningModule):
        def __init__(self, cfg=None, extra=None, lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            cfg = cfg or Config()
            self.model = torch.nn.Sequential(torch.nn.Linear(24, cfg.width), torch.nn.ReLU(),
                                             torch.nn.Linear(cfg.width, 16))

        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1)]

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 24), torch.randint(0, 16, (32,)))
    module = Module(Config(width=40), Marker(tmp_path / "ran"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=str(tmp_path))
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    # weights_only refuses this file: its hyper-parameters are foreign classes
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path, weights_only=True)
    (tmp_path / "ran").unlink(missing_ok=True)  # Lightning's own deepcopy of the hparams ran it
    src = open_source(path)
    assert not (tmp_path / "ran").exists()
    # the model's own names: Lightning's 'model.' prefix is gone
    _same_tensors(src, module.model.state_dict())
    res = analyze(path, layers=["2.weight"])  # the model's own names select
    assert list(res.details["name"]) == ["2.weight"]
    assert not (tmp_path / "ran").exists()


def test_training_state_with_module_optimizer_scheduler_and_custom_class(tmp_path):
    torch.manual_seed(1)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = net.head(net.body(torch.randn(5, 24))).sum()
    loss.backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "model": net, "optimizer": opt.state_dict(), "scheduler": sched,
                "config": Config(), "marker": Marker(tmp_path / "ran"),
                "best": np.float64(0.25), "history": np.arange(5.0)}, path)
    src = open_source(path)
    assert not (tmp_path / "ran").exists()
    _same_tensors(src, net.state_dict())  # the module object's parameters and buffers


def test_nested_state_dict_with_foreign_metadata_legacy_format(tmp_path):
    net = Net()
    path = tmp_path / "old.pth"
    torch.save({"model": {"state_dict": net.state_dict()}, "args": Config(),
                "marker": Marker(tmp_path / "ran")}, path, _use_new_zipfile_serialization=False)
    src = open_source(path)
    assert not (tmp_path / "ran").exists()
    _same_tensors(src, net.state_dict())


@pytest.mark.parametrize("call", [SystemCall, EvalCall])
def test_malicious_reduce_is_never_called(tmp_path, call):
    net = Net()
    side = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": net.state_dict(), "payload": call(side)}, path)
    src = open_source(path)
    assert not side.exists()
    _same_tensors(src, net.state_dict())  # the real tensors, and nothing made up
    res = analyze(path)
    assert not side.exists() and (res.details["status"] == "success").all()


@pytest.mark.parametrize("call", [SystemCall, EvalCall])
def test_malicious_pickle_without_tensors_is_refused(tmp_path, call):
    side = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"layer.weight": call(side)}}, path)
    with pytest.raises(SourceError, match="trust_pickle") as err:
        open_source(path)
    assert "\n" not in str(err.value)
    assert not side.exists()


def test_refused_build_on_a_non_container(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"config": Config(), "state_dict": Net().state_dict(), "x": SetsSizeState()},
               path)
    with pytest.raises(SourceError, match="refused to set the state of a Size.*trust_pickle"):
        open_source(path)


class Tagged(torch.Tensor):
    pass


class SetsSizeState:
    def __reduce__(self):
        return torch.Size, ((2, 3),), (None, {"evil": 1})


def test_tensor_subclass_needs_trust(tmp_path):
    t = torch.randn(6, 4).as_subclass(Tagged)
    path = tmp_path / "sub.pt"
    torch.save({"w": t}, path)
    with pytest.raises(SourceError, match="trust_pickle"):
        open_source(path)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd},
    lambda sd: {"model": {"state_dict": sd}},
    lambda sd: {"epoch": 1, "model": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}},
    lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}},
])
def test_nested_checkpoints_yield_the_models_own_names(tmp_path, wrap):
    net = Net()
    path = tmp_path / "nested.pt"
    torch.save(wrap(net.state_dict()), path)
    _same_tensors(open_source(path), net.state_dict())
    res = analyze(path, layers=["body.*"])
    assert list(res.details["name"]) == ["body.0.weight", "body.2.weight"]


def test_top_level_state_dict_keeps_its_names(tmp_path):
    sd = {f"model.{k}": v for k, v in Net().state_dict().items()}
    path = tmp_path / "flat.pt"
    torch.save(sd, path)
    assert [r.name for r in open_source(path)] == list(sd)


def test_npy_of_a_pickled_dict_honours_trust_pickle(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"fc1": rng.standard_normal((30, 20)), "fc2": {"w": rng.standard_normal((20, 12))}}
    path = tmp_path / "weights.npy"
    np.save(path, arrays, allow_pickle=True)
    with pytest.raises(SourceError, match="trust_pickle") as err:
        open_source(path)
    assert "\n" not in str(err.value)
    src = open_source(path, trust_pickle=True)
    assert [r.name for r in src] == ["fc1", "fc2.w"]
    np.testing.assert_array_equal(src[0].load(), arrays["fc1"])
    np.testing.assert_array_equal(src[1].load(), arrays["fc2"]["w"])
    got = analyze(path, trust_pickle=True)
    want = analyze({"fc1": arrays["fc1"], "fc2.w": arrays["fc2"]["w"]})
    np.testing.assert_allclose(got.details["alpha"], want.details["alpha"], rtol=1e-12)


def test_a_layers_filter_that_selects_nothing_says_so(tmp_path):
    import subprocess
    import sys

    net = Net()
    path = tmp_path / "nested.pt"
    torch.save({"model": {"state_dict": net.state_dict()}}, path)
    for layers in (["state_dict.body.*"], ["decoder.*"], ["-body.*", "-head"], [99]):
        with pytest.raises(ValueError, match="selects none of the model's 3 weight matrices"):
            analyze(path, layers=layers)
    res = subprocess.run([sys.executable, "-m", "tailscope", "analyze", str(path), "--layers",
                          "state_dict.body.*"], capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "selects none" in res.stderr and "'body.0.weight'" in res.stderr
