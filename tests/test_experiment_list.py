"""The experiments page (issue 4): list, tabs, search, sort, pages, cache, failures, escaping."""

from __future__ import annotations

import datetime as dt
import re
from html import escape
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from django.http import QueryDict
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelAuthError, MixpanelConfigError, MixpanelUnavailable
from experiments.mixpanel.experiment import ExperimentSummary
from experiments.queries import STATUS_TABS, ExperimentListQuery
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_rows as row_selectors
from tests.factories import session_queries
from tests.fake_mixpanel import FakeMixpanel, exp_json, install

STATUS_CYCLE = ["active", "draft", "concluded", "success", "fail"]


@pytest.fixture
def fake(monkeypatch):
    # 15 experiments: 3 of each status, numbered 0..14.
    return install(monkeypatch, FakeMixpanel([exp_json(n, STATUS_CYCLE[n % 5]) for n in range(15)]))


def list_url(workspace, query: str = "") -> str:
    return reverse("experiments:experiment-list", args=[workspace.pk]) + (("?" + query) if query else "")


def row_names(html: str) -> list[str]:
    return re.findall(r'<a href="/w/\d+/experiments/[^"]+/"[^>]*>([^<]*)</a>', html)


def page(client, workspace, query: str = "", **headers) -> str:
    response = client.get(list_url(workspace, query), **headers)
    assert response.status_code == 200
    return response.content.decode()


# --- rows and header -------------------------------------------------------------------


@pytest.mark.django_db
def test_list_shows_each_experiments_facts(pm_client, workspace, monkeypatch):
    install(
        monkeypatch,
        FakeMixpanel([exp_json(1, "active", tags=["growth", "checkout"], exposures_cache={"total": 4321})]),
    )
    html = page(pm_client, workspace)
    assert "Experiment 00001" in html
    assert '<span class="badge status-active">active</span>' in html
    assert "2026-01-02 09:00 UTC" in html  # exact start
    # One line: the date in the shared style, then its age.
    assert re.search(
        r'<time datetime="2026-01-02T09:00:00\+00:00" data-utc>2026-01-02 09:00 UTC</time> '
        r'<span class="muted">· \d+ months? ago</span>',
        html,
    )
    assert '<span class="tag">growth</span><span class="tag">checkout</span>' in html
    assert "Casey Creator" in html
    days = (timezone.now() - dt.datetime(2026, 1, 2, 9, tzinfo=dt.UTC)).days
    assert f'<td data-label="Days running" class="num">{days}</td>' in html
    # The id is behind a copy control, not written out in the row.
    assert 'data-copy="00000000-0000-4000-8000-000000000001"' in html
    assert ">00000000-0000-4000-8000-000000000001<" not in html
    assert "4,321" in html  # exposures, with a thousands separator
    detail = reverse("experiments:experiment-detail", args=[workspace.pk, "00000000-0000-4000-8000-000000000001"])
    assert f'href="{detail}"' in html


@pytest.mark.django_db
def test_header_names_workspace_region_role_and_links(pm_client, workspace, fake):
    html = page(pm_client, workspace)
    assert '<h1 class="workspace-title">Growth</h1>' in html
    assert ">US</span>" in html
    assert "You are concluder" in html
    assert reverse("experiments:audit-workspace-list", args=[workspace.pk]) in html
    assert reverse("experiments:bookmark-list", args=[workspace.pk]) in html


@pytest.mark.django_db
def test_page_says_how_fresh_the_list_is(pm_client, workspace, fake):
    html = page(pm_client, workspace)
    assert re.search(r"Updated <time datetime=\"[^\"]+\" title=\"[^\"]+ UTC\">\d+ s ago</time> from Mixpanel", html)


@pytest.mark.django_db
def test_outsider_gets_404(client, outsider, workspace, fake):
    client.force_login(outsider)
    assert client.get(list_url(workspace)).status_code == 404
    assert client.post(reverse("experiments:experiment-list-refresh", args=[workspace.pk])).status_code == 404
    assert fake.list_calls == 0


@pytest.mark.django_db
def test_viewer_sees_the_list(client, teammate, workspace, fake):
    client.force_login(teammate)
    html = page(client, workspace)
    assert "Experiment 00000" in html
    assert "You are viewer" in html


