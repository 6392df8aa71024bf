"""The API's endpoints: each checks the token's owner's access as the pages do, then calls the
same selector or service as the page, and answers with a plain HTTP code."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import NinjaAPI, Query, Status
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.security import HttpBearer

from experiments import auditlog, observability
from experiments.api import schemas
from experiments.api.problems import attempt_url, outcome_status, problem
from experiments.mixpanel import client as mixpanel
from experiments.mixpanel import shapes
from experiments.models import ApiToken, ConclusionAttempt, ReasonCategory, ScheduledConclusion, TokenScope
from experiments.queries import ExperimentListQuery
from experiments.selectors import audit as audit_selectors
from experiments.selectors import conclusions as conclusion_selectors
from experiments.selectors import experiment_list as list_selectors
from experiments.selectors import experiment_page as page_selectors
from experiments.selectors import schedules as schedule_selectors
from experiments.selectors import workspaces as workspace_selectors
from experiments.selectors.workspaces import WorkspaceAccess
from experiments.services import approvals as approval_services
from experiments.services import conclusions as conclusion_services
from experiments.services import decisions as decision_services
from experiments.services import schedules as schedule_services
from experiments.services import tokens as token_services
from experiments.services.attempts import AttemptOutcome

PAGE_SIZE = 100
FEED_LIMIT_MAX = 1000
CURSOR_SALT = "experiment-desk api list cursor"
MSG_NO_WORKSPACE = "You have no such workspace."
MSG_NO_EXPERIMENT = "This workspace has no such experiment."
MSG_NO_ATTEMPT = "No such attempt, or not one you may read."
MSG_READ_ONLY = "This token may only read. Make a token with the act scope to change anything."
MSG_BAD_CURSOR = "The cursor is not one this API gave out (or not for this list)."
MSG_NOT_YOURS = "Only the person who asked for approval may withdraw the request."
MSG_DECIDE_MISMATCH = "success is true exactly when a variant is given: a variant to ship, or null to ship none."
MSG_NO_SCHEDULE = "This experiment has no scheduled Force conclude waiting."
MSG_BAD_CATEGORY = "One of: " + ", ".join(ReasonCategory.values) + "."


class BearerToken(HttpBearer):
    """A personal API token; the request then acts as its owner, within its rate limit."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = token_services.api_token_authenticate(token)
        if found is None:
            return None
        wait = token_services.api_token_throttle(found)
        if wait:
            raise Throttled(wait=wait)
        request.user = found.user
        observability.bind(user=found.user.get_username())
        return found


api = NinjaAPI(
    title="Experiment Desk API",
    version="1",
    description="The same services as the pages, with the same guarantees: see docs/api.md.",
    urls_namespace="api-v1",
    auth=BearerToken(),
    docs_url=None,  # Swagger UI would load its scripts from a CDN
    openapi_url="/openapi.json",
)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        field = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "payload"))
        errors.setdefault(field or "request", []).append(str(error.get("msg", "is not valid")))
    return problem(400, "Some fields are not valid.", errors=errors)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = problem(401, "Send Authorization: Bearer <token>, with a token that is not expired or revoked.")
    response["WWW-Authenticate"] = 'Bearer realm="experiment-desk"'
    return response


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    response = problem(429, "This token made too many requests this minute; wait as Retry-After says.")
    response["Retry-After"] = str(math.ceil(exc.wait or 1))
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return problem(exc.status_code, str(exc))


# --- Access, as the pages decide it ---------------------------------------------------------


# Row ids are 64-bit: a larger number names no row (and would overflow the query).
ROW_ID_MAX = 2**63 - 1


def _workspace(request: HttpRequest, workspace_id: int) -> WorkspaceAccess:
    if not 0 < workspace_id <= ROW_ID_MAX:
        raise HttpError(404, MSG_NO_WORKSPACE)
    access = workspace_selectors.workspace_access(user=request.user, workspace_pk=workspace_id)
    if access is None:
        raise HttpError(404, MSG_NO_WORKSPACE)
    return access


