"""Plain-text output shared by the management commands."""

from __future__ import annotations

from typing import Any

from experiments.text import one_line


def table_cell(value: Any, width: int) -> str:
    """One table cell of at most `width` characters on one line ("-" for None).

    Upstream names are untrusted text: whatever they contain, a row stays one line.
    """
    text = one_line(value if value is not None else "-")
    return text if len(text) <= width else text[: width - 1] + "…"
