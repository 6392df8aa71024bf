"""An open attempt on the page: "Sent at <date> HH:MM UTC, waiting for Mixpanel", polled until its outcome lands,
and "Check Mixpanel now", which reads and never sends."""

from __future__ import annotations

import contextlib
import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel.errors import MixpanelOutcomeUnknown, MixpanelUnavailable
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_rows as row_selectors
from experiments.services import conclusions as conclusion_services
from experiments.services import reconcile as reconcile_services
from tests.factories import assert_chain_valid, made_long_ago, said
from tests.fake_mixpanel import FakeMixpanel, ProcessDied, exp_json, install

ACTIVE = "00000000-0000-4000-8000-000000000001"
HTMX = {"HTTP_HX_REQUEST": "true"}
POLL = 'hx-trigger="every 3s"'
ROW_ID = "#" + row_selectors.experiment_dom_id(ACTIVE)


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch, FakeMixpanel([exp_json(1, "active"), exp_json(2, "concluded")]))


def open_attempt(workspace, user, fake, *, state=AttemptState.UNKNOWN, judgeable=True) -> ConclusionAttempt:
    """A real press through the service that ends `state` ("unknown": applied, answer lost;
    "requested": the process died before sending), made long ago when `judgeable`."""
    fake.put = MixpanelOutcomeUnknown() if state == AttemptState.UNKNOWN else ProcessDied()
    press = dict(
        workspace=workspace,
        user=user,
        experiment_id=ACTIVE,
        experiment_name="Experiment 00001",
        reason_category="broken",
        reason_text="Tracking broke.",
        end_date=timezone.now() - dt.timedelta(minutes=1),
        client=fake,
    )
    clock = made_long_ago() if judgeable else contextlib.nullcontext()
    with clock, contextlib.suppress(ProcessDied):
        conclusion_services.experiment_force_conclude(**press)
    fake.put = "apply"
    fake.calls.clear()
    attempt = ConclusionAttempt.objects.get()
    assert attempt.state == state
    return attempt


def status_url(attempt, back="list") -> str:
    return reverse("experiments:attempt-status", args=[attempt.workspace_id, attempt.pk]) + f"?back={back}"


def check_url(attempt, back="list") -> str:
    return reverse("experiments:attempt-check", args=[attempt.workspace_id, attempt.pk]) + f"?back={back}"


def concluded_upstream(fake) -> None:
    fake.add(exp_json(1, "concluded"))


def entry_kinds(attempt) -> list[str]:
    return list(AuditEntry.objects.filter(attempt=attempt).order_by("seq").values_list("kind", flat=True))


