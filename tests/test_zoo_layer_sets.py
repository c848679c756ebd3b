"""Comparable layer sets in the zoo (issue 26): a family of models at different widths whose
members the options fit on different layers is said so, with the reasons counted, and
``common_layers`` restricts every member to the layers all of them have. Exact Spearman p-values
for small n, and quality columns without a number or with infinite ones (issue 27)."""

from __future__ import annotations

import subprocess
import sys
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

pytest.importorskip("sqlalchemy")

from tailscope import analyze  # noqa: E402
from tailscope.zoo import (  # noqa: E402
    LayerSetWarning,
    ManifestError,
    analyze_model,
    correlate,
    layer_set_notes,
    open_store,
    read_manifest,
    spearman_exact_p,
)

WIDTHS = (16, 24, 32, 48)
OPTIONS = {"max_evals": 200}  # the block conv (w x w x 3 x 3: 9 w eigenvalues) of w > 22 skipped


def family(folder) -> dict[str, str]:
    """One CNN design at four widths: stem conv, block conv, dense head (npz files)."""
    rng = np.random.default_rng(0)
    paths = {}
    for w in WIDTHS:
        arrays = {"stem": rng.standard_t(4, (w, 3, 3, 3)), "block": rng.standard_t(4, (w, w, 3, 3)),
                  "head": rng.standard_t(4, (10, w)) * (1 + w / 100), "bias": np.zeros(w)}
        path = folder / f"cnn{w}.npz"
        np.savez(path, **arrays)
        paths[f"cnn{w}"] = str(path)
    return paths


def fill_store(tmp_path, paths, accuracy):
    """The store as run_zoo writes it, one model at a time (analyze_model, write_model)."""
    from tailscope.zoo.run import options_key

    store = open_store(tmp_path / "fam.db")
    key = options_key(OPTIONS)
    run_id = store.start_run(key, "test", OPTIONS, "manifest", "none", len(paths))
    for (name, path), acc in zip(paths.items(), accuracy):
        result = analyze_model(path, OPTIONS)
        store.write_model(key, run_id, {"name": name, "source": path, "group": "cnn",
                                        "quality": {"accuracy": acc}}, result)
    return store, key


def test_a_family_on_different_layer_sets_is_said_and_common_layers_compares_like(tmp_path):
    paths = family(tmp_path)
    store, key = fill_store(tmp_path, paths, [0.70, 0.74, 0.78, 0.80])
    layers = store.layer_table(key)
    fitted = {m: set(part.loc[part["status"] == "success", "name"])
              for m, part in layers.groupby("model")}
    assert fitted["cnn16"] == {"stem", "block", "head"}
    assert all(fitted[f"cnn{w}"] == {"stem", "head"} for w in WIDTHS[1:])
    skipped = layers[layers["status"] == "skipped"]
    assert set(skipped.loc[skipped["name"] == "bias", "model"]) == set(paths)  # every skip kept

    models = store.models_table(key)
    notes = layer_set_notes(models, layers)
    assert len(notes) == 1
    assert "group 'cnn': its 4 models were fitted on different layer sets" in notes[0]
    assert "2 to 3 layers; 2 common to all" in notes[0] and "3 max_evals" in notes[0]
    with pytest.warns(LayerSetWarning, match="3 max_evals"):
        plain = correlate(store, "accuracy", key=key)
    assert plain.attrs["notes"] == notes

    common = correlate(store, "accuracy", key=key, common_layers=True)
    assert "restricted to those 2 layers" in common.attrs["notes"][0]
    # the oracle: each model analysed on the common layers only
    from tailscope.zoo import common_layer_models

    table = common_layer_models(models, layers, lambda n: store.details(n, key))
    for name, path in paths.items():
        want = analyze(path, layers=["stem", "head"], **OPTIONS).summary()
        row = table.set_index("name").loc[name]
        assert row["layers"] == 2
        for metric in ("alpha", "alpha_weighted", "log_norm", "stable_rank", "D"):
            assert row[metric] == pytest.approx(want[metric], rel=1e-12), (name, metric)
    alpha = common.set_index(["metric", "group"]).loc[("alpha", "all")]
    assert alpha["n"] == 4
    assert alpha["spearman_rho"] == pytest.approx(
        stats.spearmanr(table["alpha"], table["accuracy"])[0], abs=1e-12)
    # with equal layer sets there is nothing to say
    same = models[models["name"] != "cnn16"]
    assert layer_set_notes(same, layers) == []


