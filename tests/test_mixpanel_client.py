"""experiments.mixpanel.MixpanelClient against a `responses` mock of requests.

One test per row of issue 3's list: method and URL per region, JSON body, Basic
auth, User-Agent, a timeout on every call, the failure mapping, the size cap,
no redirects, the PUT never retried, reads retried within bounds.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.client import MixpanelClient
from experiments.mixpanel.errors import (
    MixpanelAuthError,
    MixpanelBadResponse,
    MixpanelConfigError,
    MixpanelError,
    MixpanelNotFound,
    MixpanelOutcomeUnknown,
    MixpanelRateLimited,
    MixpanelRejected,
    MixpanelUnavailable,
)
from experiments.mixpanel.experiment import ExperimentSummary, VariantSummary
from experiments.mixpanel.wire import BODY_EXCERPT_CHARS, MSG_UNKNOWN_PREFIX, RAW_BODY_CHARS

US = "https://mixpanel.com/api/app"
WS = 1001
EXP = "0b9c4b8e-4a57-4c1e-9a55-5b0d1f6b7a01"
LIST_URL = f"{US}/workspaces/{WS}/experiments"
GET_URL = f"{LIST_URL}/{EXP}"
PUT_URL = f"{GET_URL}/force_conclude"
END = dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)


def experiment(status: str = "active", **extra):
    return {"id": EXP, "name": "Checkout", "status": status, **extra}


def ok(results) -> dict:
    return {"status": "ok", "results": results}


class FakeTime:
    """A clock that only moves when the client sleeps, so retry tests never wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _defaults(settings):
    settings.MIXPANEL_API_BASE_URL = ""
    settings.MIXPANEL_CONNECT_TIMEOUT = 3.05
    settings.MIXPANEL_READ_TIMEOUT = 10.0
    settings.MIXPANEL_DEADLINE = 15.0
    settings.MIXPANEL_WRITE_DEADLINE = 60.0
    settings.MIXPANEL_READ_RETRIES = 2
    settings.MIXPANEL_RETRY_AFTER_CAP = 5.0
    settings.MIXPANEL_MAX_RESPONSE_BYTES = 5 * 1024 * 1024
    settings.MIXPANEL_MAX_LIST_BYTES = 128 * 1024 * 1024
    mixpanel.reset_clients()
    yield
    mixpanel.reset_clients()


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def client(fake_time):
    c = MixpanelClient(region="us", username="desk.sa", secret="s3cret-value")
    c._clock = fake_time.clock
    c._sleep = fake_time.sleep
    return c


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, PUT_URL, reason=reason))


def reset_by_peer() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    )


# --- URLs, method, headers, body, timeouts ----------------------------------------------
@pytest.mark.parametrize(
    ("region", "base"),
    [
        ("us", "https://mixpanel.com/api/app"),
        ("eu", "https://eu.mixpanel.com/api/app"),
        ("in", "https://in.mixpanel.com/api/app"),
    ],
)
def test_each_region_has_its_own_base_url(mocked, region, base):
    mocked.get(f"{base}/workspaces/7/experiments", json=ok([experiment()]))
    c = MixpanelClient(region=region, username="u", secret="s")
    assert [e.id for e in c.list_experiments(7)] == [EXP]
    assert mocked.calls[0].request.method == "GET"
    assert mocked.calls[0].request.url == f"{base}/workspaces/7/experiments"


def test_base_url_setting_overrides_every_region(mocked, settings):
    settings.MIXPANEL_API_BASE_URL = "https://staging.example.com/api/app/"
    mocked.get("https://staging.example.com/api/app/workspaces/7/experiments", json=ok([]))
    for region in ("us", "eu", "in"):
        assert MixpanelClient(region=region, username="u", secret="s").list_experiments(7) == []
    assert len(mocked.calls) == 3


def test_get_experiment_url_and_parsing(mocked, client):
    mocked.get(GET_URL, json=ok(experiment(start_date="2026-11-01T09:00:00Z", tags=["a", "b"])))
    exp = client.get_experiment(WS, EXP)
    assert (exp.id, exp.status, exp.tags) == (EXP, "active", ("a", "b"))
    assert exp.start_date == dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
    assert exp.raw["name"] == "Checkout"


