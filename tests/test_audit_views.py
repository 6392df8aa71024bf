"""Audit review screens: who sees what, filters, keyset pages, the attempt page, query counts."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse

from experiments.mixpanel.errors import MixpanelOutcomeUnknown, MixpanelRateLimited
from experiments.mixpanel.experiment import parse_experiment
from experiments.models import AttemptState
from experiments.selectors.audit import AuditFilters, audit_attempt_page
from tests.factories import make_attempt, session_queries

LIST = reverse("experiments:audit-list")
HTMX = {"HTTP_HX_REQUEST": "true"}


def ws_list(workspace) -> str:
    return reverse("experiments:audit-workspace-list", args=[workspace.pk])


def detail(attempt) -> str:
    return reverse("experiments:audit-detail", args=[attempt.pk])


def shown_ids(response) -> list[int]:
    """Attempt ids in table order, read from the rows' detail links."""
    return [int(pk) for pk in re.findall(r'href="/audit/(\d+)/"', response.content.decode())]


@pytest.fixture
def two_workspaces(workspace, other_workspace, pm, outsider):
    mine = make_attempt(workspace=workspace, actor=pm, experiment_id="exp-mine", experiment_name="Growth test")
    theirs = make_attempt(
        workspace=other_workspace, actor=outsider, experiment_id="exp-theirs", experiment_name="Payments test"
    )
    return mine, theirs


# --- Who sees what ---------------------------------------------------------------------


@pytest.mark.django_db
def test_member_sees_only_their_workspaces_attempts(client, teammate, two_workspaces):
    mine, _theirs = two_workspaces
    client.force_login(teammate)  # a viewer is enough to read the audit
    response = client.get(LIST)
    assert response.status_code == 200
    assert shown_ids(response) == [mine.pk]
    assert "Payments test" not in response.content.decode()


@pytest.mark.django_db
def test_auditor_sees_every_workspace(client, auditor, two_workspaces):
    mine, theirs = two_workspaces
    client.force_login(auditor)
    assert shown_ids(client.get(LIST)) == [theirs.pk, mine.pk]
    assert shown_ids(client.get(ws_list(theirs.workspace))) == [theirs.pk]
    assert client.get(detail(mine)).status_code == 200
    assert client.get(detail(theirs)).status_code == 200


@pytest.mark.django_db
def test_superuser_sees_every_workspace(client, django_user_model, two_workspaces):
    root = django_user_model.objects.create_superuser("root", password="pw-root")
    client.force_login(root)
    assert sorted(shown_ids(client.get(LIST))) == sorted(a.pk for a in two_workspaces)


@pytest.mark.django_db
def test_user_without_membership_or_permission_sees_nothing(client, django_user_model, two_workspaces):
    client.force_login(django_user_model.objects.create_user("nobody", password="pw-nobody"))
    response = client.get(LIST)
    assert response.status_code == 200
    assert shown_ids(response) == []
    assert "No attempts yet" in response.content.decode()


@pytest.mark.django_db
def test_outsider_gets_404_for_another_workspace_list_and_attempt(client, outsider, two_workspaces):
    mine, theirs = two_workspaces
    client.force_login(outsider)
    assert client.get(ws_list(mine.workspace)).status_code == 404
    assert client.get(detail(mine)).status_code == 404
    # ... and filtering the global list by that workspace shows nothing of it.
    assert shown_ids(client.get(LIST, {"workspace": mine.workspace_id})) == []
    assert client.get(ws_list(theirs.workspace)).status_code == 200
    assert client.get(detail(theirs)).status_code == 200


@pytest.mark.django_db
def test_unknown_attempt_and_workspace_are_404(client, auditor):
    client.force_login(auditor)
    assert client.get(reverse("experiments:audit-detail", args=[999999])).status_code == 404
    assert client.get(reverse("experiments:audit-workspace-list", args=[999999])).status_code == 404


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(client):
    response = client.get(LIST)
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


