"""Twenty people press "Force conclude" on one experiment at once: one PUT, one success.

Runs on PostgreSQL only: the point is many connections racing for the claim's
unique index, which SQLite (one writer, in-memory test database) cannot show.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from experiments.mixpanel import client as mixpanel
from experiments.models import AttemptState, AuditEntry, ConclusionAttempt, ConclusionClaim, EntryKind, Membership, Role
from experiments.services import conclusions as conclusion_services
from experiments.services.attempts import STATE_BLOCKED
from tests.factories import assert_chain_valid

CLICKS = 20
UPSTREAM_LATENCY_MS = 800


def _require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "concurrency test needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite admits one writer "
            "and its in-memory test database cannot show connections racing for the claim"
        )


def _press_all_at_once(workspace, users, experiment_id: str) -> list:
    """Each thread: its own DB connection and Mixpanel client, released at the end."""
    barrier = threading.Barrier(len(users))
    outcomes: list = [None] * len(users)
    errors: list = []

    def press(index: int, user) -> None:
        try:
            client = mixpanel.client_for(workspace)
            barrier.wait(timeout=30)
            outcomes[index] = conclusion_services.experiment_force_conclude(
                workspace=workspace,
                user=user,
                experiment_id=experiment_id,
                experiment_name="Race",
                reason_category="business",
                reason_text=f"click {index}",
                end_date=timezone.now() - dt.timedelta(minutes=1),
                client=client,
            )
        except BaseException as exc:  # surfaced below, with the thread's index
            errors.append((index, exc))
        finally:
            mixpanel.reset_clients()
            connection.close()

    threads = [threading.Thread(target=press, args=(i, u)) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a click never finished"
    assert errors == []
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_twenty_simultaneous_clicks_send_one_put(standin, workspace, pm, django_user_model):
    _require_postgresql()
    users = [pm]
    for n in range(4):  # several people, each clicking several times
        user = django_user_model.objects.create_user(username=f"racer{n}", first_name=f"Racer{n}", password="x")
        Membership.objects.create(user=user, workspace=workspace, role=Role.CONCLUDER)
        users.append(user)
    clickers = [users[i % len(users)] for i in range(CLICKS)]
    experiment = standin.find(1001, status="active")
    # Slow answers to the read and the PUT alike: without the claim, every click would
    # read "active" before the first PUT landed, and send its own.
    standin.set_fault("latency", experiment_id=experiment["id"], latency_ms=UPSTREAM_LATENCY_MS)

    outcomes = _press_all_at_once(workspace, clickers, experiment["id"])

    # Upstream: exactly one PUT ever arrived, and it concluded the experiment.
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    assert standin.experiment(1001, experiment["id"])["status"] == "concluded"

    # Here: one success, every other click a readable refusal that names the winner.
    succeeded = [o for o in outcomes if o.ok]
    blocked = [o for o in outcomes if o.state == STATE_BLOCKED]
    assert len(succeeded) == 1
    assert len(blocked) == CLICKS - 1
    winner = succeeded[0].attempt
    for outcome in blocked:
        assert outcome.blocked_by.pk == winner.pk
        assert outcome.message.startswith("Not sent: “Race” ")
        assert (
            f"is already being concluded by {winner.actor_name} since" in outcome.message
            or f"was already concluded by {winner.actor_name} at" in outcome.message
        )

    assert ConclusionAttempt.objects.filter(state=AttemptState.SUCCEEDED).count() == 1
    assert ConclusionAttempt.objects.filter(state=AttemptState.FAILED).count() == CLICKS - 1
    assert list(ConclusionClaim.objects.values_list("attempt_id", flat=True)) == [winner.pk]
    # Every click is on the record, and the concurrent appends formed one chain.
    assert AuditEntry.objects.filter(kind=EntryKind.CONCLUSION_REQUESTED).count() == CLICKS
    assert AuditEntry.objects.filter(kind=EntryKind.CONCLUSION_SUCCEEDED).count() == 1
    assert AuditEntry.objects.filter(kind=EntryKind.CONCLUSION_FAILED).count() == CLICKS - 1
    assert_chain_valid()  # one chain, and projections agree with their entries


@pytest.mark.django_db(transaction=True)
def test_simultaneous_clicks_on_different_experiments_do_not_block_each_other(standin, workspace, pm):
    _require_postgresql()
    experiments = [e for e in standin.experiments(1001) if e["status"] == "active" and not e["deleted"]]
    experiments = [e for e in experiments if standin.builtin_fault(1001, e["id"]) is None][:4]
    assert len(experiments) == 4
    standin.set_fault("latency", method="PUT", latency_ms=300)
    barrier = threading.Barrier(len(experiments))
    outcomes: dict[str, object] = {}

    def press(experiment_id: str) -> None:
        try:
            client = mixpanel.client_for(workspace)
            barrier.wait(timeout=30)
            outcomes[experiment_id] = conclusion_services.experiment_force_conclude(
                workspace=workspace,
                user=pm,
                experiment_id=experiment_id,
                experiment_name="",
                reason_category="harmful",
                reason_text="",
                end_date=timezone.now() - dt.timedelta(minutes=1),
                client=client,
            )
        finally:
            mixpanel.reset_clients()
            connection.close()

    threads = [threading.Thread(target=press, args=(e["id"],)) for e in experiments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert all(outcomes[e["id"]].ok for e in experiments), [o.message for o in outcomes.values()]
    assert len(standin.requests(method="PUT")) == len(experiments)
    assert ConclusionClaim.objects.count() == len(experiments)