def test_experiment_id_is_escaped_in_the_path(mocked, client):
    mocked.get(f"{LIST_URL}/a%2F..%2Fb", json=ok(experiment()))
    client.get_experiment(WS, "a/../b")
    assert mocked.calls[0].request.url == f"{LIST_URL}/a%2F..%2Fb"


def test_force_conclude_sends_put_with_json_end_date(mocked, client):
    mocked.put(PUT_URL, json=ok(experiment("concluded", end_date="2026-11-26T09:30:00Z")))
    result = client.force_conclude(WS, EXP, end_date=END)
    request = mocked.calls[0].request
    assert request.method == "PUT"
    assert request.url == PUT_URL
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"end_date": "2026-11-26T09:30:00Z"}
    assert result.experiment.status == "concluded"
    assert result.http_status == 200
    assert json.loads(result.raw_body)["results"]["id"] == EXP
    assert result.truncated is False
    assert result.duration_ms >= 0


def test_basic_auth_user_agent_and_accept_headers(mocked, client):
    mocked.get(LIST_URL, json=ok([]))
    client.list_experiments(WS)
    headers = mocked.calls[0].request.headers
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"desk.sa:s3cret-value").decode()
    from experiments import __version__

    assert headers["User-Agent"] == f"ExperimentDesk/{__version__}"
    assert headers["Accept"] == "application/json"


def test_a_connect_and_read_timeout_is_passed_on_every_call(mocked, client, settings):
    settings.MIXPANEL_CONNECT_TIMEOUT = 2.5
    settings.MIXPANEL_READ_TIMEOUT = 7.0
    mocked.get(LIST_URL, json=ok([]))
    mocked.get(GET_URL, json=ok(experiment()))
    mocked.put(PUT_URL, json=ok(experiment("concluded")))
    client.list_experiments(WS)
    client.get_experiment(WS, EXP)
    client.force_conclude(WS, EXP, end_date=END)
    # The PUT waits for its answer as long as its own, longer deadline allows.
    assert [c.request.req_kwargs["timeout"] for c in mocked.calls] == [(2.5, 7.0), (2.5, 7.0), (2.5, 60.0)]


def test_read_timeout_never_exceeds_what_is_left_of_the_deadline(mocked, client, settings):
    settings.MIXPANEL_READ_TIMEOUT = 10.0
    settings.MIXPANEL_DEADLINE = 4.0
    mocked.get(LIST_URL, json=ok([]))
    client.list_experiments(WS)
    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.05, 4.0)


def test_list_skips_rows_without_id_or_status(mocked, client, caplog):
    mocked.get(LIST_URL, json=ok([experiment(), {"name": "no id"}, "not an object", {"id": "x", "status": None}]))
    assert [e.id for e in client.list_experiments(WS)] == [EXP]
    assert "skipped 3 unusable" in caplog.text


# --- Failure mapping: reads ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"status": "error", "error": "bad creds"}, MixpanelAuthError, "invalid or expired"),
        (403, {"status": "error", "error": "no access"}, MixpanelAuthError, "no access to this workspace"),
        (404, {"status": "error", "error": "nope"}, MixpanelNotFound, "no such experiment"),
        (400, {"status": "error", "error": "end_date is invalid"}, MixpanelRejected, "end_date is invalid"),
        (
            409,
            {"status": "error", "type": "conflict", "error": {"field": "status"}},
            MixpanelRejected,
            'conflict: {"field": "status"}',
        ),
        (405, "<html>Method Not Allowed</html>", MixpanelRejected, "HTTP 405"),
        (415, "", MixpanelRejected, "no details given"),
    ],
)
def test_definite_client_errors_on_reads(mocked, client, status, body, error, text):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    mocked.get(LIST_URL, status=status, **kwargs)
    with pytest.raises(error) as caught:
        client.list_experiments(WS)
    assert text in str(caught.value)
    assert caught.value.http_status == status
    assert caught.value.duration_ms is not None
    assert len(mocked.calls) == 1, "4xx other than 429 is never retried"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("<html>Bad gateway page</html>", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "unexpected shape"),
        ('{"results": []}', "unexpected shape"),
        ('{"status": "ok", "results": {"id": "x"}}', "unexpected shape"),
        ('{"status": "error", "error": "quota exhausted"}', "reported an error: quota exhausted"),
    ],
)
def test_unusable_200_on_list_is_a_bad_response(mocked, client, body, text):
    mocked.get(LIST_URL, body=body, status=200)
    with pytest.raises(MixpanelBadResponse) as caught:
        client.list_experiments(WS)
    assert text in str(caught.value)
    assert caught.value.http_status == 200