@pytest.mark.django_db
def test_audit_screens_accept_only_get(pm_client):
    assert pm_client.post(LIST).status_code == 405


# --- Filters ---------------------------------------------------------------------------


@pytest.fixture
def varied(workspace, other_workspace, pm, ws_admin, auditor):
    """Attempts across two workspaces, two people, every outcome and three days."""
    day = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    return {
        "a": make_attempt(
            workspace=workspace,
            actor=pm,
            experiment_id="exp-a",
            experiment_name="Onboarding copy",
            reason_text="Reached significance",
            created_at=day,
        ),
        "b": make_attempt(
            workspace=workspace,
            actor=ws_admin,
            experiment_id="exp-b",
            experiment_name="Pricing page",
            reason_text="Hurting checkout",
            outcome=AttemptState.FAILED,
            http_status=403,
            created_at=day + dt.timedelta(days=1),
        ),
        "c": make_attempt(
            workspace=other_workspace,
            actor=pm,
            experiment_id="exp-c-7f3e",
            experiment_name="Search ranking",
            reason_text="Tracking broken",
            outcome=AttemptState.UNKNOWN,
            http_status=None,
            created_at=day + dt.timedelta(days=2),
        ),
        "d": make_attempt(
            workspace=workspace,
            actor=pm,
            experiment_id="exp-d",
            experiment_name="Dark mode",
            outcome=AttemptState.UNKNOWN,
            reconciled="applied",
            created_at=day + dt.timedelta(days=2, hours=11, minutes=59),  # 23:59 on the 3rd
        ),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "dcba"),
        ({"workspace": "W1"}, "dba"),
        ({"workspace": "W2"}, "c"),
        ({"person": "pat"}, "dca"),
        ({"person": "ADA_ID"}, "b"),
        ({"person": "nobody-by-that-name"}, ""),
        ({"outcome": "failed"}, "b"),
        ({"outcome": "unknown"}, "c"),
        ({"outcome": "reconciled_applied"}, "d"),
        ({"date_from": "2026-03-02"}, "dcb"),
        ({"date_to": "2026-03-02"}, "ba"),
        ({"date_from": "2026-03-03", "date_to": "2026-03-03"}, "dc"),
        ({"q": "pricing"}, "b"),  # experiment name, any case
        ({"q": "c-7F3"}, "c"),  # experiment id
        ({"q": "checkout"}, "b"),  # reason text
        ({"q": "pat"}, ""),  # not the person: free text is about the experiment and reason
        ({"workspace": "W1", "person": "pat", "outcome": "succeeded"}, "a"),
    ],
)
def test_each_filter(client, auditor, varied, workspace, other_workspace, ws_admin, params, expected):
    client.force_login(auditor)
    replace = {"W1": str(workspace.pk), "W2": str(other_workspace.pk), "ADA_ID": str(ws_admin.pk)}
    params = {key: replace.get(value, value) for key, value in params.items()}
    response = client.get(LIST, params)
    assert response.status_code == 200
    assert shown_ids(response) == [varied[name].pk for name in expected]


@pytest.mark.django_db
def test_workspace_page_pins_its_workspace(client, auditor, varied, workspace, other_workspace):
    client.force_login(auditor)
    # A workspace parameter cannot widen a workspace's own page.
    response = client.get(ws_list(workspace), {"workspace": other_workspace.pk})
    assert shown_ids(response) == [varied["d"].pk, varied["b"].pk, varied["a"].pk]


@pytest.mark.django_db
def test_invalid_filters_are_reported_and_ignored(client, auditor, varied):
    client.force_login(auditor)
    response = client.get(LIST, {"date_from": "yesterday", "outcome": "exploded", "person": "pat"})
    assert response.status_code == 200
    text = response.content.decode()
    assert "Enter the From date as YYYY-MM-DD." in text
    assert "Choose one of the listed outcomes." in text
    assert shown_ids(response) == [varied["d"].pk, varied["c"].pk, varied["a"].pk]  # person still applies