# --- tabs, search, sort, pages -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["active", "draft", "concluded", "success", "fail"])
def test_each_status_tab_shows_only_its_experiments_and_counts(pm_client, workspace, fake, status):
    html = page(pm_client, workspace, f"status={status}")
    names = row_names(html)
    expected = [f"Experiment {n:05d}" for n in range(15) if STATUS_CYCLE[n % 5] == status]
    assert sorted(names) == sorted(expected)
    assert f'<span class="badge status-{status}">' in html
    for other in set(STATUS_CYCLE) - {status}:
        assert f'<span class="badge status-{other}">' not in html
    # Every tab shows its count; the current one is marked.
    assert re.search(r'aria-current="page">All <span class="count">15</span>', html) is None
    assert re.search(rf'aria-current="page">{dict(STATUS_TABS)[status]} <span class="count">3</span>', html)
    assert '>All <span class="count">15</span>' in html


@pytest.mark.django_db
def test_all_tab_is_the_default(pm_client, workspace, fake):
    html = page(pm_client, workspace)
    assert len(row_names(html)) == 15
    assert 'aria-current="page">All <span class="count">15</span>' in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("q", "field"),
    [
        ("needle NAME", {"name": "The Needle name test"}),
        ("abcdef-1234", {"id": "abcdef-1234-id"}),
        ("pricing-q4", {"tags": ["x", "Pricing-Q4"]}),
        ("jordan", {"creator_name": "Jordan Maker"}),
        ("blue cta lifts", {"hypothesis": "A blue CTA lifts signups"}),
    ],
)
def test_search_matches_name_id_tags_creator_and_hypothesis(pm_client, workspace, monkeypatch, q, field):
    items = [exp_json(n, "active") for n in range(5)]
    items.append(exp_json(99, "active", **field))
    install(monkeypatch, FakeMixpanel(items))
    html = page(pm_client, workspace, "q=" + q.replace(" ", "+"))
    names = row_names(html)
    assert len(names) == 1
    assert ("Experiment 00099" in names) or ("needle" in names[0].lower())


@pytest.mark.django_db
def test_search_counts_tabs_within_the_search(pm_client, workspace, monkeypatch):
    items = [exp_json(n, STATUS_CYCLE[n % 5], tags=["pricing"] if n < 5 else []) for n in range(15)]
    install(monkeypatch, FakeMixpanel(items))
    html = page(pm_client, workspace, "q=pricing")
    assert '>All <span class="count">5</span>' in html
    assert '>Active <span class="count">1</span>' in html
    assert "matching “pricing”" in html


@pytest.mark.django_db
def test_search_with_no_match_says_so(pm_client, workspace, fake):
    html = page(pm_client, workspace, "q=nothing-matches-this")
    assert row_names(html) == []
    assert "No experiments match “nothing-matches-this”" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["Alpha", "bravo", "Charlie", "Delta (draft)"]),
        ("-name", ["Delta (draft)", "Charlie", "bravo", "Alpha"]),
        ("start", ["Charlie", "Alpha", "bravo", "Delta (draft)"]),
        ("-start", ["bravo", "Alpha", "Charlie", "Delta (draft)"]),
        ("end", ["Alpha", "Charlie", "bravo", "Delta (draft)"]),
        ("-end", ["Charlie", "Alpha", "bravo", "Delta (draft)"]),
        # The lifecycle: draft, active, concluded, success, fail.
        ("status", ["Delta (draft)", "bravo", "Alpha", "Charlie"]),
    ],
)
def test_sort_orders(pm_client, workspace, monkeypatch, sort, expected):
    items = [
        exp_json(2, "concluded", name="Alpha", end_date="2026-02-01T00:00:00Z"),
        exp_json(3, "active", name="bravo", end_date=None),
        exp_json(1, "success", name="Charlie", end_date="2026-03-01T00:00:00Z"),
        exp_json(4, "draft", name="Delta (draft)"),
    ]
    install(monkeypatch, FakeMixpanel(items))
    assert row_names(page(pm_client, workspace, f"sort={sort}")) == expected


@pytest.mark.django_db
def test_pagination_fifty_a_page(pm_client, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(n, "active") for n in range(120)]))
    first = page(pm_client, workspace, "sort=name")
    assert len(row_names(first)) == 50
    assert row_names(first)[0] == "Experiment 00000"
    assert "page 1 of 3" in first
    assert f'href="/w/{workspace.pk}/?sort=name&amp;page=2"' in first
    third = page(pm_client, workspace, "sort=name&page=3")
    assert row_names(third) == [f"Experiment {n:05d}" for n in range(100, 120)]
    assert "Showing 101\u2013120 of 120" in third
    assert 'rel="next"' not in third
    assert f'href="/w/{workspace.pk}/?sort=name&amp;page=2" hx-get' in third


