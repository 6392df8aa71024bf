"""The JSON API over real HTTP (a live server and the Mixpanel stand-in): each endpoint for each
role and kind of token, the answers' codes, and every answer checked against the OpenAPI
document the API publishes."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import requests
from django.utils import timezone

from experiments.models import (
    ApiToken,
    AttemptAction,
    AttemptState,
    AuditEntry,
    ConclusionAttempt,
    EntryKind,
    Membership,
    TokenScope,
)
from experiments.services import tokens as token_services
from tests.openapi_check import assert_documented, openapi_document

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"


class Caller:
    """Calls the API of a live server as one token, checking every answer against the document."""

    def __init__(self, base_url: str, secret: str | None, document: dict) -> None:
        self.base_url = base_url
        self.secret = secret
        self.document = document

    def __call__(self, method: str, path: str, *, json=None, headers=None, params=None) -> requests.Response:
        sent = dict(headers or {})
        if self.secret:
            sent["Authorization"] = f"Bearer {self.secret}"
        response = requests.request(
            method, self.base_url + API + path, json=json, headers=sent, params=params, timeout=60
        )
        assert response.status_code != 500, response.text[:500]
        if response.status_code >= 400:
            assert response.headers["Content-Type"] == "application/problem+json", response.text[:300]
            body = response.json()
            assert body["status"] == response.status_code
            assert body["title"]
        assert_documented(self.document, method, API + path, response.status_code, response.json())
        return response


@pytest.fixture(scope="module")
def document():
    return openapi_document()


@pytest.fixture
def make_caller(live_server, document):
    def make(user=None, *, scope: str = TokenScope.ACT, secret: str | None = None) -> Caller:
        if user is not None:
            secret = token_services.api_token_create(user=user, name=f"tests {user.username}", scope=scope).secret
        return Caller(live_server.url, secret, document)

    return make


@pytest.fixture
def outsider_token(make_caller, outsider):
    return make_caller(outsider)


def press(caller: Caller, workspace, experiment_id: str, **extra) -> requests.Response:
    body = {"reason": "From the release script.", **extra}
    return caller("POST", f"/workspaces/{workspace.pk}/experiments/{experiment_id}/force-conclude", json=body)


# --- Tokens --------------------------------------------------------------------------------------


def test_the_document_is_openapi_3_1_and_lists_every_endpoint(live_server):
    document = requests.get(live_server.url + API + "/openapi.json", timeout=30).json()
    assert document["openapi"] == "3.1.0"
    paths = set(document["paths"])
    assert {
        f"{API}/workspaces",
        f"{API}/workspaces/{{workspace_id}}/experiments",
        f"{API}/workspaces/{{workspace_id}}/experiments/{{experiment_id}}",
        f"{API}/workspaces/{{workspace_id}}/experiments/{{experiment_id}}/force-conclude",
        f"{API}/workspaces/{{workspace_id}}/experiments/{{experiment_id}}/decide",
        f"{API}/attempts/{{attempt_id}}",
        f"{API}/attempts/{{attempt_id}}/approve",
        f"{API}/attempts/{{attempt_id}}/reject",
        f"{API}/attempts/{{attempt_id}}/withdraw",
        f"{API}/audit/entries",
    } <= paths


@pytest.mark.parametrize("secret", [None, "", "edk_not-a-real-token", "garbage"])
def test_no_valid_token_is_401_with_a_problem(make_caller, workspace, secret):
    response = make_caller(secret=secret)("GET", "/workspaces")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_or_revoked_token_is_401(make_caller, pm, workspace):
    expired = make_caller(pm)
    ApiToken.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert expired("GET", "/workspaces").status_code == 401
    revoked = make_caller(pm)
    token_services.api_token_revoke(token=ApiToken.objects.latest("id"), by=pm)
    assert revoked("GET", "/workspaces").status_code == 401


def test_a_token_of_a_deactivated_person_is_401(make_caller, pm, workspace):
    caller = make_caller(pm)
    pm.is_active = False
    pm.save()
    assert caller("GET", "/workspaces").status_code == 401


def test_only_a_hash_is_stored_and_the_chain_names_the_token_never_its_secret(pm, workspace):
    made = token_services.api_token_create(user=pm, name="release script", scope=TokenScope.ACT)
    token = ApiToken.objects.get()
    assert made.secret not in (token.token_hash, token.prefix)
    assert token.token_hash == token_services.token_hash(made.secret)
    entry = AuditEntry.objects.get(kind=EntryKind.TOKEN_CREATED)
    assert made.secret not in entry.payload
    assert entry.payload_data["name"] == "release script"
    token_services.api_token_revoke(token=token, by=pm)
    assert AuditEntry.objects.filter(kind=EntryKind.TOKEN_REVOKED).count() == 1


# --- Reads, per role ---------------------------------------------------------------------------


def test_workspaces_are_the_callers_own_with_their_roles(
    make_caller, pm, teammate, outsider, workspace, other_workspace
):
    assert [(w["id"], w["role"]) for w in make_caller(pm)("GET", "/workspaces").json()] == [(workspace.pk, "concluder")]
    assert [w["role"] for w in make_caller(teammate)("GET", "/workspaces").json()] == ["viewer"]
    assert [w["id"] for w in make_caller(outsider)("GET", "/workspaces").json()] == [other_workspace.pk]


def test_a_token_acts_with_the_owners_roles_as_they_are_now(make_caller, pm, workspace, standin):
    caller = make_caller(pm)
    assert caller("GET", f"/workspaces/{workspace.pk}/experiments").status_code == 200
    Membership.objects.filter(user=pm).delete()
    assert caller("GET", f"/workspaces/{workspace.pk}/experiments").status_code == 404
    assert caller("GET", "/workspaces").json() == []


def test_the_list_is_the_pages_copy_paged_by_cursor(make_caller, teammate, workspace, standin):
    caller = make_caller(teammate, scope=TokenScope.READ)
    first = caller("GET", f"/workspaces/{workspace.pk}/experiments").json()
    assert first["total"] == 48
    assert len(first["experiments"]) == 48
    assert first["next"] is None
    assert first["age_seconds"] is not None
    assert first["stale"] is False
    active = caller("GET", f"/workspaces/{workspace.pk}/experiments", params={"status": "active"}).json()
    assert active["experiments"]
    assert {e["status"] for e in active["experiments"]} == {"active"}


def test_a_long_list_comes_in_pages(make_caller, teammate, workspace, standin, monkeypatch):
    from experiments.api import endpoints

    monkeypatch.setattr(endpoints, "PAGE_SIZE", 20)
    caller = make_caller(teammate, scope=TokenScope.READ)
    seen, cursor = [], None
    while True:
        page = caller("GET", f"/workspaces/{workspace.pk}/experiments", params={"cursor": cursor} if cursor else None)
        seen += [e["id"] for e in page.json()["experiments"]]
        cursor = page.json()["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 48
    bad = caller("GET", f"/workspaces/{workspace.pk}/experiments", params={"cursor": "made-up"})
    assert bad.status_code == 400
    other = caller(
        "GET", f"/workspaces/{workspace.pk}/experiments", params={"status": "draft", "cursor": cursor or "x"}
    )
    assert other.status_code == 400  # a cursor belongs to its own query


def test_an_outsider_gets_404_for_a_workspace_not_theirs(outsider_token, workspace, standin):
    assert outsider_token("GET", f"/workspaces/{workspace.pk}/experiments").status_code == 404
    assert outsider_token("GET", f"/workspaces/{workspace.pk}/experiments/x").status_code == 404
    assert outsider_token("GET", "/workspaces/9223372036854775807/experiments").status_code == 404


def test_one_experiment_with_exposures_the_split_check_and_its_open_attempts(make_caller, teammate, workspace, standin):
    experiment = standin.find(1001, status="active")
    body = make_caller(teammate)("GET", f"/workspaces/{workspace.pk}/experiments/{experiment['id']}").json()
    assert body["id"] == experiment["id"]
    assert body["variants"]
    assert "checked" in body["sample_ratio"]
    assert body["open_attempts"] == []
    missing = make_caller(teammate)("GET", f"/workspaces/{workspace.pk}/experiments/no-such-experiment")
    assert missing.status_code == 404


# --- Force conclude ----------------------------------------------------------------------------


def test_a_concluder_concludes_once_as_the_page_would(make_caller, pm, workspace, standin):
    experiment = standin.find(1001, status="active")
    response = press(make_caller(pm), workspace, experiment["id"])
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == AttemptState.SUCCEEDED
    assert body["attempt"]["actor"] == "Pat (pat) via API token tests pat"
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    kinds = list(AuditEntry.objects.order_by("seq").values_list("kind", "actor_name"))
    assert (EntryKind.CONCLUSION_REQUESTED, "Pat (pat) via API token tests pat") in kinds
    again = press(make_caller(pm), workspace, experiment["id"])
    assert again.status_code == 409
    assert again.json()["attempt"] == f"{API}/attempts/{body['attempt']['id']}"
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1


def test_viewers_read_scoped_tokens_and_outsiders_cannot_conclude(
    make_caller, teammate, pm, outsider, auditor, workspace, standin
):
    experiment = standin.find(1001, status="active")
    assert press(make_caller(teammate), workspace, experiment["id"]).status_code == 403
    assert press(make_caller(pm, scope=TokenScope.READ), workspace, experiment["id"]).status_code == 403
    assert press(make_caller(auditor, scope=TokenScope.READ), workspace, experiment["id"]).status_code == 404
    assert press(make_caller(outsider), workspace, experiment["id"]).status_code == 404
    assert standin.requests(method="PUT") == []


def test_bad_input_is_a_readable_400(make_caller, pm, workspace, standin):
    experiment = standin.find(1001, status="active")
    caller = make_caller(pm)
    url = f"/workspaces/{workspace.pk}/experiments/{experiment['id']}/force-conclude"
    missing = caller("POST", url, json={})
    assert missing.status_code == 400
    assert "reason" in missing.json()["errors"]
    assert caller("POST", url, json={"reason": "x", "end_date": "yesterday"}).status_code == 400
    assert caller("POST", url, json={"reason": "x", "reason_category": "whim"}).status_code == 400
    future = (timezone.now() + dt.timedelta(days=2)).isoformat()
    assert caller("POST", url, json={"reason": "x", "end_date": future}).status_code == 400
    assert standin.requests(method="PUT") == []


def test_mixpanel_failing_is_502_and_an_already_concluded_experiment_409(make_caller, pm, workspace, standin):
    active = standin.find(1001, status="active")
    standin.set_fault("server_error", experiment_id=active["id"], method="GET")
    assert press(make_caller(pm), workspace, active["id"]).status_code == 502
    standin.clear_faults()
    concluded = standin.find(1001, status="concluded")
    assert press(make_caller(pm), workspace, concluded["id"]).status_code == 409


def test_a_lost_answer_is_202_with_the_attempt_to_follow(make_caller, pm, workspace, standin):
    active = standin.find(1001, status="active")
    standin.set_fault("apply_then_drop", experiment_id=active["id"], method="PUT")
    response = press(make_caller(pm), workspace, active["id"])
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == AttemptState.UNKNOWN
    followed = make_caller(pm)("GET", f"/attempts/{body['attempt']['id']}")
    assert followed.json()["state"] == AttemptState.UNKNOWN


# --- Two-person approval -----------------------------------------------------------------------


def test_a_request_waits_then_another_approves_and_it_is_sent_once(make_caller, pm, second, approving, standin):
    experiment = standin.find(1001, status="active")
    asked = press(make_caller(pm), approving, experiment["id"])
    assert asked.status_code == 202
    attempt_id = asked.json()["attempt"]["id"]
    assert standin.requests(method="PUT") == []
    assert make_caller(pm)("POST", f"/attempts/{attempt_id}/approve", json={}).status_code == 403  # not one's own
    approved = make_caller(second)("POST", f"/attempts/{attempt_id}/approve", json={})
    assert approved.status_code == 200
    assert approved.json()["attempt"]["reviewer"] == "Quinn (quinn) via API token tests quinn"
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    assert make_caller(second)("POST", f"/attempts/{attempt_id}/approve", json={}).status_code == 409


def test_reject_needs_a_note_and_only_the_requester_withdraws(make_caller, pm, second, teammate, approving, standin):
    experiment = standin.find(1001, status="active")
    attempt_id = press(make_caller(pm), approving, experiment["id"]).json()["attempt"]["id"]
    assert make_caller(second)("POST", f"/attempts/{attempt_id}/reject", json={}).status_code == 400
    assert make_caller(teammate)("POST", f"/attempts/{attempt_id}/reject", json={"note": "no"}).status_code == 403
    assert make_caller(second)("POST", f"/attempts/{attempt_id}/withdraw").status_code == 403
    withdrawn = make_caller(pm)("POST", f"/attempts/{attempt_id}/withdraw")
    assert withdrawn.status_code == 200, withdrawn.text
    assert standin.requests(method="PUT") == []


def test_attempts_are_readable_as_the_audit_pages_allow(make_caller, pm, outsider, auditor, workspace, standin):
    experiment = standin.find(1001, status="active")
    attempt_id = press(make_caller(pm), workspace, experiment["id"]).json()["attempt"]["id"]
    assert make_caller(auditor, scope=TokenScope.READ)("GET", f"/attempts/{attempt_id}").status_code == 200
    assert make_caller(outsider)("GET", f"/attempts/{attempt_id}").status_code == 404


# --- Record the decision ---------------------------------------------------------------------


def test_a_decision_ships_none_once(make_caller, pm, workspace, standin):
    concluded = standin.find(1001, status="concluded")
    url = f"/workspaces/{workspace.pk}/experiments/{concluded['id']}/decide"
    caller = make_caller(pm)
    mismatch = caller("POST", url, json={"variant": None, "success": True, "note": "x"})
    assert mismatch.status_code == 400
    decided = caller("POST", url, json={"variant": None, "success": False, "note": "Keep control."})
    assert decided.status_code == 200
    assert decided.json()["attempt"]["action"] == AttemptAction.DECISION
    assert len(standin.requests(method="PATCH", path_contains=concluded["id"])) == 1
    unknown = standin.find(1001, status="concluded")  # the first one is decided now
    url = f"/workspaces/{workspace.pk}/experiments/{unknown['id']}/decide"
    assert caller("POST", url, json={"variant": "no-such-variant", "success": True, "note": "x"}).status_code == 409


# --- Idempotency and limits --------------------------------------------------------------------


def test_a_decision_that_needs_approval_is_202_with_the_request_then_one_patch(
    make_caller, pm, second, approving, standin
):
    concluded = standin.find(1001, status="concluded")
    url = f"/workspaces/{approving.pk}/experiments/{concluded['id']}/decide"
    asked = make_caller(pm)("POST", url, json={"variant": None, "success": False, "note": "Keep control."})
    assert asked.status_code == 202
    body = asked.json()
    assert body["state"] == AttemptState.AWAITING_APPROVAL
    assert body["attempt"]["action"] == AttemptAction.DECISION
    assert [rule["rule"] for rule in body["attempt"]["approval_rules"]] == ["always"]
    assert standin.requests(method="PATCH") == []
    approved = make_caller(second)("POST", f"/attempts/{body['attempt']['id']}/approve", json={})
    assert approved.status_code == 200
    assert len(standin.requests(method="PATCH", path_contains=concluded["id"])) == 1
    workspaces = make_caller(pm)("GET", "/workspaces").json()
    assert [(w["requires_approval"], w["approval_policy"]) for w in workspaces] == [(True, "always")]


def test_the_same_idempotency_key_gets_the_first_answer_and_acts_once(make_caller, pm, workspace, standin):
    experiment = standin.find(1001, status="active")
    caller = make_caller(pm)
    headers = {"Idempotency-Key": "release-2026-12-07"}
    url = f"/workspaces/{workspace.pk}/experiments/{experiment['id']}/force-conclude"
    first = caller("POST", url, json={"reason": "Once."}, headers=headers)
    second = caller("POST", url, json={"reason": "Once."}, headers=headers)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(standin.requests(method="PUT", path_contains=experiment["id"])) == 1
    assert ConclusionAttempt.objects.count() == 1
    other = caller("POST", url, json={"reason": "Another body."}, headers=headers)
    assert other.status_code == 422
    # Another token's same key is its own.
    elsewhere = make_caller(pm)("POST", url, json={"reason": "Once."}, headers=headers)
    assert elsewhere.status_code == 409


def test_a_token_over_its_rate_gets_429_with_retry_after(make_caller, pm, workspace, settings, monkeypatch):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    # 45.5 s into a minute: the limit's window ends in 14.5 s, so Retry-After says 15.
    monkeypatch.setattr(token_services, "time", SimpleNamespace(time=lambda: 1_800_000_045.5))
    caller = make_caller(pm)
    answers = [caller("GET", "/workspaces") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].headers["Retry-After"] == "15"
    assert make_caller(pm)("GET", "/workspaces").status_code == 200  # per token, not per person or address


# --- The audit feed ------------------------------------------------------------------------------


def test_auditors_read_the_whole_chain_in_order_others_their_workspaces(
    make_caller, pm, outsider, auditor, workspace, other_workspace, standin
):
    press(make_caller(pm), workspace, standin.find(1001, status="active")["id"])
    feed = make_caller(auditor, scope=TokenScope.READ)("GET", "/audit/entries", params={"limit": 2})
    entries = feed.json()["entries"]
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[1]["prev_hash"] == entries[0]["hash"]
    following = requests.get(
        make_caller(auditor).base_url + feed.json()["next"],
        headers={"Authorization": f"Bearer {make_caller(auditor).secret}"},
        timeout=30,
    ).json()
    assert following["entries"][0]["seq"] == 3
    everything = make_caller(auditor)("GET", "/audit/entries", params={"limit": 1000}).json()["entries"]
    assert [e["seq"] for e in everything] == list(range(1, AuditEntry.objects.count() + 1))
    mine = make_caller(pm)("GET", "/audit/entries", params={"limit": 1000}).json()["entries"]
    assert mine
    assert {e["workspace_id"] for e in mine} == {workspace.pk}
    assert make_caller(outsider)("GET", "/audit/entries").json()["entries"] == []


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "x"])
def test_a_bad_feed_limit_is_400(make_caller, auditor, limit):
    assert make_caller(auditor)("GET", "/audit/entries", params={"limit": limit}).status_code == 400
