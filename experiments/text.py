"""Plain-text helpers shared by pages, messages and queries."""

from __future__ import annotations

from typing import Any


def one_line(value: Any) -> str:
    """Text on one line, its runs of white space made single spaces (for a mail subject, a
    line break would start a new header; for a chat message, a new paragraph)."""
    return " ".join(str(value or "").split())
