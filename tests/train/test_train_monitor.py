"""The training monitor on tiny real models: a plain torch loop on the digits task, PyTorch
Lightning and a Hugging Face Trainer; CSV, TensorBoard and store output; once-only warnings."""

import csv
import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tailscope.train import Monitor, TrainingWarning, layer_learning_rates  # noqa: E402
from tailscope.train.monitor import COLUMNS  # noqa: E402
from tailscope.zoo.quality import load_task  # noqa: E402


def mlp(seed=0, width=64, depth=4, n_in=64, n_out=10):
    torch.manual_seed(seed)
    layers, n = [], n_in
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(n, width), torch.nn.ReLU()]
        n = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(n, n_out))


def batches(task, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(task.x_train), torch.from_numpy(task.y_train)
    while True:
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y) - size + 1, size):
            b = perm[i:i + size]
            yield x[b], y[b]


def test_plain_loop_logs_csv_tensorboard_store_and_applies_tempbalance(tmp_path):
    task = load_task("digits")
    model = mlp()
    opt = torch.optim.SGD(layer_learning_rates(model, 0.05), momentum=0.9)
    data = batches(task)
    with Monitor(model, every=5, log_dir=tmp_path, tensorboard=True, store=tmp_path / "s.db",
                 schedule="lr", run="digits-mlp") as mon:
        for _ in range(20):
            x, y = next(data)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            mon.step(opt)
    assert mon.checks == 4
    # CSV: a header and one row per layer and check
    with open(tmp_path / "tailscope-monitor.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == 4 * 4
    assert sorted({int(r["step"]) for r in rows}) == [5, 10, 15, 20]
    assert [r["name"] for r in rows[:4]] == ["0.weight", "2.weight", "4.weight", "6.weight"]
    for r in rows:
        assert np.isfinite(float(r["alpha"])) and np.isfinite(float(r["alpha_hill"]))
        assert float(r["num_traps"]) >= 0
    # the lr written is TempBalance's map of that check's alpha_hill (by hand: 2 middle layers)
    for step in (5, 10, 15, 20):
        mid = [r for r in rows if int(r["step"]) == step and r["name"] in ("2.weight", "4.weight")]
        a = [float(r["alpha_hill"]) for r in mid]
        lo, hi = 0.025, 0.075
        for r, ai in zip(mid, a):
            want = hi if max(a) == min(a) else lo + (ai - min(a)) * (hi - lo) / (max(a) - min(a))
            assert abs(float(r["lr"]) - want) <= 1e-12
        for r in rows:
            if int(r["step"]) == step and r["name"] in ("0.weight", "6.weight"):
                assert r["lr"] == "nan"  # not scheduled: the base group
    last = {r["name"]: float(r["lr"]) for r in rows if int(r["step"]) == 20}
    groups = {g["name"]: g["lr"] for g in opt.param_groups}
    assert groups["2"] == last["2.weight"] and groups["4"] == last["4.weight"]
    assert groups[None] == 0.05
    # TensorBoard: four points per layer and metric
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(tmp_path))
    ev.Reload()
    tags = set(ev.Tags()["scalars"])
    for name in ("0.weight", "2.weight", "4.weight", "6.weight"):
        for k in ("alpha", "alpha_hill", "num_traps"):
            assert [e.step for e in ev.Scalars(f"{k}/{name}")] == [5, 10, 15, 20]
    assert "lr/2.weight" in tags and "lr/0.weight" not in tags
    pts = ev.Scalars("alpha_hill/2.weight")
    want = [float(r["alpha_hill"]) for r in rows if r["name"] == "2.weight"]
    np.testing.assert_allclose([p.value for p in pts], want, rtol=1e-6)
    # the zoo store: one model per check
    from tailscope.zoo import open_store

    st = open_store(tmp_path / "s.db")
    t = st.models_table("train:digits-mlp")
    assert len(t) == 4 and set(t["status"]) == {"success"}
    det = st.details("digits-mlp/step000000020", key="train:digits-mlp")
    assert list(det["name"]) == ["0.weight", "2.weight", "4.weight", "6.weight"]
    st.close()


def test_alphadecay_schedule_in_the_loop():
    from tailscope.train import layer_weight_decays

    task = load_task("digits")
    model = mlp(seed=3)
    opt = torch.optim.AdamW(layer_weight_decays(model, 0.1), lr=1e-3)
    data = batches(task, seed=3)
    mon = Monitor(model, every=2, schedule="weight_decay")
    for _ in range(4):
        x, y = next(data)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        mon.step(opt)
    h = mon.history
    last = h[h["step"] == 4].set_index("name")
    a = last.loc[["2.weight", "4.weight"], "alpha_hill"].to_numpy()
    lo, hi = 0.6666 * 0.1, 3.0 * 0.1
    groups = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    for name, ai in zip(("2", "4"), a):
        want = hi if a.max() == a.min() else lo + (ai - a.min()) * (hi - lo) / (a.max() - a.min())
        assert abs(groups[name] - want) <= 1e-12
        assert last.loc[f"{name}.weight", "weight_decay"] == groups[name]
    assert groups[None] == 0.1 and np.isnan(last.loc["0.weight", "weight_decay"])