@pytest.mark.django_db
def test_page_past_the_end_shows_the_last_page(pm_client, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(n, "active") for n in range(60)]))
    html = page(pm_client, workspace, "sort=name&page=99")
    assert row_names(html) == [f"Experiment {n:05d}" for n in range(50, 60)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "status=archived",
        "status=%3Cscript%3E",
        "sort=drop+table",
        "sort=",
        "page=abc",
        "page=-3",
        "page=0",
        "page=99999999999999999999",
        "q=" + "x" * 5000,
        "status=active&status=draft&page=1.5",
    ],
)
def test_bad_query_values_fall_back_to_defaults(pm_client, workspace, fake, query):
    response = pm_client.get(list_url(workspace, query))
    assert response.status_code == 200
    assert "<tr id=" in response.content.decode() or "No experiments match" in response.content.decode()


def test_query_parsing_falls_back_and_round_trips():
    query = ExperimentListQuery.from_querydict(QueryDict("status=ACTIVE&q=  green   button &sort=-end&page=3"))
    assert query == ExperimentListQuery(status="active", q="green button", sort="-end", page=3)
    assert query.querystring() == "status=active&q=green+button&sort=-end&page=3"
    assert ExperimentListQuery.from_querystring(query.querystring()) == query
    assert ExperimentListQuery.from_querystring("status=nope&sort=nope&page=x") == ExperimentListQuery()
    assert ExperimentListQuery().querystring() == ""
    assert query.with_(status="draft").page == 1


@pytest.mark.django_db
def test_every_filter_survives_the_url_round_trip(pm_client, workspace, monkeypatch):
    """A shared URL shows the same view, and every link on it keeps the other filters."""
    install(monkeypatch, FakeMixpanel([exp_json(n, "active", tags=["shared"]) for n in range(70)]))
    html = page(pm_client, workspace, "status=active&q=shared&sort=-name&page=2")
    assert 'name="q" value="shared"' in html
    assert '<option value="-name" selected>' in html
    assert '<input type="hidden" name="status" value="active" form="filters">' in html
    assert "page 2 of 2" in html
    # Tabs keep search and sort, and go back to page 1.
    assert f'href="/w/{workspace.pk}/?status=draft&amp;q=shared&amp;sort=-name"' in html
    # The pager keeps status, search and sort.
    assert f'href="/w/{workspace.pk}/?status=active&amp;q=shared&amp;sort=-name"' in html  # page 1
    # Opening a link found on the page shows what it promises.
    link = re.search(r'href="(/w/\d+/\?status=draft&amp;q=shared&amp;sort=-name)"', html).group(1)
    follow = pm_client.get(link.replace("&amp;", "&")).content.decode()
    assert 'aria-current="page">Draft' in follow
    assert 'name="q" value="shared"' in follow


