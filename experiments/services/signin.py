"""Writes made at sign-in: the person's account from an identity provider, and their roles from groups."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.models import ExternalIdentity, GroupRule, Membership, Role, RoleChange, RoleChangeAction
from experiments.services import roles

# The Django group through which sign-in grants "Can review all conclusions". A permission
# given to the user by hand is a different grant, and sign-in leaves it alone.
AUDITOR_GROUP_NAME = "Auditors (from sign-in)"
AUDITOR_ROLE = roles.AUDITOR_ROLE
_ROLE_RANK = {Role.VIEWER: 1, Role.CONCLUDER: 2, Role.ADMIN: 3}


class IdentityRefused(Exception):
    """The identity cannot become a user here; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class SignInProfile:
    """What an identity provider says about a person, already checked."""

    issuer: str
    subject: str
    username_hint: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""


def profile_from_claims(*, issuer: str, claims: Mapping[str, Any]) -> SignInProfile:
    """Read a verified ID token's claims into a profile; `sub` is the identity."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise IdentityRefused("The identity provider sent no subject (sub) for this person.")

    def text(name: str, limit: int) -> str:
        value = claims.get(name)
        return value.strip()[:limit] if isinstance(value, str) else ""

    first, last = text("given_name", 150), text("family_name", 150)
    if not (first or last) and text("name", 150):
        first = text("name", 150)
    return SignInProfile(
        issuer=issuer,
        subject=subject.strip(),
        username_hint=text("preferred_username", 150) or text("email", 150) or subject.strip()[:150],
        email=text("email", 254),
        first_name=first,
        last_name=last,
    )


# After the hint and the hint with the subject's hash, this many random names are tried.
RANDOM_NAME_TRIES = 5


def _username_taken(name: str) -> bool:
    user_model = get_user_model()
    return user_model.objects.filter(**{user_model.USERNAME_FIELD: name}).exists()


def _username_candidates(hint: str, subject: str) -> Iterator[str]:
    """`hint`, then `hint` with a short hash of the subject, then with random suffixes.

    Never the existing account: joining an SSO identity to a local account by name or
    address would let whoever controls that name at the provider take the account over.
    """
    yield hint
    stem = hint[: 150 - 9]
    yield f"{stem}-{hashlib.sha256(subject.encode()).hexdigest()[:8]}"
    for _ in range(RANDOM_NAME_TRIES):
        yield f"{stem}-{secrets.token_hex(4)}"


def _user_create(profile: SignInProfile) -> Any:
    """A new account with the first free name for `profile`; a name another sign-in takes
    between the check and the insert is passed over like a taken one."""
    user_model = get_user_model()
    for name in _username_candidates(profile.username_hint, profile.subject):
        if _username_taken(name):
            continue
        user = user_model(**{user_model.USERNAME_FIELD: name})
        user.set_unusable_password()
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            continue
        return user
    raise IdentityRefused("No free username could be found for this person. Ask an admin of Experiment Desk.")


def identity_matches(*, user: Any, issuer: str, subject: str) -> bool:
    """Whether `user` is the account of (issuer, subject)."""
    return ExternalIdentity.objects.filter(user=user, issuer=issuer, subject=subject).exists()


def identity_user_get_or_create(*, profile: SignInProfile) -> Any:
    """The user for this (issuer, subject), created on first sign-in; names and e-mail kept current.

    Raises IdentityRefused when the account exists but is deactivated.
    """
    with transaction.atomic():
        identity = (
            ExternalIdentity.objects.select_for_update()
            .select_related("user")
            .filter(issuer=profile.issuer, subject=profile.subject)
            .first()
        )
        if identity is None:
            try:
                with transaction.atomic():
                    identity = ExternalIdentity.objects.create(
                        user=_user_create(profile), issuer=profile.issuer, subject=profile.subject
                    )
            except IntegrityError:
                # The same person's sign-in in another tab created the account first: use it.
                identity = ExternalIdentity.objects.select_related("user").get(
                    issuer=profile.issuer, subject=profile.subject
                )
        user = identity.user
        if not user.is_active:
            raise IdentityRefused("This account is deactivated. Ask an admin of Experiment Desk.")
        changed = [
            field
            for field in ("email", "first_name", "last_name")
            if getattr(profile, field) and getattr(user, field) != getattr(profile, field)
        ]
        for field in changed:
            setattr(user, field, getattr(profile, field))
        if changed:
            user.save(update_fields=changed)
        identity.last_sign_in_at = timezone.now()
        identity.save(update_fields=["last_sign_in_at"])
    return user


def _wanted_roles(groups: set[str]) -> dict[int, tuple[str, str, Any]]:
    """Workspace id -> (role, group, workspace): the highest role any of `groups` is granted."""
    wanted: dict[int, tuple[str, str, Any]] = {}
    for rule in GroupRule.objects.filter(group__in=groups).select_related("workspace").order_by("group", "id"):
        current = wanted.get(rule.workspace_id)
        if current is None or _ROLE_RANK[Role(rule.role)] > _ROLE_RANK[Role(current[0])]:
            wanted[rule.workspace_id] = (rule.role, rule.group, rule.workspace)
    return wanted


def _record(user: Any, action: str, role: str, *, source: str, group: str, workspace: Any = None, **extra: str) -> None:
    """Keep one change sign-in made: a RoleChange for the admin site's review, and an entry in the audit chain."""
    RoleChange.objects.create(
        user=user,
        user_name=user.get_full_name() or user.get_username(),
        workspace=workspace,
        workspace_name=workspace.name if workspace else "",
        action=action,
        role=role,
        group=group,
        source=source,
        **extra,
    )
    before = {RoleChangeAction.ADDED: "", RoleChangeAction.REMOVED: role}.get(action, extra.get("previous_role", ""))
    roles.role_change_append(
        source=source,
        workspace=workspace,
        member=user,
        role_before=before,
        role_after="" if action == RoleChangeAction.REMOVED else role,
        via_group=group,
    )


