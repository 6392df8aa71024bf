"""The Force conclude button, dialog and view: who sees it, what each answer looks like."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from experiments.forms import datetime_local_value
from experiments.mixpanel.errors import MixpanelRejected, MixpanelUnavailable
from experiments.mixpanel.experiment import parse_experiment
from experiments.models import (
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    ConclusionClaim,
    EntryKind,
    ReasonCategory,
)
from experiments.selectors import experiment_rows as row_selectors
from experiments.services import conclusions as conclusion_services
from experiments.services.attempts import AttemptOutcome
from tests.factories import session_queries
from tests.fake_mixpanel import FakeMixpanel, exp_json, install

ACTIVE = "00000000-0000-4000-8000-000000000001"  # starts 2026-01-02 09:00 UTC
DRAFT = "00000000-0000-4000-8000-000000000002"
CONCLUDED = "00000000-0000-4000-8000-000000000003"
ACTIVE_TOO = "00000000-0000-4000-8000-000000000004"


@pytest.fixture
def fake(monkeypatch):
    return install(
        monkeypatch,
        FakeMixpanel([exp_json(1, "active"), exp_json(2, "draft"), exp_json(3, "concluded"), exp_json(4, "active")]),
    )


class ServiceSpy:
    """Stands in for conclusion_services.experiment_force_conclude; answers with a prepared outcome."""

    def __init__(self, outcome_factory):
        self.calls: list[dict] = []
        self.outcome_factory = outcome_factory

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.outcome_factory(**kwargs)


@pytest.fixture
def spy(monkeypatch):
    def succeed(**kwargs):
        experiment = parse_experiment(exp_json(1, "concluded"))
        attempt = _attempt(kwargs["workspace"], kwargs["user"], state=AttemptState.SUCCEEDED, claim=True)
        return AttemptOutcome(
            attempt=attempt,
            state=AttemptState.SUCCEEDED,
            ok=True,
            message="Concluded: “Experiment 00001” is now concluded in Mixpanel.",
            experiment=experiment,
        )

    service = ServiceSpy(succeed)
    monkeypatch.setattr(conclusion_services, "experiment_force_conclude", service)
    return service


def _attempt(workspace, user, *, experiment_id=ACTIVE, state=AttemptState.REQUESTED, claim=False):
    attempt = ConclusionAttempt.objects.create(
        workspace=workspace,
        experiment_id=experiment_id,
        experiment_name="Experiment 00001",
        actor=user,
        actor_name=user.get_full_name() or user.username,
        reason_category=ReasonCategory.REACHED_SIGNIFICANCE,
        reason_text="Clear winner",
        end_date=timezone.now(),
        state=state,
        finished_at=timezone.now() if state != AttemptState.REQUESTED else None,
    )
    if claim:
        ConclusionClaim.objects.create(workspace=workspace, experiment_id=experiment_id, attempt=attempt)
    return attempt


def conclude_url(workspace, experiment_id=ACTIVE) -> str:
    return reverse("experiments:experiment-force-conclude", args=[workspace.pk, experiment_id])


def list_url(workspace) -> str:
    return reverse("experiments:experiment-list", args=[workspace.pk])


def toast(response) -> str:
    """The page's one notice an htmx answer asks for (HX-Trigger showToast), or ""."""
    trigger = json.loads(response.headers.get("HX-Trigger") or "{}")
    return trigger.get("showToast", {}).get("message", "")


def detail_url(workspace, experiment_id=ACTIVE) -> str:
    return reverse("experiments:experiment-detail", args=[workspace.pk, experiment_id])


def form_data(**overrides) -> dict[str, str]:
    data = {
        "reason_category": "significance",
        "reason_text": "Green won clearly after two weeks.",
        "end_date": datetime_local_value(timezone.now()),
        "back": "list",
        "list_query": "status=active&q=experiment",
    }
    data.update(overrides)
    return data


HTMX = {"HTTP_HX_REQUEST": "true"}


