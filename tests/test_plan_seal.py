"""The plan is sealed when first seen active: once per experiment, changes recorded with their
difference, and verify_audit catching a sealed plan edited in the database."""

from __future__ import annotations

import datetime as dt
import threading
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from experiments.mixpanel.experiment import parse_experiment
from experiments.mixpanel.plan import experiment_plan, plan_changes
from experiments.models import AuditEntry, EntryKind, SealedPlan
from experiments.selectors import plans as plan_selectors
from experiments.services import plans as plan_services
from experiments.services import schedules
from tests.factories import assert_chain_valid
from tests.fake_mixpanel import EXP_ID, FakeMixpanel, install, raw_experiment

pytestmark = pytest.mark.django_db


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def experiment(**extra):
    """An active experiment that started an hour ago, with a planned length in its settings."""
    data = {
        "start_date": iso(timezone.now() - dt.timedelta(hours=1)),
        "modified": "2026-11-01T09:00:00Z",
        "hypothesis": "Green converts better.",
        "variants": [{"key": "control", "split": 50}, {"key": "green", "split": 50}],
        "metrics": [{"name": "Conversion"}],
        "settings": {"duration_days": 14, "confidence": 0.95},
    }
    data.update(extra)
    return parse_experiment(raw_experiment(**data))


def verify() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_the_plan_in_canonical_form_leaves_modified_out_of_its_hash():
    one = experiment_plan(experiment(modified="2026-11-01T09:00:00Z"))
    two = experiment_plan(
        experiment(modified="2026-11-05T09:00:00Z", settings={"confidence": 0.95, "duration_days": 14})
    )
    assert one.hash == two.hash
    assert one.modified != two.modified
    assert one.text.startswith('{"hypothesis":"Green converts better."')
    assert experiment_plan(experiment(settings={"duration_days": 21, "confidence": 0.95})).hash != one.hash


def test_plan_changes_name_each_field_with_before_and_after():
    before = experiment_plan(experiment()).data
    after = experiment_plan(experiment(settings={"duration_days": 21, "confidence": 0.95}, hypothesis="Other")).data
    assert plan_changes(before, after) == [
        {"field": "hypothesis", "before": "Green converts better.", "after": "Other"},
        {"field": "settings.duration_days", "before": 14, "after": 21},
    ]


def test_the_first_sight_of_an_active_experiment_seals_its_plan(workspace):
    sealed = plan_services.plan_observe(workspace=workspace, experiment=experiment())
    assert sealed is not None
    assert not sealed.as_first_seen
    entry = AuditEntry.objects.get(kind=EntryKind.PLAN_SEALED)
    assert entry.experiment_id == EXP_ID
    assert entry.attempt_id is None
    payload = entry.payload_data["sealed"]
    assert payload["plan"]["settings"] == {"confidence": 0.95, "duration_days": 14}
    assert payload["plan_hash"] == sealed.plan_hash == experiment_plan(experiment()).hash
    assert payload["modified"] == "2026-11-01T09:00:00.000000Z"
    assert payload["as_first_seen"] is False
    # Read again, unchanged: nothing more is written.
    plan_services.plan_observe(workspace=workspace, experiment=experiment())
    assert AuditEntry.objects.filter(kind__in=[EntryKind.PLAN_SEALED, EntryKind.PLAN_CHANGED]).count() == 1
    assert plan_selectors.plan_changed_since_seal(workspace=workspace, experiment_id=EXP_ID) is None
    assert "every sealed plan agrees" in verify()


def test_a_draft_is_not_sealed_and_one_seen_late_is_sealed_as_first_seen(workspace):
    assert plan_services.plan_observe(workspace=workspace, experiment=experiment(status="draft")) is None
    assert not SealedPlan.objects.exists()
    late = experiment(start_date=iso(timezone.now() - dt.timedelta(days=3)))
    sealed = plan_services.plan_observe(workspace=workspace, experiment=late)
    assert sealed.as_first_seen
    assert AuditEntry.objects.get(kind=EntryKind.PLAN_SEALED).payload_data["sealed"]["as_first_seen"] is True
    assert plan_selectors.plan_status(workspace=workspace, experiment_id=EXP_ID).as_first_seen


