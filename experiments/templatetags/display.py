"""How every page writes dates, counts and durations: one module, used by every template.

Dates are UTC, 24-hour, "2026-11-26 09:30 UTC" (experiments.dates.format_utc, which
messages use too), inside a <time> element that static/js/app.js gives the reader's
local time as a tooltip. Counts carry thousands separators, and so do numbers of days
("12 days"); durations past one second are in seconds.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from experiments import dates
from experiments.text import one_line

register = template.Library()

MISSING = "—"


@register.filter
def utc(value: dt.datetime | None, precision: str = "") -> SafeString | str:
    """`{{ when|utc }}` or `{{ when|utc:"seconds" }}`: the one date style, in a <time> element."""
    if not isinstance(value, dt.datetime):
        return MISSING
    iso = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat()
    text = utc_text(value, precision)
    return mark_safe(f'<time datetime="{escape(iso)}" data-utc>{escape(text)}</time>')  # noqa: S308 - escaped above


@register.filter
def utc_text(value: dt.datetime | None, precision: str = "") -> str:
    """The same style as plain text, for attributes and sentences that cannot hold markup."""
    if not isinstance(value, dt.datetime):
        return MISSING
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return dates.format_utc(value, seconds=precision == "seconds")


def _whole(value: Any) -> int | str:
    """A whole number to format, or the text to show instead (— when unknown)."""
    if value is None or value == "":
        return MISSING
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


@register.filter
def count(value: Any) -> str:
    """`{{ n|count }}`: 12,345 (a comma every three digits, whatever the locale); — when unknown."""
    number = _whole(value)
    return number if isinstance(number, str) else f"{number:,}"


@register.filter
def days(value: Any) -> str:
    """`{{ n|days }}`: "1 day", "12 days", "1,204 days"; — when unknown (not started)."""
    number = _whole(value)
    if isinstance(number, str):
        return number
    return f"{number:,} day" if number == 1 else f"{number:,} days"


@register.filter
def duration_ms(value: Any) -> str:
    """`{{ ms|duration_ms }}`: "850 ms" under a second, then seconds: "1.5 s", "12.3 s", "95 s"."""
    if value is None or value == "":
        return MISSING
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return str(value)
    if ms < 1000:
        return f"{ms:,} ms"
    seconds = ms / 1000
    return f"{seconds:,.1f} s" if seconds < 100 else f"{round(seconds):,} s"


register.filter("one_line", one_line)
