"""Stale approvals are refused: a request records the experiment as read when asked, and an
approval finding it changed in Mixpanel since closes it unsent, so the requester can ask again."""

from __future__ import annotations

import pytest
from django.urls import reverse

from experiments.mixpanel.errors import MixpanelUnavailable
from experiments.mixpanel.experiment import parse_experiment
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind
from experiments.services import approvals
from experiments.services import plans as plan_services
from tests.factories import assert_chain_valid
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, raw_experiment
from tests.test_api import document, make_caller, press  # noqa: F401  (the fixtures, shared)
from tests.test_approvals import request_it, review
from tests.test_services_force_conclude import conclude, kinds

SETTINGS = {"duration_days": 14}


def upstream() -> FakeMixpanel:
    return FakeMixpanel([raw_experiment(modified="2026-11-02T08:00:00Z", settings=dict(SETTINGS))])


@pytest.mark.django_db
def test_a_request_records_modified_and_the_plan_hash_read_at_the_press(approving, pm):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    assert fake.get_calls == [EXP_ID]
    assert attempt.experiment_modified.isoformat() == "2026-11-02T08:00:00+00:00"
    assert len(attempt.plan_hash) == 64
    payload = ConclusionAttempt.objects.get().entries.get().payload_data["attempt"]
    assert payload["plan_hash"] == attempt.plan_hash
    # The read sealed the plan: the request was the first sight of it active.
    assert AuditEntry.objects.filter(kind=EntryKind.PLAN_SEALED, experiment_id=EXP_ID).count() == 1
    assert_chain_valid()


@pytest.mark.django_db
def test_a_press_asking_for_approval_is_refused_when_the_read_fails(approving, pm):
    fake = upstream()
    fake.get = MixpanelUnavailable("Mixpanel did not answer in time.")
    outcome = conclude(approving, pm, fake)
    assert outcome.attempt is None
    assert outcome.failure == "upstream"
    assert "could not be read from Mixpanel" in outcome.message
    assert not ConclusionAttempt.objects.exists()
    assert fake.puts == []


@pytest.mark.django_db
def test_an_approval_after_the_experiment_changed_upstream_is_refused_and_sends_nothing(approving, pm, second):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    fake.state[(1001, EXP_ID)].update(modified="2026-11-03T09:15:00Z", settings={"duration_days": 7})
    outcome = review(attempt, second, approvals.APPROVE, "Fine.", fake)
    attempt.refresh_from_db()
    assert outcome.state == attempt.state == AttemptState.STALE
    assert outcome.failure == "conflict"
    assert "changed in Mixpanel at 2026-11-03 09:15 UTC since the request: settings.duration_days" in outcome.message
    assert fake.puts == []
    assert not ConclusionClaim.objects.exists()  # released: the requester can ask again
    assert attempt.reviewer_id is None  # nobody rejected it
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED, EntryKind.APPROVAL_STALE]
    stale = attempt.entries.order_by("-seq").first()
    assert stale.actor_id == second.pk
    assert stale.payload_data["changes"][0] == {"field": "settings.duration_days", "before": 14, "after": 7}
    assert stale.payload_data["sent"] is False
    # The approval's read also recorded the plan change in the chain.
    assert AuditEntry.objects.filter(kind=EntryKind.PLAN_CHANGED, experiment_id=EXP_ID).count() == 1
    again = conclude(approving, pm, fake)
    assert again.state == AttemptState.AWAITING_APPROVAL
    assert_chain_valid()


@pytest.mark.django_db
def test_a_change_of_modified_alone_is_stale_too_and_says_no_part_of_the_plan_changed(approving, pm, second):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    fake.state[(1001, EXP_ID)]["modified"] = "2026-11-03T09:15:00Z"
    outcome = review(attempt, second, approvals.APPROVE, "", fake)
    assert outcome.state == AttemptState.STALE
    assert approvals.STALE_ONLY_MODIFIED in outcome.message
    assert fake.puts == []


@pytest.mark.django_db
def test_an_unchanged_experiment_is_approved_and_sent_once(approving, pm, second):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    outcome = review(attempt, second, approvals.APPROVE, "", fake)
    assert outcome.ok
    assert len(fake.puts) == 1


@pytest.mark.django_db
def test_when_the_check_cannot_read_the_request_still_waits(approving, pm, second):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    fake.get = MixpanelUnavailable("Mixpanel did not answer in time.")
    outcome = review(attempt, second, approvals.APPROVE, "", fake)
    attempt.refresh_from_db()
    assert attempt.state == AttemptState.AWAITING_APPROVAL
    assert outcome.failure == "upstream"
    assert fake.puts == []


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_409_with_the_reason_when_an_approval_is_stale(make_caller, pm, second, approving, standin):  # noqa: F811
    experiment = standin.find(1001, status="active")
    asked = press(make_caller(pm), approving, experiment["id"])
    assert asked.status_code == 202
    attempt_id = asked.json()["attempt"]["id"]
    standin.set_status(1001, experiment["id"], "active", modified="2030-01-02T03:04:05Z", hypothesis="Changed after")
    refused = make_caller(second)("POST", f"/attempts/{attempt_id}/approve", json={})
    assert refused.status_code == 409
    assert "since the request: hypothesis" in refused.json()["detail"]
    assert standin.requests(method="PUT") == []


@pytest.mark.django_db
def test_the_attempt_page_and_the_audit_list_show_a_stale_request(approving, pm, second, client):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    fake.state[(1001, EXP_ID)].update(modified="2026-11-03T09:15:00Z", hypothesis="Blue converts better.")
    review(attempt, second, approvals.APPROVE, "", fake)
    client.force_login(pm)
    detail = client.get(reverse("experiments:audit-detail", args=[attempt.pk])).content.decode()
    assert "Stale: changed since the request" in detail
    assert "since the request: hypothesis" in detail
    listing = client.get(reverse("experiments:audit-list"), {"outcome": "stale"}).content.decode()
    assert "outcome-stale" in listing


@pytest.mark.django_db
def test_the_fields_are_named_even_when_a_page_read_recorded_the_change_first(approving, pm, second):
    fake = upstream()
    attempt = request_it(approving, pm, fake)
    fake.state[(1001, EXP_ID)].update(modified="2026-11-03T09:15:00Z", settings={"duration_days": 28})
    # Someone opened the experiment page in between: the seal already moved to the new plan.
    plan_services.plan_observe(workspace=approving, experiment=parse_experiment(fake.state[(1001, EXP_ID)]))
    outcome = review(attempt, second, approvals.APPROVE, "", fake)
    assert outcome.state == AttemptState.STALE
    assert "since the request: settings.duration_days" in outcome.message
    assert fake.puts == []
