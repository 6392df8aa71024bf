"""Reading Mixpanel's unpublished shapes: variants, exposures, results, metrics, planned length; and the overview."""

from __future__ import annotations

import datetime as dt

import pytest

from experiments.mixpanel import shapes
from experiments.mixpanel.experiment import parse_experiment, summarize_experiment
from experiments.mixpanel.shapes import SRM_NOTE_NO_COUNTS, SRM_NOTE_NO_PLAN, SRM_NOTE_TOO_FEW, SRM_NOTE_UNLISTED
from experiments.models import Region, Workspace
from experiments.selectors.experiment_page import experiment_overview

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def rows(table: shapes.VariantTable) -> list[tuple]:
    return [(r.key, r.planned_percent, r.exposures, r.share_percent, r.listed) for r in table.rows]


# --- Variants and exposures --------------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        [{"key": "control", "split": 50}, {"key": "green", "split": 50}],
        [{"key": "control", "split": 0.5}, {"key": "green", "split": 0.5}],
        [{"name": "control", "percent": "50%"}, {"name": "green", "percent": "50 %"}],
        [{"value": "control", "allocation": {"percentage": 1}}, {"value": "green", "allocation": {"percentage": 1}}],
        [{"id": "control", "weight": 2}, {"id": "green", "weight": 2}],
    ],
)
def test_variant_splits_in_any_form_become_percentages(variants):
    table = shapes.variant_table(variants, {"control": 600, "green": 400})
    assert rows(table) == [("control", 50.0, 600, 60.0, True), ("green", 50.0, 400, 40.0, True)]
    assert table.total == 1000
    assert table.testable == (("control", 600, table.testable[0][2]), ("green", 400, table.testable[1][2]))


@pytest.mark.parametrize(
    "cache",
    [
        {"control": 600, "green": 400},
        {"counts": {"control": 600, "green": 400}},
        {"variants": {"control": {"count": 600}, "green": {"exposures": "400"}}},
        {"exposures": [{"variant": "control", "count": 600}, {"key": "green", "users": 400.0}]},
        {"Control": "600", "GREEN": "400", "note": "cached", "flag": True, "total": 1000},
    ],
)
def test_exposures_in_any_form_are_matched_to_variants(cache):
    variants = [{"key": "control", "split": 50}, {"key": "green", "split": 50}]
    table = shapes.variant_table(variants, cache)
    assert [(r.key, r.exposures) for r in table.rows] == [("control", 600), ("green", 400)]
    assert table.exposures_known


def test_unreadable_or_negative_counts_are_unknown_not_zero():
    variants = [{"key": "a", "split": 50}, {"key": "b", "split": 50}, {"key": "c", "split": 0}]
    table = shapes.variant_table(variants, {"a": 300, "b": "n/a", "c": -4})
    assert rows(table) == [("a", 50.0, 300, None, True), ("b", 50.0, None, None, True), ("c", 0.0, None, None, True)]
    assert not table.exposures_known
    assert table.total == 300
    assert table.testable == ()


def test_a_stated_total_is_kept_when_there_are_no_counts_per_variant():
    table = shapes.variant_table([{"key": "a"}, {"key": "b"}], {"total": 18234})
    assert table.total == 18234
    assert [r.exposures for r in table.rows] == [None, None]
    assert not table.planned_known


def test_exposures_for_a_variant_not_listed_are_shown_and_block_the_test():
    variants = [{"key": "a", "split": 50}, {"key": "b", "split": 50}]
    table = shapes.variant_table(variants, {"a": 100, "b": 100, "ghost": 7})
    assert rows(table)[-1] == ("ghost", None, 7, pytest.approx(100 * 7 / 207), False)
    assert table.testable == ()


def test_variants_of_odd_shapes_get_labels():
    table = shapes.variant_table([{"weird": True}, "as a string", None, 7], None)
    assert [r.key for r in table.rows] == ["Variant 1", "as a string", "Variant 3", "7"]
    assert not table.planned_known


@pytest.mark.parametrize("variants", [None, "a,b", {"a": 1}, []])
def test_no_variants_and_no_counts_is_an_empty_table(variants):
    table = shapes.variant_table(variants, None)
    assert table.rows == ()
    assert table.total is None


def test_counts_without_variants_still_show():
    table = shapes.variant_table([], {"control": 10, "b": 12})
    assert rows(table) == [
        ("control", None, 10, pytest.approx(100 * 10 / 22), False),
        ("b", None, 12, pytest.approx(100 * 12 / 22), False),
    ]


# --- Results -----------------------------------------------------------------------------------


def result_rows(cache) -> list[tuple[str, str, str, str, str]]:
    return [(r.label, r.lift, r.p_value, r.confidence, r.significance) for r in shapes.results_summary(cache).rows]


