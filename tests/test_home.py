"""The home page: every active experiment of the person's workspaces, from the cached lists."""

from __future__ import annotations

import datetime as dt
import re
import time
from html import unescape

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel.errors import MixpanelUnavailable
from experiments.mixpanel.experiment import ExperimentSummary
from experiments.models import (
    AttemptAction,
    AttemptState,
    ConclusionAttempt,
    ConclusionClaim,
    Membership,
    Region,
    Role,
    Workspace,
)
from experiments.queries import MSG_HOME_WORKSPACE, SEARCH_MAX_LENGTH
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import home as home_selectors
from experiments.selectors.workspaces import workspace_list_for_user
from tests.fake_mixpanel import FakeMixpanel, exp_json, install

MSG_UNAVAILABLE = "Mixpanel is unavailable right now (no connection, timeout or server error). Try again later."


class FakeWithFailures(FakeMixpanel):
    """The fake, with lists that fail for some workspaces only, and an optional delay per list."""

    def __init__(self, *args, failing=(), list_delay: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failing = set(failing)
        self.list_delay = list_delay

    def list_experiments(self, workspace_id: int) -> list[ExperimentSummary]:
        if self.list_delay:
            time.sleep(self.list_delay)
        if workspace_id in self.failing:
            self._record("list", workspace_id, "")
            raise MixpanelUnavailable()
        return super().list_experiments(workspace_id)


def growth_exp(n: int, status: str = "active", **extra):
    return exp_json(n, status, name=f"Growth test {n}", **extra)


def payments_exp(n: int, status: str = "active", **extra):
    return exp_json(100 + n, status, name=f"Payments test {n}", creator_name="Pia Payments", **extra)


@pytest.fixture
def search_workspace(db) -> Workspace:
    """A third workspace the person is not in."""
    return Workspace.objects.create(name="Research", region=Region.IN, mixpanel_workspace_id=3003)


@pytest.fixture
def two_workspace_pm(pm, other_workspace):
    """Pat: concluder in Growth (the `pm` fixture) and viewer in Payments."""
    Membership.objects.create(user=pm, workspace=other_workspace, role=Role.VIEWER)
    return pm


@pytest.fixture
def fake(monkeypatch, search_workspace):
    return install(
        monkeypatch,
        FakeWithFailures(
            {
                1001: [
                    growth_exp(1),
                    growth_exp(2, tags=["checkout"]),
                    growth_exp(3, "concluded"),
                    growth_exp(4, "draft"),
                ],
                2002: [payments_exp(1), payments_exp(2, "success")],
                3003: [exp_json(200, "active", name="Research secret test")],
            }
        ),
    )


@pytest.fixture
def home(client, two_workspace_pm):
    client.force_login(two_workspace_pm)

    def get(query: str | dict = "", **headers) -> str:
        if isinstance(query, dict):
            response = client.get(reverse("home"), query, headers=headers)
        else:
            response = client.get(reverse("home") + (("?" + query) if query else ""), headers=headers)
        assert response.status_code == 200
        return response.content.decode()

    return get


def row_names(html: str) -> list[str]:
    # The active experiments' table, not the decisions owed above it.
    html = html.split('class="home-experiments"', 1)[-1]
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return [unescape(n) for n in re.findall(r'<td class="name" data-label="Experiment">(?:<a [^>]*>)?([^<]*)<', body)]


def card_html(html: str, name: str) -> str:
    """The workspace card of `name`, from its link to the next card (or the end of the cards)."""
    cards = html.split('<li class="card workspace-card">')[1:]
    cards[-1] = cards[-1].split('<section class="home-experiments"')[0]
    return next(card for card in cards if f">{name}</a>" in card.split("</a>", 1)[0] + "</a>")


def make_open_attempt(workspace, actor, experiment_id: str, state: str, created_at=None) -> ConclusionAttempt:
    """An attempt holding the experiment's conclusion claim, in `state`."""
    attempt = ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=experiment_id,
        experiment_name=experiment_id,
        actor=actor,
        actor_name=actor.get_full_name() or actor.get_username(),
        state=state,
        created_at=created_at or timezone.now(),
    )
    ConclusionClaim.objects.create(
        workspace=workspace, experiment_id=experiment_id, action=AttemptAction.CONCLUSION, attempt=attempt
    )
    return attempt


# --- What the page lists -------------------------------------------------------------------