# --- the waiting line ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("state", [AttemptState.REQUESTED, AttemptState.UNKNOWN])
@pytest.mark.parametrize("where", ["list", "detail"])  # not "page": that is Playwright's fixture
def test_an_open_attempt_shows_when_it_was_sent_and_polls(pm_client, pm, workspace, fake, state, where):
    attempt = open_attempt(workspace, pm, fake, state=state)
    if where == "list":
        url = reverse("experiments:experiment-list", args=[workspace.pk])
    else:
        url = reverse("experiments:experiment-detail", args=[workspace.pk, ACTIVE])
    html = pm_client.get(url).content.decode()

    sent = timezone.localtime(attempt.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M")
    if where == "list":
        # A row stays one line: a chip (who and when in its tooltip) and its one action.
        assert f'title="Sent at {sent} UTC by Pat (pat);' in html
        chip = "Answer lost: checking" if state == AttemptState.UNKNOWN else "Waiting for Mixpanel"
        assert re.search(rf'<span class="spinner"[^>]*></span> {chip}<span class="visually-hidden">', html)
    else:
        assert re.search(rf"Sent at <time [^>]*>{sent} UTC</time> by Pat \(pat\), waiting for Mixpanel", html)
        assert ("its answer was lost" in html) is (state == AttemptState.UNKNOWN)
    assert html.count(POLL) == 1
    assert f'hx-get="{status_url(attempt, where)}' in html
    # On the list the button reads "Check now"; its name for assistive technology is the whole one.
    check = 'Check<span class="visually-hidden"> Mixpanel</span> now' if where == "list" else "Check Mixpanel now"
    assert check in html


@pytest.mark.django_db
def test_a_viewer_sees_the_waiting_line_without_the_check_button(client, teammate, pm, workspace, fake):
    open_attempt(workspace, pm, fake)
    client.force_login(teammate)
    html = client.get(reverse("experiments:experiment-list", args=[workspace.pk])).content.decode()
    assert "Answer lost: checking" in html
    assert POLL in html
    assert 'class="attempt-check"' not in html


@pytest.mark.django_db
def test_polling_an_open_attempt_answers_the_same_line_and_reads_nothing_upstream(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    lists = fake.list_calls
    response = pm_client.get(status_url(attempt), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Answer lost: checking" in html
    assert POLL in html
    assert "HX-Retarget" not in response.headers
    assert (fake.list_calls, fake.get_calls) == (lists, [])


@pytest.mark.django_db
def test_once_the_worker_resolved_it_the_poll_answers_the_final_row_without_a_trigger(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    concluded_upstream(fake)
    reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)  # as the worker does

    response = pm_client.get(status_url(attempt), **HTMX)
    html = response.content.decode()
    assert response.headers["HX-Retarget"] == ROW_ID
    assert response.headers["HX-Reswap"] == "outerHTML"
    assert "was applied" in said(response)
    assert '<span class="badge status-concluded">concluded</span>' in html
    assert "hx-trigger" not in html  # polling stops
    assert "Answer lost" not in html


@pytest.mark.django_db
def test_a_not_applied_outcome_gives_the_button_back_on_the_experiment_page(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake, state=AttemptState.REQUESTED)
    reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)  # still active upstream

    response = pm_client.get(status_url(attempt, "detail"), **HTMX)
    html = response.content.decode()
    assert response.headers["HX-Retarget"] == "#conclude-section"
    assert "the force conclude was not applied" in html
    assert "hx-trigger" not in html
    assert f"/w/{workspace.pk}/experiments/{ACTIVE}/force-conclude/?back=detail" in html


@pytest.mark.django_db
def test_a_final_outcome_while_the_list_is_unavailable_is_said_in_place(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    concluded_upstream(fake)
    reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
    list_selectors.invalidate_experiment_list(workspace=workspace)
    fake.list_error = MixpanelUnavailable("Mixpanel did not answer in time.")

    response = pm_client.get(status_url(attempt), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "HX-Retarget" not in response.headers
    assert "was applied" in html
    assert "Reload the page" in html
    assert "hx-trigger" not in html


@pytest.mark.django_db
def test_the_status_of_another_workspaces_attempt_is_not_found(client, outsider, pm, workspace, other_workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    client.force_login(outsider)
    foreign = reverse("experiments:attempt-status", args=[other_workspace.pk, attempt.pk])
    assert client.get(foreign, **HTMX).status_code == 404
    assert client.get(status_url(attempt), **HTMX).status_code == 404


@pytest.mark.django_db
def test_the_status_url_without_htmx_goes_back_to_the_page(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    response = pm_client.get(status_url(attempt, "detail"))
    assert response.status_code == 302
    assert response["Location"] == reverse("experiments:experiment-detail", args=[workspace.pk, ACTIVE])


# --- Check Mixpanel now -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["pm", "ws_admin"])
def test_check_now_records_an_applied_outcome_with_one_read_and_no_put(client, request, pm, workspace, fake, persona):
    attempt = open_attempt(workspace, pm, fake)
    concluded_upstream(fake)
    client.force_login(request.getfixturevalue(persona))

    response = client.post(check_url(attempt), **HTMX)
    html = response.content.decode()

    assert response.headers["HX-Retarget"] == ROW_ID
    assert "was applied" in said(response)
    assert "hx-trigger" not in html
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_APPLIED
    assert fake.get_calls == [ACTIVE]
    assert fake.put_calls == []
    assert entry_kinds(attempt)[-1] == EntryKind.CONCLUSION_RECONCILED
    # The trail says who pressed it, not the reconcile command.
    person = request.getfixturevalue(persona)
    reconciled = AuditEntry.objects.filter(attempt=attempt).latest("seq")
    assert reconciled.actor == person
    assert reconciled.actor_name == f"{person.first_name} ({person.username})"
    assert ConclusionClaim.objects.filter(attempt=attempt).exists()
    assert_chain_valid()


@pytest.mark.django_db
def test_check_now_on_a_not_applied_attempt_releases_the_claim_and_gives_the_button_back(
    pm_client, pm, workspace, fake
):
    attempt = open_attempt(workspace, pm, fake, state=AttemptState.REQUESTED)
    html = pm_client.post(check_url(attempt), **HTMX).content.decode()
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_NOT_APPLIED
    assert not ConclusionClaim.objects.exists()
    assert "the force conclude was not applied" in html
    assert f"/w/{workspace.pk}/experiments/{ACTIVE}/force-conclude/" in html
    assert fake.put_calls == []


@pytest.mark.django_db
@pytest.mark.parametrize("state", [AttemptState.REQUESTED, AttemptState.UNKNOWN])
def test_check_now_too_early_says_so_and_changes_nothing(pm_client, pm, workspace, fake, state):
    attempt = open_attempt(workspace, pm, fake, state=state, judgeable=False)
    concluded_upstream(fake)
    entries = AuditEntry.objects.count()

    response = pm_client.post(check_url(attempt), **HTMX)
    html = response.content.decode()

    assert "Too early to tell" in said(response)
    assert re.search(r"for another \d+ s", said(response))
    assert "Nothing was changed" in said(response)
    assert POLL in html  # still waiting, still polling
    assert "HX-Retarget" not in response.headers
    attempt.refresh_from_db()
    assert attempt.state == state
    assert fake.get_calls == []  # not even read: a read now could mislead
    assert AuditEntry.objects.count() == entries


@pytest.mark.django_db
def test_check_now_while_mixpanel_cannot_be_read_leaves_it_open(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    fake.get = MixpanelUnavailable("Mixpanel did not answer in time.")
    response = pm_client.post(check_url(attempt), **HTMX)
    assert "Checked Mixpanel; nothing was changed." in said(response)
    assert "Mixpanel did not answer in time." in said(response)
    assert POLL in response.content.decode()
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.UNKNOWN
    assert fake.put_calls == []


@pytest.mark.django_db
def test_check_now_on_an_attempt_already_resolved_shows_its_outcome_and_reads_nothing(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    concluded_upstream(fake)
    reconcile_services.conclusion_reconcile(attempt=attempt, client=fake)
    fake.calls.clear()
    entries = AuditEntry.objects.count()

    response = pm_client.post(check_url(attempt), **HTMX)
    assert "was applied" in said(response)
    assert fake.get_calls == []
    assert AuditEntry.objects.count() == entries


@pytest.mark.django_db
def test_a_viewer_cannot_check_now(client, teammate, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    client.force_login(teammate)
    response = client.post(check_url(attempt), **HTMX)
    assert response.status_code == 403
    assert "Only concluders and admins" in response.content.decode()
    assert fake.get_calls == []
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.UNKNOWN


@pytest.mark.django_db
def test_check_now_for_an_outsider_or_a_missing_attempt_is_not_found(client, outsider, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    client.force_login(outsider)
    assert client.post(check_url(attempt), **HTMX).status_code == 404
    client.force_login(pm)
    missing = reverse("experiments:attempt-check", args=[workspace.pk, attempt.pk + 1000])
    assert client.post(missing, **HTMX).status_code == 404
    assert fake.get_calls == []


@pytest.mark.django_db
def test_check_now_without_javascript_redirects_with_what_it_found(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    concluded_upstream(fake)
    response = pm_client.post(check_url(attempt, "detail"), follow=True)
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("experiments:experiment-detail", args=[workspace.pk, ACTIVE])
    assert "was applied" in html
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.RECONCILED_APPLIED


@pytest.mark.django_db
def test_check_now_answers_get_with_405(pm_client, pm, workspace, fake):
    attempt = open_attempt(workspace, pm, fake)
    assert pm_client.get(check_url(attempt)).status_code == 405