def test_results_per_metric_and_variant():
    cache = {
        "metrics": {
            "Checkout": {
                "variants": {"green": {"lift": 0.034, "p_value": 0.012, "confidence": 0.988, "significant": True}}
            },
            "Revenue": {"variants": {"green": {"lift": -0.01, "pvalue": 0.4, "is_significant": False}}},
        }
    }
    assert result_rows(cache) == [
        ("Checkout · green", "+0.034", "0.012", "0.988", "yes"),
        ("Revenue · green", "-0.01", "0.400", "—", "no"),
    ]


def test_a_statistic_given_per_variant_becomes_a_row_per_variant():
    cache = {"computed_at": "2026-11-28T00:00:00Z", "lift": {"a": 0.021, "b": -0.004}, "p-value": {"a": 0.0001}}
    summary = shapes.results_summary(cache)
    assert result_rows(cache) == [("a", "+0.021", "< 0.001", "—", "—"), ("b", "-0.004", "—", "—", "—")]
    assert summary.pairs == (("computed_at", "2026-11-28T00:00:00Z"),)


def test_results_as_a_list_of_metrics_use_their_names():
    cache = [{"name": "Checkout", "lift": 0.1, "Confidence Level": 95}, {"metric": "Signups", "significance": "high"}]
    assert result_rows(cache) == [("Checkout", "+0.1", "—", "95", "—"), ("Signups", "—", "—", "—", "high")]


def test_top_level_statistics_are_the_overall_row():
    assert result_rows({"lift": 0.12, "p_value": 0.2}) == [("Overall", "+0.12", "0.200", "—", "—")]


@pytest.mark.parametrize(
    ("cache", "pairs"),
    [
        ("just text", (("(value)", "just text"),)),
        (42, (("(value)", "42"),)),
        ({"a": None, "b": False}, (("a", "—"), ("b", "no"))),
        ({"a": [1, 2, 3]}, (("a", "[1, 2, 3]"),)),
        ({"big": 12345678.0, "small": 0.000012345}, (("big", "12,345,678"), ("small", "1.234e-05"))),
    ],
)
def test_anything_else_becomes_key_value_pairs(cache, pairs):
    summary = shapes.results_summary(cache)
    assert summary.rows == ()
    assert summary.pairs == pairs


def test_deep_and_large_results_are_cut_with_a_count():
    deep: dict = {"leaf": 1}
    for _ in range(20):
        deep = {"d": deep}
    summary = shapes.results_summary(deep)
    assert len(summary.pairs) == 1
    assert summary.pairs[0][1].startswith('{"d":')
    wide = shapes.results_summary({str(n): n for n in range(shapes.RESULTS_MAX_PAIRS + 7)})
    assert len(wide.pairs) == shapes.RESULTS_MAX_PAIRS
    assert wide.omitted == 7
    many = shapes.results_summary([{"name": f"m{n}", "lift": n} for n in range(shapes.RESULTS_MAX_ROWS + 3)])
    assert len(many.rows) == shapes.RESULTS_MAX_ROWS
    assert many.omitted == 3


@pytest.mark.parametrize("cache", [None, {}, [], {"metrics": []}, {"metrics": {}}])
def test_empty_results(cache):
    assert shapes.results_summary(cache).empty


# --- Metrics and planned length -----------------------------------------------------------------


def test_metric_rows():
    metrics = [
        {"id": 1, "name": "Conversion", "type": "funnel", "is_primary": True},
        "bare",
        3,
        None,
        {"deep": {"x": [1]}},
    ]
    assert [(m.label, m.kind, m.primary, m.details) for m in shapes.metric_rows(metrics)] == [
        ("Conversion", "funnel", "yes", "id: 1"),
        ("bare", "", "", ""),
        ("3", "", "", ""),
        ("Metric 4", "", "", "—"),
        ("Metric 5", "", "", 'deep: {"x": [1]}'),
    ]


@pytest.mark.parametrize(
    ("settings", "days"),
    [
        ({"duration_days": 28}, 28),
        ({"planned_duration_days": "14"}, 14),
        ({"duration_weeks": 3}, 21),
        ({"duration": {"value": 2, "unit": "weeks"}}, 14),
        ({"duration": {"value": 10, "unit": "days"}}, 10),
        ({"duration": {"value": 10, "unit": "hours"}}, None),
        ({"duration": -3}, None),
        ({"duration": "soon"}, None),
        ([1, 2], None),
        (None, None),
    ],
)
def test_planned_days(settings, days):
    assert shapes.planned_days(settings) == days


# --- The overview ------------------------------------------------------------------------------


@pytest.fixture
def workspace(db):
    return Workspace.objects.create(name="Growth", region=Region.US, mixpanel_workspace_id=1001, mixpanel_project_id=77)


def experiment(**fields):
    data = {"id": "e1", "status": "active", "start_date": "2026-11-01T12:00:00Z"} | fields
    return parse_experiment(data)


def test_days_running_and_days_left_of_a_planned_length(workspace):
    overview = experiment_overview(workspace=workspace, experiment=experiment(settings={"duration_days": 40}), now=NOW)
    assert (overview.days_running, overview.planned_days, overview.days_left) == (28, 40, 12)