@pytest.mark.django_db
def test_reversed_date_range_is_reported(client, auditor, varied):
    client.force_login(auditor)
    response = client.get(LIST, {"date_from": "2026-03-03", "date_to": "2026-03-01"})
    assert "The To date is before the From date." in response.content.decode()


@pytest.mark.django_db
def test_filters_live_in_the_url_and_htmx_gets_only_the_table(client, auditor, varied):
    client.force_login(auditor)
    # The form sends every field, the empty ones too.
    form = {"workspace": "", "person": "", "outcome": "failed", "date_from": "", "date_to": "", "q": "pricing"}
    response = client.get(LIST, form, **HTMX)
    text = response.content.decode()
    assert response.status_code == 200
    assert response["HX-Push-Url"] == "/audit/?outcome=failed&q=pricing"
    assert "<html" not in text
    assert text.lstrip().startswith('<div id="audit-results"')
    assert shown_ids(response) == [varied["b"].pk]
    # The export links carry exactly this filter.
    assert "/audit/export.csv?outcome=failed&amp;q=pricing" in text
    full = client.get(LIST, {"outcome": "failed"}).content.decode()
    assert 'hx-push-url="true"' in full
    assert 'hx-get="/audit/"' in full
    assert '<option value="failed" selected>' in full


@pytest.mark.django_db
def test_htmx_history_restore_gets_the_whole_page(client, auditor, varied):
    client.force_login(auditor)
    response = client.get(LIST, **HTMX, HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in response.content.decode()


# --- Keyset pages ----------------------------------------------------------------------


def _follow(client, url, **extra) -> tuple[list[int], str | None, str | None]:
    response = client.get(url, **extra)
    assert response.status_code == 200
    text = response.content.decode()
    older = re.search(r'href="([^"]+)" rel="next"', text)
    newer = re.search(r'href="([^"]+)" rel="prev"', text)
    unescape = lambda m: m.group(1).replace("&amp;", "&") if m else None  # noqa: E731
    return shown_ids(response), unescape(newer), unescape(older)


@pytest.mark.django_db
def test_pages_never_skip_or_repeat_across_inserts(client, auditor, workspace, pm):
    originals = [make_attempt(workspace=workspace, actor=pm, experiment_id=f"e{i}").pk for i in range(11)]
    client.force_login(auditor)
    seen: list[int] = []
    ids, newer, older = _follow(client, LIST + "?size=10")
    assert newer is None
    pushed = client.get(older, **HTMX)["HX-Push-Url"]
    assert pushed == older
    seen += ids
    # New attempts land between page loads; the older pages carry on exactly where they were.
    inserted = [make_attempt(workspace=workspace, actor=pm, experiment_id=f"new{i}").pk for i in range(3)]
    while older:
        ids, newer, older = _follow(client, older)
        assert newer is not None
        seen += ids
    assert seen == sorted(originals, reverse=True)
    assert len(seen) == len(set(seen))
    # Walking back up to the newest shows the inserted ones too, again without repeats.
    ids, newer, older = _follow(client, LIST + f"?size=10&cursor=b{originals[2]}")
    assert ids == sorted(originals[:2], reverse=True)
    walked = list(ids)
    while newer:
        ids, newer, _ = _follow(client, newer)
        walked = ids + walked
    assert walked == sorted(originals + inserted, reverse=True)


@pytest.mark.django_db
def test_pages_keep_the_filter(client, auditor, workspace, other_workspace, pm, outsider):
    mine = [make_attempt(workspace=workspace, actor=pm, experiment_id=f"m{i}").pk for i in range(12)]
    make_attempt(workspace=other_workspace, actor=outsider)
    client.force_login(auditor)
    ids, _, older = _follow(client, LIST + f"?workspace={workspace.pk}&size=10")
    assert f"workspace={workspace.pk}" in older
    more, _, last = _follow(client, older)
    assert ids + more == sorted(mine, reverse=True)
    assert last is None


@pytest.mark.django_db
@pytest.mark.parametrize("cursor", ["nonsense", "b", "x12", "b-3", "a" + "9" * 40, "b1e5"])
def test_bad_cursor_gives_the_first_page(client, auditor, workspace, pm, cursor):
    attempts = [make_attempt(workspace=workspace, actor=pm, experiment_id=f"e{i}").pk for i in range(3)]
    client.force_login(auditor)
    ids, newer, _ = _follow(client, LIST + "?cursor=" + cursor)
    assert ids == sorted(attempts, reverse=True)
    assert newer is None


@pytest.mark.django_db
def test_selector_pages_by_keyset_in_both_directions(auditor, workspace, pm):
    ids = [make_attempt(workspace=workspace, actor=pm, experiment_id=f"e{i}").pk for i in range(7)]
    first = audit_attempt_page(user=auditor, filters=AuditFilters(), page_size=3)
    assert [a.pk for a in first.rows] == ids[:-4:-1]
    assert first.newer_cursor is None
    assert first.older_cursor == f"b{ids[4]}"
    second = audit_attempt_page(user=auditor, filters=AuditFilters(), cursor=first.older_cursor, page_size=3)
    assert [a.pk for a in second.rows] == [ids[3], ids[2], ids[1]]
    back = audit_attempt_page(user=auditor, filters=AuditFilters(), cursor=second.newer_cursor, page_size=3)
    assert [a.pk for a in back.rows] == [a.pk for a in first.rows]
    assert back.newer_cursor is None
    # A bare id with a direction reads the same way.
    bare = audit_attempt_page(user=auditor, filters=AuditFilters(), cursor=ids[4], direction="older", page_size=3)
    assert [a.pk for a in bare.rows] == [ids[3], ids[2], ids[1]]


# --- Attempt page ----------------------------------------------------------------------


@pytest.mark.django_db
def test_attempt_page_shows_timeline_request_and_returned_experiment(client, teammate, workspace, pm):
    attempt = make_attempt(
        workspace=workspace,
        actor=pm,
        experiment_id="0b7c-exp",
        experiment_name="Onboarding <script>alert(1)</script>",
        reason_text="Clear winner",
    )
    entries = list(attempt.entries.order_by("seq"))
    client.force_login(teammate)
    response = client.get(detail(attempt))
    assert response.status_code == 200
    text = response.content.decode()
    for entry in entries:
        assert f"entry #{entry.seq}" in text
        assert entry.hash[:12] in text
    assert "Force conclude requested" in text
    assert "Force conclude succeeded" in text
    assert "Pat (pat)" in text
    assert "Clear winner" in text
    # The request body as sent, the summary of what came back, and the full JSON.
    assert "&quot;end_date&quot;: &quot;" in text
    assert re.search(r"status-active\">active</span> → <span class=\"badge status-concluded\">concluded", text)
    assert "<dt>Variants</dt>\n    <dd>2</dd>" in text
    assert "<dt>Exposures</dt>\n    <dd>2,434</dd>" in text
    assert "Full JSON as received" in text
    assert "&quot;exposures_cache&quot;" in text
    assert "Before snapshot" in text
    assert reverse("experiments:experiment-detail", args=[workspace.pk, "0b7c-exp"]) in text
    assert reverse("experiments:experiment-list", args=[workspace.pk]) in text
    # Upstream text is escaped, never markup.
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@pytest.mark.django_db
def test_attempt_page_shows_a_failure_readably(client, pm_client, workspace, pm):
    attempt = make_attempt(
        workspace=workspace,
        actor=pm,
        outcome=AttemptState.FAILED,
        http_status=429,
        error="Mixpanel is rate limiting us; try again in 30 seconds.",
    )
    text = pm_client.get(detail(attempt)).content.decode()
    assert "What went wrong:</strong> Mixpanel is rate limiting us; try again in 30 seconds." in text
    assert "Force conclude failed" in text
    assert "429" in text


@pytest.mark.django_db
def test_attempt_page_reads_the_service_payload_shape(pm_client, workspace, pm):
    """The page shows what the service's writer stored: the answer's text, the error as data,
    and a snapshot cut at the size cap as text."""
    from experiments import audit_payloads
    from experiments.services import attempts as attempt_services

    attempt = make_attempt(workspace=workspace, actor=pm, outcome=None)
    huge = "x" * (audit_payloads.SNAPSHOT_MAX_BYTES + 1)
    before = parse_experiment({"id": "exp-1", "status": "active", "description": huge})
    returned = parse_experiment({"id": "exp-1", "status": "concluded", "variants": []})
    attempt_services.attempt_record_outcome(
        attempt=attempt,
        state=AttemptState.UNKNOWN,
        message="No answer within 10 seconds: the outcome is unknown.",
        release_claim=False,
        evidence={
            "sent": True,
            "before": before,
            "error": MixpanelOutcomeUnknown("timed out"),
            "response": audit_payloads.answer(
                http_status=200,
                body='{"status": "ok", "results": {"id": "exp-1", "status": "concluded", "variants": []}}',
                truncated=False,
                returned=returned,
            ),
        },
    )
    text = pm_client.get(detail(attempt)).content.decode()
    assert "Outcome unknown:</strong> No answer within 10 seconds" in text
    assert "MixpanelOutcomeUnknown" in text
    assert "badge status-concluded" in text
    assert "{&quot;description&quot;:&quot;xxx" in text  # the cut snapshot shown as text


@pytest.mark.django_db
def test_attempt_page_with_reconciliation(pm_client, workspace, pm):
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.UNKNOWN, reconciled="not_applied")
    text = pm_client.get(detail(attempt)).content.decode()
    assert "Force conclude reconciled" in text
    assert "Reconciliation" in text
    assert "not_applied" in text
    assert "by reconcile_conclusions" in text


