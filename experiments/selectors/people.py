"""Reads about who a person is, across their accounts: one person may hold two (a break-glass
password account and a single sign-on or proxy account), and two-person approval needs two
people, not two accounts."""

from __future__ import annotations

from typing import Any

from experiments.models import ExternalIdentity


def _names(user: Any, subjects: list[str]) -> set[str]:
    """What names this account's person, in lower case: its user name and sign-in subjects."""
    return {user.get_username().strip().lower(), *(subject.strip().lower() for subject in subjects)} - {""}


def shared_identity(*, user: Any, other: Any) -> str | None:
    """What makes two different accounts one person, in words ("the e-mail address
    pat@example.com", "the sign-in identity pat"); None when nothing does.

    The same e-mail address (letter case aside), or a name one account signs in with (its
    user name, or its subject at an identity provider or the trusted proxy) that is also the
    other's e-mail address or sign-in name: a proxy account made for "pat" beside the password
    account "pat" is Pat twice. One query, for both accounts' identities.
    """
    if user.pk == other.pk:
        return None
    email, other_email = user.email.strip().lower(), other.email.strip().lower()
    if email and email == other_email:
        return f"the e-mail address {email}"
    subjects: dict[int, list[str]] = {user.pk: [], other.pk: []}
    for user_id, subject in ExternalIdentity.objects.filter(user__in=[user.pk, other.pk]).values_list(
        "user_id", "subject"
    ):
        subjects[user_id].append(subject)
    names, other_names = _names(user, subjects[user.pk]), _names(other, subjects[other.pk])
    # A name on one side that is a name or the e-mail address on the other (two addresses
    # alike were the case above).
    shared = sorted((names & (other_names | {other_email})) | ({email} & other_names) - {""})
    return f"the sign-in identity {shared[0]}" if shared else None
