"""analyze(setol=True) and analyze(alpha_ci=N) on real trained weights (all-MiniLM-L6-v2).

detX against WeightWatcher 0.7.5.5's own analyze(detX=True); the self-consistent ECS rank
against an independent float64 loop over the glossary's formula (CalculatedContent/rg_optimizers
docs/ECS_GLOSSARY.md section 4); the interval against tailscope.fit.alpha_interval with the
layer's seed.
"""

import functools
import math

import numpy as np
import pytest
from oracles import minilm_path, weightwatcher_details

from tailscope import analyze
from tailscope.fit import alpha_interval
from tailscope.spectrum.metrics import ecs_self_consistent

# WeightWatcher's layer ids in MiniLM (as in test_rmt_diagnostics)
MINILM_WW_IDS = {1: "embeddings.position_embeddings", 7: "encoder.layer.0.attention.self.query",
                 11: "encoder.layer.0.output.dense"}


@functools.cache
def minilm_setol():
    return analyze(minilm_path(), setol=True, detX=True).details


@pytest.mark.slow  # MiniLM's 39 layers with setol and detX, and WeightWatcher
def test_delta_lambda_min_and_ecs_rank_equal_weightwatcher():
    ours = minilm_setol().set_index("module")
    ref = weightwatcher_details(str(minilm_path().parent), layers=list(MINILM_WW_IDS),
                                detX=True).set_index("name")
    ours = ours.loc[ref.index]
    np.testing.assert_allclose(ours["delta_lambda_min"], ref["xmin"] - ref["detX_val"],
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(
        ours["ecs_rank"].astype(int),
        ((ref["num_pl_spikes"].astype(int) + ref["detX_num"].astype(int)) // 2).to_numpy())
    np.testing.assert_allclose(ours["alpha_minus_2"], ref["alpha"] - 2.0, rtol=1e-9)


def test_setol_alone_equals_setol_with_detx():
    """setol takes the row's det X tail when detX=True computed it, else computes its own: the
    same numbers either way."""
    names = [f"{n}.weight" for n in MINILM_WW_IDS.values()]
    cols = ["delta_lambda_min", "alpha_minus_2", "ecs_rank", "ecs_num_sc", "ecs_rank_sc"]
    alone = analyze(minilm_path(), setol=True, layers=names).details[cols]
    both = analyze(minilm_path(), setol=True, detX=True, layers=names).details[cols]
    assert alone.notna().all().all()
    np.testing.assert_array_equal(alone.to_numpy(float), both.to_numpy(float))


def ecs_sc_reference(evals, reference_rank):
    """The glossary's F(m) scan, one candidate at a time in float64."""
    lam = np.sort(np.asarray(evals, dtype=np.float64))
    lam = lam[lam > 0]
    M, total = lam.size, lam.sum()
    ranks = list(range(2, M + 1))
    F = []
    for m in ranks:
        bulk = lam[:M - m]
        r = bulk.sum() ** 2 / (bulk**2).sum() if bulk.size else 0.0
        D = min(max(m + r, m), M)
        F.append(sum(math.log(D * v / total) for v in lam[M - m:]) / m)
    F = np.array(F)
    cands = set(np.flatnonzero(np.abs(F) <= 1e-12))
    for i in range(len(F) - 1):
        if F[i] * F[i + 1] < 0:
            cands |= {i, i + 1}
    if not cands:
        return ranks[int(np.argmin(np.abs(F)))]
    best = min(cands, key=lambda i: (abs(F[i]), abs(ranks[i] - reference_rank), -ranks[i]))
    return ranks[best]


def test_self_consistent_ecs_equals_the_glossary_formula():
    a = analyze(minilm_path(), setol=True, detX=True,
                layers=[f"{n}.weight" for n in MINILM_WW_IDS.values()])
    d = a.details
    for _, row in d.iterrows():
        ev = a.esd(row["name"])
        ref = ecs_sc_reference(ev, int(row["detX_num"]))
        assert row["ecs_num_sc"] == ref
        assert row["ecs_rank_sc"] == (int(row["num_pl_spikes"]) + ref) // 2
    # scale-invariant, as the definition is
    x = np.exp(np.linspace(-4.0, 3.0, 128))
    assert ecs_self_consistent(x, 10) == ecs_self_consistent(17.5 * x, 10) == ecs_sc_reference(x, 10)
    with pytest.raises(ValueError, match="two"):
        ecs_self_consistent(np.array([1.0, 0.0]))


@pytest.mark.slow  # MiniLM's 39 layers with setol and detX
def test_negative_delta_lambda_min_only_with_alpha_below_2_on_minilm():
    """SETOL's claim (lambda_PL < lambda_detX only with alpha < 2), measured on MiniLM: it holds
    on every layer (1 of 39 layers has both; README)."""
    d = minilm_setol()
    ok = d[d["status"] == "success"]
    assert len(ok) == 39
    negative = ok["delta_lambda_min"] < 0
    assert negative.any()
    assert (ok.loc[negative, "alpha"] < 2).all()


def test_alpha_ci_is_the_layer_seeded_bootstrap_of_the_reported_fit():
    layers = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.3.output.dense.weight"]
    a = analyze(minilm_path(), layers=layers, alpha_ci=50, alpha_ci_level=0.8, seed=3)
    b = analyze(minilm_path(), layers=layers, alpha_ci=50, alpha_ci_level=0.8, seed=3)
    d = a.details
    np.testing.assert_array_equal(d[["alpha_ci_low", "alpha_ci_high"]],
                                  b.details[["alpha_ci_low", "alpha_ci_high"]])
    for _, row in d.iterrows():
        lo, hi = alpha_interval(a.fit(row["name"]), 50, 0.8, seed=[3, int(row["layer_id"])])
        assert (row["alpha_ci_low"], row["alpha_ci_high"]) == (lo, hi)
        assert lo < row["alpha"] < hi
    s = a.summary()
    assert s["alpha_ci_low"] == pytest.approx(d["alpha_ci_low"].mean())


def test_alpha_ci_with_a_truncated_power_law_fit_is_nan_and_says_why():
    d = analyze(minilm_path(), layers=["encoder.layer.0.attention.self.query.weight"],
                fit="TPL", alpha_ci=20).details
    assert d["alpha_ci_low"].isna().all() and d["alpha_ci_high"].isna().all()
    assert d["status"].eq("success").all()
    assert d["reason"].str.contains("alpha_ci").all()


def test_bad_options_are_one_clear_error():
    with pytest.raises(ValueError, match="alpha_ci must be"):
        analyze(minilm_path(), alpha_ci=-1)
    with pytest.raises(ValueError, match="alpha_ci_level"):
        analyze(minilm_path(), alpha_ci=10, alpha_ci_level=1.0)
    with pytest.raises(ValueError, match="setol"):
        analyze(minilm_path(), setol="yes")


def test_alpha_ci_without_a_seed_records_the_one_it_drew():
    layers = ["encoder.layer.0.attention.self.query.weight"]
    a = analyze(minilm_path(), layers=layers, alpha_ci=20)
    seed = a.options["seed"]
    assert isinstance(seed, int)
    b = analyze(minilm_path(), layers=layers, alpha_ci=20, seed=seed)
    np.testing.assert_array_equal(a.details[["alpha_ci_low", "alpha_ci_high"]],
                                  b.details[["alpha_ci_low", "alpha_ci_high"]])