@pytest.mark.django_db
def test_lists_the_active_experiments_of_every_workspace_i_belong_to_and_nothing_else(home, fake):
    html = home()
    assert sorted(row_names(html)) == ["Growth test 1", "Growth test 2", "Payments test 1"]
    # Not the concluded, draft or decided ones (a concluded one may be under decisions owed,
    # above), nor those of a workspace Pat is not in.
    active = html.split('class="home-experiments"', 1)[1]
    for absent in ("Growth test 3", "Growth test 4", "Payments test 2", "Research secret test"):
        assert absent not in active
    assert "Research secret test" not in html
    assert ">Research<" not in html  # no card for it either
    # Each row: the experiment page link, workspace, days running, owner.
    growth, payments = Workspace.objects.get(name="Growth"), Workspace.objects.get(name="Payments")
    detail = reverse("experiments:experiment-detail", args=[payments.pk, "00000000-0000-4000-8000-000000000101"])
    assert f'<a href="{detail}">Payments test 1</a>' in html
    assert '<td data-label="Workspace">Payments</td>' in html
    assert '<td class="owner" data-label="Owner">Pia Payments</td>' in html
    days = (timezone.now() - dt.datetime(2026, 1, 2, 9, tzinfo=dt.UTC)).days
    assert f'<td data-label="Running" class="num">{days:,} days</td>' in html
    assert f'href="{reverse("experiments:experiment-list", args=[growth.pk])}"' in html


@pytest.mark.django_db
def test_rows_run_longest_first_across_workspaces(home, fake):
    # exp_json(n) starts n days after 2026-01-01: the lower n, the longer it has run.
    assert row_names(home()) == ["Growth test 1", "Growth test 2", "Payments test 1"]


@pytest.mark.django_db
def test_workspace_cards_keep_role_and_count_active_experiments(home, fake):
    html = home()
    assert "You are concluder" in html
    assert "You are viewer" in html
    payments = Workspace.objects.get(name="Payments")
    assert f'href="/?workspace={payments.pk}#active-experiments">1 active' in html
    assert ">2 active<" in html  # Growth


@pytest.mark.django_db
def test_names_from_mixpanel_are_escaped(home, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(1, "active", name="<script>alert(1)</script>", creator_name="<b>x")]))
    html = home()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;x" in html


@pytest.mark.django_db
def test_an_id_our_routes_cannot_carry_gets_no_link(home, monkeypatch):
    install(monkeypatch, FakeMixpanel([exp_json(1, "active", id="a/b", name="Slashed id")]))
    html = home()
    assert '<td class="name" data-label="Experiment"><span>Slashed id</span></td>' in html


@pytest.mark.django_db
def test_a_superuser_sees_every_workspaces_experiments(client, django_user_model, workspace, other_workspace, fake):
    client.force_login(django_user_model.objects.create_superuser("root", password="x"))
    html = client.get(reverse("home")).content.decode()
    assert "Research secret test" in html
    assert "Payments test 1" in html


# --- Mixpanel calls: the cached lists, never more --------------------------------------------


@pytest.mark.django_db
def test_costs_one_list_read_per_workspace_then_none_while_the_lists_are_fresh(home, fake):
    home()
    assert fake.list_calls == 2  # Growth and Payments; never Search
    assert {ws for kind, ws, _ in fake.calls} == {1001, 2002}
    home()
    home("q=growth")
    home("workspace=" + str(Workspace.objects.get(name="Growth").pk), **{"HX-Request": "true"})
    assert fake.list_calls == 2
    assert [kind for kind, _, _ in fake.calls] == ["list", "list"]  # no read of single experiments either


@pytest.mark.django_db
def test_after_opening_each_workspace_list_the_home_page_asks_mixpanel_nothing(client, two_workspace_pm, fake):
    client.force_login(two_workspace_pm)
    for name in ("Growth", "Payments"):
        workspace = Workspace.objects.get(name=name)
        assert client.get(reverse("experiments:experiment-list", args=[workspace.pk])).status_code == 200
    opened = fake.list_calls
    assert opened == 2
    assert client.get(reverse("home")).status_code == 200
    assert fake.list_calls == opened


@pytest.mark.django_db
def test_an_expired_list_is_read_again_once_like_the_list_page_does(home, fake):
    home()
    list_selectors.invalidate_experiment_list(workspace=Workspace.objects.get(name="Payments"))
    home()
    home()
    assert fake.list_calls == 3
    assert [ws for kind, ws, _ in fake.calls] == [1001, 2002, 2002]


