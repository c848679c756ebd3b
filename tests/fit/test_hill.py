"""hill_alpha: PL_Alpha_Hill of the research code (xmin at the median), against the published
formula written here in float64, against the research code's own float32 torch lines, and on
Pareto samples whose exponent is known."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tailscope.fit import hill_alpha


def published(x, xmin_pos=2):
    """alpha = 1 + n / (sum_{j >= i} ln x_j - n ln x_i), i = int(L / xmin_pos), x sorted: a plain
    loop in Python floats."""
    xs = sorted(float(v) for v in x)
    i = int(len(xs) / xmin_pos)
    n = len(xs) - i
    return 1.0 + n / (math.fsum(math.log(v) for v in xs[i:]) - n * math.log(xs[i]))


def reference_torch(x, xmin_pos=2):
    """The lines of AlphaPruning's / TempBalance's net_esd_estimator(fix_fingers='xmin_mid'),
    filter_zeros=False, as they run them: float32 torch."""
    torch = pytest.importorskip("torch")
    eigs = torch.sort(torch.as_tensor(np.asarray(x), dtype=torch.float32)).values
    log = torch.log(eigs)
    i = int(len(eigs) / xmin_pos)
    n = float(len(eigs) - i)
    return float(1 + n / (torch.sum(log[i:]) - n * log[i]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(1e-3, 1e6), min_size=3, max_size=200), st.integers(2, 5))
def test_equals_the_published_formula(values, xmin_pos):
    xs = sorted(values)
    i = int(len(xs) / xmin_pos)
    tail = np.log(xs[i:])
    spread = np.mean(tail - tail[0])
    if spread == 0:  # a constant tail: no finite alpha
        with pytest.raises(ValueError, match="all equal"):
            hill_alpha(values, xmin_pos)
        return
    assume(spread > 1e-6)  # near-constant tails: both sides are round-off
    assert hill_alpha(values, xmin_pos) == pytest.approx(published(values, xmin_pos), rel=1e-9)


@pytest.mark.parametrize("n", [3, 4, 5, 101, 1000])
def test_the_median_index_and_the_order_of_the_input(rng, n):
    x = rng.pareto(2.0, n) + 1.0
    # unsorted input, odd and even lengths: i = n // 2, the upper median when n is even
    assert hill_alpha(x) == pytest.approx(published(x), rel=1e-12)
    assert hill_alpha(x) == hill_alpha(np.sort(x)[::-1].copy())


def test_agrees_with_the_research_code_in_float32(rng):
    x = rng.standard_normal((300, 200))
    evals = np.linalg.svd(x, compute_uv=False) ** 2
    ours = hill_alpha(evals)
    assert ours == pytest.approx(reference_torch(evals), rel=1e-4)
    assert ours == pytest.approx(published(evals), rel=1e-12)


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.0])
def test_pareto_samples_give_their_exponent(alpha):
    # density ~ x^-alpha above 1: any xmin in the tail is unbiased for a pure Pareto law; the
    # Hill estimate from n = 10000 tail values has sd (alpha - 1) / sqrt(n) = 1% of alpha - 1
    x = np.random.default_rng(int(alpha)).pareto(alpha - 1.0, 20000) + 1.0
    assert hill_alpha(x) == pytest.approx(alpha, abs=5 * (alpha - 1.0) / math.sqrt(10000))


@pytest.mark.parametrize("bad, message", [
    ([1.0, 2.0], "at least 3"),
    ([1.0, -1e-9, 2.0, 3.0], "negative"),
    ([0.0, 0.0, 0.0, 2.0, 3.0], "xmin is 0"),
    ([1.0, np.nan, 2.0], "NaN"),
    ([0.5, 2.0, 2.0, 2.0], "all equal"),
    ([[1.0, 2.0, 3.0]], "1-D"),
])
def test_bad_input_is_one_line(bad, message):
    with pytest.raises(ValueError, match=message) as err:
        hill_alpha(bad)
    assert "\n" not in str(err.value)


def test_an_orthogonal_matrix_has_no_finite_hill_alpha(rng):
    q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    evals = np.linalg.eigvalsh(q.T @ q)  # all 1 to round-off
    with pytest.raises(ValueError, match="round-off"):
        hill_alpha(evals)


def test_zeros_count_in_the_median_position_as_the_reference_counts_them():
    # a rank-3 spectrum of 5: the reference takes log of all 5 and uses x[2:]
    x = [0.0, 0.0, 1.0, 2.0, 4.0]
    assert hill_alpha(x) == pytest.approx(published([1e-300, 1e-300, 1.0, 2.0, 4.0]), rel=1e-12)
    assert hill_alpha(x) == pytest.approx(reference_torch([1e-30, 1e-30, 1.0, 2.0, 4.0]), rel=1e-6)


def test_xmin_pos():
    assert hill_alpha([1.0, 2.0, 4.0, 8.0], xmin_pos=4) == pytest.approx(
        published([1.0, 2.0, 4.0, 8.0], 4))
    with pytest.raises(ValueError, match="xmin_pos"):
        hill_alpha([1.0, 2.0, 4.0], xmin_pos=0)
    with pytest.raises(ValueError, match="no tail"):
        hill_alpha([1.0, 2.0, 4.0], xmin_pos=1)