# --- htmx --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_htmx_request_gets_only_the_results_fragment(pm_client, workspace, fake):
    response = pm_client.get(list_url(workspace, "status=active&sort=name&q="), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="results"')
    assert "<html" not in html
    assert 'id="filters"' not in html
    assert len(row_names(html)) == 3
    # The address bar gets the canonical form of the view.
    assert response["HX-Push-Url"] == list_url(workspace, "status=active&sort=name")
    assert "HX-Request" in response["Vary"]


@pytest.mark.django_db
def test_same_url_without_htmx_renders_the_full_page(pm_client, workspace, fake):
    html = page(pm_client, workspace, "status=active")
    assert html.lstrip().startswith("<!doctype html>")
    assert 'id="filters"' in html
    assert '<div id="results"' in html
    assert 'hx-push-url="true"' in html
    assert 'hx-trigger="submit, input changed delay:300ms from:#search-q' in html


@pytest.mark.django_db
def test_history_restore_request_gets_the_full_page(pm_client, workspace, fake):
    html = page(pm_client, workspace, "", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<!doctype html>" in html


# --- cache, refresh, failures ------------------------------------------------------------


@pytest.mark.django_db
def test_cache_is_shared_across_requests(pm_client, client, teammate, workspace, fake):
    page(pm_client, workspace)
    page(pm_client, workspace, "status=draft")
    client.force_login(teammate)
    page(client, workspace, "q=experiment")
    assert fake.list_calls == 1


@pytest.mark.django_db
def test_cache_is_shared_with_other_processes(pm_client, workspace, fake):
    """Another process (no in-process index) reads the good copy from Django's cache."""
    page(pm_client, workspace)
    list_selectors._LIST_INDEXES.clear()
    assert len(row_names(page(pm_client, workspace))) == 15
    assert fake.list_calls == 1


@pytest.mark.django_db
def test_refresh_reads_mixpanel_again(pm_client, workspace, fake):
    page(pm_client, workspace)
    fake.add(exp_json(50, "active", name="Brand new"))
    assert "Brand new" not in page(pm_client, workspace)
    refresh = reverse("experiments:experiment-list-refresh", args=[workspace.pk])
    response = pm_client.post(refresh, {"list_query": "status=active&q=brand"})
    assert response.status_code == 302
    assert response["Location"] == list_url(workspace, "status=active&q=brand")
    assert fake.list_calls == 2
    html = page(pm_client, workspace, "status=active&q=brand")
    assert "Brand new" in html
    assert "read again from Mixpanel" in html  # the message after the redirect
    assert fake.list_calls == 2


@pytest.mark.django_db
def test_refresh_in_one_process_is_seen_by_others(pm_client, workspace, fake):
    page(pm_client, workspace)
    # Another process refreshes: a new token and copy land in the shared cache.
    other_index = dict(list_selectors._LIST_INDEXES)
    fake.add(exp_json(51, "active", name="From the other process"))
    pm_client.post(reverse("experiments:experiment-list-refresh", args=[workspace.pk]))
    # Back in "this" process, holding the old index: the next request notices the new token.
    list_selectors._LIST_INDEXES.clear()
    list_selectors._LIST_INDEXES.update(other_index)
    assert "From the other process" in page(pm_client, workspace)
    assert fake.list_calls == 2


@pytest.mark.django_db
def test_htmx_refresh_answers_the_results_fragment(pm_client, workspace, fake):
    response = pm_client.post(
        reverse("experiments:experiment-list-refresh", args=[workspace.pk]),
        {"list_query": "status=draft"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="results"')
    assert len(row_names(html)) == 3


@pytest.mark.django_db
def test_expired_cache_reads_again(pm_client, workspace, fake):
    page(pm_client, workspace)
    list_selectors.invalidate_experiment_list(workspace=workspace)
    page(pm_client, workspace)
    assert fake.list_calls == 2


@pytest.mark.django_db
def test_stale_copy_with_banner_when_mixpanel_fails_after_a_good_read(pm_client, workspace, fake):
    page(pm_client, workspace)
    fake.list_error = MixpanelUnavailable("Mixpanel is unavailable right now (HTTP 503). Try again later.")
    list_selectors.invalidate_experiment_list(workspace=workspace)
    html = page(pm_client, workspace)
    assert len(row_names(html)) == 15
    assert 'class="banner" role="alert"' in html
    assert "Mixpanel could not be read just now, so this is the copy from" in html
    assert "HTTP 503" in html
    assert "(an earlier copy)" in html
    # A failed read is not retried on every page view for a short while.
    page(pm_client, workspace)
    assert fake.list_calls == 2
    # Refresh asks again and still shows the copy.
    response = pm_client.post(reverse("experiments:experiment-list-refresh", args=[workspace.pk]), follow=True)
    assert fake.list_calls == 3
    assert len(row_names(response.content.decode())) == 15


@pytest.mark.django_db
def test_readable_error_when_mixpanel_fails_and_there_is_no_copy(pm_client, workspace, fake):
    fake.list_error = MixpanelAuthError()
    response = pm_client.get(list_url(workspace))
    html = response.content.decode()
    assert response.status_code == 200
    assert "could not be read from Mixpanel, and there is no earlier copy" in html
    assert "Mixpanel refused the service account" in html
    assert "<tr id=" not in html
    assert "CANARY" not in html


@pytest.mark.django_db
def test_missing_configuration_is_readable_not_a_500(pm_client, workspace, monkeypatch):
    def broken(workspace):
        raise MixpanelConfigError()

    monkeypatch.setattr(mixpanel, "client_for", broken)
    response = pm_client.get(list_url(workspace))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Mixpanel is not set up correctly for this dashboard" in html
    assert "MIXPANEL_" not in html  # variable names are for operators, not on pages


@pytest.mark.django_db
def test_recovery_after_failure_drops_the_banner(pm_client, workspace, fake):
    fake.list_error = MixpanelUnavailable()
    page(pm_client, workspace)
    fake.list_error = None
    response = pm_client.post(reverse("experiments:experiment-list-refresh", args=[workspace.pk]), follow=True)
    html = response.content.decode()
    assert len(row_names(html)) == 15
    assert 'class="banner"' not in html


@pytest.mark.django_db
def test_warm_requests_do_not_reparse_or_resort_the_list(pm_client, workspace, fake, monkeypatch):
    page(pm_client, workspace, "sort=name")
    calls = {"index": 0, "sort": 0}
    real_index, real_sort = list_selectors._ListIndex.__init__, list_selectors._sort_order

    def counting_index(self, **kwargs):
        calls["index"] += 1
        real_index(self, **kwargs)

    def counting_sort(*args):
        calls["sort"] += 1
        return real_sort(*args)

    monkeypatch.setattr(list_selectors._ListIndex, "__init__", counting_index)
    monkeypatch.setattr(list_selectors, "_sort_order", counting_sort)
    for query in ("sort=name", "sort=name&status=active", "sort=name&q=00001", "sort=name&page=1"):
        page(pm_client, workspace, query)
    assert calls == {"index": 0, "sort": 0}
    assert fake.list_calls == 1


@pytest.mark.django_db
def test_cache_entry_lives_for_the_configured_seconds(pm_client, workspace, fake, settings, monkeypatch):
    settings.EXPERIMENT_LIST_CACHE_SECONDS = 7
    seen = {}
    real_set = cache.set

    def spy(key, value, timeout=None, **kwargs):
        seen[key] = timeout
        return real_set(key, value, timeout, **kwargs)

    monkeypatch.setattr(cache, "set", spy)
    page(pm_client, workspace)
    fresh = [timeout for key, timeout in seen.items() if key.endswith(":fresh")]
    assert fresh == [7]


# --- escaping -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_script_tag_names_are_rendered_inert(pm_client, workspace, monkeypatch):
    evil = "<script>alert('x')</script>"
    install(
        monkeypatch,
        FakeMixpanel(
            [
                exp_json(
                    1,
                    "active",
                    name=evil,
                    tags=[evil, '"><img src=x onerror=alert(1)>'],
                    creator_name=evil,
                )
            ]
        ),
    )
    html = page(pm_client, workspace)
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    fragment = page(pm_client, workspace, "q=script", HTTP_HX_REQUEST="true")
    assert "<script>alert" not in fragment
    assert "&lt;script&gt;" in fragment


@pytest.mark.django_db
def test_unknown_status_gets_a_neutral_badge_class(pm_client, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(1, 'archived" onclick="x')]))
    html = page(pm_client, workspace)
    assert 'class="badge status-unknown"' in html
    assert 'onclick="x' not in html


@pytest.mark.django_db
def test_id_our_routes_cannot_carry_gets_no_link_rather_than_a_500(pm_client, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(1, "active", id="a/b", name="Slashed")]))
    html = page(pm_client, workspace)
    assert "Slashed" in html
    assert "Force conclude" not in html.split('<div id="results"')[1].split("</table>")[0]