# --- Query counts ----------------------------------------------------------------------


def _many(workspace, other_workspace, pm, outsider, n):
    for i in range(n):
        make_attempt(workspace=workspace if i % 3 else other_workspace, actor=pm if i % 3 else outsider)


@pytest.mark.django_db
@pytest.mark.parametrize("size", [10, 50])
def test_list_query_count_is_fixed_whatever_the_page_size(
    client, auditor, workspace, other_workspace, pm, outsider, django_assert_num_queries, size
):
    _many(workspace, other_workspace, pm, outsider, 2 * size + 1)
    client.force_login(auditor)
    # user, user perms, group perms, workspaces for the filter, the page (+ PG statistics, + the session
    # without Redis)
    from django.db import connection

    expected = (6 if connection.vendor == "postgresql" else 5) + session_queries()
    with django_assert_num_queries(expected):
        response = client.get(LIST, {"size": size})
    assert len(shown_ids(response)) == size
    with django_assert_num_queries(5 + session_queries()):
        response = client.get(LIST, {"size": size, "cursor": f"b{shown_ids(response)[-1]}"})
    assert len(shown_ids(response)) == size


@pytest.mark.django_db
@pytest.mark.parametrize("size", [10, 50])
def test_member_filtered_list_query_count_is_fixed(
    client, pm, workspace, other_workspace, outsider, django_assert_num_queries, size
):
    _many(workspace, other_workspace, pm, outsider, 3 * size)
    client.force_login(pm)
    # user, user perms, group perms, workspaces for the filter, the page (+ the session without Redis)
    with django_assert_num_queries(5 + session_queries()):
        response = client.get(LIST, {"size": size, "person": "pat", "outcome": "succeeded", "q": "exp"})
    assert len(shown_ids(response)) == size
    # A workspace's own page: its access check replaces the workspace list.
    with django_assert_num_queries(5 + session_queries()):
        response = client.get(ws_list(workspace), {"size": size, "date_from": "2000-01-01"})
    assert len(shown_ids(response)) == size