def test_get_with_unusable_experiment_is_a_bad_response(mocked, client):
    mocked.get(GET_URL, json=ok({"name": "no id or status"}))
    with pytest.raises(MixpanelBadResponse, match="without an id"):
        client.get_experiment(WS, EXP)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(refused(), id="refused"),
        pytest.param(requests.exceptions.ConnectTimeout("connect timed out"), id="connect-timeout"),
        pytest.param(requests.exceptions.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(reset_by_peer(), id="reset"),
    ],
)
def test_transport_failures_on_reads_are_unavailable(mocked, client, failure, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    mocked.get(LIST_URL, body=failure)
    with pytest.raises(MixpanelUnavailable) as caught:
        client.list_experiments(WS)
    assert not caught.value.outcome_unknown


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_on_reads_are_unavailable(mocked, client, settings, status):
    settings.MIXPANEL_READ_RETRIES = 0
    mocked.get(LIST_URL, status=status, body="<html><h1>Oops</h1></html>")
    with pytest.raises(MixpanelUnavailable, match=f"HTTP {status}") as caught:
        client.list_experiments(WS)
    assert caught.value.http_status == status
    assert "<h1>Oops</h1>" in caught.value.body_excerpt


def test_rate_limited_read_reports_the_wait(mocked, client, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    mocked.get(LIST_URL, status=429, json={"status": "error", "error": "slow down"}, headers={"Retry-After": "42"})
    with pytest.raises(MixpanelRateLimited, match="42 seconds") as caught:
        client.list_experiments(WS)
    assert caught.value.retry_after == 42
    assert caught.value.http_status == 429


def test_retry_after_as_http_date(mocked, client, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    mocked.get(LIST_URL, status=429, headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    with pytest.raises(MixpanelRateLimited) as caught:
        client.list_experiments(WS)
    assert 100 < caught.value.retry_after <= 120


def test_body_excerpt_is_capped(mocked, client, settings):
    settings.MIXPANEL_READ_RETRIES = 0
    mocked.get(LIST_URL, status=500, body="x" * 50_000)
    with pytest.raises(MixpanelUnavailable) as caught:
        client.list_experiments(WS)
    assert len(caught.value.body_excerpt) == BODY_EXCERPT_CHARS


# --- Redirects and size cap ---------------------------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_never_followed(mocked, client, status):
    mocked.get(LIST_URL, status=status, headers={"Location": "https://evil.example/steal"})
    mocked.get("https://evil.example/steal", json=ok([]))
    with pytest.raises(MixpanelBadResponse, match="redirect"):
        client.list_experiments(WS)
    assert [c.request.url for c in mocked.calls] == [LIST_URL]


def test_redirect_on_put_is_not_followed(mocked, client):
    mocked.put(PUT_URL, status=307, headers={"Location": "https://evil.example/steal"})
    with pytest.raises(MixpanelBadResponse, match="redirect"):
        client.force_conclude(WS, EXP, end_date=END)
    assert len(mocked.calls) == 1


def test_body_over_the_cap_is_refused_while_streaming(mocked, client, settings):
    settings.MIXPANEL_MAX_LIST_BYTES = 4096
    big = json.dumps(ok([experiment(description="x" * 10_000)]))
    mocked.get(LIST_URL, body=big, auto_calculate_content_length=False)
    with pytest.raises(MixpanelBadResponse, match="larger than the 4096 bytes"):
        client.list_experiments(WS)


def test_declared_length_over_the_cap_is_refused_before_reading(mocked, client, settings):
    settings.MIXPANEL_MAX_LIST_BYTES = 4096
    mocked.get(LIST_URL, body="x" * 5000, auto_calculate_content_length=True)
    with pytest.raises(MixpanelBadResponse, match="larger than"):
        client.list_experiments(WS)


def test_body_at_the_cap_is_accepted(mocked, client, settings):
    body = json.dumps(ok([experiment()]))
    settings.MIXPANEL_MAX_LIST_BYTES = len(body.encode())
    mocked.get(LIST_URL, body=body)
    assert len(client.list_experiments(WS)) == 1


# --- Force conclude failure mapping -------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"status": "error", "error": "expired"}, MixpanelAuthError),
        (403, {"status": "error", "error": "no access"}, MixpanelAuthError),
        (404, {"status": "error", "error": "not found"}, MixpanelNotFound),
        (400, {"status": "error", "error": "Experiment is concluded"}, MixpanelRejected),
        (429, {"status": "error", "error": "slow down"}, MixpanelRateLimited),
        (200, {"status": "error", "error": "cannot conclude"}, MixpanelRejected),
    ],
)
def test_definite_failures_of_force_conclude(mocked, client, status, body, error):
    mocked.put(PUT_URL, status=status, json=body)
    with pytest.raises(error) as caught:
        client.force_conclude(WS, EXP, end_date=END)
    assert not caught.value.outcome_unknown
    assert caught.value.http_status == status
    assert len(mocked.calls) == 1


def test_status_error_in_a_200_carries_mixpanels_text(mocked, client):
    mocked.put(PUT_URL, json={"status": "error", "type": "invalid", "error": "already concluded"})
    with pytest.raises(MixpanelRejected, match="invalid: already concluded"):
        client.force_conclude(WS, EXP, end_date=END)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, "<html>Internal Server Error</html>"),
        (502, "<html>Bad Gateway</html>"),
        (504, ""),
        (200, "<html>not json</html>"),
        (200, ""),
        (200, '{"status": "ok"}'),
        (200, '{"status": "ok", "results": ["not", "an", "object"]}'),
        (200, '{"status": "weird", "results": {}}'),
        (204, ""),
    ],
)
def test_unreadable_answers_after_the_put_leave_the_outcome_unknown(mocked, client, status, body):
    mocked.put(PUT_URL, status=status, body=body)
    with pytest.raises(MixpanelOutcomeUnknown) as caught:
        client.force_conclude(WS, EXP, end_date=END)
    assert caught.value.outcome_unknown
    assert caught.value.http_status == status
    assert str(caught.value).startswith(MSG_UNKNOWN_PREFIX)
    assert "try again" not in str(caught.value).lower()  # sent once: retrying could apply it twice
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(requests.exceptions.ReadTimeout("read timed out"), id="read-timeout"),
        pytest.param(reset_by_peer(), id="reset"),
        pytest.param(requests.exceptions.ChunkedEncodingError("broken chunk"), id="chunked"),
    ],
)
def test_transport_failure_after_sending_the_put_is_outcome_unknown(mocked, client, failure):
    mocked.put(PUT_URL, body=failure)
    with pytest.raises(MixpanelOutcomeUnknown) as caught:
        client.force_conclude(WS, EXP, end_date=END)
    assert caught.value.http_status is None
    assert caught.value.duration_ms is not None
    assert str(caught.value).startswith(MSG_UNKNOWN_PREFIX)
    assert "try again" not in str(caught.value).lower()


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(refused(), id="refused"),
        pytest.param(requests.exceptions.ConnectTimeout("connect timed out"), id="connect-timeout"),
    ],
)
def test_no_connection_before_the_put_is_a_definite_unavailable(mocked, client, failure):
    mocked.put(PUT_URL, body=failure)
    with pytest.raises(MixpanelUnavailable, match="Nothing was sent") as caught:
        client.force_conclude(WS, EXP, end_date=END)
    assert not isinstance(caught.value, MixpanelOutcomeUnknown)
    assert not caught.value.outcome_unknown