# --- SQL ------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("size", [3, 400])
def test_query_count_is_fixed(client, pm, workspace, monkeypatch, django_assert_num_queries, size):
    install(monkeypatch, FakeMixpanel([exp_json(n, STATUS_CYCLE[n % 5]) for n in range(size)]))
    client.force_login(pm)
    page(client, workspace)  # warm the cache
    # user, membership, claims of the page's rows, their live schedules, team bookmarks (strip and stars)
    # (+ the session without Redis)
    with django_assert_num_queries(5 + session_queries()):
        html = page(client, workspace)
    assert len(row_names(html)) == min(size, 50)


@pytest.mark.django_db
def test_htmx_fragment_query_count_is_fixed(client, pm, workspace, fake, django_assert_num_queries):
    client.force_login(pm)
    page(client, workspace)
    # user, membership, claims of the page's rows, their live schedules, team bookmarks (stars)
    # (+ the session without Redis)
    with django_assert_num_queries(5 + session_queries()):
        page(client, workspace, "status=active", HTTP_HX_REQUEST="true")


def test_list_url_builder_is_path_only():
    assert urlsplit(ExperimentListQuery(q="a b").url_suffix()).path == ""


# --- through the local Mixpanel stand-in (real HTTP client) -------------------------------------


@pytest.mark.django_db
def test_standin_workspace_lists_with_counts_and_inert_awkward_names(pm_client, workspace, standin):
    upstream = standin.experiments(1001)
    html = page(pm_client, workspace)
    assert f'>All <span class="count">{len(upstream)}</span>' in html
    for status in ("active", "draft", "concluded", "success", "fail"):
        count = sum(1 for e in upstream if e["status"] == status)
        assert f'>{dict(STATUS_TABS)[status]} <span class="count">{count}</span>' in html
    assert "<script" not in html.split('<div id="results"')[1]
    assert "[demo fault]" in html
    # Search and a second view come from the cache: one list call upstream in all.
    page(pm_client, workspace, "q=demo+fault&status=active")
    assert len(standin.requests(method="GET", path_contains="/workspaces/1001/experiments")) == 1