@pytest.mark.django_db
def test_once_reading_lists_took_a_deadline_the_others_are_not_asked(home, fake, settings):
    settings.MIXPANEL_DEADLINE = 0.05
    fake.list_delay = 0.1
    html = home()
    assert fake.list_calls == 1  # Growth took the whole budget; Payments was not asked
    assert "Growth test 1" in html
    assert "Payments test 1" not in html
    assert list_selectors.NOT_ASKED_MESSAGE in unescape(html)
    # The next view reads Payments (Growth is fresh now).
    html = home()
    assert fake.list_calls == 2
    assert "Payments test 1" in html


# --- A workspace whose list cannot be read -------------------------------------------------


@pytest.mark.django_db
def test_a_failing_workspace_shows_a_note_and_the_others_still_show(home, fake):
    fake.failing = {2002}
    html = unescape(home())
    assert "The experiments of Payments cannot be shown: there is no copy of its list." in html
    assert MSG_UNAVAILABLE in card_html(html, "Payments")
    assert "cannot be shown" not in card_html(html, "Growth")
    assert "Not listed: the experiments of Payments, whose list could not be read" in html
    assert row_names(html) == ["Growth test 1", "Growth test 2"]
    assert "Active: " in html  # its active count is unknown, not 0
    assert fake.list_calls == 2
    home()
    assert fake.list_calls == 2  # the failure is remembered for a moment, as on the list page


@pytest.mark.django_db
def test_every_workspace_failing_is_still_a_readable_page(home, fake):
    fake.failing = {1001, 2002}
    html = unescape(home())
    assert html.count("cannot be shown: there is no copy of its list.") == 2
    assert row_names(html) == []
    assert "None of your workspaces has an active experiment" not in html  # that would be a lie


@pytest.mark.django_db
def test_a_stale_copy_is_listed_and_said_to_be_one(home, fake):
    home()
    fake.failing = {2002}
    list_selectors.invalidate_experiment_list(workspace=Workspace.objects.get(name="Payments"))
    html = unescape(home())
    card = card_html(html, "Payments")
    assert "Shown from the copy of its list read at" in card
    assert MSG_UNAVAILABLE in card
    assert "Payments test 1" in row_names(html)


# --- Open conclusion attempts -----------------------------------------------------------------


@pytest.mark.django_db
def test_open_attempts_show_on_their_rows_and_count_on_the_cards(home, fake, pm, other_workspace, workspace):
    growth_1, growth_2 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    requested = make_open_attempt(workspace, pm, growth_1, AttemptState.REQUESTED)
    make_open_attempt(workspace, pm, growth_2, AttemptState.UNKNOWN)
    awaiting = make_open_attempt(other_workspace, pm, "00000000-0000-4000-8000-000000000101", "awaiting_approval")
    # Not open: a succeeded one (its claim stays) and a failed one on an experiment of the list.
    make_open_attempt(workspace, pm, "00000000-0000-4000-8000-000000000003", AttemptState.SUCCEEDED)
    html = unescape(home())
    # Each open attempt leads to where it can be acted on: its experiment page.
    requested_page = reverse("experiments:experiment-detail", args=[workspace.pk, requested.experiment_id])
    assert (
        f'<a href="{requested_page}#conclude-section">Being concluded<span class="visually-hidden">: Growth test 1'
        in html
    )
    assert "Outcome unknown<span" in html
    awaiting_page = reverse("experiments:experiment-detail", args=[other_workspace.pk, awaiting.experiment_id])
    assert f'<a href="{awaiting_page}#conclude-section">Awaiting approval<span' in html
    assert html.count("None open") == 0
    # Cards: Growth has one being concluded and one unknown; Payments one awaiting approval. The
    # counts lead to the list's Waiting tabs (Pat, a viewer of Payments, cannot approve there).
    growth_list = reverse("experiments:experiment-list", args=[workspace.pk])
    assert f'<a href="{growth_list}?status=concluding">1 being concluded' in html
    assert f'<a class="count-warn" href="{growth_list}?status=concluding">1 outcome unknown' in html
    payments_list = reverse("experiments:experiment-list", args=[other_workspace.pk])
    assert f'<a href="{payments_list}?status=awaiting">1 awaiting approval' in html
    assert "0 being concluded" in html  # Payments


@pytest.mark.django_db
def test_awaiting_approval_is_counted_where_approval_is_required_even_at_zero(home, fake, other_workspace):
    html = home()
    assert "awaiting approval" not in html
    other_workspace.requires_approval = True
    other_workspace.save()
    assert "0 awaiting approval" in home()


