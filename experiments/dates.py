"""Dates: the one ISO 8601 parser, the one readable UTC formatter, and the end-date rule.

Everything we show or take is UTC; a person types UTC wall-clock time, and an
explicit offset (from a script or a test) is honoured and converted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# The form defaults the end date to "now" as the page was drawn; allow for clock
# skew between the browser, this server and Mixpanel before calling it "future".
CLOCK_SKEW_ALLOWANCE = dt.timedelta(minutes=2)

MSG_END_IN_FUTURE = (
    "The end date is in the future. Force conclude ends the analysis now or at a past time; "
    "leave it at the current time (UTC) to end it now."
)
MSG_END_BEFORE_START = "The end date is before the experiment started ({start}). Choose a time after the start."


def parse_iso_datetime(text: str) -> dt.datetime:
    """An ISO 8601 date-time as an aware UTC datetime; no offset means UTC.

    ValueError for anything else, including a moment that falls outside the years
    1 to 9999 once converted to UTC (e.g. 0001-01-01T00:00+05:00).
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the date is out of range once converted to UTC") from None


def parse_datetime_or_none(value: Any) -> dt.datetime | None:
    """An ISO 8601 date-time from untrusted data, or None for anything that is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_iso_datetime(value)
    except ValueError:
        return None


def format_utc(value: dt.datetime | None, *, seconds: bool = False) -> str:
    """A moment as people read it here: "2026-11-26 09:30 UTC" (24-hour, minutes).

    The one date style of every page and message; `seconds` adds them where an
    auditor compares moments ("2026-11-26 09:30:05 UTC").
    """
    if value is None:
        return "an unknown time"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def end_date_problem(end_date: dt.datetime, *, start: dt.datetime | None, now: dt.datetime) -> str | None:
    """Why `end_date` cannot end an experiment that started at `start`, or None when it can.

    The one end-date rule: the form shows its answer, the service refuses with it.
    Not in the future (beyond clock skew); not before the start, compared at the
    minute the form's input can express.
    """
    if end_date > now + CLOCK_SKEW_ALLOWANCE:
        return MSG_END_IN_FUTURE
    if start is not None and end_date < start.astimezone(dt.UTC).replace(second=0, microsecond=0):
        return MSG_END_BEFORE_START.format(start=format_utc(start))
    return None