@pytest.mark.django_db
def test_standin_outage_after_a_good_read_shows_the_copy(pm_client, workspace, standin):
    page(pm_client, workspace)
    standin.set_access(1001, allowed=False)
    response = pm_client.post(reverse("experiments:experiment-list-refresh", args=[workspace.pk]), follow=True)
    html = response.content.decode()
    assert "Mixpanel could not be read just now" in html
    assert len(row_names(html)) == 48
    assert "CANARY" not in html


# --- row helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "less than a minute ago"),
        (-5, "in less than a minute"),
        (60, "1 minute ago"),
        (7200, "2 hours ago"),
        (-7200, "in 2 hours"),
        (86400 * 3, "3 days ago"),
        (86400 * 65, "2 months ago"),
        (86400 * 800, "2 years ago"),
    ],
)
def test_relative_time_uses_one_unit(seconds, text):
    import datetime as dt

    now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
    assert row_selectors.relative_time(now - dt.timedelta(seconds=seconds), now) == text
    assert row_selectors.relative_time(None, now) == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    "experiment_id",
    ["00000000-0000-4000-8000-000000000001", "with space", "ünï-cödé", "a?b#c", "100%", "x;y=z&w", "~:@!$'()*+,"],
)
def test_star_posts_to_the_routes_own_url(workspace, experiment_id):
    def star(experiment_id: str) -> str:
        context = Context({"workspace": workspace, "experiment": {"id": experiment_id, "name": "n"}, "starred": ()})
        return Template("{% load bookmarks %}{% star_toggle experiment starred %}").render(context)

    url = reverse("experiments:bookmark-toggle", args=[workspace.pk, experiment_id])
    assert f'action="{escape(url)}"' in star(experiment_id)
    assert star("a/b") == ""  # an id our URLs cannot carry gets no star


# --- untrusted ids, bounded memory, compact shared copy --------------------------------------------


@pytest.mark.django_db
def test_an_upstream_id_with_a_nul_is_dropped_not_a_500(pm_client, workspace, standin):
    """A NUL in one id made every page of the workspace answer 500 on PostgreSQL (text cannot hold it)."""
    standin.add_experiment(1001, id="poisoned\x00id", name="Poisoned experiment", status="active")
    kept = standin.add_experiment(1001, name="Plain neighbour", status="active")
    for query in ("", "q=poisoned", "q=neighbour", "status=active"):
        html = page(pm_client, workspace, query)
        assert "Poisoned experiment" not in html
    assert "Plain neighbour" in page(pm_client, workspace, "status=active&q=neighbour")
    detail = reverse("experiments:experiment-detail", args=[workspace.pk, kept["id"]])
    assert pm_client.get(detail).status_code == 200
    poisoned = reverse("experiments:experiment-detail", args=[workspace.pk, "poisoned\x00id"])
    assert pm_client.get(poisoned).status_code == 404  # no experiment we can use has such an id
    conclude = reverse("experiments:experiment-force-conclude", args=[workspace.pk, "poisoned\x00id"])
    assert pm_client.get(conclude, HTTP_HX_REQUEST="true").status_code == 404
    bookmarks = reverse("experiments:bookmark-list", args=[workspace.pk])
    assert pm_client.get(bookmarks).status_code == 200


