"""The approval policy (never, when risky, always): its risk rules, the press judging them on one
fresh read, decisions under the same rule, and the policy kept in the audit chain."""

from __future__ import annotations

import datetime as dt
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils.html import escape

from experiments import audit_payloads, auditlog
from experiments.models import (
    ApprovalPolicy,
    AttemptAction,
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    EntryKind,
    Workspace,
)
from experiments.notifications.messages import notification_message
from experiments.selectors import approval_risk
from experiments.selectors.approval_risk import RiskFacts, approval_verdict
from experiments.services import approvals
from experiments.services import plans as plan_services
from experiments.services.attempts import STATE_BLOCKED
from tests.factories import assert_chain_valid, workspace_settings_set
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, install, raw_experiment
from tests.test_services_decide import decide
from tests.test_services_force_conclude import conclude, kinds

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
NOW = START + dt.timedelta(days=9, hours=1)
SEALED_CHANGE = START + dt.timedelta(days=3)
# Two variants planned 50/50, exposed in that split (no sample-ratio warning).
EVEN = {"variants": [{"key": "control", "split": 50}, {"key": "green", "split": 50}]}


def facts(**changes) -> RiskFacts:
    base = {
        "start_date": START,
        "end_date": None,
        "planned_end": START + dt.timedelta(days=14),
        "sample_ratio_mismatch": False,
        "lifts": {"green": ("+0.034", "Conversion"), "red": ("-0.021", "Conversion")},
        "control": "control",
    }
    return RiskFacts(**{**base, **changes})


def verdict(action=AttemptAction.CONCLUSION, *, policy=ApprovalPolicy.RISKY, variant=None, now=NOW, changed=None, **f):
    return approval_verdict(
        policy=policy, action=action, facts=facts(**f), variant=variant, now=now, plan_changed_at=changed
    )


def rules(result) -> list[str]:
    return [rule.rule for rule in result.rules]


# --- The rules, one by one (the pure function) --------------------------------------------------


def test_a_conclusion_before_the_planned_length_needs_approval_and_says_how_far_it_ran():
    result = verdict()
    assert result.needed
    assert rules(result) == [approval_risk.RULE_EARLY]
    assert result.message == "Needs approval: the planned length (14 days) is not reached — 9 days run."


def test_a_conclusion_past_the_planned_length_needs_none():
    result = verdict(now=START + dt.timedelta(days=15))
    assert not result.needed
    assert result.rules == ()
    assert result.message == approval_risk.MSG_NOT_NEEDED


def test_a_sample_ratio_warning_needs_approval():
    result = verdict(now=START + dt.timedelta(days=15), sample_ratio_mismatch=True)
    assert rules(result) == [approval_risk.RULE_SRM]
    assert "sample-ratio warning" in result.message


def test_a_plan_changed_after_its_seal_needs_approval():
    result = verdict(now=START + dt.timedelta(days=15), changed=SEALED_CHANGE)
    assert rules(result) == [approval_risk.RULE_PLAN_CHANGED]
    assert "the plan changed after it was sealed (found changed 2026-11-04 09:00 UTC)" in result.message


def test_every_rule_that_applies_is_named():
    result = verdict(sample_ratio_mismatch=True, changed=SEALED_CHANGE)
    assert rules(result) == [approval_risk.RULE_EARLY, approval_risk.RULE_SRM, approval_risk.RULE_PLAN_CHANGED]


def test_a_decision_shipping_a_variant_worse_than_control_needs_approval():
    late = START + dt.timedelta(days=20)
    ended = START + dt.timedelta(days=15)
    worse = verdict(AttemptAction.DECISION, variant="red", now=late, end_date=ended)
    assert rules(worse) == [approval_risk.RULE_WORSE]
    assert "it ships red, which the results show as worse than control (lift -0.021 on Conversion)" in worse.message
    # Better than control, the control itself, or shipping none: the rule does not apply.
    for variant in ("green", "control", None):
        assert not verdict(AttemptAction.DECISION, variant=variant, now=late, end_date=ended).needed