def test_a_plan_change_is_recorded_with_its_difference(workspace):
    plan_services.plan_observe(workspace=workspace, experiment=experiment())
    changed = experiment(settings={"duration_days": 7, "confidence": 0.95}, modified="2026-11-03T10:00:00Z")
    plan_services.plan_observe(workspace=workspace, experiment=changed)
    plan_services.plan_observe(workspace=workspace, experiment=changed)  # seen again: told once
    entry = AuditEntry.objects.get(kind=EntryKind.PLAN_CHANGED)
    payload = entry.payload_data
    assert payload["changes"] == [
        {"field": "settings.duration_days", "before": 14, "after": 7},
        {"field": "modified", "before": "2026-11-01T09:00:00.000000Z", "after": "2026-11-03T10:00:00.000000Z"},
    ]
    assert payload["previous_hash"] == experiment_plan(experiment()).hash
    assert payload["sealed"]["plan_hash"] == experiment_plan(changed).hash
    when = plan_selectors.plan_changed_since_seal(workspace=workspace, experiment_id=EXP_ID)
    assert when is not None
    assert when == SealedPlan.objects.get().changed_at
    status = plan_selectors.plan_status(workspace=workspace, experiment_id=EXP_ID)
    assert [change.fields for change in status.changes] == ["settings.duration_days, modified"]
    assert status.changes[0].rows[0] == ("settings.duration_days", "14", "7")
    assert_chain_valid()
    assert "every sealed plan agrees" in verify()


@pytest.mark.parametrize(
    "edit",
    [
        {"plan": '{"hypothesis":"edited"}'},
        {"as_first_seen": True},
        {"sealed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
    ],
    ids=["plan", "as_first_seen", "sealed_at"],
)
def test_verify_audit_fails_when_a_sealed_plan_is_edited_in_the_database(workspace, edit):
    plan_services.plan_observe(workspace=workspace, experiment=experiment())
    SealedPlan.objects.update(**edit)
    with pytest.raises(CommandError, match=r"sealed plan\(s\) disagree") as failure:
        verify()
    assert f"{next(iter(edit))} is" in str(failure.value)


def test_verify_audit_fails_when_a_seal_row_is_deleted(workspace):
    plan_services.plan_observe(workspace=workspace, experiment=experiment())
    SealedPlan.objects.all().delete()
    with pytest.raises(CommandError, match="its row is gone"):
        verify()


def test_the_experiment_page_shows_the_seal_and_what_changed(pm_client, workspace, monkeypatch):
    fake = install(monkeypatch, FakeMixpanel([dict(experiment().raw)]))
    url = reverse("experiments:experiment-detail", args=[workspace.pk, EXP_ID])
    page = pm_client.get(url)
    text = page.content.decode()
    assert page.status_code == 200
    assert "Plan sealed on" in text
    assert "unchanged since" in text
    fake.state[(1001, EXP_ID)]["settings"] = {"duration_days": 7, "confidence": "<script>x</script>"}
    cache.clear()
    text = pm_client.get(url).content.decode()
    assert "The plan changed after the seal" in text
    assert "settings.confidence, settings.duration_days" in text
    assert "<script>x</script>" not in text


@pytest.mark.django_db(transaction=True)
def test_the_seal_is_written_once_however_many_processes_read_at_once(workspace):
    if connection.vendor != "postgresql":
        pytest.skip("readers racing for the seal's unique index need PostgreSQL; SQLite admits one writer")
    readers = 8
    barrier = threading.Barrier(readers)
    errors: list = []
    seen = experiment()

    def read() -> None:
        try:
            barrier.wait(timeout=30)
            plan_services.plan_observe(workspace=workspace, experiment=seen)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert SealedPlan.objects.count() == 1
    assert AuditEntry.objects.filter(kind=EntryKind.PLAN_SEALED).count() == 1
    assert SealedPlan.objects.get().seal_entry_id == AuditEntry.objects.get(kind=EntryKind.PLAN_SEALED).pk
    assert_chain_valid()


def test_the_audit_list_shows_plans_and_schedules_and_the_csv_neutralises_mixpanel_text(client, auditor, workspace, pm):
    risky = parse_experiment(dict(experiment().raw, name="=HYPERLINK(1)<b>"))
    plan_services.plan_observe(workspace=workspace, experiment=risky)
    schedules.schedule_set(
        workspace=workspace,
        user=pm,
        experiment_id=EXP_ID,
        experiment_name=risky.name,
        run_at=timezone.now() + dt.timedelta(days=1),
        reason_category="significance",
        reason_text="Planned length.",
    )
    client.force_login(auditor)
    html = client.get(reverse("experiments:audit-list"), {"action": "plans"}).content.decode()
    assert "Plans and schedules: each plan as first seen" in html
    assert "plan of “=HYPERLINK(1)&lt;b&gt;” sealed" in html
    assert "force conclude of “=HYPERLINK(1)&lt;b&gt;” scheduled for" in html
    export = b"".join(
        client.get(reverse("experiments:audit-export", args=["csv"]), {"action": "plans"}).streaming_content
    ).decode()
    assert "plan of “=HYPERLINK(1)<b>” sealed" in export
    assert "\n=" not in export
    assert ",=" not in export
    # The attempt views leave them out.
    assert "HYPERLINK" not in client.get(reverse("experiments:audit-list")).content.decode()
