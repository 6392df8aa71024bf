"""Selectors return data: the HTML, the URLs and the 404s are made by templates, template tags and views."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SELECTORS = Path(__file__).resolve().parent.parent / "experiments" / "selectors"
# What a selector must not reach for: rendering, marking HTML safe, building URLs, answering HTTP.
FORBIDDEN = {"Http404", "reverse", "mark_safe", "format_html", "render_to_string", "HttpResponse"}


def _names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return (imported | called) & FORBIDDEN


@pytest.mark.parametrize("module", sorted(p.stem for p in SELECTORS.glob("*.py") if p.stem != "__init__"))
def test_selector_module_renders_nothing_and_raises_no_http_errors(module):
    assert _names_used(SELECTORS / f"{module}.py") == set()