def test_oversized_put_answer_is_outcome_unknown(mocked, client, settings):
    settings.MIXPANEL_MAX_RESPONSE_BYTES = 2048
    mocked.put(PUT_URL, body=json.dumps(ok(experiment("concluded", description="y" * 5000))))
    with pytest.raises(MixpanelOutcomeUnknown, match="larger than"):
        client.force_conclude(WS, EXP, end_date=END)


def test_force_conclude_returns_a_non_concluded_experiment_as_received(mocked, client):
    # Mixpanel's lifecycle calls are lenient; judging the status is the service's job.
    mocked.put(PUT_URL, json=ok(experiment("draft")))
    assert client.force_conclude(WS, EXP, end_date=END).experiment.status == "draft"


def test_raw_body_of_a_conclusion_is_capped_and_marked_truncated(mocked, client):
    mocked.put(PUT_URL, json=ok(experiment("concluded", description="z" * (RAW_BODY_CHARS + 10))))
    result = client.force_conclude(WS, EXP, end_date=END)
    assert len(result.raw_body) == RAW_BODY_CHARS
    assert result.truncated is True
    assert result.experiment.description.startswith("zzz")


# --- Retries -------------------------------------------------------------------------------------------
def test_put_is_never_retried_on_5xx(mocked, client):
    mocked.put(PUT_URL, status=503, body="busy")
    mocked.put(PUT_URL, json=ok(experiment("concluded")))
    with pytest.raises(MixpanelOutcomeUnknown):
        client.force_conclude(WS, EXP, end_date=END)
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("failure", [reset_by_peer(), refused(), requests.exceptions.ReadTimeout("t")])
def test_put_is_never_retried_on_connection_errors(mocked, client, failure, fake_time):
    mocked.put(PUT_URL, body=failure)
    mocked.put(PUT_URL, json=ok(experiment("concluded")))
    with pytest.raises((MixpanelOutcomeUnknown, MixpanelUnavailable)):
        client.force_conclude(WS, EXP, end_date=END)
    assert len(mocked.calls) == 1
    assert fake_time.sleeps == []