def conclude_links(html: str) -> list[str]:
    return re.findall(r'href="/w/\d+/experiments/([^/"]+)/force-conclude/', html)


# --- who sees the button ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("persona", "sees"), [("pm", True), ("ws_admin", True), ("teammate", False)])
def test_button_only_for_concluders_and_admins_and_only_on_active_rows(client, request, workspace, fake, persona, sees):
    client.force_login(request.getfixturevalue(persona))
    html = client.get(list_url(workspace)).content.decode()
    if sees:
        assert sorted(conclude_links(html)) == [ACTIVE, ACTIVE_TOO]
        assert 'data-open-dialog="force-conclude-dialog"' in html
    else:
        assert conclude_links(html) == []
        assert "Force conclude" not in html.split('<div id="results"')[1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "experiment_id", "sees"),
    [("pm", ACTIVE, True), ("ws_admin", ACTIVE, True), ("teammate", ACTIVE, False), ("pm", CONCLUDED, False)],
)
def test_button_on_the_experiment_page(client, request, workspace, fake, persona, experiment_id, sees):
    client.force_login(request.getfixturevalue(persona))
    html = client.get(detail_url(workspace, experiment_id)).content.decode()
    assert (conclude_links(html) == [experiment_id]) is sees
    if persona == "teammate":
        assert "Only concluders and admins of this workspace can force conclude it" in html


@pytest.mark.django_db
def test_claimed_experiments_show_who_and_no_button(pm_client, pm, ws_admin, workspace, fake):
    _attempt(workspace, ws_admin, experiment_id=ACTIVE, state=AttemptState.REQUESTED, claim=True)
    _attempt(workspace, ws_admin, experiment_id=ACTIVE_TOO, state=AttemptState.SUCCEEDED, claim=True)
    html = pm_client.get(list_url(workspace)).content.decode()
    assert conclude_links(html) == []
    # On the list, a waiting row is a short chip (who and when in its tooltip) ...
    assert re.search(
        r'title="Sent at [\d-]+ \d\d:\d\d UTC by Ada;[^"]*">\s*<span class="spinner"[^>]*></span> Waiting for Mixpanel',
        html,
    )
    assert "Concluded by Ada at" in html
    # ... and the experiment page says it in full.
    page = pm_client.get(detail_url(workspace, ACTIVE)).content.decode()
    assert re.search(r"Sent at <time [^>]*>[\d-]+ \d\d:\d\d UTC</time> by Ada, waiting for Mixpanel\.", page)


@pytest.mark.django_db
def test_unknown_outcome_says_it_will_be_reconciled(pm_client, pm, workspace, fake):
    _attempt(workspace, pm, state=AttemptState.UNKNOWN, claim=True)
    html = pm_client.get(detail_url(workspace)).content.decode()
    assert "we do not know yet whether it worked" in html
    assert "checks with Mixpanel by itself" in html
    assert "waiting for Mixpanel: its answer was lost" in html
    assert "it is never sent twice" in html
    assert conclude_links(html) == []


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [HTMX, {}])
def test_viewer_post_is_refused_readably(client, teammate, workspace, fake, spy, headers):
    client.force_login(teammate)
    response = client.post(conclude_url(workspace), form_data(), **headers)
    assert response.status_code == 403
    body = response.content.decode()
    assert "Only concluders and admins of Growth can force conclude experiments." in body
    assert "You are a viewer here; ask a workspace admin" in body
    assert spy.calls == []
    assert fake.put_calls == []
    assert not ConclusionAttempt.objects.exists()


@pytest.mark.django_db
def test_viewer_cannot_open_the_dialog(client, teammate, workspace, fake):
    client.force_login(teammate)
    response = client.get(conclude_url(workspace), **HTMX)
    assert response.status_code == 403
    assert "force-conclude-form" not in response.content.decode()


@pytest.mark.django_db
def test_outsider_gets_404(client, outsider, workspace, fake, spy):
    client.force_login(outsider)
    assert client.post(conclude_url(workspace), form_data(), **HTMX).status_code == 404
    assert client.get(conclude_url(workspace)).status_code == 404
    assert spy.calls == []