@pytest.mark.django_db
def test_queries_do_not_grow_with_experiments_attempts_or_workspaces(client, two_workspace_pm, monkeypatch, pm):
    def scene(n: int) -> int:
        cache.clear()
        Workspace.objects.exclude(mixpanel_workspace_id__in=(1001, 2002)).delete()
        ConclusionClaim.objects.all().delete()
        experiments = {1001: [growth_exp(i) for i in range(n)], 2002: [payments_exp(i) for i in range(n)]}
        for k in range(n):
            extra = Workspace.objects.create(name=f"Extra {k}", mixpanel_workspace_id=5000 + k)
            Membership.objects.create(user=pm, workspace=extra, role=Role.VIEWER)
            experiments[5000 + k] = [exp_json(300 + k, "active")]
        install(monkeypatch, FakeMixpanel(experiments))
        growth = Workspace.objects.get(mixpanel_workspace_id=1001)
        for i in range(n):
            make_open_attempt(growth, pm, f"00000000-0000-4000-8000-{i:012d}", AttemptState.UNKNOWN)
        client.force_login(two_workspace_pm)
        client.get(reverse("home"))  # fills the caches
        with CaptureQueriesContext(connection) as queries:
            html = client.get(reverse("home")).content.decode()
        assert html.count("Outcome unknown<span") == n
        return len(queries)

    assert scene(2) == scene(12)


def test_open_attempts_are_read_in_one_query(django_assert_num_queries, workspace, other_workspace, pm):
    make_open_attempt(workspace, pm, "a", AttemptState.REQUESTED)
    make_open_attempt(other_workspace, pm, "b", AttemptState.UNKNOWN)
    make_open_attempt(other_workspace, pm, "c", AttemptState.FAILED)
    with django_assert_num_queries(1):
        found = home_selectors.open_conclusion_attempts(workspaces=[workspace, other_workspace])
        states = {key: attempt.state for key, attempt in found.items()}
    assert states == {(workspace.pk, "a"): "requested", (other_workspace.pk, "b"): "unknown"}


# --- Sample-ratio warning: the experiment page's rule ----------------------------------------


@pytest.mark.django_db
def test_the_sample_ratio_column_says_what_the_experiment_page_says(home, monkeypatch):
    planned = [{"key": "control", "split": 50}, {"key": "green", "split": 50}]
    install(
        monkeypatch,
        FakeMixpanel(
            [
                exp_json(
                    1,
                    "active",
                    name="Broken split",
                    variants=planned,
                    exposures_cache={"control": 10412, "green": 9311},
                ),
                exp_json(
                    2, "active", name="Fine split", variants=planned, exposures_cache={"control": 5120, "green": 5089}
                ),
                exp_json(3, "active", name="No plan"),
            ]
        ),
    )
    html = home()
    rows = dict(
        re.findall(
            r'data-label="Experiment"><a [^>]*>([^<]*)</a>.*?class="srm" data-label="Sample ratio">(.*?)</td>',
            html,
            re.S,
        )
    )
    assert "Mismatch: check the split" in rows["Broken split"]
    assert "As planned" in rows["Fine split"]
    assert "Not checked" in rows["No plan"]


# --- Filters and search ----------------------------------------------------------------------


@pytest.mark.django_db
def test_filter_by_workspace(home, fake, other_workspace):
    html = home(f"workspace={other_workspace.pk}")
    assert row_names(html) == ["Payments test 1"]
    assert f'<option value="{other_workspace.pk}" selected>Payments</option>' in html
    assert "1 active experiment in Payments" in html
    # The cards still show every workspace.
    assert "You are concluder" in html


@pytest.mark.django_db
def test_search_matches_name_tag_and_owner_as_the_list_page_does(home, fake, other_workspace):
    assert row_names(home("q=checkout")) == ["Growth test 2"]  # a tag
    assert row_names(home("q=pia")) == ["Payments test 1"]  # the owner
    assert row_names(home("q=TEST+1")) == ["Growth test 1", "Payments test 1"]
    assert row_names(home(f"q=test&workspace={other_workspace.pk}")) == ["Payments test 1"]
    html = unescape(home("q=nothing-like-it"))
    assert row_names(html) == []
    assert "No active experiment matches “nothing-like-it”." in html
    assert '<a href="/">Clear the search</a>' in html


@pytest.mark.django_db
def test_empty_states_offer_a_way_back(home, fake, other_workspace, monkeypatch):
    html = unescape(home(f"q=zzz&workspace={other_workspace.pk}"))
    assert f'<a href="/?workspace={other_workspace.pk}">Clear the search</a>' in html
    assert '<a href="/?q=zzz">search all your workspaces</a>' in html
    install(monkeypatch, FakeMixpanel({1001: [growth_exp(3, "concluded")], 2002: []}))
    list_selectors.invalidate_experiment_list(workspace=other_workspace)
    list_selectors.invalidate_experiment_list(workspace=Workspace.objects.get(name="Growth"))
    assert "None of your workspaces has an active experiment right now." in unescape(home())
    assert "Payments has no active experiments right now." in home(f"workspace={other_workspace.pk}")