def test_a_decision_on_an_experiment_ended_early_needs_approval_whatever_it_ships():
    ended = START + dt.timedelta(days=9)
    result = verdict(AttemptAction.DECISION, variant="green", now=START + dt.timedelta(days=30), end_date=ended)
    assert rules(result) == [approval_risk.RULE_EARLY]
    assert "ended before its planned length (14 days) — 9 days run" in result.message


def test_results_that_cannot_be_read_are_said_so_and_do_not_decide():
    ended = START + dt.timedelta(days=15)
    result = verdict(AttemptAction.DECISION, variant="green", now=ended, end_date=ended, lifts=None)
    assert not result.needed
    assert result.unchecked == (approval_risk.UNCHECKED_RESULTS,)
    assert "results could not be read, so this rule could not be checked" in approval_risk.UNCHECKED_RESULTS


def test_no_planned_length_is_said_so():
    result = verdict(planned_end=None)
    assert not result.needed
    assert approval_risk.UNCHECKED_LENGTH in result.unchecked


def test_never_and_always_do_not_look_at_the_rules():
    assert not verdict(policy=ApprovalPolicy.NEVER, sample_ratio_mismatch=True).needed
    always = verdict(policy=ApprovalPolicy.ALWAYS, now=START + dt.timedelta(days=30))
    assert always.needed
    assert rules(always) == [approval_risk.RULE_ALWAYS]


def test_the_experiments_own_data_gives_the_facts_the_page_shows():
    experiment = FakeMixpanel(
        [
            raw_experiment(
                settings={"duration_days": 14},
                variants=[{"key": "control", "split": 50}, {"key": "green", "split": 50}],
                exposures_cache={"control": 1000, "green": 700},
                results_cache={"Conversion": {"green": {"lift": -0.04}}},
            )
        ]
    ).get_experiment(1001, EXP_ID)
    found = approval_risk.risk_facts(experiment)
    assert found.planned_end == START + dt.timedelta(days=14)
    assert found.sample_ratio_mismatch is True
    assert found.lifts == {"green": ("-0.04", "Conversion")}
    assert found.control == "control"


# --- Through the press ------------------------------------------------------------------------


@pytest.fixture
def risky(workspace):
    return workspace_settings_set(workspace, requires_approval=True, approval_when="risky")


def fake_with(**extra) -> FakeMixpanel:
    return FakeMixpanel([raw_experiment(**{**EVEN, "exposures_cache": {"control": 120, "green": 118}, **extra})])


def request_entry(attempt) -> dict:
    return AuditEntry.objects.get(attempt=attempt, kind=EntryKind.APPROVAL_REQUESTED).payload_data


def test_a_press_before_the_planned_length_asks_for_approval_on_one_read(risky, pm):
    fake = fake_with(settings={"duration_days": 60})
    outcome = conclude(risky, pm, fake)
    attempt = ConclusionAttempt.objects.get()
    assert outcome.state == attempt.state == AttemptState.AWAITING_APPROVAL
    assert "It needs approval because the planned length (60 days) is not reached" in outcome.message
    assert len(fake.get_calls) == 1
    assert fake.puts == []
    # The rules are on the attempt and in its hashed request entry, for auditors.
    assert [rule["rule"] for rule in attempt.approval_rules] == [approval_risk.RULE_EARLY]
    payload = request_entry(attempt)
    assert payload["attempt"]["approval_rules"] == attempt.approval_rules
    assert payload["action"] == AttemptAction.CONCLUSION
    assert_chain_valid()


def test_a_press_past_the_planned_length_concludes_at_once_on_the_same_read(risky, pm):
    fake = fake_with(settings={"duration_days": 14})
    outcome = conclude(risky, pm, fake)
    assert outcome.ok
    assert len(fake.get_calls) == 1  # the press's read is the one the PUT's check uses
    assert len(fake.puts) == 1
    assert ConclusionAttempt.objects.get().approval_rules == []
    assert_chain_valid()


