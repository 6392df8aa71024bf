"""Who holds which role: memberships and group rules given by hand (the admin site, commands),
and the audit hash chain entry every role change makes, whoever or whatever makes it.

Sign-in's own changes (roles brought in line with identity-provider groups) are written by
experiments.services.signin and chained through role_change_append here, so every grant,
change and removal is one kind of entry: role_changed, with who made it, whose role it is
(a person, or the members of a group for a rule), which workspace, the role before and
after, and the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Permission
from django.db import transaction
from django.db.models import Q

from experiments import auditlog
from experiments.models import AuditEntry, EntryKind, GroupRule, Membership, Workspace

# Where a change came from, as the entry's payload says it.
SOURCE_ADMIN = "admin site"
SOURCE_COMMAND = "command"
SOURCE_SSO = "sso"
SOURCE_SSO_RECHECK = "sso re-check"
SOURCE_PROXY = "proxy header"
# Who an entry names as having made a change no person made.
_SYSTEM_ACTORS = {
    SOURCE_COMMAND: "Command line",
    SOURCE_SSO: "Sign-in (SSO groups)",
    SOURCE_SSO_RECHECK: "SSO re-check (groups)",
    SOURCE_PROXY: "Sign-in proxy (groups header)",
}


def role_change_append(
    *,
    source: str,
    actor: Any = None,
    workspace: Workspace | None,
    member: Any = None,
    group: str = "",
    role_before: str = "",
    role_after: str = "",
    via_group: str = "",
) -> AuditEntry:
    """Chain one role change. `member` is the person whose role it is, or None for a group
    rule (then `group` names the group); "" for a role means none. `actor` is the person who
    made the change (None for sign-in and commands: the entry then names the source);
    `via_group` is the identity-provider group behind a change sign-in made."""
    payload: dict[str, Any] = {
        "source": source,
        "role_before": role_before,
        "role_after": role_after,
        "workspace_name": workspace.name if workspace is not None else "",
    }
    if member is not None:
        payload["member"] = {"id": member.pk, "username": member.get_username(), "name": auditlog.display_name(member)}
    else:
        payload["group_rule"] = group
    if via_group:
        payload["via_group"] = via_group
    return auditlog.append_entry(
        kind=EntryKind.ROLE_CHANGED,
        workspace=workspace,
        actor=actor,
        actor_name=auditlog.display_name(actor) if actor is not None else _SYSTEM_ACTORS.get(source, source),
        payload=payload,
    )


def _by(actor: Any, source: str) -> dict[str, Any]:
    return {"actor": actor, "source": source}


def membership_set(*, user: Any, workspace: Workspace, role: str, source: str, actor: Any = None) -> str:
    """Give `user` `role` in `workspace` by hand; returns "added", "changed" or "unchanged".

    A membership set by hand is the person's own: sign-in's group rules no longer change it.
    """
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(user=user, workspace=workspace).first()
        if membership is None:
            Membership.objects.create(user=user, workspace=workspace, role=role)
            role_change_append(workspace=workspace, member=user, role_after=role, **_by(actor, source))
            return "added"
        if membership.role == role and not membership.granted_by_group:
            return "unchanged"
        previous = membership.role
        membership.role, membership.granted_by_group = role, ""
        membership.save(update_fields=["role", "granted_by_group"])
        role_change_append(
            workspace=workspace, member=user, role_before=previous, role_after=role, **_by(actor, source)
        )
        return "changed"


def membership_save(*, membership: Membership, actor: Any, source: str) -> None:
    """Save a membership as an admin form left it (new, a new role, or even another person or
    workspace), chaining what changed. A role given by hand makes it a hand-given membership."""
    with transaction.atomic():
        previous = Membership.objects.select_for_update().filter(pk=membership.pk).first() if membership.pk else None
        moved = previous is not None and (previous.user_id, previous.workspace_id) != (
            membership.user_id,
            membership.workspace_id,
        )
        if previous is None or moved or previous.role != membership.role:
            membership.granted_by_group = ""
        membership.save()
        if moved:
            role_change_append(
                workspace=previous.workspace, member=previous.user, role_before=previous.role, **_by(actor, source)
            )
        if previous is None or moved:
            role_change_append(
                workspace=membership.workspace, member=membership.user, role_after=membership.role, **_by(actor, source)
            )
        elif previous.role != membership.role:
            role_change_append(
                workspace=membership.workspace,
                member=membership.user,
                role_before=previous.role,
                role_after=membership.role,
                **_by(actor, source),
            )


def membership_delete(*, membership: Membership, actor: Any, source: str) -> None:
    """Remove a membership, chaining the removal."""
    with transaction.atomic():
        deleted, _ = Membership.objects.filter(pk=membership.pk).delete()
        if deleted:
            role_change_append(
                workspace=membership.workspace,
                member=membership.user,
                role_before=membership.role,
                **_by(actor, source),
            )


def group_rule_set(*, group: str, workspace: Workspace, role: str, source: str, actor: Any = None) -> str:
    """Members of identity-provider `group` get `role` in `workspace` from their next sign-in
    (or re-check) on. Returns "added", "changed" or "unchanged"."""
    with transaction.atomic():
        rule = GroupRule.objects.select_for_update().filter(group=group, workspace=workspace).first()
        if rule is None:
            GroupRule.objects.create(group=group, workspace=workspace, role=role)
            role_change_append(workspace=workspace, group=group, role_after=role, **_by(actor, source))
            return "added"
        if rule.role == role:
            return "unchanged"
        previous, rule.role = rule.role, role
        rule.save(update_fields=["role"])
        role_change_append(
            workspace=workspace, group=group, role_before=previous, role_after=role, **_by(actor, source)
        )
        return "changed"


def group_rule_save(*, rule: GroupRule, actor: Any, source: str) -> None:
    """Save a group rule as an admin form left it, chaining what changed."""
    with transaction.atomic():
        previous = GroupRule.objects.select_for_update().filter(pk=rule.pk).first() if rule.pk else None
        rule.save()
        moved = previous is not None and (previous.group, previous.workspace_id) != (rule.group, rule.workspace_id)
        if moved:
            role_change_append(
                workspace=previous.workspace, group=previous.group, role_before=previous.role, **_by(actor, source)
            )
        if previous is None or moved:
            role_change_append(workspace=rule.workspace, group=rule.group, role_after=rule.role, **_by(actor, source))
        elif previous.role != rule.role:
            role_change_append(
                workspace=rule.workspace,
                group=rule.group,
                role_before=previous.role,
                role_after=rule.role,
                **_by(actor, source),
            )


def group_rule_delete(*, rule: GroupRule, actor: Any, source: str) -> None:
    """Remove a group rule, chaining the removal. Memberships it granted go at their holders'
    next sign-in or re-check."""
    with transaction.atomic():
        deleted, _ = GroupRule.objects.filter(pk=rule.pk).delete()
        if deleted:
            role_change_append(workspace=rule.workspace, group=rule.group, role_before=rule.role, **_by(actor, source))


# --- Roles on the account itself: superuser (admin of every workspace) and review-all ------------
SUPERUSER_ROLE = "superuser"
AUDITOR_ROLE = "auditor"


@dataclass(frozen=True, slots=True)
class AccountRoles:
    """The roles an account holds outside any one workspace."""

    superuser: bool
    auditor: bool


def account_roles(*, user: Any) -> AccountRoles:
    """What `user` holds now, read from the database (not the user's permission cache)."""
    granting = Permission.objects.filter(
        Q(user=user) | Q(group__user=user), codename="review_all_conclusions", content_type__app_label="experiments"
    )
    superuser = type(user).objects.filter(pk=user.pk, is_superuser=True).exists()
    return AccountRoles(superuser=superuser, auditor=granting.exists())


def account_roles_changed(*, user: Any, before: AccountRoles, actor: Any, source: str) -> None:
    """Chain the difference between `before` and what `user` holds now (an admin's edit of the account)."""
    after = account_roles(user=user)
    for role, had, has in (
        (SUPERUSER_ROLE, before.superuser, after.superuser),
        (AUDITOR_ROLE, before.auditor, after.auditor),
    ):
        if had != has:
            role_change_append(
                workspace=None,
                member=user,
                role_before=role if had else "",
                role_after=role if has else "",
                **_by(actor, source),
            )


def account_delete(*, user: Any, actor: Any, source: str) -> None:
    """Delete an account, chaining the removal of each role it held first."""
    with transaction.atomic():
        held = account_roles(user=user)
        for membership in Membership.objects.select_related("workspace").filter(user=user):
            role_change_append(
                workspace=membership.workspace, member=user, role_before=membership.role, **_by(actor, source)
            )
        for role, had in ((SUPERUSER_ROLE, held.superuser), (AUDITOR_ROLE, held.auditor)):
            if had:
                role_change_append(workspace=None, member=user, role_before=role, **_by(actor, source))
        user.delete()
