"""The one way pages write dates, counts and durations (experiments/templatetags/display.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.template import Context, Template

from experiments.forms import ForceConcludeForm, datetime_local_value
from experiments.templatetags.display import count, days, duration_ms, utc, utc_text

WHEN = dt.datetime(2026, 11, 26, 9, 30, 5, 123456, tzinfo=dt.UTC)


def test_dates_are_utc_24_hour_named_and_carry_the_moment_for_the_local_tooltip():
    html = str(utc(WHEN))
    assert html == '<time datetime="2026-11-26T09:30:05.123456+00:00" data-utc>2026-11-26 09:30 UTC</time>'
    assert "2026-11-26 09:30:05 UTC</time>" in str(utc(WHEN, "seconds"))
    # Another zone is shown in UTC; an afternoon stays 24-hour.
    tokyo = dt.datetime(2026, 11, 27, 1, 15, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert utc_text(tokyo) == "2026-11-26 16:15 UTC"
    assert utc(None) == "—"
    assert utc("") == "—"


def test_days_are_counted_in_words_with_thousands_separators():
    assert days(1) == "1 day"
    assert days(0) == "0 days"
    assert days(12) == "12 days"
    assert days(1204) == "1,204 days"
    assert days(None) == "—"  # not started
    assert Template("{% load display %}{{ n|days }}").render(Context({"n": 2})) == "2 days"


def test_counts_have_thousands_separators():
    assert count(1234567) == "1,234,567"
    assert count(999) == "999"
    assert count(0) == "0"
    assert count("2434") == "2,434"
    assert count(None) == "—"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (850, "850 ms"),
        (999, "999 ms"),
        (1000, "1.0 s"),
        (1500, "1.5 s"),
        (12345, "12.3 s"),
        (95400, "95.4 s"),
        (123456, "123 s"),
    ],
)
def test_durations_are_in_seconds_past_one_second(ms, text):
    assert duration_ms(ms) == text


def test_templates_load_it_as_display():
    rendered = Template("{% load display %}{{ n|count }} · {{ when|utc }}").render(Context({"n": 12000, "when": WHEN}))
    assert rendered.startswith("12,000 · <time ")


def test_no_template_formats_a_date_or_a_count_itself():
    """One module formats for every page: templates do not use Django's date or intcomma filters."""
    from pathlib import Path

    offenders = []
    for path in Path("templates").rglob("*.html"):
        text = path.read_text()
        # |date:'c' (ISO, for attributes) and 'Y-m-d' (a date input's value) are for machines.
        for bad in ("H:i", "|date:'j", '|date:"j', "|intcomma", "|timesince", "|naturaltime"):
            if bad in text:
                offenders.append(f"{path}: {bad}")
    assert offenders == []


def test_end_time_field_is_24_hour_utc_text_and_takes_either_separator():
    assert datetime_local_value(WHEN) == "2026-11-26 09:30"
    for typed in ("2026-11-26 09:30", "2026-11-26T09:30"):
        field = ForceConcludeForm.base_fields["end_date"]
        assert field.to_python(typed) == dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)
