"""The approval inbox on the home page, the list's Waiting tabs, and the page updating in place
after an approval, a rejection or a withdrawal, as after a direct press."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse

from experiments.models import AttemptState, ConclusionAttempt, Membership, Role
from tests.factories import said
from tests.fake_mixpanel import FakeMixpanel, exp_json, install
from tests.test_force_conclude_views import HTMX, conclude_url, form_data, list_url

pytestmark = pytest.mark.django_db

ACTIVE = "00000000-0000-4000-8000-000000000001"


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch, FakeMixpanel([exp_json(1, "active"), exp_json(2, "active"), exp_json(3, "active")]))


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask(approving, pm, experiment_id: str = ACTIVE) -> ConclusionAttempt:
    url = reverse("experiments:experiment-force-conclude", args=[approving.pk, experiment_id])
    response = logged_in(pm).post(url, {**form_data(), "reason_text": "The lift is clear."}, **HTMX)
    assert "Asked for approval" in said(response)
    return ConclusionAttempt.objects.filter(state=AttemptState.AWAITING_APPROVAL).latest("id")


def review(user, attempt, decision: str, note: str = "", back: str = "home"):
    url = reverse("experiments:attempt-review", args=[attempt.workspace_id, attempt.pk]) + f"?back={back}"
    return logged_in(user).post(url, {"decision": decision, "note": note}, **HTMX)


def section(html: str, section_id: str) -> str:
    found = re.search(rf'<section id="{section_id}".*?</section>', html, re.S)
    return unescape(found.group(0)) if found else ""


def test_an_approver_finds_the_request_first_on_the_home_page_with_its_reason_and_expiry(approving, pm, second, fake):
    attempt = ask(approving, pm)
    html = logged_in(second).get(reverse("home")).content.decode()
    inbox = section(html, "needs-approval")
    assert html.index('id="needs-approval"') < html.index('class="workspace-list"')
    assert "Needs your approval" in inbox
    assert "Experiment 00001" in inbox
    assert "Pat (pat)" in inbox
    assert "reached significance, “The lift is clear.”" in inbox
    assert "expires" in inbox
    assert f'hx-post="/w/{approving.pk}/attempts/{attempt.pk}/review/?back=home"' in inbox
    assert "Approve and force conclude" in inbox
    assert ">Reject<" in inbox
    # The requester's own inbox is empty: they may not approve it. Their request is listed apart.
    own = logged_in(pm).get(reverse("home")).content.decode()
    assert "Nothing waits for your approval." in section(own, "needs-approval")
    assert "Waiting for Quinn (quinn) to approve it" in section(own, "your-requests")


def test_a_viewer_has_no_inbox(approving, pm, teammate, fake):
    ask(approving, pm)
    html = logged_in(teammate).get(reverse("home")).content.decode()
    assert 'id="needs-approval"' not in html


def test_approving_from_the_inbox_sends_once_and_updates_the_counts_in_place(approving, pm, second, fake):
    attempt = ask(approving, pm)
    response = review(second, attempt, "approve", "Go.")
    html = response.content.decode()
    assert len(fake.puts) == 1
    assert f'<li class="inbox-item" id="request-{attempt.pk}">' in html
    assert "You approved Pat (pat)'s request. Concluded:" in unescape(html)
    assert "Approve and force conclude" not in html
    # Out of band: the inbox's count and the workspace card's counts.
    assert re.search(r'<span id="inbox-count" class="count-pill" hx-swap-oob="true">0<', html)
    assert f'id="workspace-counts-{approving.pk}" aria-label="Experiments of Growth" hx-swap-oob="true"' in html
    assert "0 awaiting approval" in html
    # A second press of Approve sends nothing more.
    again = review(second, attempt, "approve")
    assert "already approved" in unescape(said(again))
    assert len(fake.puts) == 1


def test_a_rejection_from_the_inbox_needs_a_note_and_the_requester_reads_it(approving, pm, second, fake):
    attempt = ask(approving, pm)
    refused = review(second, attempt, "reject", "")
    assert "Say why you reject it" in refused.content.decode()
    assert "Approve and force conclude" in refused.content.decode()  # still there to act on
    review(second, attempt, "reject", "Wait for the <b>holiday</b> traffic.")
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.REJECTED
    own = section(logged_in(pm).get(reverse("home")).content.decode(), "your-requests")
    assert "Rejected by Quinn (quinn):" in own
    assert "Wait for the <b>holiday</b> traffic." in own  # unescaped here: escaped in the page
    page = logged_in(pm).get(reverse("experiments:experiment-detail", args=[approving.pk, ACTIVE])).content.decode()
    assert "was rejected by Quinn (quinn)" in page
    assert "Wait for the &lt;b&gt;holiday&lt;/b&gt; traffic." in page
    assert fake.puts == []


def test_the_requester_withdraws_from_home(approving, pm, second, fake):
    attempt = ask(approving, pm)
    response = review(pm, attempt, "reject")
    assert "Withdrawn: your request to force conclude" in unescape(response.content.decode())
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.WITHDRAWN
    assert "You withdrew it. Nothing was sent." in section(
        logged_in(pm).get(reverse("home")).content.decode(), "your-requests"
    )


def test_without_javascript_a_review_from_home_comes_back_home(approving, pm, second, fake):
    attempt = ask(approving, pm)
    url = reverse("experiments:attempt-review", args=[approving.pk, attempt.pk]) + "?back=home"
    response = logged_in(second).post(url, {"decision": "approve"})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_the_home_counts_lead_an_approver_to_the_inbox(approving, pm, second, fake):
    ask(approving, pm)
    html = logged_in(second).get(reverse("home")).content.decode()
    assert '<a href="/#needs-approval">1 awaiting approval' in html


# --- The list's Waiting tabs ---------------------------------------------------------------


def test_the_awaiting_approval_tab_lists_only_the_requests(approving, pm, second, fake):
    ask(approving, pm)
    html = logged_in(second).get(list_url(approving)).content.decode()
    assert re.search(r'>Awaiting approval <span class="count">1</span>', html)
    assert re.search(r'>Being concluded <span class="count">0</span>', html)
    tab = logged_in(second).get(list_url(approving) + "?status=awaiting").content.decode()
    rows = re.findall(r'<tr id="exp-', tab)
    assert len(rows) == 1
    assert "Experiment 00001" in tab
    assert "Experiment 00002" not in tab
    assert 'aria-current="page">Awaiting approval' in tab


def test_the_waiting_tabs_hide_while_nothing_waits_where_approval_is_off(pm_client, workspace, fake, settings):
    settings.OWED_MAX_RUNNING_DAYS = 100_000  # the year-old experiments owe no decision either
    html = pm_client.get(list_url(workspace)).content.decode()
    assert '<nav id="waiting-tabs" aria-label="Waiting" class="tab-groups waiting-tabs" hidden>' in html


# --- In place, as after a direct press -----------------------------------------------------


def test_approving_on_the_experiment_page_redraws_its_header(approving, pm, second, fake):
    attempt = ask(approving, pm)
    response = review(second, attempt, "approve", back="detail")
    html = response.content.decode()
    assert response["HX-Retarget"] == "#conclude-section"
    header = html[html.index('<header class="experiment-header card" id="experiment-header" hx-swap-oob="true">') :]
    assert '<span class="badge status-concluded">concluded</span>' in header
    assert 'id="experiment-end" hx-swap-oob="true"' in html


def test_a_review_on_the_list_moves_the_tab_counts(approving, pm, second, fake):
    attempt = ask(approving, pm)
    logged_in(second).get(list_url(approving))
    response = review(second, attempt, "reject", "Not yet.", back="list&list_query=")
    html = response.content.decode()
    assert '<nav id="waiting-tabs" aria-label="Waiting" class="tab-groups waiting-tabs" hx-swap-oob="true">' in html
    assert re.search(r'>Awaiting approval <span class="count">0</span>', html)
    other = ask(approving, pm, "00000000-0000-4000-8000-000000000002")
    response = review(second, other, "approve", back="list&list_query=")
    html = response.content.decode()
    assert 'id="status-tabs" aria-label="Status" class="tab-groups" hx-swap-oob="true"' in html
    assert re.search(r'Ended, not decided <span class="count">1</span>', html)
    assert "showToast" in json.dumps(dict(response.headers))


def test_asking_for_approval_on_the_list_counts_it_at_once(approving, pm, fake):
    logged_in(pm).get(list_url(approving))
    response = logged_in(pm).post(conclude_url(approving), form_data(), **HTMX)
    html = response.content.decode()
    assert re.search(r'>Awaiting approval <span class="count">1</span>', html)


def test_the_experiment_page_names_who_may_approve(approving, pm, second, ws_admin, teammate, fake):
    ask(approving, pm)
    Membership.objects.filter(user=ws_admin).update(role=Role.ADMIN)
    page = logged_in(teammate).get(reverse("experiments:experiment-detail", args=[approving.pk, ACTIVE]))
    assert "Ada (ada) or Quinn (quinn) may approve it by" in unescape(page.content.decode())
