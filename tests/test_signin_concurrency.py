"""First sign-ins racing on PostgreSQL: the same person in two tabs, and two people with one name.

PostgreSQL only: many connections racing for the unique indexes of usernames and
identities, which SQLite (one writer at a time) cannot show.
"""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from experiments.models import ExternalIdentity
from experiments.services import signin as signin_services

RACERS = 8


def _race(profiles: list[signin_services.SignInProfile]) -> list:
    barrier = threading.Barrier(len(profiles))
    users: list = [None] * len(profiles)
    errors: list = []

    def sign_in(index: int, profile: signin_services.SignInProfile) -> None:
        try:
            barrier.wait(timeout=30)
            users[index] = signin_services.identity_user_get_or_create(profile=profile)
        except BaseException as exc:  # surfaced below, with the thread's index
            errors.append((index, exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=sign_in, args=(i, p)) for i, p in enumerate(profiles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return users


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip(
            "sign-in race test needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite admits one writer "
            "at a time, so its sign-ins cannot race"
        )


@pytest.mark.django_db(transaction=True)
def test_one_person_signing_in_in_several_tabs_at_once_gets_one_account(postgresql):
    profile = signin_services.SignInProfile(issuer="https://id.example", subject="s-tabs", username_hint="alice")
    users = _race([profile] * RACERS)
    assert len({user.pk for user in users}) == 1
    assert get_user_model().objects.count() == 1
    assert ExternalIdentity.objects.get().user == users[0]


@pytest.mark.django_db(transaction=True)
def test_several_people_with_one_name_signing_in_at_once_each_get_a_name(postgresql):
    profiles = [
        signin_services.SignInProfile(issuer="https://id.example", subject=f"s-{i}", username_hint="sam")
        for i in range(RACERS)
    ]
    users = _race(profiles)
    assert len({user.username for user in users}) == RACERS
    assert ExternalIdentity.objects.count() == RACERS
