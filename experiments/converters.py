"""Path converters that refuse, as a 404, values no row can have.

Django's `int` converter takes any run of digits, but both databases store ids as
64-bit integers: a lookup with 2**63 raised OverflowError (SQLite) or a data error
(PostgreSQL), a 500. An experiment id is opaque text from Mixpanel, but never
longer than the columns that keep it, and never with control characters (the client
refuses such ids from Mixpanel, and PostgreSQL refuses a NUL in text outright).
"""

from __future__ import annotations

from django.urls.converters import IntConverter, StringConverter

from experiments.mixpanel.experiment import has_control_characters

DB_ID_MAX = 2**63 - 1
EXPERIMENT_ID_MAX_LENGTH = 100  # ConclusionAttempt, ConclusionClaim and Bookmark keep at most this


class RowIdConverter(IntConverter):
    """A database row id: digits that fit a signed 64-bit integer."""

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > DB_ID_MAX:
            raise ValueError("no row has an id this large")  # the URL does not match: 404
        return number


class ExperimentIdConverter(StringConverter):
    """An experiment id as Mixpanel gives it: any text without "/" or control characters, within the column."""

    def to_python(self, value: str) -> str:
        if len(value) > EXPERIMENT_ID_MAX_LENGTH or has_control_characters(value):
            raise ValueError("not an experiment id")  # the URL does not match: 404
        return value