def _acting(request: HttpRequest) -> str:
    """Refuse a read-only token; else how the trail names the press ("via API token NAME")."""
    if request.auth.scope != TokenScope.ACT:
        raise HttpError(403, MSG_READ_ONLY)
    return f"API token {request.auth.name}"


def _attempt(request: HttpRequest, attempt_id: int) -> ConclusionAttempt:
    if not 0 < attempt_id <= ROW_ID_MAX:
        raise HttpError(404, MSG_NO_ATTEMPT)
    attempt = audit_selectors.audit_attempt_for_user(user=request.user, pk=attempt_id)
    if attempt is None:
        raise HttpError(404, MSG_NO_ATTEMPT)
    return attempt


# --- What answers look like -------------------------------------------------------------------


def attempt_out(attempt: ConclusionAttempt) -> dict[str, Any]:
    return {
        "id": attempt.pk,
        "url": attempt_url(attempt),
        "action": attempt.action,
        "state": attempt.state,
        "experiment_id": attempt.experiment_id,
        "experiment_name": attempt.experiment_name,
        "actor": attempt.actor_name,
        "reason_category": attempt.reason_category,
        "reason": attempt.reason_text,
        "end_date": attempt.end_date,
        "request_body": attempt.request_body,
        "created_at": attempt.created_at,
        "finished_at": attempt.finished_at,
        "failure_reason": attempt.failure_reason,
        "expires_at": attempt.expires_at,
        "reviewer": attempt.reviewer_name,
        "review_note": attempt.review_note,
        "approval_rules": attempt.approval_rules or [],
    }


def _answer(outcome: AttemptOutcome) -> HttpResponse | Status:
    """A press's or review's outcome as its HTTP code: the attempt in the body, or a problem."""
    status = outcome_status(outcome)
    attempt = outcome.blocked_by if outcome.blocked_by is not None else outcome.attempt
    if status >= 400:
        return problem(status, outcome.message, attempt=attempt_url(attempt) if attempt is not None else None)
    body = {"message": outcome.message, "state": outcome.state, "attempt": attempt_out(outcome.attempt)}
    return Status(status, body)


def _experiment_item(summary: Any, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": summary.id,
        "name": summary.name,
        "status": summary.status,
        "start_date": summary.start_date,
        "end_date": summary.end_date,
        "days_running": shapes.days_running(summary, now),
        "exposures": summary.exposures_total,
        "owner": summary.creator_name,
        "tags": list(summary.tags),
        "sample_ratio_mismatch": summary.sample_ratio_mismatch,
    }


# --- Reads ---------------------------------------------------------------------------------------

ERRORS = {400: schemas.Problem, 401: schemas.Problem, 403: schemas.Problem, 404: schemas.Problem, 429: schemas.Problem}
UPSTREAM = {409: schemas.Problem, 422: schemas.Problem, 502: schemas.Problem, 504: schemas.Problem}


@api.get("/workspaces", response={200: list[schemas.WorkspaceOut], **ERRORS}, url_name="workspace-list")
def workspace_list(request: HttpRequest) -> list[dict[str, Any]]:
    """The workspaces the token's owner belongs to, with their role in each."""
    return [
        {
            "id": access.workspace.pk,
            "name": access.workspace.name,
            "region": access.workspace.region,
            "mixpanel_workspace_id": access.workspace.mixpanel_workspace_id,
            "role": access.role,
            "requires_approval": access.workspace.requires_approval,
            "approval_policy": access.workspace.approval_policy,
        }
        for access in workspace_selectors.workspace_list_for_user(user=request.user)
    ]