def heavy_model(seed=0):
    """Layer 1: Cauchy entries (alpha < 2, traps: a few huge entries survive shuffling);
    layer 0 and 2: Gaussian."""
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(100, 200), torch.nn.Linear(200, 200),
                            torch.nn.Linear(200, 100))
    with torch.no_grad():
        m[1].weight.copy_(torch.distributions.Cauchy(0.0, 0.01).sample((200, 200)))
    return m


def test_warnings_once_per_layer():
    m = heavy_model()
    mon = Monitor(m, every=1)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for _ in range(3):
            mon.step()
    h = mon.history
    bad = h[(h["name"] == "1.weight")]
    assert (bad["alpha"] < 2).all() and (bad["num_traps"] > 0).all()
    ours = [str(w.message) for w in got if issubclass(w.category, TrainingWarning)]
    # exactly one per layer and kind over three checks, naming the layer
    want = {(n, "alpha") for n in h.loc[h["alpha"] < 2, "name"]} | \
        {(n, "trap") for n in h.loc[h["num_traps"] > 0, "name"]}
    assert len(ours) == len(want) >= 2
    assert sum("1.weight" in s and "alpha" in s for s in ours) == 1
    assert sum("1.weight" in s and "trap" in s for s in ours) == 1
    assert not any("0.weight" in s for s in ours if (("0.weight", "alpha") not in want
                                                      and ("0.weight", "trap") not in want))


def test_monitor_bad_input():
    with pytest.raises(ValueError, match="every"):
        Monitor(mlp(), every=0)
    with pytest.raises(ValueError, match="schedule"):
        Monitor(mlp(), schedule="fast")
    with pytest.raises(ValueError, match="nn.Module"):
        Monitor([1, 2])
    with pytest.raises(ValueError, match="log_dir"):
        Monitor(mlp(), tensorboard=True)
    m = mlp()
    mon = Monitor(m, every=1, schedule="lr")
    with pytest.raises(ValueError, match="optimizer"):
        mon.step()
    with pytest.raises(ValueError, match="layer_learning_rates"):
        mon.step(torch.optim.SGD(m.parameters(), lr=0.1))


def test_lightning_callback(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from tailscope.train.lightning import AlphaCallback

    task = load_task("digits")

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(layer_learning_rates(self.net, 0.05), momentum=0.9)

    ds = torch.utils.data.TensorDataset(torch.from_numpy(task.x_train),
                                        torch.from_numpy(task.y_train))
    dl = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True,
                                     generator=torch.Generator().manual_seed(0))
    cb = AlphaCallback(every=2, log_dir=tmp_path, schedule="lr")
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        callbacks=[cb],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)  # no "GPU available: False" noise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on dataloader workers
            trainer.fit(Lit(), dl)
    finally:
        log.setLevel(level)
    assert cb.monitor.checks == 3
    with open(tmp_path / "tailscope-monitor.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in rows}) == [2, 4, 6]
    assert {r["name"] for r in rows} == {"net.0.weight", "net.2.weight", "net.4.weight",
                                         "net.6.weight"}
    opt = trainer.optimizers[0]
    sched = {g["name"]: g["lr"] for g in opt.param_groups}
    last = {r["name"]: float(r["lr"]) for r in rows if int(r["step"]) == 6}
    # groups built on self.net ("2", "4") are matched by their parameters to "net.2", "net.4"
    assert sched["2"] == last["net.2.weight"] and sched["4"] == last["net.4.weight"]
    assert sorted([sched["2"], sched["4"]]) == pytest.approx([0.025, 0.075], abs=1e-15)


def test_hf_trainer_callback(tmp_path):
    tf = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from tailscope.train.hf import AlphaTrainerCallback

    task = load_task("digits")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x, labels=None):
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
            return out

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(task.y_train)

        def __getitem__(self, i):
            return {"x": torch.from_numpy(task.x_train[i]), "labels": int(task.y_train[i])}

    args = tf.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=6,
                                per_device_train_batch_size=32, learning_rate=1e-3,
                                report_to=[], use_cpu=True, save_strategy="no",
                                logging_strategy="no", disable_tqdm=True, seed=0)
    cb = AlphaTrainerCallback(every=3, log_dir=tmp_path / "log")
    trainer = tf.Trainer(model=Tiny(), args=args, train_dataset=DS(), callbacks=[cb])
    trainer.train()
    assert cb.monitor.checks == 2
    with open(tmp_path / "log" / "tailscope-monitor.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in rows}) == [3, 6] and len(rows) == 8