def test_a_press_with_a_sample_ratio_warning_asks_for_approval(risky, pm):
    fake = fake_with(settings={"duration_days": 14}, exposures_cache={"control": 1000, "green": 700})
    outcome = conclude(risky, pm, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL
    assert [r["rule"] for r in outcome.attempt.approval_rules] == [approval_risk.RULE_SRM]
    assert fake.puts == []


def test_a_press_after_the_plan_changed_asks_for_approval(risky, pm):
    fake = fake_with(settings={"duration_days": 14})
    # The experiment page's read seals the plan; then someone edits the hypothesis in Mixpanel.
    plan_services.plan_observe(workspace=risky, experiment=fake.get_experiment(1001, EXP_ID))
    fake.state[(1001, EXP_ID)]["hypothesis"] = "A bigger button sells more, after all."
    outcome = conclude(risky, pm, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL
    assert [r["rule"] for r in outcome.attempt.approval_rules] == [approval_risk.RULE_PLAN_CHANGED]
    assert fake.puts == []
    # The press's own read found the change, recorded it, and judged by it.
    changed = AuditEntry.objects.get(kind=EntryKind.PLAN_CHANGED)
    assert "hypothesis" in [c["field"] for c in changed.payload_data["changes"]]
    assert_chain_valid()


def test_a_press_whose_read_fails_sends_nothing_and_asks_nothing(risky, pm):
    fake = fake_with(settings={"duration_days": 60})
    fake.get = RuntimeError("boom")
    outcome = conclude(risky, pm, fake)
    assert outcome.state == AttemptState.FAILED
    assert "could not be read" in outcome.message
    assert len(fake.get_calls) <= 1
    assert fake.puts == []
    assert_chain_valid()


# --- Decisions under the same policy ------------------------------------------------------------


def concluded(**extra) -> FakeMixpanel:
    return FakeMixpanel(
        [
            raw_experiment(
                status="concluded",
                end_date="2026-11-20T10:00:00Z",
                settings={"duration_days": 14},
                **{**EVEN, **extra},
            )
        ]
    )


def test_a_risky_decision_asks_for_approval_and_one_patch_follows_the_approval(risky, pm, second):
    fake = concluded(results_cache={"Conversion": {"green": {"lift": -0.05}}})
    outcome = decide(risky, pm, fake)
    attempt = ConclusionAttempt.objects.get()
    assert outcome.state == attempt.state == AttemptState.AWAITING_APPROVAL
    assert "recording the decision on" in outcome.message
    assert "worse than control" in outcome.message
    assert fake.patches == []
    assert kinds(attempt) == [EntryKind.APPROVAL_REQUESTED]
    assert request_entry(attempt)["action"] == AttemptAction.DECISION

    # A second press is refused while the request waits.
    again = decide(risky, pm, fake)
    assert "waits for approval" in again.message
    assert fake.patches == []

    approved = approvals.attempt_review(
        attempt=ConclusionAttempt.objects.get(pk=attempt.pk),
        user=second,
        decision=approvals.APPROVE,
        note="",
        client=fake,
    )
    assert approved.ok
    assert len(fake.patches) == 1
    assert fake.status_of() == "success"
    # A second approval sends nothing more.
    approvals.attempt_review(
        attempt=ConclusionAttempt.objects.get(pk=attempt.pk),
        user=second,
        decision=approvals.APPROVE,
        note="",
        client=fake,
    )
    assert len(fake.patches) == 1
    assert kinds(ConclusionAttempt.objects.get(pk=attempt.pk)) == [
        EntryKind.APPROVAL_REQUESTED,
        EntryKind.APPROVAL_APPROVED,
        EntryKind.DECISION_SUCCEEDED,
    ]
    assert_chain_valid()


def test_a_decision_request_cannot_be_approved_by_its_requester_and_can_be_withdrawn(risky, pm):
    fake = concluded(results_cache={"Conversion": {"green": {"lift": -0.05}}})
    attempt = decide(risky, pm, fake).attempt
    own = approvals.attempt_review(attempt=attempt, user=pm, decision=approvals.APPROVE, note="", client=fake)
    assert own.message == approvals.MSG_SELF_APPROVAL
    withdrawn = approvals.attempt_review(attempt=attempt, user=pm, decision=approvals.REJECT, note="", client=fake)
    assert withdrawn.state == AttemptState.WITHDRAWN
    assert "your request to record the decision on" in withdrawn.message
    assert fake.patches == []
    assert_chain_valid()


def test_a_decision_that_is_not_risky_is_sent_at_once(risky, pm):
    fake = concluded(results_cache={"Conversion": {"green": {"lift": 0.05}}})
    outcome = decide(risky, pm, fake)
    assert outcome.ok
    assert len(fake.get_calls) == 1
    assert len(fake.patches) == 1


def test_every_decision_asks_where_approval_always_applies(approving, pm):
    fake = concluded(results_cache={"Conversion": {"green": {"lift": 0.05}}})
    outcome = decide(approving, pm, fake)
    assert outcome.state == AttemptState.AWAITING_APPROVAL
    # One read: the request records the experiment as it is, for its approval to check again.
    assert len(fake.get_calls) == 1
    assert outcome.attempt.plan_hash
    assert fake.patches == []
    assert [r["rule"] for r in outcome.attempt.approval_rules] == [approval_risk.RULE_ALWAYS]


def test_verify_audit_catches_an_approval_request_whose_action_was_edited(risky, pm):
    fake = concluded(results_cache={"Conversion": {"green": {"lift": -0.05}}})
    attempt = decide(risky, pm, fake).attempt
    ConclusionAttempt.objects.filter(pk=attempt.pk).update(action=AttemptAction.CONCLUSION)
    with pytest.raises(CommandError) as failed:
        call_command("verify_audit", stdout=StringIO())
    assert "its first entry says 'decision'" in str(failed.value)


def test_verify_audit_catches_edited_approval_rules(risky, pm):
    attempt = conclude(risky, pm, fake_with(settings={"duration_days": 60})).attempt
    ConclusionAttempt.objects.filter(pk=attempt.pk).update(approval_rules=[])
    with pytest.raises(CommandError) as failed:
        call_command("verify_audit", stdout=StringIO())
    assert "approval_rules is []" in str(failed.value)


# --- The policy, set and chained ------------------------------------------------------------------


def test_the_settings_page_sets_the_policy_through_the_chain(client, workspace, ws_admin):
    client.force_login(ws_admin)
    url = reverse("experiments:workspace-settings", args=[workspace.pk])
    page = client.get(url).content.decode()
    assert "Two-person approval: Never / When risky / Always" in page
    response = client.post(url, {"approval_policy": "risky", "approval_window_hours": "24"})
    assert response.status_code == 302
    workspace.refresh_from_db()
    assert workspace.approval_policy == ApprovalPolicy.RISKY
    entry = AuditEntry.objects.filter(kind=EntryKind.SETTINGS_CHANGED).latest("seq")
    assert entry.payload_data["settings"]["approval_when"] == "risky"
    assert "two-person approval applies when risky (was always)" in entry.payload_data["changes"]
    assert any("only when a conclusion or decision is risky" in text for text in entry.payload_data["loosened"])
    assert "every workspace's settings agree" in _verify()
    # Edited in the database, around the chain: verify_audit says so.
    Workspace.objects.filter(pk=workspace.pk).update(approval_when="always")
    with pytest.raises(CommandError) as failed:
        _verify()
    assert "approval_when is 'always'" in str(failed.value)


def test_the_settings_page_refuses_an_unknown_policy(client, workspace, ws_admin):
    client.force_login(ws_admin)
    url = reverse("experiments:workspace-settings", args=[workspace.pk])
    response = client.post(url, {"approval_policy": "sometimes", "approval_window_hours": "24"})
    assert response.status_code == 200
    assert "Choose when two-person approval applies" in response.content.decode()
    assert Workspace.objects.get(pk=workspace.pk).approval_policy == ApprovalPolicy.NEVER


def test_an_old_settings_entry_without_the_scope_still_verifies(workspace):
    # Entries chained before the policy existed carry no approval_when: it reads as always.
    Workspace.objects.filter(pk=workspace.pk).update(requires_approval=True)
    workspace.refresh_from_db()
    old = audit_payloads.workspace_settings(workspace)
    del old["approval_when"]
    auditlog.append_entry(
        kind=EntryKind.SETTINGS_CHANGED,
        workspace=workspace,
        actor_name="before the policy",
        payload={"changes": ["two-person approval required"], "loosened": [], "settings": old},
    )
    assert "every workspace's settings agree" in _verify()
    Workspace.objects.filter(pk=workspace.pk).update(approval_when="risky")
    with pytest.raises(CommandError):
        _verify()


def _verify() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


# --- The dialogs say it before anyone presses -------------------------------------------------------

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_the_force_conclude_dialog_names_the_rule_before_the_press(risky, pm, monkeypatch, client):
    install(monkeypatch, fake_with(settings={"duration_days": 60}))
    client.force_login(pm)
    url = reverse("experiments:experiment-force-conclude", args=[risky.pk, EXP_ID])
    html = client.get(url, **HTMX).content.decode()
    assert "Needs approval: the planned length (60 days) is not reached" in html
    assert ">Ask for approval</button>" in html


def test_the_force_conclude_dialog_says_when_no_approval_is_needed(risky, pm, monkeypatch, client):
    install(monkeypatch, fake_with(settings={"duration_days": 14}))
    client.force_login(pm)
    url = reverse("experiments:experiment-force-conclude", args=[risky.pk, EXP_ID])
    html = client.get(url, **HTMX).content.decode()
    assert escape(approval_risk.MSG_NOT_NEEDED) in html
    assert ">Force conclude</button>" in html


def test_the_decision_dialog_says_per_choice_whether_it_needs_approval(risky, pm, monkeypatch, client, settings):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
    results = {"Conversion": {"green": {"lift": -0.05}}}
    install(monkeypatch, concluded(results_cache=results))
    client.force_login(pm)
    html = client.get(reverse("experiments:experiment-decide", args=[risky.pk, EXP_ID]), **HTMX).content.decode()
    green, keep, control = re.findall(r'id="decide-choice-\d-approval">(.*?)</p>', html, re.S)
    assert "Needs approval: it ships green, which the results show as worse than control" in green
    assert escape(approval_risk.MSG_NOT_NEEDED) in keep
    assert escape(approval_risk.MSG_NOT_NEEDED) in control
    assert "asks a second person to approve a risky decision" in html


def test_the_decision_dialog_says_when_results_cannot_be_read(risky, pm, monkeypatch, client, settings):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
    install(monkeypatch, concluded())
    client.force_login(pm)
    html = client.get(reverse("experiments:experiment-decide", args=[risky.pk, EXP_ID]), **HTMX).content.decode()
    assert "results could not be read, so this rule could not be checked" in html


def test_the_attempt_page_and_the_message_say_why_it_needed_approval(risky, pm, auditor, client):
    attempt = conclude(risky, pm, fake_with(settings={"duration_days": 60})).attempt
    client.force_login(auditor)
    page = client.get(reverse("experiments:audit-detail", args=[attempt.pk])).content.decode()
    assert "Why it needed approval" in page
    assert "The planned length (60 days) is not reached" in page
    entry = AuditEntry.objects.get(attempt=attempt, kind=EntryKind.APPROVAL_REQUESTED)
    body = notification_message(entry=entry, attempt=attempt).body
    assert "Why it needs approval: the planned length (60 days) is not reached" in body


def test_a_decision_request_shows_on_the_experiment_page_and_in_the_inbox(
    risky, pm, second, monkeypatch, client, settings
):
    settings.EXPERIMENT_DETAIL_CACHE_SECONDS = 0
    fake = install(monkeypatch, concluded(results_cache={"Conversion": {"green": {"lift": -0.05}}}))
    decide(risky, pm, fake)
    detail = reverse("experiments:experiment-detail", args=[risky.pk, EXP_ID])
    client.force_login(second)
    page = client.get(detail).content.decode()
    assert "to record the decision on it (ship variant green" in page
    assert "Needs approval because it ships green, which the results show as worse than control" in page
    assert "Approve and record the decision" in page
    home = client.get(reverse("home")).content.decode()
    assert "to record the decision on it: ship variant green" in home
    client.force_login(pm)
    assert "Withdraw my request" in client.get(detail).content.decode()


def test_a_risky_press_refused_by_a_waiting_request_asks_for_nothing(risky, pm, second):
    fake = fake_with(settings={"duration_days": 60})
    first = conclude(risky, pm, fake)
    again = conclude(risky, second, fake)
    assert again.state == STATE_BLOCKED
    assert "waits for approval" in again.message
    refused = ConclusionAttempt.objects.exclude(pk=first.attempt.pk).get()
    assert (refused.state, refused.expires_at, refused.approval_rules) == (AttemptState.FAILED, None, [])
    assert fake.puts == []
    assert_chain_valid()