def test_put_is_never_retried_on_429(mocked, client, fake_time):
    mocked.put(PUT_URL, status=429, headers={"Retry-After": "1"})
    mocked.put(PUT_URL, json=ok(experiment("concluded")))
    with pytest.raises(MixpanelRateLimited):
        client.force_conclude(WS, EXP, end_date=END)
    assert len(mocked.calls) == 1
    assert fake_time.sleeps == []


def test_urllib3_never_retries_anything(client):
    # urllib3's default Retry allows PUT; our adapters allow no retry at all.
    for prefix in ("https://", "http://"):
        retry = client._session.get_adapter(prefix + "mixpanel.com").max_retries
        assert retry.total == 0
        assert retry.read is False
        assert retry.status_forcelist is None or not retry.status_forcelist


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_reads_retry_and_then_succeed(mocked, client, fake_time, status):
    mocked.get(LIST_URL, status=status, body="busy")
    mocked.get(LIST_URL, status=status, body="busy")
    mocked.get(LIST_URL, json=ok([experiment()]))
    assert len(client.list_experiments(WS)) == 1
    assert len(mocked.calls) == 3
    assert len(fake_time.sleeps) == 2


def test_reads_retry_connection_errors(mocked, client, fake_time):
    mocked.get(LIST_URL, body=refused())
    mocked.get(LIST_URL, json=ok([]))
    assert client.list_experiments(WS) == []
    assert len(mocked.calls) == 2


@pytest.mark.parametrize("retries", [0, 1, 2, 4])
def test_read_retries_are_bounded_by_the_setting(mocked, client, settings, retries):
    settings.MIXPANEL_READ_RETRIES = retries
    for _ in range(10):
        mocked.get(LIST_URL, status=500, body="down")
    with pytest.raises(MixpanelUnavailable):
        client.list_experiments(WS)
    assert len(mocked.calls) == retries + 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_definite_answers_are_not_retried(mocked, client, status, fake_time):
    mocked.get(LIST_URL, status=status, json={"status": "error", "error": "x"}, headers={"Location": "/x"})
    with pytest.raises(MixpanelError):
        client.list_experiments(WS)
    assert len(mocked.calls) == 1
    assert fake_time.sleeps == []


def test_retry_after_is_honoured_when_under_the_cap(mocked, client, fake_time, settings):
    settings.MIXPANEL_RETRY_AFTER_CAP = 5.0
    mocked.get(LIST_URL, status=429, headers={"Retry-After": "3"})
    mocked.get(LIST_URL, json=ok([]))
    client.list_experiments(WS)
    assert fake_time.sleeps == [3.0]


