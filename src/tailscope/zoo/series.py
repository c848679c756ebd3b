"""The architecture series of ``tailscope validate``: one design (an MLP, or a small CNN with
real ``torch.nn.Conv2d`` layers) at growing width and depth, each network trained to convergence
(Adam, early stopping on a seeded validation split, the best epoch's weights kept), 3 seeds.
This is the setting of Martin, Peng & Mahoney (Nature Communications 2021): members of one
family whose size and accuracy move together, compared within the family.

Nothing here imports :mod:`tailscope.zoo.quality` (which runs, stores and correlates these
networks); a task is any object with ``x_train``, ``y_train``, ``x_test``, ``y_test``,
``classes`` and ``image`` (the side of the square images its rows hold, 0 for plain features).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..util.optional import require

DESIGNS = ("mlp", "cnn")
# the series: per task, its designs
SERIES = {"digits": ("mlp", "cnn"), "mnist": ("mlp", "cnn"), "news": ("mlp",)}
# widths: hidden units (mlp) or channels (cnn); depths: weight layers (mlp: Linear layers; cnn:
# Conv2d layers, plus one Linear head)
WIDTHS = {"mlp": (16, 32, 64, 128), "cnn": (8, 12, 16, 24)}
DEPTHS = {"mlp": (2, 3, 4), "cnn": (2, 3, 4)}
SERIES_SEEDS = 3
# the quick series: every design of digits and mnist, the first seed, every width and depth
QUICK_TASKS = ("digits",)
# training: Adam, mini-batches, early stopping on the validation loss
TRAINING = {"lr": 3e-3, "batch_size": 128, "max_epochs": 60, "patience": 5,
            "min_delta": 0.01, "validation": 0.2}


# the models' recipe, in words (part of the store key: a change of recipe is another key)
ARCHITECTURE = ("mlp: Linear+ReLU; cnn: 3x3 Conv2d+ReLU, padding 1, stride 2 on images > 16 "
                "pixels and on maps >= 4 pixels after the first, 2x2 average pool, Linear head")


@dataclass(frozen=True)
class SeriesNetwork:
    """One member of an architecture series: task, design ('mlp' or 'cnn'), depth, width and
    seed (replicate)."""

    task: str
    design: str
    depth: int
    width: int
    replicate: int = 0

    @property
    def series(self) -> str:
        """The series (one design on one task): ``task/design``."""
        return f"{self.task}/{self.design}"

    @property
    def group(self) -> str:
        return self.series

    @property
    def name(self) -> str:
        return f"series/{self.series}/d{self.depth}-w{self.width}/s{self.replicate}"

    def torch_seed(self, seed: int) -> int:
        """The network's own seed, from the benchmark's seed and its name."""
        ss = np.random.SeedSequence([int(seed), zlib.crc32(self.name.encode())])
        return int(ss.generate_state(1, dtype=np.uint32)[0])


def series_design(quick: bool = False) -> list[SeriesNetwork]:
    """The series: per task of ``SERIES`` and design, every width of ``WIDTHS`` at every depth
    of ``DEPTHS``, ``SERIES_SEEDS`` seeds (180 networks). ``quick``: the tasks of
    ``QUICK_TASKS`` and the first seed only (24 networks)."""
    out = []
    for task, designs in SERIES.items():
        if quick and task not in QUICK_TASKS:
            continue
        for d in designs:
            for depth in DEPTHS[d]:
                for width in WIDTHS[d]:
                    for r in range(1 if quick else SERIES_SEEDS):
                        out.append(SeriesNetwork(task, d, depth, width, r))
    return out


def build_model(net: SeriesNetwork, features: int, classes: int, image: int = 0):
    """The torch model of a series member (initialised from torch's current random state).

    mlp: ``depth`` Linear layers (``depth - 1`` hidden layers of ``width`` units, ReLU).
    cnn (all-convolutional, no pooling until the head): ``depth`` 3x3 Conv2d layers of
    ``width`` channels with ReLU, padding 1; the first with stride 2 on images wider than 16
    pixels, every later one with stride 2 while the map is 4 pixels or wider; then a 2x2
    adaptive average pool and a Linear head.
    """
    torch = require("torch", "tailscope validate")
    nn = torch.nn
    if net.design == "mlp":
        layers, n = [], features
        for _ in range(net.depth - 1):
            layers += [nn.Linear(n, net.width), nn.ReLU()]
            n = net.width
        return nn.Sequential(*layers, nn.Linear(n, classes))
    if net.design != "cnn":
        raise ValueError(f"unknown design {net.design!r}; choose from mlp, cnn")
    if not image or image * image != features:
        raise ValueError(f"a cnn needs square images; this task has {features} plain features")
    stride = 2 if image > 16 else 1
    layers = [nn.Unflatten(1, (1, image, image)),
              nn.Conv2d(1, net.width, 3, stride=stride, padding=1), nn.ReLU()]
    side = (image - 1) // stride + 1
    for _ in range(net.depth - 1):
        stride = 2 if side >= 4 else 1
        layers += [nn.Conv2d(net.width, net.width, 3, stride=stride, padding=1), nn.ReLU()]
        side = (side - 1) // stride + 1
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * net.width, classes))


def validation_split(y: np.ndarray, seed: int, fraction: float = TRAINING["validation"]):
    """A seeded stratified split of the training rows: (fit rows, validation rows)."""
    rng = np.random.default_rng([int(seed), 2])
    val = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        val.extend(rng.permutation(rows)[:max(1, round(fraction * rows.size))].tolist())
    mask = np.zeros(y.size, bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def train_series(net: SeriesNetwork, task, seed: int = 0):
    """Train a series member to convergence on one torch thread, deterministically: Adam
    (``TRAINING``), mini-batches in a seeded order, after every epoch the loss on the seeded
    validation split (:func:`validation_split`); training stops when it has not improved by
    ``min_delta`` (relative) for ``patience`` epochs, or after ``max_epochs``, and the weights of
    the epoch with the lowest validation loss are kept.

    Returns (model, facts): facts holds train_accuracy, validation_accuracy, test_accuracy,
    epochs (the best epoch), stopped (epochs run), params."""
    torch = require("torch", "tailscope validate")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = net.torch_seed(seed)
        torch.manual_seed(s)
        fit, val = validation_split(task.y_train, seed)
        x = torch.from_numpy(task.x_train)
        y = torch.from_numpy(task.y_train)
        xf, yf, xv, yv = x[fit], y[fit], x[val], y[val]
        model = build_model(net, x.shape[1], task.classes, getattr(task, "image", 0))
        opt = torch.optim.Adam(model.parameters(), lr=TRAINING["lr"])
        order = torch.Generator().manual_seed(s)
        bs, best, best_epoch, best_state, epoch = TRAINING["batch_size"], np.inf, 0, None, 0
        last = 0  # the last epoch that improved by min_delta
        loss = torch.nn.functional.cross_entropy
        for epoch in range(1, TRAINING["max_epochs"] + 1):
            model.train()
            perm = torch.randperm(len(yf), generator=order)
            for i in range(0, len(yf), bs):
                b = perm[i:i + bs]
                opt.zero_grad()
                loss(model(xf[b]), yf[b]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                v = float(loss(model(xv), yv))
            if v < best * (1 - TRAINING["min_delta"]):
                last = epoch
            if v < best:
                best, best_epoch = v, epoch
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            if epoch - last >= TRAINING["patience"]:
                break
        model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            def acc(a, b):
                return float((model(a).argmax(1) == b).double().mean())

            facts = {"train_accuracy": acc(xf, yf), "validation_accuracy": acc(xv, yv),
                     "test_accuracy": acc(torch.from_numpy(task.x_test),
                                          torch.from_numpy(task.y_test)),
                     "epochs": best_epoch, "stopped": epoch,
                     "params": int(sum(p.numel() for p in model.parameters()))}
        return model, facts
    finally:
        torch.set_num_threads(threads)
