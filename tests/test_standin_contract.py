"""The client against the local Mixpanel stand-in, over real HTTP.

List, get and force conclude; auth failures; every fault kind, from Python and
over the /_control/ endpoint; the request log; keep-alive without Nagle stalls.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import pytest
import requests

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import (
    MixpanelAuthError,
    MixpanelBadResponse,
    MixpanelNotFound,
    MixpanelOutcomeUnknown,
    MixpanelRateLimited,
    MixpanelRejected,
    MixpanelUnavailable,
)
from experiments.mixpanel.experiment import STATUSES
from experiments.standin import DEMO_FAULT_ROWS, DEMO_WORKSPACES, FAULT_KINDS, StandIn
from experiments.standin.data import build_workspace

END = dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)
GROWTH = 1001


class _Ws:
    region = "us"


@pytest.fixture
def client(standin):
    return mixpanel.client_for(_Ws())


@pytest.fixture
def active(standin):
    return standin.find(GROWTH, status="active")


def control(standin, method: str, path: str, body=None) -> requests.Response:
    return requests.request(method, f"{standin.root_url}/_control/{path}", json=body, timeout=5)


def conclude(client, exp_id: str):
    return client.force_conclude(GROWTH, exp_id, end_date=END)


# --- The published calls ----------------------------------------------------------------------
def test_list_returns_every_seeded_experiment_with_every_status(client, standin):
    experiments = client.list_experiments(GROWTH)
    assert [e.id for e in experiments] == [e["id"] for e in standin.experiments(GROWTH)]
    assert len(experiments) == 48
    assert {e.status for e in experiments} == set(STATUSES)
    names = " ".join(e.name for e in experiments)
    for awkward in ("<script>alert(1)</script>", '"Pro"', "日本語", "الرئيسية", "🚀"):
        assert awkward in names
    assert any(e.deleted is not None for e in experiments)
    assert any(e.exposures_total is None for e in experiments)
    assert any(e.exposures_total and e.exposures_total > 0 for e in experiments)


@pytest.mark.parametrize("workspace", DEMO_WORKSPACES, ids=lambda w: w.name)
def test_every_demo_workspace_is_listed(client, workspace):
    assert len(client.list_experiments(workspace.mixpanel_workspace_id)) == 48


def test_get_returns_the_current_state(client, standin, active):
    exp = client.get_experiment(GROWTH, active["id"])
    assert (exp.id, exp.name, exp.status) == (active["id"], active["name"], "active")
    assert exp.raw == active


def test_force_conclude_concludes_an_active_experiment(client, standin, active):
    result = conclude(client, active["id"])
    assert result.experiment.status == "concluded"
    assert result.experiment.end_date == END
    state = standin.experiment(GROWTH, active["id"])
    assert (state["status"], state["end_date"]) == ("concluded", "2026-11-26T09:30:00Z")
    assert client.get_experiment(GROWTH, active["id"]).status == "concluded"
    [put] = standin.requests(method="PUT")
    assert put.path == f"/api/app/workspaces/{GROWTH}/experiments/{active['id']}/force_conclude"
    assert json.loads(put.body) == {"end_date": "2026-11-26T09:30:00Z"}
    assert put.auth_ok is True
    assert put.status == 200


@pytest.mark.parametrize("status", ["draft", "concluded", "success", "fail"])
def test_concluding_a_non_active_experiment_is_rejected(client, standin, status):
    exp = standin.find(GROWTH, status=status)
    with pytest.raises(MixpanelRejected, match=f"Experiment is {status}") as caught:
        conclude(client, exp["id"])
    assert caught.value.http_status == 400
    assert standin.experiment(GROWTH, exp["id"]) == exp


def test_unknown_experiment_is_not_found(client):
    with pytest.raises(MixpanelNotFound):
        client.get_experiment(GROWTH, "00000000-0000-4000-8000-000000000000")


def test_unknown_workspace_answers_403(client):
    with pytest.raises(MixpanelAuthError, match="no access"):
        client.list_experiments(424242)


def test_workspace_without_access_answers_403(client, standin):
    standin.set_access(2002, allowed=False)
    with pytest.raises(MixpanelAuthError) as caught:
        client.list_experiments(2002)
    assert caught.value.http_status == 403
    assert json.loads(caught.value.body_excerpt)["status"] == "error"


def test_wrong_secret_answers_401(standin):
    wrong = mixpanel.MixpanelClient(region="us", username="desk-test.sa", secret="not-the-secret", base_url=standin.url)
    with pytest.raises(MixpanelAuthError, match="invalid or expired") as caught:
        wrong.list_experiments(GROWTH)
    assert caught.value.http_status == 401
    [record] = standin.requests()
    assert record.auth_ok is False


def test_explicit_credentials_override_the_environment():
    server = StandIn(username="other.sa", secret="other-secret").start()
    try:
        good = mixpanel.MixpanelClient(region="us", username="other.sa", secret="other-secret", base_url=server.url)
        assert len(good.list_experiments(GROWTH)) == 48
        env = mixpanel.MixpanelClient(
            region="us", username="desk-test.sa", secret="CANARY-s3cr3t-do-not-leak", base_url=server.url
        )
        with pytest.raises(MixpanelAuthError):
            env.list_experiments(GROWTH)
    finally:
        server.stop()


def test_missing_auth_answers_401_with_the_published_shape(standin):
    response = requests.get(f"{standin.url}/workspaces/{GROWTH}/experiments", timeout=5)
    assert response.status_code == 401
    assert response.json()["status"] == "error"
    assert "error" in response.json()
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert standin.requests()[0].auth_ok is False


def test_paths_without_the_api_prefix_are_served_too(standin):
    auth = ("desk-test.sa", "CANARY-s3cr3t-do-not-leak")
    response = requests.get(f"{standin.root_url}/workspaces/{GROWTH}/experiments", auth=auth, timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", f"/workspaces/{GROWTH}/experiments", 405),
        ("GET", "/workspaces/abc/experiments", 400),
        ("GET", "/nothing/here", 404),
    ],
)
def test_other_routes_answer_with_the_error_shape(standin, method, path, status):
    auth = ("desk-test.sa", "CANARY-s3cr3t-do-not-leak")
    response = requests.request(method, standin.url + path, auth=auth, timeout=5)
    assert response.status_code == status
    assert response.json()["status"] == "error"


def test_launch_and_decide(standin):
    auth = ("desk-test.sa", "CANARY-s3cr3t-do-not-leak")
    draft = standin.find(GROWTH, status="draft")
    base = f"{standin.url}/workspaces/{GROWTH}/experiments/{draft['id']}"
    assert requests.put(base + "/launch", auth=auth, timeout=5).json()["results"]["status"] == "active"
    # The published lifecycle: an active experiment is concluded before it is decided.
    early = requests.patch(base + "/decide", json={"success": True, "variant": "a"}, auth=auth, timeout=5)
    assert early.status_code == 400
    assert early.json()["type"] == "invalid_request"
    assert requests.put(base + "/force_conclude", json={}, auth=auth, timeout=5).json()["results"]["status"] == (
        "concluded"
    )
    decided = requests.patch(base + "/decide", json={"success": True, "variant": "a"}, auth=auth, timeout=5)
    assert decided.json()["results"]["status"] == "success"
    assert requests.put(base + "/launch", auth=auth, timeout=5).status_code == 400


# --- Faults, from Python ----------------------------------------------------------------------------
def test_latency_fault_delays_then_succeeds(client, standin, active):
    standin.set_fault("latency", experiment_id=active["id"], latency_ms=300)
    started = time.monotonic()
    assert conclude(client, active["id"]).experiment.status == "concluded"
    assert time.monotonic() - started >= 0.3


def test_global_latency_applies_to_every_call(client, standin):
    standin.latency_ms = 200
    started = time.monotonic()
    client.list_experiments(GROWTH)
    assert time.monotonic() - started >= 0.2


def test_rate_limit_fault(client, standin, active):
    standin.set_fault("rate_limit", method="PUT", retry_after=30)
    with pytest.raises(MixpanelRateLimited) as caught:
        conclude(client, active["id"])
    assert caught.value.retry_after == 30
    assert standin.experiment(GROWTH, active["id"])["status"] == "active"


@pytest.mark.parametrize(
    ("kind", "error", "applied"),
    [
        ("server_error", MixpanelOutcomeUnknown, False),
        ("not_json", MixpanelOutcomeUnknown, False),
        ("status_error", MixpanelRejected, False),
        ("reset", MixpanelOutcomeUnknown, False),
        ("apply_then_drop", MixpanelOutcomeUnknown, True),
        ("apply_then_500", MixpanelOutcomeUnknown, True),
        ("unauthorized", MixpanelAuthError, False),
        ("forbidden", MixpanelAuthError, False),
        ("not_found", MixpanelNotFound, False),
        ("redirect", MixpanelBadResponse, False),
    ],
)
def test_each_fault_on_force_conclude(client, standin, active, kind, error, applied):
    standin.set_fault(kind, experiment_id=active["id"], method="PUT")
    with pytest.raises(error):
        conclude(client, active["id"])
    assert standin.experiment(GROWTH, active["id"])["status"] == ("concluded" if applied else "active")
    assert len(standin.requests(method="PUT")) == 1, "the PUT is sent exactly once, whatever happens"


def test_noop_200_answers_ok_but_leaves_the_experiment_active(client, standin, active):
    standin.set_fault("noop_200", experiment_id=active["id"])
    assert conclude(client, active["id"]).experiment.status == "active"
    assert standin.experiment(GROWTH, active["id"])["status"] == "active"


def test_stall_is_cut_off_by_the_deadline(client, standin, active, settings):
    settings.MIXPANEL_WRITE_DEADLINE = 0.6
    settings.MIXPANEL_READ_TIMEOUT = 5.0
    standin.set_fault("stall", experiment_id=active["id"], stall_seconds=10)
    started = time.monotonic()
    with pytest.raises(MixpanelOutcomeUnknown, match="did not answer in time"):
        conclude(client, active["id"])
    assert time.monotonic() - started < 2.0
    assert len(standin.requests(method="PUT")) == 1


def test_trickling_body_is_cut_off_by_the_deadline(client, standin, active, settings):
    # The read timeout alone would never fire: a byte arrives every 50 ms.
    settings.MIXPANEL_WRITE_DEADLINE = 0.6
    settings.MIXPANEL_READ_TIMEOUT = 5.0
    standin.set_fault("trickle", experiment_id=active["id"], interval_ms=50)
    started = time.monotonic()
    with pytest.raises(MixpanelOutcomeUnknown, match="did not answer in time"):
        conclude(client, active["id"])
    assert time.monotonic() - started < 2.0


def test_stalled_read_is_retried_within_the_deadline(client, standin, active, settings):
    settings.MIXPANEL_DEADLINE = 1.0
    settings.MIXPANEL_READ_TIMEOUT = 0.3
    standin.set_fault("stall", method="GET", times=1, stall_seconds=5)
    assert client.get_experiment(GROWTH, active["id"]).id == active["id"]
    assert len(standin.requests(method="GET")) == 2


def test_huge_body_hits_the_size_cap(client, standin, settings):
    settings.MIXPANEL_MAX_LIST_BYTES = 64 * 1024
    standin.set_fault("huge", method="GET", size_bytes=1024 * 1024)
    with pytest.raises(MixpanelBadResponse, match="larger than"):
        client.list_experiments(GROWTH)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("server_error", MixpanelUnavailable),
        ("reset", MixpanelUnavailable),
        ("not_json", MixpanelBadResponse),
        ("status_error", MixpanelBadResponse),
    ],
)
def test_faults_on_reads(client, standin, settings, kind, error):
    settings.MIXPANEL_READ_RETRIES = 2
    standin.set_fault(kind, method="GET")
    with pytest.raises(error):
        client.list_experiments(GROWTH)
    retried = error is MixpanelUnavailable
    assert len(standin.requests(method="GET")) == (3 if retried else 1)


def test_fault_with_times_fires_that_often(client, standin, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    standin.set_fault("server_error", workspace_id=GROWTH, times=1)
    with pytest.raises(MixpanelUnavailable):
        client.list_experiments(GROWTH)
    assert len(client.list_experiments(GROWTH)) == 48
    assert standin.faults() == []


def test_most_specific_fault_wins(client, standin, active, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    standin.set_fault("server_error")
    standin.set_fault("not_found", experiment_id=active["id"])
    with pytest.raises(MixpanelNotFound):
        client.get_experiment(GROWTH, active["id"])
    with pytest.raises(MixpanelUnavailable):
        client.list_experiments(GROWTH)


def test_reset_restores_state_faults_latency_and_log(client, standin, active):
    conclude(client, active["id"])
    standin.set_fault("server_error")
    standin.latency_ms = 500
    standin.reset()
    assert standin.experiment(GROWTH, active["id"])["status"] == "active"
    assert standin.faults() == []
    assert standin.latency_ms == 0
    assert standin.requests() == []


def test_unknown_fault_kind_is_refused(standin):
    with pytest.raises(ValueError, match="unknown fault kind"):
        standin.set_fault("meteor")
    with pytest.raises(ValueError, match="unknown fault parameter"):
        standin.set_fault("latency", latncy_ms=5)


# --- The demo fault rows -------------------------------------------------------------------------------
def _demo_rows(standin):
    by_name = {e["name"]: e for e in standin.experiments(GROWTH)}
    return [(by_name[name], kind) for name, kind, _ in DEMO_FAULT_ROWS]


def test_every_demo_fault_row_has_its_fault(standin):
    for exp, kind in _demo_rows(standin):
        assert exp["status"] == "active"
        assert standin.builtin_fault(GROWTH, exp["id"]).kind == kind


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("server_error", MixpanelOutcomeUnknown),
        ("rate_limit", MixpanelRateLimited),
        ("not_json", MixpanelOutcomeUnknown),
        ("status_error", MixpanelRejected),
        ("reset", MixpanelOutcomeUnknown),
        ("stall", MixpanelOutcomeUnknown),
        ("apply_then_drop", MixpanelOutcomeUnknown),
        ("forbidden", MixpanelAuthError),
    ],
)
def test_demo_fault_rows_fail_as_named_and_survive_clear_faults(client, standin, settings, kind, error):
    settings.MIXPANEL_DEADLINE = 0.5
    standin.clear_faults()
    exp = next(e for e, k in _demo_rows(standin) if k == kind)
    with pytest.raises(error):
        conclude(client, exp["id"])
    # Reads of the row still work: the fault is on force conclude only.
    assert client.get_experiment(GROWTH, exp["id"]).id == exp["id"]


def test_demo_noop_row_stays_active(client, standin):
    exp = next(e for e, k in _demo_rows(standin) if k == "noop_200")
    assert conclude(client, exp["id"]).experiment.status == "active"


# --- Control endpoint over HTTP -------------------------------------------------------------------------
def test_control_endpoint_sets_lists_and_clears_faults(client, standin, active):
    response = control(standin, "POST", "faults", {"kind": "server_error", "experiment_id": active["id"], "times": 1})
    assert response.status_code == 201
    assert control(standin, "GET", "faults").json()["faults"][0]["kind"] == "server_error"
    with pytest.raises(MixpanelOutcomeUnknown):
        conclude(client, active["id"])
    control(standin, "POST", "faults", {"kind": "latency", "latency_ms": 1})
    assert control(standin, "DELETE", "faults").status_code == 200
    assert standin.faults() == []


def test_control_endpoint_refuses_bad_faults(standin):
    assert control(standin, "POST", "faults", {"kind": "meteor"}).status_code == 400
    assert control(standin, "POST", "faults", {"nothing": 1}).status_code == 400
    assert control(standin, "POST", "faults", {"kind": "latency", "latency_ms": "soon"}).status_code == 400
    bad_json = requests.post(f"{standin.root_url}/_control/faults", data="{not json", timeout=5)
    assert bad_json.status_code == 400
    assert control(standin, "GET", "no-such-thing").status_code == 404


def test_control_endpoint_latency_reset_and_request_log(client, standin, active):
    assert control(standin, "POST", "latency", {"latency_ms": 120}).json()["latency_ms"] == 120
    assert standin.latency_ms == 120
    assert control(standin, "POST", "latency", {"latency_ms": -1}).status_code == 400
    conclude(client, active["id"])
    client.list_experiments(GROWTH)
    log = control(standin, "GET", f"requests?method=PUT&path_contains={active['id']}").json()["requests"]
    assert [(r["method"], r["status"], r["auth_ok"]) for r in log] == [("PUT", 200, True)]
    assert json.loads(log[0]["body"])["end_date"] == "2026-11-26T09:30:00Z"
    assert control(standin, "POST", "reset").status_code == 200
    assert standin.experiment(GROWTH, active["id"])["status"] == "active"
    assert control(standin, "GET", "requests").json()["requests"] == []


def test_control_endpoint_help_and_state(standin):
    help_ = control(standin, "GET", "").json()
    assert set(help_["fault_kinds"]) == set(FAULT_KINDS)
    assert help_["api"] == standin.url
    assert len(control(standin, "GET", f"experiments/{GROWTH}").json()["results"]) == 48


def test_control_calls_are_not_in_the_request_log(standin):
    control(standin, "GET", "faults")
    assert standin.requests() == []


# --- Transport quality ----------------------------------------------------------------------------------
def test_keep_alive_reuses_one_connection_without_nagle_stalls(client, standin, active):
    for _ in range(15):
        client.get_experiment(GROWTH, active["id"])
    assert standin.connections_opened == 1
    # With Nagle on, each reused-connection call waits ~40 ms for a delayed ACK
    # (measured by make bench, not here): check the socket option itself.
    assert standin.last_connection_nodelay is True


def test_single_put_even_when_the_server_resets_every_time(client, standin, active):
    standin.set_fault("reset")
    with pytest.raises(MixpanelOutcomeUnknown):
        conclude(client, active["id"])
    assert len(standin.requests(method="PUT")) == 1
    assert standin.connections_opened == 1


def test_refused_connection_before_the_put_is_definite(settings, standin, active):
    dead = StandIn().start()
    url = dead.url
    dead.stop()  # nothing listens there any more
    client = mixpanel.MixpanelClient(region="us", username="u", secret="s", base_url=url)
    with pytest.raises(MixpanelUnavailable, match="Nothing was sent") as caught:
        conclude(client, active["id"])
    assert not caught.value.outcome_unknown


# --- Seeded data ------------------------------------------------------------------------------------------
def test_seeded_data_is_deterministic():
    day = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    growth = DEMO_WORKSPACES[0]
    first, _ = build_workspace(growth, seed=7, count=60, today=day)
    again, _ = build_workspace(growth, seed=7, count=60, today=day)
    other, _ = build_workspace(growth, seed=8, count=60, today=day)
    assert first == again
    assert [e["id"] for e in first] != [e["id"] for e in other]
    assert len({e["id"] for e in first}) == 60


def test_ten_thousand_experiments_have_unique_ids():
    # Benchmarks use 10,000 per workspace; how fast that builds is make bench's business.
    rows, _ = build_workspace(DEMO_WORKSPACES[1], seed=1, count=10_000, today=dt.datetime.now(dt.UTC))
    assert len({row["id"] for row in rows}) == 10_000


def test_experiment_count_is_configurable(standin_server):
    small = StandIn(experiments_per_workspace=5).start()
    try:
        assert len(small.experiments(GROWTH)) == 5
        empty = StandIn(experiments_per_workspace=0)
        assert empty.experiments(2002) == []
    finally:
        small.stop()


def test_add_experiment_and_set_status(client, standin):
    added = standin.add_experiment(GROWTH, name="<b>added</b>", status="active")
    assert client.get_experiment(GROWTH, added["id"]).name == "<b>added</b>"
    assert any(e.id == added["id"] for e in client.list_experiments(GROWTH))
    standin.set_status(GROWTH, added["id"], "fail")
    assert client.get_experiment(GROWTH, added["id"]).status == "fail"


def test_request_log_never_holds_credentials(client, standin, active):
    conclude(client, active["id"])
    token = base64.b64encode(b"desk-test.sa:CANARY-s3cr3t-do-not-leak").decode()
    dumped = json.dumps([r.as_dict() for r in standin.requests()])
    assert "CANARY-s3cr3t-do-not-leak" not in dumped
    assert token not in dumped


def test_the_huge_body_is_built_only_for_the_huge_fault(client, standin, active, monkeypatch):
    from experiments.standin import server

    def no_huge_body(size: int) -> bytes:
        raise AssertionError("the huge body was built for another fault")

    monkeypatch.setattr(server, "_huge_body", no_huge_body)
    standin.set_fault("forbidden", method="GET", times=1)
    with pytest.raises(MixpanelAuthError):
        client.get_experiment(GROWTH, active["id"])


def test_a_read_follows_the_stand_ins_same_origin_redirect(client, standin, active):
    standin.set_fault("redirect_slash", method="GET", times=1)
    assert len(client.list_experiments(GROWTH)) == 48
    paths = [r.path for r in standin.requests(method="GET")]
    assert paths == [f"/api/app/workspaces/{GROWTH}/experiments", f"/api/app/workspaces/{GROWTH}/experiments/"]


def test_a_write_never_follows_the_stand_ins_redirect(client, standin, active):
    standin.set_fault("redirect_slash", method="PUT", times=1)
    with pytest.raises(MixpanelBadResponse, match="redirect"):
        conclude(client, active["id"])
    assert len(standin.requests(method="PUT")) == 1
    assert standin.experiment(GROWTH, active["id"])["status"] == "active"
