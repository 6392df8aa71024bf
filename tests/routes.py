"""Every route of the project's URLconf, with a way to fill in its path parameters.

Tests that must cover every URL (the input fuzzer, the response-header checks) walk
these instead of a list someone has to remember to extend.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.urls import URLResolver, get_resolver

from experiments.models import Bookmark, BookmarkKind, TokenScope
from experiments.services import tokens as token_services
from tests.factories import make_attempt


@dataclass(frozen=True)
class Route:
    template: str  # the route as the URLconf joins it, e.g. "w/<id:workspace_pk>/audit/"
    name: str  # namespaced, e.g. "experiments:audit-workspace-list" ("" when unnamed)
    int_params: frozenset[str]
    params: tuple[str, ...]


_ROUTE_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")
_REGEX_PARAM = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def _numeric(converter: Any) -> bool:
    """Whether a path converter takes digits only (an id), whatever its class."""
    return bool(re.fullmatch(converter.regex, "123")) and not re.fullmatch(converter.regex, "abc")


def _routes(
    patterns: list[Any], prefix: str = "", namespace: str = "", ints: frozenset[str] = frozenset()
) -> Iterator[Route]:
    for pattern in patterns:
        converters = getattr(pattern.pattern, "converters", {})
        int_params = ints | {name for name, conv in converters.items() if _numeric(conv)}
        template = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _routes(pattern.url_patterns, template, ns, frozenset(int_params))
        else:
            regex_params = _REGEX_PARAM.findall(template)
            params = tuple(regex_params + _ROUTE_PARAM.findall(_REGEX_PARAM.sub("", template)))
            yield Route(template, namespace + pattern.name if pattern.name else "", frozenset(int_params), params)


ROUTES = list(_routes(get_resolver().url_patterns))


def route_path(route: Route, values: dict[str, str]) -> str:
    """The route's path with `values` (quoted) in place of its parameters."""

    def fill(match: re.Match[str]) -> str:
        return quote(values[match.group(1)], safe="")

    text = _ROUTE_PARAM.sub(fill, _REGEX_PARAM.sub(fill, route.template))
    return "/" + text.replace("^", "").replace("$", "")


def route_values(*, standin: Any, workspace: Any, owner: Any) -> dict[str, Callable[[], str]]:
    """A working value for every path parameter of ROUTES (called per request: some rows come and go).

    `workspace` is the stand-in's workspace 1001; `owner` a member who owns the attempt and bookmark.
    """
    experiment_id = standin.find(1001, status="active")["id"]
    attempt = make_attempt(workspace=workspace, actor=owner, experiment_id=experiment_id)

    def bookmark_pk() -> str:
        # Requests remove it now and then; the next one needs it back.
        bookmark, _ = Bookmark.objects.get_or_create(
            workspace=workspace,
            kind=BookmarkKind.VIEW,
            view_query="status=draft",
            defaults={"title": "Drafts", "created_by": owner, "created_by_name": "Pat"},
        )
        return str(bookmark.pk)

    token = token_services.api_token_create(user=owner, name="routes", scope=TokenScope.READ).token
    return {
        "workspace_pk": lambda: str(workspace.pk),
        "workspace_id": lambda: str(workspace.pk),
        "attempt_id": lambda: str(attempt.pk),
        "token_pk": lambda: str(token.pk),
        "experiment_id": lambda: experiment_id,
        "pk": lambda: str(attempt.pk),
        "attempt_pk": lambda: str(attempt.pk),
        "bookmark_pk": bookmark_pk,
        "fmt": lambda: "csv",
        "object_id": lambda: str(workspace.pk),
        "content_type_id": lambda: "1",
        "id": lambda: str(owner.pk),
        "app_label": lambda: "experiments",
        "url": lambda: "no-such-page/",
    }