@pytest.mark.django_db
def test_attempt_page_query_count(client, teammate, workspace, pm, django_assert_num_queries):
    attempt = make_attempt(workspace=workspace, actor=pm, outcome=AttemptState.UNKNOWN, reconciled="applied")
    client.force_login(teammate)
    # user, user perms, group perms, the attempt with its workspace, its entries (+ the session without Redis)
    with django_assert_num_queries(5 + session_queries()):
        assert client.get(detail(attempt)).status_code == 200


# --- Entries written by the real force-conclude service -------------------------------


def _conclude(workspace, user, client):
    from django.utils import timezone

    from experiments.services import conclusions as conclusion_services
    from tests.fake_mixpanel import EXP_ID

    return conclusion_services.experiment_force_conclude(
        workspace=workspace,
        user=user,
        experiment_id=EXP_ID,
        experiment_name="Checkout button colour",
        reason_category="significance",
        reason_text="Green won clearly.",
        end_date=timezone.now() - dt.timedelta(minutes=1),
        client=client,
    )


@pytest.mark.django_db
def test_attempt_page_for_a_service_success(pm_client, workspace, pm):
    from tests.fake_mixpanel import FakeMixpanel

    outcome = _conclude(workspace, pm, FakeMixpanel())
    assert outcome.ok
    text = pm_client.get(detail(outcome.attempt)).content.decode()
    assert 'status-active">active</span> → <span class="badge status-concluded">concluded' in text
    assert "<dt>Variants</dt>\n    <dd>2</dd>" in text
    assert "<dt>Exposures</dt>\n    <dd>238</dd>" in text
    assert "Checkout button &lt;b&gt;colour&lt;/b&gt;" in text  # the returned JSON, escaped
    assert "<b>colour</b>" not in text
    assert "What went wrong" not in text