@pytest.mark.parametrize("n", [4, 5, 6])
def test_spearman_p_for_small_n_is_the_exact_permutation_p(n):
    rng = np.random.default_rng(n)
    for trial in range(3):
        x = rng.standard_normal(n)
        y = x + rng.standard_normal(n) * (0.2 + trial)
        if trial == 2:
            y = np.round(y)  # ties
        # the oracle: scipy's rho over every pairing, one at a time
        observed = abs(stats.spearmanr(x, y)[0])
        null = [abs(stats.spearmanr(x, y[list(p)])[0]) for p in permutations(range(n))]
        want = np.mean([r >= observed - 1e-12 for r in null])
        assert spearman_exact_p(x, y) == pytest.approx(want, rel=1e-12)


def test_a_perfect_rank_agreement_of_five_models_has_p_one_in_sixty():
    table = pd.DataFrame({"name": list("abcde"), "status": ["success"] * 5,
                          "alpha": [2.0, 2.5, 3.0, 3.5, 4.0],
                          "accuracy": [0.9, 0.8, 0.7, 0.6, 0.5]})
    row = correlate(table, "accuracy", metrics=["alpha"]).iloc[0]
    assert row["spearman_rho"] == pytest.approx(-1.0, abs=1e-12)
    assert row["spearman_p"] == pytest.approx(2 / 120, rel=1e-12)  # not the t approximation's
    assert stats.spearmanr(table["alpha"], table["accuracy"])[1] < 1e-20


def test_quality_columns_without_a_number_or_with_inf_are_refused(tmp_path):
    table = pd.DataFrame({"name": list("abcd"), "status": ["success"] * 4,
                          "alpha": [2.0, 2.5, 3.0, 3.5], "accuracy": [np.nan] * 4,
                          "loss": [0.1, np.inf, 0.3, 0.2]})
    with pytest.raises(ValueError, match="'accuracy' has no number for any of the 4"):
        correlate(table, "accuracy", metrics=["alpha"])
    with pytest.raises(ValueError, match="'loss': infinite value.* for b"):
        correlate(table, "loss", metrics=["alpha"])
    for text in ("inf", "-inf", "Infinity"):
        path = tmp_path / "m.csv"
        path.write_text(f"source,name,loss\nx.npz,a,0.5\ny.npz,b,{text}\n")
        with pytest.raises(ManifestError, match=r"row 3, quality column 'loss'.*infinite"):
            read_manifest(path)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tailscope", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.mark.slow  # a LocalCluster in a fresh process, twice
def test_cli_zoo_warns_on_unequal_layer_sets_and_common_layers_equalises(tmp_path):
    paths = family(tmp_path)
    rows = ["source,name,group,accuracy,empty"] + [
        f"{p},{n},cnn,{0.7 + 0.03 * i}," for i, (n, p) in enumerate(paths.items())]
    manifest = tmp_path / "fam.csv"
    manifest.write_text("\n".join(rows) + "\n")
    store = str(tmp_path / "cli.db")
    base = ("zoo", str(manifest), "--store", store, "--workers", "1", "--max-evals", "200",
            "--quiet")
    res = _cli(*base, "--correlate", "accuracy")
    assert res.returncode == 0, res.stderr
    assert "warning: group 'cnn': its 4 models were fitted on different layer sets" \
        in res.stdout and "3 max_evals" in res.stdout
    res = _cli(*base, "--correlate", "accuracy", "--common-layers")
    assert res.returncode == 0, res.stderr
    assert "note: group 'cnn'" in res.stdout and "restricted to those 2 layers" in res.stdout
    res = _cli(*base, "--correlate", "empty")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].endswith(
        "--correlate empty: the manifest's quality column has no number (nothing to correlate)")