def test_retry_after_over_the_cap_gives_up_at_once(mocked, client, fake_time, settings):
    settings.MIXPANEL_RETRY_AFTER_CAP = 5.0
    mocked.get(LIST_URL, status=429, headers={"Retry-After": "60"})
    mocked.get(LIST_URL, json=ok([]))
    with pytest.raises(MixpanelRateLimited) as caught:
        client.list_experiments(WS)
    assert caught.value.retry_after == 60
    assert fake_time.sleeps == []
    assert len(mocked.calls) == 1


def test_backoff_without_retry_after_is_capped(mocked, client, fake_time, settings):
    settings.MIXPANEL_RETRY_AFTER_CAP = 0.05
    mocked.get(LIST_URL, status=500)
    mocked.get(LIST_URL, status=500)
    mocked.get(LIST_URL, json=ok([]))
    client._random = lambda: 1.0  # the top of the jitter
    client.list_experiments(WS)
    assert fake_time.sleeps == [0.05, 0.05]


def test_retries_never_sleep_past_the_deadline(mocked, client, fake_time, settings):
    settings.MIXPANEL_DEADLINE = 2.0
    mocked.get(LIST_URL, status=503, headers={"Retry-After": "1.5"})
    mocked.get(LIST_URL, status=503, headers={"Retry-After": "1.5"})
    mocked.get(LIST_URL, json=ok([]))
    with pytest.raises(MixpanelUnavailable):
        client.list_experiments(WS)
    # One wait of 1.5 s fits in the 2 s budget; a second would not.
    assert fake_time.sleeps == [1.5]
    assert len(mocked.calls) == 2


# --- Configuration and the client_for seam ---------------------------------------------------------------
class _Ws:
    def __init__(self, region: str = "us") -> None:
        self.region = region


def test_missing_credentials_name_the_variables(monkeypatch):
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_SECRET", raising=False)
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE", raising=False)
    with pytest.raises(MixpanelConfigError) as caught:
        mixpanel.client_for(_Ws())
    # Operators get the variables' names (commands print them, the log has them); people do not.
    assert "MIXPANEL_SERVICE_ACCOUNT_USERNAME" in caught.value.detail
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET" in caught.value.detail
    assert "MIXPANEL_" not in str(caught.value)
    assert "operators" in str(caught.value)


def test_credentials_from_files(monkeypatch, tmp_path, mocked):
    (tmp_path / "user").write_text("file.sa\n")
    (tmp_path / "secret").write_text("from-a-file\n")
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_USERNAME")
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_SECRET")
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_USERNAME_FILE", str(tmp_path / "user"))
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE", str(tmp_path / "secret"))
    mocked.get(LIST_URL, json=ok([]))
    mixpanel.client_for(_Ws()).list_experiments(WS)
    auth = mocked.calls[0].request.headers["Authorization"]
    assert base64.b64decode(auth.split()[1]) == b"file.sa:from-a-file"


def test_unreadable_secret_file_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT_SECRET")
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(MixpanelConfigError) as caught:
        mixpanel.client_for(_Ws())
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE" in caught.value.detail


def test_value_and_file_both_set_is_a_config_error(monkeypatch, tmp_path):
    (tmp_path / "secret").write_text("x")
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE", str(tmp_path / "secret"))
    with pytest.raises(MixpanelConfigError) as caught:
        mixpanel.client_for(_Ws())
    assert "not both" in caught.value.detail


def test_credentials_are_read_when_the_client_is_built(monkeypatch, mocked):
    mocked.get(LIST_URL, json=ok([]))
    first = mixpanel.client_for(_Ws())
    assert mixpanel.client_for(_Ws()) is first, "one client (one Session) reused per thread"
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_SECRET", "rotated-secret")
    second = mixpanel.client_for(_Ws())
    assert second is not first
    second.list_experiments(WS)
    auth = mocked.calls[0].request.headers["Authorization"]
    assert base64.b64decode(auth.split()[1]).endswith(b":rotated-secret")


def test_one_client_per_region():
    assert mixpanel.client_for(_Ws("us")) is not mixpanel.client_for(_Ws("eu"))
    assert mixpanel.client_for(_Ws("eu")).base_url == "https://eu.mixpanel.com/api/app"