@pytest.mark.django_db
def test_attempt_page_for_a_service_refusal_and_a_reconciled_unknown(pm_client, workspace, pm):
    from experiments.services import reconcile as reconcile_services
    from tests.factories import past_the_in_flight_limit
    from tests.fake_mixpanel import FakeMixpanel

    refused = _conclude(workspace, pm, FakeMixpanel(put=MixpanelRateLimited(http_status=429)))
    text = pm_client.get(detail(refused.attempt)).content.decode()
    assert "What went wrong:</strong>" in text
    assert "rate limiting" in text
    assert "MixpanelRateLimited" in text

    fake = FakeMixpanel(put=("apply", MixpanelOutcomeUnknown("No answer within the deadline.")))
    unknown = _conclude(workspace, pm, fake)
    assert unknown.state == AttemptState.UNKNOWN
    with past_the_in_flight_limit():
        reconcile_services.conclusion_reconcile(attempt=unknown.attempt, client=fake)
    text = pm_client.get(detail(unknown.attempt)).content.decode()
    assert "Force conclude outcome unknown" in text
    assert "Force conclude reconciled" in text
    assert "<dt>Status seen in Mixpanel</dt><dd>concluded</dd>" in text
    # The list shows both, with their outcomes.
    listing = pm_client.get(LIST).content.decode()
    assert "outcome-failed" in listing
    assert "outcome-reconciled_applied" in listing


@pytest.mark.django_db
@pytest.mark.parametrize("params", [{"date_from": "0001-01-01"}, {"date_to": "9999-12-31"}])
def test_a_date_near_the_calendars_ends_is_reported_and_ignored(client, auditor, varied, params):
    client.force_login(auditor)
    response = client.get(LIST, params)
    assert response.status_code == 200
    assert "Enter a date between 1900-01-01 and 2999-12-31." in response.content.decode()
    assert len(shown_ids(response)) == len(varied)