def test_days_left_from_a_planned_end_date(workspace):
    exp = experiment(settings={"planned_end_date": "2026-12-09T12:00:00Z"})
    overview = experiment_overview(workspace=workspace, experiment=exp, now=NOW)
    assert (overview.days_running, overview.days_left) == (28, 10)


def test_a_concluded_experiment_ran_until_its_end_and_has_no_days_left(workspace):
    exp = experiment(status="concluded", end_date="2026-11-11T12:00:00Z", settings={"duration_days": 40})
    overview = experiment_overview(workspace=workspace, experiment=exp, now=NOW)
    assert (overview.days_running, overview.days_left) == (10, None)


@pytest.mark.parametrize("start", [None, "2026-12-25T00:00:00Z", "garbage"])
def test_not_started_has_no_days_running(workspace, start):
    overview = experiment_overview(workspace=workspace, experiment=experiment(start_date=start), now=NOW)
    assert overview.days_running is None


@pytest.mark.parametrize(
    ("variants", "cache", "note"),
    [
        ([{"key": "a"}, {"key": "b"}], {"a": 100, "b": 100}, SRM_NOTE_NO_PLAN),
        ([{"key": "a", "split": 1}, {"key": "b", "split": 1}], {"a": 100}, SRM_NOTE_NO_COUNTS),
        ([{"key": "a", "split": 1}, {"key": "b", "split": 1}], {"a": 100, "b": 90, "c": 1}, SRM_NOTE_UNLISTED),
        ([{"key": "a", "split": 1}, {"key": "b", "split": 1}], {"a": 3, "b": 2}, SRM_NOTE_TOO_FEW),
        ([], None, ""),
    ],
)
def test_why_the_split_was_not_checked(workspace, variants, cache, note):
    overview = experiment_overview(workspace=workspace, experiment=experiment(variants=variants, exposures_cache=cache))
    assert overview.srm is None
    assert overview.srm_note == note


@pytest.mark.parametrize(
    ("variants", "cache"),
    [
        ([{"key": "a", "split": 50}, {"key": "b", "split": 50}], {"a": 10412, "b": 9311}),
        ([{"key": "a", "split": 50}, {"key": "b", "split": 50}], {"a": 5120, "b": 5089}),
        ([{"key": "a", "split": 1}, {"key": "b", "split": 1}], {"a": 100, "b": 90, "c": 1}),
        ([{"key": "a", "split": 1}, {"key": "b", "split": 1}], {"a": 3, "b": 2}),
        ([{"key": "a"}, {"key": "b"}], {"a": 100, "b": 100}),
        ([{"key": "a", "split": 90}, {"key": "b", "split": 10}], {"counts": {"a": 500, "b": 500}}),
        ([], None),
        ({"not": "a list"}, {"a": 1}),
    ],
)
def test_the_lists_split_verdict_is_the_experiment_pages_check(workspace, variants, cache):
    data = {"id": "e1", "status": "active", "start_date": "2026-11-01T12:00:00Z"}
    summary = summarize_experiment(data | {"variants": variants, "exposures_cache": cache})
    overview = experiment_overview(workspace=workspace, experiment=experiment(variants=variants, exposures_cache=cache))
    assert summary.sample_ratio_mismatch == (overview.srm.mismatch if overview.srm is not None else None)


def test_the_split_is_checked_when_everything_is_known(workspace):
    exp = experiment(
        variants=[{"key": "a", "split": 50}, {"key": "b", "split": 50}], exposures_cache={"a": 900, "b": 1100}
    )
    overview = experiment_overview(workspace=workspace, experiment=exp)
    assert overview.srm.mismatch
    assert overview.srm.chi_square == pytest.approx(20.0)


def test_the_control_is_the_marked_variant_else_the_one_called_control():
    assert shapes.control_variant([{"key": "a"}, {"key": "base", "is_control": True}]) == "base"
    assert shapes.control_variant([{"key": "treatment"}, {"key": "Control"}]) == "Control"
    assert shapes.control_variant([{"key": "x", "name": "control"}]) == "x"
    assert shapes.control_variant([{"key": "a"}, {"key": "b"}]) is None
    assert shapes.control_variant("not a list") is None


def test_variant_lifts_take_each_variants_first_lift_and_its_metric():
    results = {
        "metrics": [
            {"name": "Conversion", "variants": {"treatment": {"lift": 0.034, "p_value": 0.01}}},
            {"name": "Revenue", "variants": {"treatment": {"lift": 0.5}, "b": {"lift": -0.01}}},
        ]
    }
    assert shapes.variant_lifts(results) == {"treatment": ("+0.034", "Conversion"), "b": ("-0.01", "Revenue")}
    assert shapes.variant_lifts({"lift": 0.2}) == {}  # a lift of no variant
    assert shapes.variant_lifts(None) == {}