@pytest.mark.parametrize(
    ("region", "base_url", "text"),
    [
        ("mars", "", "Unknown Mixpanel region"),
        ("us", "http://mixpanel.example.com/api/app", "must use https"),
        ("us", "ftp://mixpanel.com", "http(s) URL"),
        ("us", "https://user:pw@mixpanel.com/api/app", "plain base URL"),
        ("us", "not a url", "http(s) URL"),
    ],
)
def test_bad_configuration_is_refused(region, base_url, text):
    with pytest.raises(MixpanelConfigError) as caught:
        MixpanelClient(region=region, username="u", secret="s", base_url=base_url)
    assert text in caught.value.detail


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_plain_http_is_allowed_on_loopback_only(host):
    client = MixpanelClient(region="us", username="u", secret="s", base_url=f"http://{host}:8765/api/app")
    assert client.base_url == f"http://{host}:8765/api/app"


# --- The list: streamed, summarised ----------------------------------------------------------------
def test_list_keeps_a_summary_of_each_experiment(mocked, client):
    item = experiment(
        variants=[{"key": "control", "split": 1}, {"key": "green", "split": 3}],
        exposures_cache={"control": 120, "green": 118},
        results_cache={"big": "x" * 5000},
        tags=["a", "b"],
        creator_name="Casey",
        start_date="2026-11-01T09:00:00Z",
    )
    mocked.get(LIST_URL, json=ok([item]))
    (summary,) = client.list_experiments(WS)
    assert isinstance(summary, ExperimentSummary)
    # Planned split as a share of traffic, read by the experiment page's own rule.
    assert summary.variants == (
        VariantSummary("control", 25.0, 120),
        VariantSummary("green", 75.0, 118),
    )
    assert (summary.variants_count, summary.exposures_total, summary.tags) == (2, 238, ("a", "b"))
    assert summary.start_date == dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
    assert not hasattr(summary, "results_cache")


def test_a_list_larger_than_its_head_is_parsed_as_it_streams(mocked, client):
    items = [experiment(id=f"exp-{n}", results_cache={"pad": "y" * 3000}) for n in range(100)]
    mocked.get(LIST_URL, body=json.dumps(ok(items)))
    assert [e.id for e in client.list_experiments(WS)] == [f"exp-{n}" for n in range(100)]


def test_a_large_list_must_say_ok_before_its_results(mocked, client):
    items = [experiment(id=f"exp-{n}", results_cache={"pad": "y" * 3000}) for n in range(100)]
    mocked.get(LIST_URL, body=json.dumps({"results": items, "status": "ok"}))
    with pytest.raises(MixpanelBadResponse, match="before its results"):
        client.list_experiments(WS)


def test_a_large_list_that_breaks_off_is_not_json(mocked, client):
    items = [experiment(id=f"exp-{n}", results_cache={"pad": "y" * 3000}) for n in range(100)]
    mocked.get(LIST_URL, body=json.dumps(ok(items))[:200_000])
    with pytest.raises(MixpanelBadResponse, match="not JSON"):
        client.list_experiments(WS)


@pytest.mark.parametrize("bad_id", ["nul\x00inside", "line\nfeed", "\x7fdel", "c1\x85control"])
def test_ids_with_control_characters_are_refused_at_the_boundary(mocked, client, caplog, bad_id):
    mocked.get(LIST_URL, json=ok([experiment(id=bad_id), experiment()]))
    mocked.get(GET_URL, json=ok(experiment(id=bad_id)))
    assert [e.id for e in client.list_experiments(WS)] == [EXP]
    assert "control characters" in caplog.text
    with pytest.raises(MixpanelBadResponse, match="control characters"):
        client.get_experiment(WS, EXP)


# --- Redirects: reads follow them home only, writes never -------------------------------------------
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_read_follows_a_same_origin_redirect(mocked, client, status):
    mocked.get(LIST_URL, status=status, headers={"Location": LIST_URL + "/"})
    mocked.get(LIST_URL + "/", json=ok([experiment()]))
    assert [e.id for e in client.list_experiments(WS)] == [EXP]
    assert [c.request.url for c in mocked.calls] == [LIST_URL, LIST_URL + "/"]
    assert mocked.calls[1].request.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "location", ["https://evil.example/api/app/x", "http://mixpanel.com/api/app/x", "https://mixpanel.com:8443/x", ""]
)
def test_a_read_never_follows_a_redirect_to_another_origin(mocked, client, location):
    mocked.get(LIST_URL, status=302, headers={"Location": location} if location else {})
    with pytest.raises(MixpanelBadResponse, match="another address"):
        client.list_experiments(WS)
    assert len(mocked.calls) == 1


