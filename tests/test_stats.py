"""The chi-square survival function and the sample-ratio-mismatch test, against known values."""

from __future__ import annotations

import math

import pytest

from experiments.stats import SRM_ALPHA, chi2_sf, p_value_text, sample_ratio_test

# Critical values from published chi-square tables (x such that P(X >= x) = p), to 15 digits.
KNOWN = [
    (3.841458820694124, 1, 0.05),
    (5.991464547107979, 2, 0.05),
    (7.814727903251178, 3, 0.05),
    (11.070497693516351, 5, 0.05),
    (18.307038053275146, 10, 0.05),
    (31.410432844230918, 20, 0.05),
    (124.34211340400407, 100, 0.05),
    (6.634896601021213, 1, 0.01),
    (10.827566170662733, 1, 0.001),
    (13.815510557964274, 2, 0.001),
    (16.26623619623813, 3, 0.001),
    (18.46682695290317, 4, 0.001),
    (0.454936423119572, 1, 0.5),
    (9.487729036781154, 4, 0.05),
]


@pytest.mark.parametrize(("x", "df", "p"), KNOWN)
def test_chi2_sf_matches_table_values(x, df, p):
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("x", [0.001, 0.5, 1.0, 7.3, 40.0, 300.0])
def test_chi2_sf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(x):
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-12)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)


def test_chi2_sf_of_three_degrees_of_freedom_adds_the_known_term():
    x = 4.2
    expected = math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    assert chi2_sf(x, 3) == pytest.approx(expected, rel=1e-12)


def test_chi2_sf_edges():
    assert chi2_sf(0, 3) == 1.0
    assert chi2_sf(-1, 3) == 1.0
    assert chi2_sf(math.inf, 3) == 0.0
    assert 0 < chi2_sf(1000, 1) < 1e-200  # a tiny tail, not rounded to zero too early
    assert chi2_sf(1e6, 7) == 0.0
    assert 0.4 < chi2_sf(2000, 2000) < 0.6  # large df: no overflow, near the median


def test_chi2_sf_decreases_with_x():
    values = [chi2_sf(x / 4, 5) for x in range(200)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize(("x", "df"), [(1.0, 0), (1.0, 1.5), (math.nan, 2)])
def test_chi2_sf_refuses_nonsense(x, df):
    with pytest.raises(ValueError, match="must be"):
        chi2_sf(x, df)


def test_fifty_fifty_split_far_off_is_a_mismatch_with_its_numbers():
    test = sample_ratio_test([("control", 10412, 50), ("treatment", 9311, 50)])
    assert test is not None
    assert [(c.label, c.observed, c.expected) for c in test.cells] == [
        ("control", 10412, 9861.5),
        ("treatment", 9311, 9861.5),
    ]
    assert test.chi_square == pytest.approx(2 * 550.5**2 / 9861.5)
    assert test.df == 1
    assert test.p_value == pytest.approx(math.erfc(math.sqrt(test.chi_square / 2)))
    assert test.p_value < SRM_ALPHA
    assert test.mismatch


def test_a_split_within_chance_is_no_mismatch():
    test = sample_ratio_test([("control", 5120, 50), ("treatment", 5089, 50)])
    assert test is not None
    assert not test.mismatch
    assert test.p_value == pytest.approx(0.7589876836611578, rel=1e-9)


def test_weights_are_relative():
    as_percent = sample_ratio_test([("a", 700, 70), ("b", 300, 30)])
    as_fraction = sample_ratio_test([("a", 700, 0.7), ("b", 300, 0.3)])
    assert as_percent == as_fraction
    assert as_percent.chi_square == pytest.approx(0)


def test_three_variants_have_two_degrees_of_freedom():
    test = sample_ratio_test([("control", 1000, 34), ("a", 990, 33), ("b", 1010, 33)])
    assert test.df == 2
    assert not test.mismatch
    skewed = sample_ratio_test([("control", 1400, 34), ("a", 800, 33), ("b", 800, 33)])
    assert skewed.mismatch


def test_exposures_where_the_plan_put_none_are_a_mismatch():
    test = sample_ratio_test([("control", 500, 50), ("treatment", 500, 50), ("holdout", 3, 0)])
    assert test.chi_square == math.inf
    assert test.p_value == 0
    assert test.mismatch
    assert test.chi_square_text == "infinite"


def test_a_variant_planned_at_zero_without_exposures_takes_no_part():
    test = sample_ratio_test([("control", 500, 50), ("treatment", 500, 50), ("off", 0, 0)])
    assert [c.label for c in test.cells] == ["control", "treatment"]
    assert test.df == 1


@pytest.mark.parametrize(
    "observed",
    [
        [("only", 100, 100)],
        [("a", 0, 50), ("b", 0, 50)],
        [("a", 3, 50), ("b", 4, 50)],  # too few to tell
        [("a", -5, 50), ("b", 100, 50)],
        [("a", 100, -50), ("b", 100, 50)],
        [("a", 100, math.inf), ("b", 100, 50)],
        [("a", 100, 0), ("b", 0, 0)],
        [],
    ],
)
def test_untestable_input_gives_no_test(observed):
    assert sample_ratio_test(observed) is None


@pytest.mark.parametrize(
    ("p", "text"), [(0.5, "0.500"), (0.001, "0.001"), (0.00099, "9.9e-04"), (4.5e-15, "4.5e-15"), (0.0, "below 1e-300")]
)
def test_p_value_text(p, text):
    assert p_value_text(p) == text