@api.get(
    "/workspaces/{workspace_id}/experiments",
    response={200: schemas.ExperimentList, **ERRORS},
    url_name="experiment-list",
)
def experiment_list(
    request: HttpRequest,
    workspace_id: int,
    status: str = "",
    q: str = "",
    sort: str = "",
    cursor: str = Query("", description="From the previous page's `next`."),
) -> HttpResponse | dict[str, Any]:
    """The workspace's experiments as its page reads them (the cached copy, with its age),
    filtered by status, searched and sorted like the page, a page at a time."""
    access = _workspace(request, workspace_id)
    query = ExperimentListQuery.from_querydict({"status": status, "q": q, "sort": sort})
    # A cursor is the next page's number, signed for this workspace and query.
    salt = f"{CURSOR_SALT}:{workspace_id}:{query.querystring()}"
    number = 1
    if cursor:
        try:
            number = int(signing.loads(cursor, salt=salt))
        except (signing.BadSignature, TypeError, ValueError):
            return problem(400, MSG_BAD_CURSOR, errors={"cursor": [MSG_BAD_CURSOR]})
    snapshot = list_selectors.experiment_list_cached(workspace=access.workspace)
    now = timezone.now()
    page = list_selectors.experiment_list_page(
        snapshot=snapshot, status=query.status, q=query.q, sort=query.sort, page=number, page_size=PAGE_SIZE
    )
    following = signing.dumps(page.page + 1, salt=salt) if page.has_next and page.page == number else None
    return {
        "workspace": workspace_id,
        "fetched_at": snapshot.fetched_at,
        "age_seconds": int((now - snapshot.fetched_at).total_seconds()) if snapshot.fetched_at else None,
        "stale": snapshot.stale,
        "error": snapshot.error,
        "total": page.total,
        "experiments": [_experiment_item(summary, now) for summary in page.experiments] if page.page == number else [],
        "next": following,
    }


@api.get(
    "/workspaces/{workspace_id}/experiments/{experiment_id}",
    response={200: schemas.ExperimentOut, **ERRORS, 502: schemas.Problem},
    url_name="experiment-get",
)
def experiment_get(request: HttpRequest, workspace_id: int, experiment_id: str) -> HttpResponse | dict[str, Any]:
    """The experiment as its page reads it: exposures per variant, the sample-ratio check, and
    any attempt still open on it."""
    access = _workspace(request, workspace_id)
    try:
        read = page_selectors.experiment_read(workspace=access.workspace, experiment_id=experiment_id)
    except page_selectors.ExperimentNotFound:
        return problem(404, MSG_NO_EXPERIMENT)
    if read.experiment is None:
        return problem(502, read.error)
    experiment = read.experiment
    overview = page_selectors.experiment_overview(workspace=access.workspace, experiment=experiment)
    held = conclusion_selectors.claims_by_action(workspace=access.workspace, experiment_id=experiment.id)
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "hypothesis": experiment.hypothesis,
        "start_date": experiment.start_date,
        "end_date": experiment.end_date,
        "days_running": overview.days_running,
        "planned_days": overview.planned_days,
        "owner": overview.owner,
        "variants": [
            {"key": row.key, "name": row.name, "planned_percent": row.planned_percent, "exposures": row.exposures}
            for row in overview.variants.rows
        ],
        "sample_ratio": {
            "checked": overview.srm is not None,
            "mismatch": overview.srm.mismatch if overview.srm is not None else None,
            "p_value": overview.srm.p_value if overview.srm is not None else None,
            "note": overview.srm_note,
        },
        "open_attempts": [attempt_out(attempt) for attempt in held.values() if attempt.is_waiting],
        "read_at": read.read_at,
    }


@api.get("/attempts/{attempt_id}", response={200: schemas.AttemptOut, **ERRORS}, url_name="attempt-get")
def attempt_get(request: HttpRequest, attempt_id: int) -> dict[str, Any]:
    """One attempt, as the audit pages show it to the token's owner."""
    return attempt_out(_attempt(request, attempt_id))


@api.get("/audit/entries", response={200: schemas.AuditFeed, **ERRORS}, url_name="audit-entries")
def audit_entries(
    request: HttpRequest,
    after: int = Query(
        0, ge=0, le=2**63 - 1, description="The seq of the last entry already read (0: from the start)."
    ),
    limit: int = Query(PAGE_SIZE, ge=1, le=FEED_LIMIT_MAX),
) -> dict[str, Any]:
    """The hash chain in order: every entry for auditors, the entries of one's own workspaces
    for others. Each entry carries what its hash covers; docs/audit-feed.md says how to check it."""
    entries = audit_selectors.audit_entries_after(user=request.user, after=after, limit=limit)
    path = request.path
    return {
        "entries": [{**auditlog.hashed_fields(entry), "hash": entry.hash} for entry in entries],
        "next": f"{path}?after={entries[-1].seq}&limit={limit}" if len(entries) == limit else None,
    }