@pytest.mark.django_db
def test_htmx_gets_the_results_alone_with_the_canonical_address(client, two_workspace_pm, fake, other_workspace):
    client.force_login(two_workspace_pm)
    response = client.get(
        reverse("home"), {"q": "  test  ", "workspace": str(other_workspace.pk)}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="home-results"')
    assert "<html" not in html
    assert "workspace-card" not in html
    assert row_names(html) == ["Payments test 1"]
    assert response["HX-Push-Url"] == f"/?workspace={other_workspace.pk}&q=test"
    # Back or Forward after a cache miss asks for the whole page.
    restore = client.get(
        reverse("home"), {"q": "test"}, headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in restore.content.decode()


@pytest.mark.django_db
def test_without_javascript_the_form_is_a_plain_get_of_this_page(home, fake):
    html = home()
    form = re.search(r'<form id="home-filters"[^>]*>', html).group(0)
    assert 'method="get"' in form
    assert 'action="/"' in form
    assert 'name="workspace"' in html
    assert 'name="q"' in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value", ["abc", "-1", "0", "99999999", "9" * 40, "1.5", "²", "\u0661", "\x00", "<script>", "9223372036854775808"]
)
def test_a_workspace_filter_that_is_not_mine_is_said_and_every_workspace_shown(home, fake, value):
    response_html = unescape(home({"workspace": value}))
    assert MSG_HOME_WORKSPACE in response_html
    assert sorted(row_names(response_html)) == ["Growth test 1", "Growth test 2", "Payments test 1"]


@pytest.mark.django_db
def test_another_workspaces_filter_shows_nothing_of_it(home, fake, search_workspace):
    html = unescape(home(f"workspace={search_workspace.pk}"))
    assert MSG_HOME_WORKSPACE in html
    assert "Research secret test" not in html


@pytest.mark.django_db
@pytest.mark.parametrize("q", ["x" * 5000, "a\x00b", "<script>alert(1)</script>", "\U0001f600" * 50, "%", "\\"])
def test_any_search_text_gets_a_page(client, two_workspace_pm, fake, q):
    client.force_login(two_workspace_pm)
    response = client.get(reverse("home"), {"q": q})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    if q == "x" * 5000:
        assert f'value="{"x" * SEARCH_MAX_LENGTH}"' in html


@pytest.mark.django_db
def test_many_rows_are_cut_with_a_note(home, fake, monkeypatch):
    monkeypatch.setattr(home_selectors, "ROW_LIMIT", 2)
    html = unescape(home())
    assert len(row_names(html)) == 2
    assert "3 active experiments in your workspaces" in html
    assert "Only the 2 longest running are listed here" in html


# --- A person with no workspace keeps today's page ---------------------------------------------


@pytest.mark.django_db
def test_no_workspace_means_no_list_read_and_the_newcomer_page(client, django_user_model, ws_admin, fake):
    client.force_login(django_user_model.objects.create_user(username="newcomer"))
    html = client.get(reverse("home"), {"q": "x", "workspace": "1"}).content.decode()
    assert "No workspaces yet" in html
    assert "Active experiments" not in html
    assert fake.list_calls == 0


@pytest.mark.django_db
def test_an_auditor_without_workspace_still_lands_on_the_audit_trail(client, auditor, fake):
    client.force_login(auditor)
    assert client.get(reverse("home"), {"q": "x"}).url == reverse("experiments:audit-list")
    assert fake.list_calls == 0


@pytest.mark.django_db
def test_selector_returns_data_for_the_filters(two_workspace_pm, fake, other_workspace):
    accesses = workspace_list_for_user(user=two_workspace_pm)
    overview = home_selectors.home_overview(workspaces=accesses, workspace_pk=other_workspace.pk, q="payments")
    assert [card.workspace.name for card in overview.workspaces] == ["Growth", "Payments"]
    assert [card.active for card in overview.workspaces] == [2, 1]
    assert [(row.workspace.name, row.name, row.owner) for row in overview.experiments] == [
        ("Payments", "Payments test 1", "Pia Payments")
    ]
    assert (overview.total, overview.searched, overview.unread, overview.limited) == (1, 1, (), False)
