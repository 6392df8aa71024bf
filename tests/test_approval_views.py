"""Two-person approval on the pages: the request on the list and the experiment page, the
approve, reject and withdraw buttons, and every refusal as a readable answer."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse

from experiments.models import AttemptState, ConclusionAttempt, Membership, Role
from tests.factories import _clock_shifted, said
from tests.fake_mixpanel import FakeMixpanel, exp_json, install
from tests.test_force_conclude_views import HTMX, conclude_url, detail_url, form_data, list_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch, FakeMixpanel([exp_json(1, "active"), exp_json(2, "active")]))


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def review_url(attempt) -> str:
    return reverse("experiments:attempt-review", args=[attempt.workspace_id, attempt.pk])


def status_url(attempt) -> str:
    return reverse("experiments:attempt-status", args=[attempt.workspace_id, attempt.pk])


def ask(approving, pm) -> ConclusionAttempt:
    response = logged_in(pm).post(conclude_url(approving), form_data(), **HTMX)
    assert response.status_code == 200
    assert "Asked for approval" in said(response)
    return ConclusionAttempt.objects.get(state=AttemptState.AWAITING_APPROVAL)


def test_the_dialog_says_a_second_person_must_approve(approving, pm, fake):
    html = logged_in(pm).get(conclude_url(approving), **HTMX).content.decode()
    assert "Needs approval: this workspace asks a second person to approve every Force conclude" in html
    assert ">Ask for approval</button>" in html


def test_the_dialog_without_approval_ends_the_analysis_at_once(workspace, pm, fake):
    html = logged_in(pm).get(conclude_url(workspace), **HTMX).content.decode()
    assert "second person" not in html
    assert ">Force conclude</button>" in html


def test_the_press_answers_with_the_waiting_request_and_sends_nothing(approving, pm, fake):
    attempt = ask(approving, pm)
    assert fake.puts == []
    # On the list a chip and the one action the requester has; on the experiment page the details.
    html = logged_in(pm).get(list_url(approving)).content.decode()
    assert 'Awaiting approval<span class="visually-hidden">' in html
    assert ">Withdraw<span" in html
    assert "Approve and force conclude" not in html
    html = logged_in(pm).get(detail_url(approving)).content.decode()
    assert "Awaiting approval:" in html
    assert "Withdraw my request" in html
    assert "Approve and force conclude" not in html
    assert attempt.actor == pm


def test_another_concluder_sees_approve_and_reject_and_a_viewer_sees_neither(approving, pm, second, teammate, fake):
    ask(approving, pm)
    # The list's row leads to the experiment page, where Approve and Reject are.
    listing = logged_in(second).get(list_url(approving)).content.decode()
    assert ">Review<span" in listing
    html = logged_in(second).get(detail_url(approving)).content.decode()
    assert "Approve and force conclude" in html
    assert "Reject" in html
    viewer_html = logged_in(teammate).get(detail_url(approving)).content.decode()
    assert "Awaiting approval:" in viewer_html
    assert "Approve and force conclude" not in viewer_html
    assert "Withdraw my request" not in viewer_html


def test_approving_sends_one_put_and_draws_the_row_concluded(approving, pm, second, fake):
    attempt = ask(approving, pm)
    data = {"decision": "approve", "note": "Go.", "back": "list", "list_query": ""}
    response = logged_in(second).post(review_url(attempt), data, **HTMX)
    assert response.status_code == 200
    assert "Concluded:" in said(response)
    assert response["HX-Retarget"].startswith("#exp-")
    assert len(fake.puts) == 1
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.SUCCEEDED
    # A second press of Approve (a double click) sends nothing more and says why.
    again = logged_in(second).post(review_url(attempt), data, **HTMX)
    assert "already approved" in said(again)
    assert len(fake.puts) == 1


def test_self_approval_is_refused_in_place(approving, pm, fake):
    attempt = ask(approving, pm)
    response = logged_in(pm).post(review_url(attempt), {"decision": "approve"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "you cannot approve it" in said(response)
    assert "Awaiting approval" not in html or ">Withdraw<span" in html
    assert fake.puts == []


def test_reject_without_a_note_asks_for_one_and_with_one_frees_the_experiment(approving, pm, second, fake):
    attempt = ask(approving, pm)
    refused = logged_in(second).post(review_url(attempt), {"decision": "reject", "note": ""}, **HTMX)
    assert "Say why you reject it" in said(refused)
    response = logged_in(second).post(review_url(attempt), {"decision": "reject", "note": "Not <b>yet</b>."}, **HTMX)
    html = response.content.decode()
    assert "Rejected:" in said(response)
    assert "Force conclude…" in html  # the experiment may be asked about again
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.REJECTED
    # The note is the reviewer's text: escaped wherever it shows.
    audit_html = logged_in(second).get(reverse("experiments:audit-detail", args=[attempt.pk])).content.decode()
    assert "Not &lt;b&gt;yet&lt;/b&gt;." in audit_html
    assert "<b>yet</b>" not in audit_html
    assert fake.puts == []


def test_without_javascript_the_review_redirects_back_with_a_message(approving, pm, second, fake):
    attempt = ask(approving, pm)
    response = logged_in(second).post(review_url(attempt) + "?back=detail", {"decision": "approve"}, follow=True)
    assert response.redirect_chain[-1][0] == detail_url(approving)
    assert "Concluded:" in response.content.decode()
    assert len(fake.puts) == 1


def test_a_viewer_posting_by_hand_gets_a_readable_403(approving, pm, teammate, fake):
    attempt = ask(approving, pm)
    response = logged_in(teammate).post(review_url(attempt), {"decision": "approve"}, **HTMX)
    assert response.status_code == 403
    assert "cannot review this request" in response.content.decode()
    assert fake.puts == []


@pytest.mark.parametrize("decision", ["", "maybe", "APPROVE"])
def test_an_unknown_decision_is_refused_readably(approving, pm, second, fake, decision):
    attempt = ask(approving, pm)
    response = logged_in(second).post(review_url(attempt), {"decision": decision}, **HTMX)
    assert response.status_code == 200
    assert "Only concluders and admins" in said(response)
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.AWAITING_APPROVAL


def test_the_waiting_line_polls_and_turns_into_the_outcome(approving, pm, second, fake):
    attempt = ask(approving, pm)
    suffix = "?back=list&list_query=&was=awaiting"
    line = logged_in(pm).get(status_url(attempt) + suffix, **HTMX).content.decode()
    assert 'Awaiting approval<span class="visually-hidden">' in line
    assert 'hx-trigger="every 10s"' in line
    logged_in(second).post(review_url(attempt), {"decision": "approve"}, **HTMX)
    after = logged_in(pm).get(status_url(attempt) + suffix, **HTMX)
    assert after["HX-Retarget"].startswith("#exp-")
    assert "Quinn" in said(after)


def test_an_expired_request_shows_as_expired_and_cannot_be_approved(approving, pm, second, fake):
    attempt = ask(approving, pm)
    with _clock_shifted(dt.timedelta(hours=24, minutes=1)):
        response = logged_in(second).post(review_url(attempt), {"decision": "approve"}, **HTMX)
    assert "expired" in said(response)
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.EXPIRED
    assert fake.puts == []


def test_the_audit_trail_shows_who_approved_and_the_export_carries_it(approving, pm, second, fake, auditor):
    attempt = ask(approving, pm)
    logged_in(second).post(review_url(attempt), {"decision": "approve", "note": "Checked the SRM."})
    html = logged_in(auditor).get(reverse("experiments:audit-detail", args=[attempt.pk])).content.decode()
    assert "Request approved" in html
    assert "Approval requested" in html
    assert "Checked the SRM." in html
    export = logged_in(auditor).get(reverse("experiments:audit-export", args=["csv"]))
    text = b"".join(export.streaming_content).decode()
    header = text.splitlines()[0].split(",")
    assert {"reviewer_name", "review_note", "reviewed_at", "approval_expires_at"} <= set(header)
    assert "Checked the SRM." in text


def test_admins_approve_too_and_a_superuser_counts_as_an_admin(approving, pm, ws_admin, fake):
    attempt = ask(approving, pm)
    Membership.objects.filter(user=ws_admin).update(role=Role.ADMIN)
    response = logged_in(ws_admin).post(review_url(attempt), {"decision": "approve"}, **HTMX)
    assert "Concluded:" in said(response)
    assert len(fake.puts) == 1