@pytest.mark.django_db
def test_experiment_outside_the_workspaces_list_is_404(pm_client, workspace, fake, spy):
    assert pm_client.post(conclude_url(workspace, "not-ours"), form_data(), **HTMX).status_code == 404
    assert pm_client.get(conclude_url(workspace, "not-ours")).status_code == 404
    assert spy.calls == []


@pytest.mark.django_db
def test_get_is_the_only_other_method(pm_client, workspace, fake):
    assert pm_client.put(conclude_url(workspace)).status_code == 405


# --- the dialog -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_dialog_fragment_explains_and_asks(pm_client, workspace, fake):
    response = pm_client.get(conclude_url(workspace) + "?back=list&list_query=status%3Dactive", **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert "ends the experiment's analysis now" in html
    assert "<strong>ships nothing</strong>: it records no decision" in html
    assert "<strong>changes no feature flag</strong>" in html
    assert '<label for="fc-reason-category">Reason</label>' in html
    assert '<label for="fc-reason-text">In your own words</label>' in html
    assert '<label for="fc-end-date">End of the analysis window (UTC)</label>' in html
    assert "autofocus" in html
    # Default end date: now, in UTC, to the minute.
    now = timezone.now()
    shown = re.search(r'name="end_date" value="([^"]+)"', html).group(1)
    assert abs(dt.datetime.fromisoformat(shown).replace(tzinfo=dt.UTC) - now) < dt.timedelta(minutes=2)
    # Posts to itself, swaps the row, disables the button in flight, shows progress.
    assert f'hx-post="{conclude_url(workspace)}"' in html
    assert f'hx-target="#{row_selectors.experiment_dom_id(ACTIVE)}"' in html
    assert 'hx-swap="outerHTML"' in html
    assert 'hx-disabled-elt="#force-conclude-submit"' in html
    assert 'hx-indicator="#force-conclude-progress"' in html
    assert 'name="list_query" value="status=active"' in html
    assert 'method="post"' in html
    assert "csrfmiddlewaretoken" in html


@pytest.mark.django_db
def test_dialog_from_the_experiment_page_targets_its_section(pm_client, workspace, fake):
    html = pm_client.get(conclude_url(workspace) + "?back=detail", **HTMX).content.decode()
    assert 'hx-target="#conclude-section"' in html
    assert 'name="back" value="detail"' in html


@pytest.mark.django_db
def test_without_javascript_the_dialog_is_a_page(pm_client, workspace, fake):
    html = pm_client.get(conclude_url(workspace) + "?back=list").content.decode()
    assert "<!doctype html>" in html
    assert 'id="force-conclude-form"' in html
    assert f'action="{conclude_url(workspace)}"' in html


@pytest.mark.django_db
def test_dialog_for_an_experiment_that_is_not_active_has_no_form(pm_client, workspace, fake):
    html = pm_client.get(conclude_url(workspace, CONCLUDED), **HTMX).content.decode()
    assert "Nothing to force conclude" in html
    assert "only an active experiment can be force concluded" in html
    assert "force-conclude-form" not in html


@pytest.mark.django_db
def test_pages_embed_one_closed_dialog(pm_client, workspace, fake):
    for url in (list_url(workspace), detail_url(workspace)):
        html = pm_client.get(url).content.decode()
        assert html.count('<dialog id="force-conclude-dialog"') == 1
        assert 'aria-labelledby="force-conclude-title"' in html
        assert '<dialog id="force-conclude-dialog" class="conclude-dialog" open' not in html


@pytest.mark.django_db
def test_dialog_query_count_is_fixed(client, pm, workspace, fake, django_assert_num_queries):
    client.force_login(pm)
    client.get(list_url(workspace))
    # user, membership, claim, the plan's seal (+ the session without Redis)
    with django_assert_num_queries(4 + session_queries()):
        assert client.get(conclude_url(workspace), **HTMX).status_code == 200


# --- validation -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reason_category": ""}, "Choose a reason."),
        ({"reason_category": "vibes"}, "Choose one of the listed reasons."),
        ({"reason_text": "   "}, "Say briefly why you are concluding it"),
        ({"reason_text": "x" * 1001}, "Keep it under 1000 characters."),
        ({"end_date": ""}, "Give the end date and time (UTC)."),
        ({"end_date": "next tuesday"}, "Enter a date and time like"),
        ({"end_date": "2999-01-01T00:00"}, "The end date is in the future."),
        ({"end_date": "2026-01-02T08:59"}, "The end date is before the experiment started (2026-01-02 09:00 UTC)."),
        # Out of range once converted to UTC: a form error, never a 500.
        ({"end_date": "0001-01-01T00:00+05:00"}, "Enter a date and time like"),
        ({"end_date": "9999-12-31T23:59-05:00"}, "Enter a date and time like"),
        ({"end_date": "0001-01-01T00:30"}, "The end date is before the experiment started"),
        ({"end_date": "9999-12-31T23:59+05:00"}, "The end date is in the future."),
    ],
)
def test_dialog_validation_errors_are_readable(pm_client, workspace, fake, spy, overrides, message):
    response = pm_client.post(conclude_url(workspace), form_data(**overrides), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert message in html
    assert 'aria-invalid="true"' in html
    # The answer goes back into the open dialog, not into the row.
    assert response["HX-Retarget"] == "#force-conclude-body"
    assert response["HX-Reswap"] == "innerHTML"
    assert 'id="force-conclude-form"' in html
    assert spy.calls == []


@pytest.mark.django_db
def test_validation_keeps_what_was_typed(pm_client, workspace, fake, spy):
    html = pm_client.post(
        conclude_url(workspace), form_data(reason_category="", reason_text="Kept <text>"), **HTMX
    ).content.decode()
    assert "Kept &lt;text&gt;</textarea>" in html


@pytest.mark.django_db
def test_start_minute_itself_is_allowed(pm_client, workspace, fake, spy):
    response = pm_client.post(conclude_url(workspace), form_data(end_date="2026-01-02T09:00"), **HTMX)
    assert "HX-Retarget" not in response
    assert spy.calls[0]["end_date"] == dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_end_date_is_read_as_utc(pm_client, workspace, fake, spy, settings):
    settings.TIME_ZONE = "America/New_York"
    timezone.activate("America/New_York")
    try:
        pm_client.post(conclude_url(workspace), form_data(end_date="2026-03-01T12:30"), **HTMX)
    finally:
        timezone.deactivate()
    assert spy.calls[0]["end_date"] == dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_validation_errors_without_javascript_render_the_page(pm_client, workspace, fake, spy):
    response = pm_client.post(conclude_url(workspace), form_data(reason_text=""))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<!doctype html>" in html
    assert "Say briefly why you are concluding it" in html
    assert spy.calls == []


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_htmx_success_swaps_the_row_closes_the_dialog_and_toasts(pm_client, pm, workspace, fake, spy):
    response = pm_client.post(conclude_url(workspace), form_data(), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<tr id="{row_selectors.experiment_dom_id(ACTIVE)}">')
    assert '<span class="badge status-concluded">concluded</span>' in html
    assert "Concluded by Pat at" in html
    assert conclude_links(html) == []
    # A fresh, closed dialog replaces the open one out of band.
    assert '<dialog id="force-conclude-dialog" class="conclude-dialog"' in html
    assert 'hx-swap-oob="true"' in html
    toast = json.loads(response["HX-Trigger"])
    assert toast == {"showToast": {"message": "Concluded: “Experiment 00001” is now concluded in Mixpanel."}}
    call = spy.calls[0]
    assert call["experiment_id"] == ACTIVE
    assert call["experiment_name"] == "Experiment 00001"
    assert call["reason_category"] == "significance"
    assert call["reason_text"] == "Green won clearly after two weeks."
    assert call["user"] == pm
    assert call["workspace"] == workspace


@pytest.mark.django_db
def test_htmx_failure_shows_the_reason_and_the_button_again(pm_client, pm, workspace, fake, monkeypatch):
    def refuse(**kwargs):
        attempt = _attempt(kwargs["workspace"], kwargs["user"], state=AttemptState.FAILED)
        return AttemptOutcome(
            attempt=attempt,
            state=AttemptState.FAILED,
            ok=False,
            message="Mixpanel did not conclude “Experiment 00001”; nothing changed. Rate limited. You may try again.",
            experiment=None,
        )

    monkeypatch.setattr(conclusion_services, "experiment_force_conclude", ServiceSpy(refuse))
    response = pm_client.post(conclude_url(workspace), form_data(), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "HX-Trigger" not in response
    assert '<p class="error small" role="alert" tabindex="-1" data-focus-after-swap>Mixpanel did not conclude' in html
    assert "You may try again." in html
    assert '<span class="badge status-active">active</span>' in html
    assert conclude_links(html) == [ACTIVE]


@pytest.mark.django_db
def test_htmx_blocked_shows_who_holds_it(pm_client, pm, ws_admin, workspace, fake, monkeypatch):
    def blocked(**kwargs):
        holder = _attempt(kwargs["workspace"], ws_admin, claim=True)
        return AttemptOutcome(
            attempt=None,
            state="blocked",
            ok=False,
            message="Not sent: “Experiment 00001” is already being concluded by Ada since 2026-11-26 08:00 UTC.",
            blocked_by=holder,
        )

    monkeypatch.setattr(conclusion_services, "experiment_force_conclude", ServiceSpy(blocked))
    response = pm_client.post(conclude_url(workspace), form_data(), **HTMX)
    html = response.content.decode()
    # The row shows the attempt that holds it, as its chip; why this press was refused is the page's notice.
    assert "Not sent: “Experiment 00001” is already being concluded by Ada" in toast(response)
    assert re.search(
        r'title="Sent at [^"]* by Ada;[^"]*">\s*<span class="spinner"[^>]*></span> Waiting for Mixpanel', html
    )
    assert conclude_links(html) == []


@pytest.mark.django_db
def test_without_javascript_success_redirects_to_the_same_list_view_with_a_message(pm_client, workspace, fake, spy):
    response = pm_client.post(conclude_url(workspace), form_data())
    assert response.status_code == 302
    assert response["Location"] == list_url(workspace) + "?status=active&q=experiment"
    follow = pm_client.get(response["Location"]).content.decode()
    assert "message-success" in follow
    assert "is now concluded in Mixpanel" in follow


@pytest.mark.django_db
def test_without_javascript_failure_redirects_with_an_error(pm_client, workspace, fake, monkeypatch):
    def fail(**kwargs):
        return AttemptOutcome(attempt=None, state=AttemptState.FAILED, ok=False, message="Nope, readable.")

    monkeypatch.setattr(conclusion_services, "experiment_force_conclude", ServiceSpy(fail))
    response = pm_client.post(conclude_url(workspace), form_data(back="detail"), follow=True)
    assert response.redirect_chain[0][0] == detail_url(workspace)
    html = response.content.decode()
    assert '<p class="message message-error" role="status">Nope, readable.</p>' in html


@pytest.mark.django_db
def test_htmx_from_the_experiment_page_swaps_its_section(pm_client, workspace, fake, spy):
    html = pm_client.post(conclude_url(workspace), form_data(back="detail"), **HTMX).content.decode()
    assert html.lstrip().startswith('<section id="conclude-section"')
    assert "Force concluded by Pat at" in html
    assert "<h3>Attempts</h3>" in html
    # In place, out of band: the header with its new status badge, and the end date.
    header = html[html.index('<header class="experiment-header card" id="experiment-header" hx-swap-oob="true"') :]
    assert '<span class="badge status-concluded">concluded</span>' in header[: header.index("</header>")]
    assert '<dd id="experiment-end" hx-swap-oob="true">' in html
    assert '<dialog id="force-conclude-dialog" class="conclude-dialog"' in html
    # The next step is offered.
    assert ">Record the decision</a>" in html


@pytest.mark.django_db
def test_list_unavailable_when_posting_is_readable(pm_client, workspace, fake, spy):
    fake.list_error = MixpanelUnavailable("Mixpanel is down (HTTP 503).")
    response = pm_client.post(conclude_url(workspace), form_data(), **HTMX)
    assert response.status_code == 200
    assert "Mixpanel is down (HTTP 503)." in response.content.decode()
    assert "Nothing was sent" in response.content.decode()
    assert spy.calls == []


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_csrf_is_enforced_for_the_htmx_post(pm, workspace, fake, spy):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(pm)
    refused = browser.post(conclude_url(workspace), form_data(), **HTMX)
    assert refused.status_code == 403
    assert spy.calls == []
    # The page puts the token in hx-headers, which htmx sends as X-CSRFToken.
    page = browser.get(list_url(workspace)).content.decode()
    token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', page).group(1)
    accepted = browser.post(conclude_url(workspace), form_data(), HTTP_X_CSRFTOKEN=token, **HTMX)
    assert accepted.status_code == 200
    assert len(spy.calls) == 1


# --- through the real service ----------------------------------------------------------------------


@pytest.mark.django_db
def test_real_service_concludes_once_and_audits(pm_client, workspace, fake):
    pm_client.get(list_url(workspace))
    lists_before = fake.list_calls
    first = pm_client.post(conclude_url(workspace), form_data(), **HTMX)
    html = first.content.decode()
    assert '<span class="badge status-concluded">concluded</span>' in html
    assert "showToast" in first["HX-Trigger"]
    assert len(fake.put_calls) == 1
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == AttemptState.SUCCEEDED
    assert attempt.reason_text == "Green won clearly after two weeks."
    kinds = list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))
    assert kinds == [EntryKind.CONCLUSION_REQUESTED, EntryKind.CONCLUSION_SUCCEEDED]
    # A second press (another tab, a stale page) sends no PUT and says why.
    second = pm_client.post(conclude_url(workspace), form_data(), **HTMX)
    assert len(fake.put_calls) == 1
    assert "already concluded" in toast(second)
    assert "Concluded by Pat (pat) at" in second.content.decode()
    # The list was invalidated: the next view reads Mixpanel and shows the new status.
    listing = pm_client.get(list_url(workspace) + "?status=concluded").content.decode()
    assert fake.list_calls > lists_before
    assert "Experiment 00001" in listing
    assert "Concluded by Pat (pat) at" in listing


@pytest.mark.django_db
def test_redrawn_row_keeps_the_pages_star_and_reads_no_bookmarks(pm_client, workspace, fake):
    star_id = "star-" + row_selectors.experiment_dom_id(ACTIVE)
    page = pm_client.get(list_url(workspace)).content.decode()
    assert f'<form method="post" id="{star_id}" class="star-toggle"' in page
    with CaptureQueriesContext(connection) as captured:
        html = pm_client.post(conclude_url(workspace), form_data(), **HTMX).content.decode()
    assert '<span class="badge status-concluded">concluded</span>' in html
    # htmx puts the page's own star (hx-preserve, same id) where this placeholder is.
    assert f'<form id="{star_id}" class="star-toggle" hx-preserve></form>' in html
    # The session (without Redis), the user, the view's membership read and the service's own;
    # the intent: attempt, claim, chain head, entry, reconcile task; the outcome: the attempt's compare-and-set
    # update, chain head, entry. PostgreSQL also takes the append lock before each head read.
    # (The test's own transaction turns each atomic block into a savepoint: not counted.)
    statements = [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    locks = 2 if connection.vendor == "postgresql" else 0
    assert len(statements) == 11 + locks + session_queries(), statements
    # The bookmark table is not read (the workspace row has an "email_bookmarkers" column).
    assert not any('"experiments_bookmark"' in sql for sql in statements)


@pytest.mark.django_db
def test_real_service_upstream_fault_is_readable_and_retryable(pm_client, workspace, fake):
    fake.put = MixpanelRejected("Mixpanel rejected the request (HTTP 400).", http_status=400)
    html = pm_client.post(conclude_url(workspace), form_data(), **HTMX).content.decode()
    assert "HTTP 400" in html
    assert 'class="error small"' in html
    assert conclude_links(html) == [ACTIVE]  # the claim was released: a person may try again
    assert ConclusionAttempt.objects.get().state == AttemptState.FAILED


# --- through the local Mixpanel stand-in (real HTTP client, real service) ---------------------------


@pytest.mark.django_db
def test_standin_force_conclude_sends_one_put_and_swaps_the_row(pm_client, workspace, standin):
    exp = standin.find(1001, status="active")
    url = conclude_url(workspace, exp["id"])
    start = dt.datetime.fromisoformat(exp["start_date"].replace("Z", "+00:00"))
    data = form_data(end_date=datetime_local_value(max(timezone.now(), start + dt.timedelta(minutes=1))))
    response = pm_client.post(url, data, **HTMX)
    html = response.content.decode()
    assert '<span class="badge status-concluded">concluded</span>' in html, html
    assert standin.experiment(1001, exp["id"])["status"] == "concluded"
    pm_client.post(url, data, **HTMX)  # a second press
    assert len(standin.requests(method="PUT", path_contains=exp["id"])) == 1


@pytest.mark.django_db
def test_standin_fault_row_is_reported_readably(pm_client, workspace, standin):
    exp = next(e for e in standin.experiments(1001) if e["name"].startswith("[demo fault] Mixpanel rate limits"))
    html = pm_client.post(conclude_url(workspace, exp["id"]), form_data(), **HTMX).content.decode()
    assert "rate limit" in html.lower()
    assert 'class="error small" role="alert"' in html
    assert standin.experiment(1001, exp["id"])["status"] == "active"
    assert "CANARY" not in html


@pytest.mark.django_db
def test_concluding_from_the_list_moves_its_tab_counts_in_place(pm_client, workspace, fake):
    page = pm_client.get(list_url(workspace) + "?status=active").content.decode()
    assert 'Active <span class="count">2</span>' in page
    assert 'Ended, not decided <span class="count">1</span>' in page

    lists_before = fake.list_calls
    html = pm_client.post(conclude_url(workspace), form_data(list_query="status=active"), **HTMX).content.decode()

    assert fake.status_of(exp_id=ACTIVE) == "concluded"
    # The counts come from the copy read before the press: no second read of the whole list.
    assert fake.list_calls == lists_before
    tabs = html[html.index('<nav id="status-tabs" aria-label="Status" class="tab-groups" hx-swap-oob="true">') :]
    tabs = tabs[: tabs.index("</nav>")]
    assert 'Active <span class="count">1</span>' in tabs
    assert 'Ended, not decided <span class="count">2</span>' in tabs
    assert 'aria-current="page">Active' in tabs  # the tab on screen stays the current one


@pytest.mark.django_db
def test_a_failed_conclude_sends_no_tab_counts(pm_client, workspace, fake):
    fake.put = MixpanelRejected("Mixpanel refused the request (HTTP 400).", http_status=400)
    html = pm_client.post(conclude_url(workspace), form_data(), **HTMX).content.decode()
    assert 'id="status-tabs"' not in html
    assert 'id="experiment-header"' not in html


@pytest.mark.django_db
def test_after_concluding_from_the_list_its_row_offers_the_decision(pm_client, workspace, fake):
    html = pm_client.post(conclude_url(workspace), form_data(), **HTMX).content.decode()
    row = html[: html.index("</tr>")]
    assert f'href="{detail_url(workspace)}#conclude-section">Record the decision' in row


@pytest.mark.django_db
def test_a_viewer_is_offered_no_decision_on_the_list(client, teammate, workspace, fake):
    client.force_login(teammate)
    page = client.get(list_url(workspace) + "?status=concluded").content.decode()
    assert "Not decided yet" in page
    assert "Record the decision" not in page
