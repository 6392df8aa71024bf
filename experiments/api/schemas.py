"""The shapes the API takes and answers with (they make its OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, Field


def _without_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and no reason or note needs one: refuse it as the forms do.
    if "\x00" in value:
        raise ValueError("Null characters are not allowed.")
    return value


# Text a person typed, kept in the audit trail and sent to Mixpanel.
Text = Annotated[str, AfterValidator(_without_nul)]


class Problem(Schema):
    """An error, as RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: dict[str, list[str]] | None = Field(default=None, description="Per field, what is wrong with it.")
    attempt: str | None = Field(default=None, description="The address of the attempt this is about, if any.")


class WorkspaceOut(Schema):
    id: int
    name: str
    region: str
    mixpanel_workspace_id: int
    role: str = Field(description="viewer, concluder or admin: what the token's owner may do here now.")
    requires_approval: bool = Field(description="Whether two-person approval is on (approval_policy is not never).")
    approval_policy: str = Field(
        description="never, risky or always: which presses of force-conclude and decide become requests (202)."
    )


class ExperimentItem(Schema):
    id: str
    name: str
    status: str
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    days_running: int | None
    exposures: int | None
    owner: str | None
    tags: list[str]
    sample_ratio_mismatch: bool | None = Field(description="True when exposures do not follow the planned split.")


class ExperimentList(Schema):
    workspace: int
    fetched_at: dt.datetime | None = Field(description="When this copy of the list was read from Mixpanel.")
    age_seconds: int | None
    stale: bool = Field(description="True when Mixpanel could not be read and an older copy is served.")
    error: str | None
    total: int
    experiments: list[ExperimentItem]
    next: str | None = Field(description="The cursor for the next page (pass as ?cursor=), or null at the end.")


class AttemptOut(Schema):
    id: int
    url: str
    action: str = Field(description="conclusion (Force conclude) or decision (Record the decision).")
    state: str
    experiment_id: str
    experiment_name: str
    actor: str
    reason_category: str
    reason: str
    end_date: dt.datetime | None
    request_body: dict[str, Any]
    created_at: dt.datetime
    finished_at: dt.datetime | None
    failure_reason: str
    expires_at: dt.datetime | None = Field(description="When a request for approval lapses.")
    reviewer: str
    review_note: str
    approval_rules: list[dict[str, str]] = Field(
        default=[], description='Why the press became a request for approval: [{"rule": ..., "words": ...}].'
    )


class VariantOut(Schema):
    key: str
    name: str
    planned_percent: float | None
    exposures: int | None


class SampleRatio(Schema):
    checked: bool
    mismatch: bool | None
    p_value: float | None
    note: str


class ExperimentOut(Schema):
    id: str
    name: str
    status: str
    hypothesis: str | None
    start_date: dt.datetime | None
    end_date: dt.datetime | None
    days_running: int | None
    planned_days: int | None
    owner: str
    variants: list[VariantOut]
    sample_ratio: SampleRatio
    open_attempts: list[AttemptOut]
    read_at: dt.datetime | None


class ActionOut(Schema):
    """What a press, an approval, a rejection or a withdrawal came to."""

    message: str
    state: str
    attempt: AttemptOut | None


class ForceConcludeIn(Schema):
    reason: Text = Field(min_length=1, max_length=1000, description="Why, for the audit trail.")
    reason_category: Text = Field(
        default="other", description="significance, harmful, broken, business or other (the page's reasons)."
    )
    end_date: dt.datetime | None = Field(
        default=None, description="When the analysis window ends (ISO 8601 with an offset); now when left out."
    )


class DecideIn(Schema):
    variant: Text | None = Field(description="The key of the variant to ship, or null to ship none (keep control).")
    success: bool = Field(description="True with a variant, false with null: what Mixpanel will record.")
    note: Text = Field(min_length=1, max_length=2000, description="Why; sent to Mixpanel with the decision.")


class ScheduleIn(Schema):
    run_at: dt.datetime = Field(description="When to force conclude (ISO 8601 with an offset), up to 90 days ahead.")
    reason: Text = Field(min_length=1, max_length=1000, description="Why, for the audit trail.")
    reason_category: Text = Field(
        default="other", description="significance, harmful, broken, business or other (the page's reasons)."
    )
    end_date: dt.datetime | None = Field(
        default=None, description="When the analysis window ends, not after run_at; run_at's moment when left out."
    )


class ScheduleOut(Schema):
    """A Force conclude scheduled for later, as it stands."""

    id: int
    experiment_id: str
    experiment_name: str
    state: str = Field(description="scheduled, cancelled or fired.")
    run_at: dt.datetime
    author: str
    reason_category: str
    reason: str
    end_date: dt.datetime | None
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    cancelled_by: str
    cancel_reason: str
    fired_at: dt.datetime | None
    attempt: str | None = Field(description="The address of the attempt its firing made, once fired.")


class ScheduleAnswer(Schema):
    message: str
    schedule: ScheduleOut | None


class ReviewIn(Schema):
    note: Text = Field(default="", max_length=2000, description="Required to reject; read by the requester.")


class AuditEntryOut(Schema):
    """One entry of the hash chain, with every field its hash covers (docs/audit-feed.md)."""

    seq: int
    kind: str
    created_at: str = Field(description="UTC with microseconds and a Z, exactly as hashed.")
    workspace_id: int | None
    actor_id: int | None
    actor_name: str
    attempt_id: int | None
    experiment_id: str
    experiment_name: str
    payload: str = Field(description="Canonical JSON text, exactly as hashed.")
    prev_hash: str
    hash: str


class AuditFeed(Schema):
    entries: list[AuditEntryOut]
    next: str | None = Field(description="The address of the next page, or null when this is the head.")