def test_a_redirect_loop_is_given_up(mocked, client):
    mocked.get(LIST_URL, status=308, headers={"Location": LIST_URL})
    with pytest.raises(MixpanelBadResponse, match="more than 3 times"):
        client.list_experiments(WS)
    assert len(mocked.calls) == 4


def test_a_write_never_follows_even_a_same_origin_redirect(mocked, client):
    mocked.put(PUT_URL, status=307, headers={"Location": PUT_URL + "/"})
    mocked.put(PUT_URL + "/", json=ok(experiment("concluded")))
    with pytest.raises(MixpanelBadResponse, match="redirect"):
        client.force_conclude(WS, EXP, end_date=END)
    assert len(mocked.calls) == 1


# --- Backoff and deadlines ------------------------------------------------------------------------------
@pytest.mark.parametrize(("draw", "expected"), [(1.0, [0.25, 0.5, 1.0]), (0.0, [0.125, 0.25, 0.5])])
def test_429_without_retry_after_backs_off_exponentially_with_jitter(
    mocked, client, fake_time, settings, draw, expected
):
    settings.MIXPANEL_READ_RETRIES = 3
    for _ in range(3):
        mocked.get(LIST_URL, status=429)
    mocked.get(LIST_URL, json=ok([]))
    client._random = lambda: draw
    client.list_experiments(WS)
    assert fake_time.sleeps == expected


def test_backoff_is_bounded_by_the_cap(client, settings):
    client._random = lambda: 1.0
    assert [client._backoff(attempt, 5.0) for attempt in (0, 3, 10, 60)] == [0.25, 2.0, 5.0, 5.0]
    client._random = lambda: 0.0
    assert client._backoff(10, 5.0) == 2.5


def test_writes_have_their_own_deadline(mocked, client, fake_time, settings):
    settings.MIXPANEL_DEADLINE = 2.0
    settings.MIXPANEL_WRITE_DEADLINE = 45.0
    assert mixpanel.write_deadline_seconds() == 45.0
    mocked.put(PUT_URL, json=ok(experiment("concluded")))
    client.force_conclude(WS, EXP, end_date=END)
    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.05, 45.0)


# --- Decide ---------------------------------------------------------------------------------------------
DECIDE_URL = PUT_URL.removesuffix("/force_conclude") + "/decide"


def test_decide_sends_one_patch_with_its_json_body(mocked, client):
    mocked.patch(DECIDE_URL, json=ok(experiment("success")))
    result = client.decide(WS, EXP, success=True, variant="treatment", message="Lift held for 3 weeks.")
    request = mocked.calls[0].request
    assert request.method == "PATCH"
    assert request.url == DECIDE_URL
    assert json.loads(request.body) == {"success": True, "variant": "treatment", "message": "Lift held for 3 weeks."}
    assert result.experiment.status == "success"
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_decide_is_never_retried_and_a_5xx_is_outcome_unknown(mocked, client, status):
    mocked.patch(DECIDE_URL, status=status, body="busy")
    mocked.patch(DECIDE_URL, json=ok(experiment("fail")))
    with pytest.raises(MixpanelOutcomeUnknown):
        client.decide(WS, EXP, success=False, variant="", message="none")
    assert len(mocked.calls) == 1


def test_decide_never_follows_a_redirect(mocked, client):
    mocked.patch(DECIDE_URL, status=307, headers={"Location": DECIDE_URL + "/"})
    mocked.patch(DECIDE_URL + "/", json=ok(experiment("success")))
    with pytest.raises(MixpanelBadResponse, match="redirect"):
        client.decide(WS, EXP, success=True, variant="a", message="m")
    assert len(mocked.calls) == 1


def test_decide_refused_with_400_is_definite(mocked, client):
    mocked.patch(DECIDE_URL, status=400, json={"status": "error", "error": "only a concluded experiment"})
    with pytest.raises(MixpanelError) as caught:
        client.decide(WS, EXP, success=True, variant="a", message="m")
    assert caught.value.outcome_unknown is False
    assert len(mocked.calls) == 1
