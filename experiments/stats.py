"""Small statistics for the experiment page, with the standard library only.

The sample-ratio-mismatch check asks whether exposures landed on the variants in the
split that was planned: a chi-square goodness-of-fit test. Its degrees of freedom are a
whole number (variants - 1), and for whole degrees of freedom the chi-square survival
function is a finite sum of exponential terms (plus erfc for odd ones), so it needs no
numerical library and has no series to converge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The threshold experimentation platforms use for this check: strict, because a true
# mismatch means the assignment is broken, and a false alarm sends people hunting.
SRM_ALPHA = 0.001
# Below this many expected exposures in a variant the chi-square approximation is poor.
SRM_MIN_EXPECTED = 5.0


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square distributed with `df` (a whole number >= 1) degrees of freedom.

    Uses the recurrence of the regularised upper incomplete gamma function
    Q(a + 1, y) = Q(a, y) + y**a * exp(-y) / Gamma(a + 1), with y = x / 2, from
    Q(1, y) = exp(-y) (even df) or Q(1/2, y) = erfc(sqrt(y)) (odd df). Each term is
    computed in logarithms so large x or df neither overflows nor underflows early.
    """
    if df < 1 or int(df) != df:
        raise ValueError("df must be a whole number of at least 1")
    if math.isnan(x):
        raise ValueError("x must be a number")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    y = x / 2
    log_y = math.log(y)
    if df % 2 == 0:
        total = sum(math.exp(-y + i * log_y - math.lgamma(i + 1)) for i in range(df // 2))
    else:
        total = math.erfc(math.sqrt(y))
        total += sum(math.exp(-y + (i - 0.5) * log_y - math.lgamma(i + 0.5)) for i in range(1, (df + 1) // 2))
    return min(1.0, total)


@dataclass(frozen=True, slots=True)
class SrmCell:
    """One variant in the test: its exposures and the count its planned share predicts."""

    label: str
    observed: int
    expected: float

    @property
    def difference(self) -> float:
        return self.observed - self.expected


@dataclass(frozen=True, slots=True)
class SampleRatioTest:
    """A chi-square goodness-of-fit test of exposures against the planned split."""

    cells: tuple[SrmCell, ...]
    chi_square: float
    df: int
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_ALPHA

    @property
    def p_text(self) -> str:
        return p_value_text(self.p_value)

    @property
    def chi_square_text(self) -> str:
        return "infinite" if math.isinf(self.chi_square) else f"{self.chi_square:,.2f}"


def p_value_text(p: float) -> str:
    """A p-value for people: three decimals, or scientific notation when smaller than 0.001."""
    if p >= 0.001:
        return f"{p:.3f}"
    if p > 0:
        return f"{p:.1e}"
    return "below 1e-300"  # smaller than a float can hold


def sample_ratio_test(observed: Sequence[tuple[str, int, float]]) -> SampleRatioTest | None:
    """Test (label, exposures, planned weight) triples; None when they cannot be tested.

    Weights are relative (50/50, 0.5/0.5 and 1/1 are the same plan). A variant planned
    at zero with no exposures takes no part; one planned at zero that has exposures is a
    mismatch however few there are. None when fewer than two variants take part, a
    count or weight is negative or not finite, nothing was exposed, or a variant expects
    fewer than SRM_MIN_EXPECTED exposures (too early to tell).
    """
    for _, count, weight in observed:
        if count < 0 or weight < 0 or not math.isfinite(weight):
            return None
    cells = [(label, count, weight) for label, count, weight in observed if weight > 0 or count > 0]
    total = sum(count for _, count, _ in cells)
    weights = sum(weight for _, _, weight in cells)
    if len(cells) < 2 or total <= 0 or weights <= 0:
        return None
    tested = tuple(SrmCell(label, count, total * weight / weights) for label, count, weight in cells)
    if any(0 < cell.expected < SRM_MIN_EXPECTED for cell in tested):
        return None
    if any(cell.expected == 0 for cell in tested):
        chi_square = math.inf  # exposures where the plan put none
    else:
        chi_square = sum((cell.observed - cell.expected) ** 2 / cell.expected for cell in tested)
    df = len(tested) - 1
    return SampleRatioTest(tested, chi_square, df, chi2_sf(chi_square, df))