@pytest.mark.django_db
def test_process_keeps_lists_up_to_a_bound_least_recently_used_out(workspace, other_workspace, settings, fake):
    settings.EXPERIMENT_LIST_MEMORY_EXPERIMENTS = 20  # one list of 15 fits, two do not
    list_selectors._LIST_INDEXES.clear()
    for item in fake.experiments(1001):
        fake.add(item, ws=other_workspace.mixpanel_workspace_id)
    for ws in (workspace, other_workspace):
        list_selectors.experiment_list_cached(workspace=ws, client=fake)
    assert list(list_selectors._LIST_INDEXES) == [list_selectors._list_cache_base(other_workspace)]
    # The dropped list comes back from the shared copy, without asking Mixpanel.
    snapshot = list_selectors.experiment_list_cached(workspace=workspace, client=fake)
    assert len(snapshot.experiments) == 15
    assert fake.list_calls == 2
    assert list(list_selectors._LIST_INDEXES) == [list_selectors._list_cache_base(workspace)]


@pytest.mark.django_db
def test_shared_copy_holds_compressed_summaries(workspace, fake):
    list_selectors.experiment_list_cached(workspace=workspace, client=fake)
    good = cache.get(list_selectors._list_cache_base(workspace) + ":good")
    assert isinstance(good["packed"], bytes)
    summaries = list_selectors._unpack(good["packed"])
    assert all(isinstance(e, ExperimentSummary) for e in summaries)
    assert [e.id for e in summaries] == [e["id"] for e in fake.experiments()]


# --- sortable headers, page size, page numbers, tab groups ---------------------------------


def header(html: str, label: str) -> re.Match[str]:
    found = re.search(rf'<th scope="col"[^>]*aria-sort="(\w+)"><a href="([^"]+)"[^>]*>{label}<', html)
    assert found, f"no sortable header {label}"
    return found


@pytest.mark.django_db
def test_headers_sort_through_the_url_with_aria_sort(pm_client, workspace, fake):
    html = page(pm_client, workspace, "q=Experiment")
    # The default sort (newest start first) marks its header; a click on another sorts by it.
    assert header(html, "Start").group(1) == "descending"
    assert header(html, "Start").group(2) == f"/w/{workspace.pk}/?q=Experiment&amp;sort=start"
    assert header(html, "Name").group(1) == "none"
    assert header(html, "Name").group(2) == f"/w/{workspace.pk}/?q=Experiment&amp;sort=name"
    assert header(html, "Days running").group(2) == f"/w/{workspace.pk}/?q=Experiment&amp;sort=-days"
    by_name = page(pm_client, workspace, "q=Experiment&sort=name")
    assert header(by_name, "Name").group(1) == "ascending"
    assert header(by_name, "Name").group(2) == f"/w/{workspace.pk}/?q=Experiment&amp;sort=-name"
    assert row_names(by_name) == sorted(row_names(by_name))
    assert row_names(page(pm_client, workspace, "sort=-name")) == sorted(row_names(by_name), reverse=True)


@pytest.mark.django_db
def test_sort_by_days_running_and_exposures_puts_unknowns_last(pm_client, workspace, monkeypatch):
    install(
        monkeypatch,
        FakeMixpanel(
            [
                exp_json(1, "active", exposures_cache={"total": 50}),  # started earliest: most days
                exp_json(2, "active", exposures_cache={"total": 900}),
                exp_json(3, "draft", exposures_cache={}),  # neither days nor exposures
                exp_json(4, "concluded", exposures_cache={"total": 7}),  # 14 days, then ended
            ]
        ),
    )
    assert row_names(page(pm_client, workspace, "sort=-days")) == [
        "Experiment 00001",
        "Experiment 00002",
        "Experiment 00004",
        "Experiment 00003",
    ]
    assert row_names(page(pm_client, workspace, "sort=days"))[:3] == [
        "Experiment 00004",
        "Experiment 00002",
        "Experiment 00001",
    ]
    assert row_names(page(pm_client, workspace, "sort=-exposures"))[:3] == [
        "Experiment 00002",
        "Experiment 00001",
        "Experiment 00004",
    ]
    assert row_names(page(pm_client, workspace, "sort=exposures"))[-1] == "Experiment 00003"
    reversed_status = row_names(page(pm_client, workspace, "sort=-status"))
    assert reversed_status == list(reversed(row_names(page(pm_client, workspace, "sort=status"))))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("asked", "rows"), [("25", 25), ("100", 100), ("50", 50), ("7", 50), ("100000", 50), ("x", 50)]
)
def test_page_size_is_chosen_in_the_url_and_bounded(pm_client, workspace, monkeypatch, asked, rows):
    install(monkeypatch, FakeMixpanel([exp_json(n, "active") for n in range(120)]))
    html = page(pm_client, workspace, f"size={asked}")
    assert len(row_names(html)) == rows
    assert f'<option value="{rows}" selected>{rows}</option>' in html
    # The choice is kept by the other links (and a default one is left out of them).
    tab = re.search(r'href="(/w/\d+/\?status=active[^"]*)"', html).group(1)
    assert ("size=" in tab) == (rows != 50)