# --- Actions -------------------------------------------------------------------------------------

ACTION = {200: schemas.ActionOut, 202: schemas.ActionOut, **ERRORS, **UPSTREAM}


@api.post(
    "/workspaces/{workspace_id}/experiments/{experiment_id}/force-conclude",
    response=ACTION,
    url_name="experiment-force-conclude",
)
def experiment_force_conclude(
    request: HttpRequest, workspace_id: int, experiment_id: str, payload: schemas.ForceConcludeIn
) -> Any:
    """Force conclude: ends the experiment's analysis in Mixpanel (at end_date, or now). It ships
    nothing; record the decision next. Exactly one PUT, audited first, as a press of the button;
    where the workspace's approval policy says it needs two-person approval it becomes a request (202)."""
    access = _workspace(request, workspace_id)
    via = _acting(request)
    if payload.reason_category not in ReasonCategory.values:
        return problem(400, MSG_BAD_CATEGORY, errors={"reason_category": [MSG_BAD_CATEGORY]})
    listed = list_selectors.experiment_lookup(workspace=access.workspace, experiment_id=experiment_id)
    if listed.unavailable:
        return problem(502, listed.unavailable)
    if listed.experiment is None:
        return problem(404, MSG_NO_EXPERIMENT)
    outcome = conclusion_services.experiment_force_conclude(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment_id,
        experiment_name=listed.experiment.name,
        reason_category=payload.reason_category,
        reason_text=payload.reason,
        end_date=payload.end_date or timezone.now(),
        client=mixpanel.client_for(access.workspace),
        via=via,
    )
    return _answer(outcome)


@api.post(
    "/workspaces/{workspace_id}/experiments/{experiment_id}/decide", response=ACTION, url_name="experiment-decide"
)
def experiment_decide(request: HttpRequest, workspace_id: int, experiment_id: str, payload: schemas.DecideIn) -> Any:
    """Record the decision on a concluded experiment: ship a variant (success true) or none
    (success false, variant null). Exactly one PATCH, audited first; where the workspace's
    approval policy says it needs two-person approval it becomes a request (202)."""
    access = _workspace(request, workspace_id)
    via = _acting(request)
    if payload.success != (payload.variant is not None):
        return problem(400, MSG_DECIDE_MISMATCH, errors={"success": [MSG_DECIDE_MISMATCH]})
    listed = list_selectors.experiment_lookup(workspace=access.workspace, experiment_id=experiment_id)
    if listed.unavailable:
        return problem(502, listed.unavailable)
    if listed.experiment is None:
        return problem(404, MSG_NO_EXPERIMENT)
    outcome = decision_services.experiment_decide(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment_id,
        experiment_name=listed.experiment.name,
        variant=payload.variant,
        note=payload.note,
        client=mixpanel.client_for(access.workspace),
        via=via,
    )
    return _answer(outcome)


def _review(request: HttpRequest, attempt_id: int, decision: str, note: str) -> Any:
    via = _acting(request)
    attempt = _attempt(request, attempt_id)
    client = mixpanel.client_for(attempt.workspace) if decision == approval_services.APPROVE else None
    outcome = approval_services.attempt_review(
        attempt=attempt, user=request.user, decision=decision, note=note, client=client, via=via
    )
    return _answer(outcome)


@api.post("/attempts/{attempt_id}/approve", response=ACTION, url_name="attempt-approve")
def attempt_approve(request: HttpRequest, attempt_id: int, payload: schemas.ReviewIn) -> Any:
    """Approve another person's request: sends its one call now (200 when done, 202 while
    Mixpanel's answer is awaited)."""
    return _review(request, attempt_id, approval_services.APPROVE, payload.note)


@api.post("/attempts/{attempt_id}/reject", response=ACTION, url_name="attempt-reject")
def attempt_reject(request: HttpRequest, attempt_id: int, payload: schemas.ReviewIn) -> Any:
    """Reject another person's request, with a note saying why; nothing is sent."""
    return _review(request, attempt_id, approval_services.REJECT, payload.note)