def roles_sync_from_groups(*, user: Any, groups: Iterable[str], source: str, auditor_groups: Iterable[str]) -> int:
    """Bring the memberships sign-in granted in line with the group rules; returns the changes made.

    Roles a rule grants appear, roles whose group is gone disappear, a changed rule changes
    the role. Memberships added by hand (no granting group) are never touched. Membership
    of any of `auditor_groups` grants "Can review all conclusions" through a Django group.
    Every change is recorded as a RoleChange and chained as a role_changed audit entry.
    """
    groups = {g for g in groups if g}
    changes = 0
    with transaction.atomic():
        wanted = _wanted_roles(groups)
        for membership in Membership.objects.select_for_update().select_related("workspace").filter(user=user):
            want = wanted.pop(membership.workspace_id, None)
            if not membership.granted_by_group:
                continue  # added by hand: stays as it is
            if want is None:
                membership.delete()
                _record(
                    user,
                    RoleChangeAction.REMOVED,
                    membership.role,
                    source=source,
                    group=membership.granted_by_group,
                    workspace=membership.workspace,
                )
                changes += 1
            elif (membership.role, membership.granted_by_group) != want[:2]:
                previous = membership.role
                membership.role, membership.granted_by_group = want[0], want[1]
                membership.save(update_fields=["role", "granted_by_group"])
                _record(
                    user,
                    RoleChangeAction.CHANGED,
                    want[0],
                    source=source,
                    group=want[1],
                    workspace=membership.workspace,
                    previous_role=previous,
                )
                changes += 1
        for role, group, workspace in wanted.values():
            Membership.objects.create(user=user, workspace=workspace, role=role, granted_by_group=group)
            _record(user, RoleChangeAction.ADDED, role, source=source, group=group, workspace=workspace)
            changes += 1
        changes += _auditor_sync(user=user, groups=groups, auditor_groups=set(auditor_groups), source=source)
    return changes


def _auditor_group() -> Group:
    group, created = Group.objects.get_or_create(name=AUDITOR_GROUP_NAME)
    if created:
        group.permissions.add(Permission.objects.get(codename="review_all_conclusions"))
    return group


def _auditor_sync(*, user: Any, groups: set[str], auditor_groups: set[str], source: str) -> int:
    granting = sorted(groups & auditor_groups)
    has = user.groups.filter(name=AUDITOR_GROUP_NAME).exists()
    if granting and not has:
        user.groups.add(_auditor_group())
        _record(user, RoleChangeAction.ADDED, AUDITOR_ROLE, source=source, group=granting[0])
        return 1
    if has and not granting:
        user.groups.remove(_auditor_group())
        _record(user, RoleChangeAction.REMOVED, AUDITOR_ROLE, source=source, group=", ".join(sorted(auditor_groups)))
        return 1
    return 0