@pytest.mark.django_db
def test_page_numbers_at_top_and_bottom_keep_the_view(pm_client, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(n, "active") for n in range(300)]))
    html = page(pm_client, workspace, "sort=name&size=25&page=6")
    for where in ("top", "bottom"):
        nav = re.search(rf'<nav class="pagination" id="pages-{where}".*?</nav>', html, re.S).group(0)
        numbers = re.findall(r'(\d+)(?:<span class="visually-hidden"> \(this page\)</span>)?</a>', nav)
        assert numbers == ["1", "4", "5", "6", "7", "8", "12"]
        assert 'aria-current="page" class="current-page">6<' in nav
        assert f'href="/w/{workspace.pk}/?sort=name&amp;size=25&amp;page=12"' in nav
        # A new page scrolls the results to their top.
        assert 'hx-swap="outerHTML show:#results:top"' in nav
        assert nav.count("…") == 2


@pytest.mark.django_db
def test_result_tabs_are_grouped_so_decisions_read_as_decisions(pm_client, workspace, fake):
    html = page(pm_client, workspace)
    assert '>Ended, not decided <span class="count">3</span>' in html
    decided = re.search(
        r'<span class="tab-group-label" id="([^"]+)">Decided:</span>\s*'
        r'<ul class="tabs" aria-labelledby="\1">(.*?)</ul>',
        html,
        re.S,
    )
    assert decided
    assert re.findall(r">([A-Z][a-z ]+) <span class=\"count\">", decided.group(2)) == [
        "Shipped a variant",
        "Shipped none",
    ]
    assert ">Success <" not in html
    assert ">Fail <" not in html


@pytest.mark.django_db
def test_with_mixpanel_down_and_no_copy_the_counts_are_unknown_not_zero(pm_client, workspace, fake):
    fake.list_error = MixpanelUnavailable()
    html = page(pm_client, workspace)
    assert '<span class="count">0</span>' not in html
    assert html.count('<span class="visually-hidden">(count unknown)</span>') == 6
    assert "Try Refresh in a minute" in html


@pytest.mark.django_db
def test_results_are_never_kept_in_the_browsers_history_cache(pm_client, workspace, fake):
    # Back and Forward then read the page from its URL again, controls included.
    html = page(pm_client, workspace, "q=Experiment&sort=name&size=25", HTTP_HX_REQUEST="true")
    assert html.lstrip().startswith('<div id="results"')
    assert 'hx-history="false"' in html.split(">", 1)[0]
    assert 'data-view-q="Experiment" data-view-sort="name" data-view-size="25"' in html
    restored = page(
        pm_client,
        workspace,
        "q=Experiment&sort=name&size=25",
        HTTP_HX_REQUEST="true",
        HTTP_HX_HISTORY_RESTORE_REQUEST="true",
    )
    assert 'name="q" value="Experiment"' in restored
    assert '<option value="name" selected>' in restored
    assert '<option value="25" selected>' in restored


@pytest.mark.django_db
def test_empty_states_say_what_to_do(pm_client, workspace, fake):
    html = page(pm_client, workspace, "status=active&q=nothing-like-this")
    assert "No experiments match “nothing-like-this” in this tab." in html
    assert f'<a href="/w/{workspace.pk}/?q=nothing-like-this">Search all experiments</a>' in html
    assert f'<a href="/w/{workspace.pk}/?status=active">clear the search</a>' in html


@pytest.mark.django_db
def test_the_row_action_is_quiet_and_named_for_what_it_does(pm_client, workspace, fake):
    html = page(pm_client, workspace, "status=active")
    actions = re.findall(r'<a class="button([^"]*)"[^>]*data-open-dialog="force-conclude-dialog"[^>]*>([^<]*)<', html)
    assert actions
    assert all(classes == " small" and text == "Force conclude…" for classes, text in actions)
    assert "danger" not in "".join(re.findall(r"<tbody>.*</tbody>", html, re.S))