@api.post("/attempts/{attempt_id}/withdraw", response=ACTION, url_name="attempt-withdraw")
def attempt_withdraw(request: HttpRequest, attempt_id: int) -> Any:
    """Withdraw one's own request; nothing is sent."""
    _acting(request)
    attempt = _attempt(request, attempt_id)
    if attempt.actor_id != request.user.pk:
        return problem(403, MSG_NOT_YOURS)
    return _review(request, attempt_id, approval_services.REJECT, "")


# --- Scheduled conclusion ------------------------------------------------------------------------

SCHEDULE_FAILURES = {"forbidden": 403, "invalid": 400, "conflict": 409}
SCHEDULE = {
    200: schemas.ScheduleAnswer,
    201: schemas.ScheduleAnswer,
    **ERRORS,
    409: schemas.Problem,
    502: schemas.Problem,
}


def schedule_out(schedule: ScheduledConclusion) -> dict[str, Any]:
    return {
        "id": schedule.pk,
        "experiment_id": schedule.experiment_id,
        "experiment_name": schedule.experiment_name,
        "state": schedule.state,
        "run_at": schedule.run_at,
        "author": schedule.author_name,
        "reason_category": schedule.reason_category,
        "reason": schedule.reason_text,
        "end_date": schedule.end_date,
        "created_at": schedule.created_at,
        "cancelled_at": schedule.cancelled_at,
        "cancelled_by": schedule.cancelled_by_name,
        "cancel_reason": schedule.cancel_reason,
        "fired_at": schedule.fired_at,
        "attempt": attempt_url(schedule.attempt) if schedule.attempt_id else None,
    }


def _schedule_answer(outcome: schedule_services.ScheduleOutcome, success: int) -> Any:
    if not outcome.ok:
        return problem(SCHEDULE_FAILURES.get(outcome.failure, 409), outcome.message)
    return Status(success, {"message": outcome.message, "schedule": schedule_out(outcome.schedule)})


@api.post(
    "/workspaces/{workspace_id}/experiments/{experiment_id}/schedule",
    response=SCHEDULE,
    url_name="experiment-schedule",
)
def experiment_schedule(
    request: HttpRequest, workspace_id: int, experiment_id: str, payload: schemas.ScheduleIn
) -> Any:
    """Schedule a Force conclude for run_at (up to 90 days ahead), under your name: at that time the
    worker presses it as you would, if you may still conclude then. One waiting schedule per experiment
    (409 names it). Sends nothing now (201)."""
    access = _workspace(request, workspace_id)
    via = _acting(request)
    listed = list_selectors.experiment_lookup(workspace=access.workspace, experiment_id=experiment_id)
    if listed.unavailable:
        return problem(502, listed.unavailable)
    if listed.experiment is None:
        return problem(404, MSG_NO_EXPERIMENT)
    outcome = schedule_services.schedule_set(
        workspace=access.workspace,
        user=request.user,
        experiment_id=experiment_id,
        experiment_name=listed.experiment.name,
        experiment_status=listed.experiment.status,
        run_at=payload.run_at,
        reason_category=payload.reason_category,
        reason_text=payload.reason,
        end_date=payload.end_date,
        via=via,
    )
    return _schedule_answer(outcome, 201)


@api.delete(
    "/workspaces/{workspace_id}/experiments/{experiment_id}/schedule",
    response=SCHEDULE,
    url_name="experiment-schedule-cancel",
)
def experiment_schedule_cancel(request: HttpRequest, workspace_id: int, experiment_id: str) -> Any:
    """Cancel the experiment's waiting schedule (its author, or a workspace admin); nothing is sent."""
    access = _workspace(request, workspace_id)
    via = _acting(request)
    schedule = schedule_selectors.live_schedule(workspace=access.workspace, experiment_id=experiment_id)
    if schedule is None:
        return problem(404, MSG_NO_SCHEDULE)
    return _schedule_answer(schedule_services.schedule_cancel(schedule=schedule, user=request.user, via=via), 200)
