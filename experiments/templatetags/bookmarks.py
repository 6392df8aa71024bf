"""The bookmark star, rendered in Python.

It sits on every row of the experiments page, where a template include per row
cost more than the rest of the row; built here with format_html, it costs about
as much as one table cell. The `#star-toggle` partial calls this tag too, so the
markup has one source whether it is a row or an htmx answer.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

from django import template
from django.template.context import Context
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe

from experiments.models import Bookmark, BookmarkKind
from experiments.queries import ExperimentListQuery
from experiments.selectors import experiment_rows as row_selectors

register = template.Library()

# Every interpolated value goes through html.escape(quote=True) (what Django's escape
# does, without its lazy-string wrapper, which dominated the cost per row).
_FORM = (
    '<form method="post" id="{dom_id}" class="star-toggle" action="{url}" hx-post="{url}" hx-swap="outerHTML">'
    '<input type="hidden" name="csrfmiddlewaretoken" value="{csrf}">'
    '<input type="hidden" name="next" value="{next}">{strip}'
    '<button type="submit" class="star-button" aria-pressed="{pressed}" title="{title}" data-name="{name}">'
    '<span aria-hidden="true">{glyph}</span><span class="visually-hidden">{action} {name}</span>'
    "</button>{error}</form>"
)
_STRIP = '<input type="hidden" name="strip" value="1">'
_ON = {"pressed": "true", "title": "Bookmarked for the team: remove", "glyph": "★", "action": "Remove bookmark"}
_OFF = {"pressed": "false", "title": "Bookmark for the team", "glyph": "☆", "action": "Bookmark"}


@register.simple_tag(takes_context=True)
def star_toggle(
    context: Context, experiment: Any, starred: Any, with_strip: bool = False, error: str = ""
) -> SafeString | str:
    """The star form for one experiment: a POST to bookmark-toggle that htmx swaps in place.

    `experiment` has `.id` and `.name` (or is a dict with those keys); `starred` is
    any container of starred experiment ids. An id our URLs cannot carry gets no star.
    """
    experiment_id = _field(experiment, "id")
    url = _toggle_url(context["workspace"].pk, experiment_id)
    if not url:
        return ""
    state = _ON if starred is not None and experiment_id in starred else _OFF
    csrf, next_path = _per_render(context)
    html = _FORM.format(
        dom_id=star_dom_id(experiment_id),
        url=escape(url),
        csrf=csrf,
        next=next_path,
        strip=_STRIP if with_strip else "",
        name=escape(_field(experiment, "name") or experiment_id),
        error=f'<span class="field-error star-error" role="alert">{escape(str(error))}</span>' if error else "",
        **state,
    )
    return mark_safe(html)  # noqa: S308 - built above from escaped values and constants


@register.simple_tag(takes_context=True)
def star_kept(context: Context, experiment: Any) -> SafeString | str:
    """Where a redrawn row keeps the star already on the page.

    htmx puts the page's own star element in place of this one (hx-preserve, same id),
    so a row redrawn after force conclude needs no bookmark query, and the star keeps
    its state and the page it returns to.
    """
    experiment_id = _field(experiment, "id")
    if not _toggle_url(context["workspace"].pk, experiment_id):
        return ""
    return mark_safe(f'<form id="{star_dom_id(experiment_id)}" class="star-toggle" hx-preserve></form>')  # noqa: S308 - a hex id


@register.filter
def bookmark_href(bookmark: Bookmark) -> str:
    """Where a bookmark leads: the experiment's page, or our experiments page with the stored query.

    The link is always built from our own routes, never taken from input.
    """
    base = reverse("experiments:experiment-list", args=[bookmark.workspace_id])
    if bookmark.kind == BookmarkKind.EXPERIMENT:
        try:
            return reverse("experiments:experiment-detail", args=[bookmark.workspace_id, bookmark.experiment_id])
        except NoReverseMatch:
            # An id our URL cannot carry (a "/" in it): find it by search instead.
            return f"{base}?{urlencode({'q': bookmark.experiment_id})}"
    return f"{base}?{bookmark.view_query}" if bookmark.view_query else base


def _toggle_url(workspace_pk: int, experiment_id: str) -> str:
    """The star's POST address for one experiment; "" for an id our URLs cannot carry (it gets no star)."""
    try:
        return reverse("experiments:bookmark-toggle", args=[workspace_pk, experiment_id])
    except NoReverseMatch:
        return ""


def star_dom_id(experiment_id: str) -> str:
    """The star form's HTML id: stable per experiment, so htmx can keep it across a row redraw."""
    return "star-" + row_selectors.experiment_dom_id(experiment_id)


def _per_render(context: Context) -> tuple[str, str]:
    """The CSRF token and the page to come back to, escaped once per template render (not per row)."""
    cache = context.render_context.dicts[0]
    found = cache.get(_per_render)
    if found is None:
        request = context.get("request")
        next_path = context.get("bookmark_next") or (request.get_full_path() if request is not None else "")
        found = (escape(str(context.get("csrf_token") or "")), escape(next_path))
        cache[_per_render] = found
    return found


def _field(experiment: Any, name: str) -> str:
    value = experiment.get(name) if isinstance(experiment, dict) else getattr(experiment, name, "")
    return str(value or "")


@register.filter
def view_filters(view_query: str) -> list[tuple[str, str]]:
    """A saved view's filters in words, for its chips: [("Status", "Active"), ("Search", "checkout")]."""
    return ExperimentListQuery.from_querystring(view_query or "").describe()
