"""The service account's secret (a canary set in tests/pytest_env.py) never leaks.

Not in log lines (ours, requests' or urllib3's, at DEBUG), not in exception text,
attributes or repr, not in a client's repr, not echoed back from upstream.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import os
from urllib.parse import quote, quote_plus

import pytest
import responses

from experiments.mixpanel import client as mixpanel
from experiments.mixpanel.errors import MixpanelAuthError, MixpanelConfigError, MixpanelError

CANARY = os.environ["MIXPANEL_SERVICE_ACCOUNT_SECRET"]
USERNAME = os.environ["MIXPANEL_SERVICE_ACCOUNT_USERNAME"]
TOKEN = base64.b64encode(f"{USERNAME}:{CANARY}".encode()).decode()
END = dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)
US = "https://mixpanel.com/api/app/workspaces/1001/experiments"


class _Ws:
    region = "us"


def test_the_canary_is_the_configured_secret():
    # Guards the other tests: they would pass vacuously with another secret.
    assert CANARY == "CANARY-s3cr3t-do-not-leak"
    assert mixpanel.read_credentials() == (USERNAME, CANARY)


def leaks(*texts: object) -> list[str]:
    found = []
    for text in texts:
        value = str(text)
        if CANARY in value or TOKEN in value:
            found.append(value[:200])
    return found


def exception_texts(exc: BaseException) -> list[object]:
    return [str(exc), repr(exc), exc.args, getattr(exc, "body_excerpt", ""), getattr(exc, "message", "")]


def test_client_repr_and_str_hide_the_secret(settings):
    settings.MIXPANEL_API_BASE_URL = ""
    mixpanel.reset_clients()
    client = mixpanel.client_for(_Ws())
    assert USERNAME in repr(client)
    assert leaks(repr(client), str(client), repr(client._session.auth)) == []


@pytest.mark.parametrize(
    "kind",
    [
        "server_error",
        "not_json",
        "status_error",
        "reset",
        "apply_then_drop",
        "unauthorized",
        "forbidden",
        "redirect",
        "rate_limit",
        "not_found",
    ],
)
def test_failures_over_http_leak_nothing(standin, caplog, kind):
    caplog.set_level(logging.DEBUG)
    exp = standin.find(1001, status="active")
    standin.set_fault(kind, experiment_id=exp["id"])
    client = mixpanel.client_for(_Ws())
    caught = []
    for call in (
        lambda: client.get_experiment(1001, exp["id"]),
        lambda: client.force_conclude(1001, exp["id"], end_date=END),
    ):
        with pytest.raises(MixpanelError) as info:
            call()
        caught.append(info.value)
    assert caplog.records, "DEBUG logging was captured"
    assert leaks(caplog.text, *[t for exc in caught for t in exception_texts(exc)]) == []


def test_success_logs_leak_nothing(standin, caplog):
    caplog.set_level(logging.DEBUG)
    exp = standin.find(1001, status="active")
    client = mixpanel.client_for(_Ws())
    client.list_experiments(1001)
    result = client.force_conclude(1001, exp["id"], end_date=END)
    assert "force_conclude" in caplog.text
    assert leaks(caplog.text, result, result.raw_body) == []


def test_wrong_credentials_failure_leaks_nothing(standin, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    client = mixpanel.MixpanelClient(region="us", username=USERNAME, secret=CANARY + "-wrong", base_url=standin.url)
    with pytest.raises(MixpanelAuthError) as info:
        client.list_experiments(1001)
    assert leaks(caplog.text, *exception_texts(info.value)) == []
    assert CANARY + "-wrong" not in caplog.text + str(info.value) + repr(client)


def _echo_body(request) -> str:
    # A hostile or buggy upstream that echoes our Authorization header and the secret.
    header = request.headers["Authorization"]
    return f'{{"status": "error", "error": "bad auth {header} {CANARY}"}}'


@pytest.mark.parametrize("status", [200, 400, 500])
def test_echoed_credentials_are_scrubbed(settings, caplog, status):
    caplog.set_level(logging.DEBUG)
    settings.MIXPANEL_API_BASE_URL = ""
    settings.MIXPANEL_READ_RETRIES = 0
    mixpanel.reset_clients()
    client = mixpanel.client_for(_Ws())
    with responses.RequestsMock() as mocked:
        mocked.add_callback(
            responses.GET, US, callback=lambda r: (status, {}, _echo_body(r)), content_type="application/json"
        )
        mocked.add_callback(responses.PUT, US + "/x/force_conclude", callback=lambda r: (status, {}, _echo_body(r)))
        errors = []
        for call in (
            lambda: client.list_experiments(1001),
            lambda: client.force_conclude(1001, "x", end_date=END),
        ):
            with pytest.raises(MixpanelError) as info:
                call()
            errors.append(info.value)
    texts = [t for exc in errors for t in exception_texts(exc)]
    assert any("[redacted]" in str(t) for t in texts)
    assert leaks(caplog.text, *texts) == []


def test_echoed_secret_is_scrubbed_from_a_successful_raw_body(settings):
    settings.MIXPANEL_API_BASE_URL = ""
    mixpanel.reset_clients()
    client = mixpanel.client_for(_Ws())
    with responses.RequestsMock() as mocked:
        mocked.put(
            US + "/x/force_conclude",
            json={"status": "ok", "results": {"id": "x", "status": "concluded", "description": CANARY}},
        )
        result = client.force_conclude(1001, "x", end_date=END)
    assert leaks(result.raw_body) == []


def test_configuration_errors_leak_nothing(monkeypatch, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(CANARY)
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT_SECRET_FILE", str(secret_file))
    with pytest.raises(MixpanelConfigError) as info:
        mixpanel.client_for(_Ws())
    assert leaks(*exception_texts(info.value)) == []


# A secret with characters that every encoding changes.
ODD_SECRET = "p@ss/w0rd&<k>+'é=="


def _encodings(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "percent": quote(secret, safe=""),
        "percent-plus": quote_plus(secret),
        "percent-lowercase": quote(secret, safe="").lower(),
        "percent-every-byte": "".join(f"%{b:02X}" for b in raw),
        "html": html.escape(secret),
        "html-decimal": "".join(f"&#{ord(c)};" for c in secret),
        "html-hex": "".join(f"&#x{ord(c):x};" for c in secret),
        "base64": base64.b64encode(raw).decode(),
        "base64-urlsafe-unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


@pytest.mark.parametrize("encoding", sorted(_encodings(ODD_SECRET)))
def test_an_encoded_echo_of_the_secret_is_not_kept(caplog, encoding):
    caplog.set_level(logging.DEBUG)
    echoed = _encodings(ODD_SECRET)[encoding]
    client = mixpanel.MixpanelClient(region="us", username=USERNAME, secret=ODD_SECRET, base_url="")
    body = {"status": "error", "error": f"bad auth for {echoed} (account {USERNAME})"}
    with responses.RequestsMock() as mocked:
        mocked.put(US + "/x/force_conclude", json=body, status=400)
        mocked.put(
            US + "/y/force_conclude",
            json={"status": "ok", "results": {"id": "y", "status": "concluded", "description": echoed}},
        )
        with pytest.raises(MixpanelError) as info:
            client.force_conclude(1001, "x", end_date=END)
        result = client.force_conclude(1001, "y", end_date=END)
    kept = [*exception_texts(info.value), result.raw_body, caplog.text]
    assert not [text for text in kept if echoed in str(text)], encoding
    assert not [text for text in kept if ODD_SECRET in str(text)]
    assert "redacted" in str(info.value)
