"""Our own error pages, with debug off: plain words, a way back, the request id, the site's look."""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from experiments.views import errors
from tests.fake_mixpanel import FakeMixpanel, install

pytestmark = pytest.mark.django_db


def assert_our_page(response, status: int, title: str) -> str:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert f'<h1 id="error-title">{title}</h1>' in html
    assert 'href="/static/css/app.css"' in html  # the site's look
    assert '<main id="main"' in html  # landmarks, and the skip link that targets it
    assert 'class="skip-link" href="#main"' in html
    assert f'href="{reverse("home")}"' in html  # a way back
    request_id = response["X-Request-ID"]
    assert f"<code>{request_id}</code>" in html
    # Never Django's technical page, a traceback, or a setting's name.
    for leak in ("Traceback", "DEBUG = True", "Request Method", "MIXPANEL_", "DJANGO_"):
        assert leak not in html
    return html


def test_debug_is_off_in_these_tests(settings):
    assert settings.DEBUG is False


def test_404(pm_client):
    response = pm_client.get("/no/such/page/")
    assert_our_page(response, 404, errors.PAGES[404][0])


def test_404_for_an_outsider_says_so_plainly(client, outsider, workspace):
    client.force_login(outsider)
    response = client.get(reverse("experiments:experiment-list", args=[workspace.pk]))
    html = assert_our_page(response, 404, errors.PAGES[404][0])
    assert "not a member" in html


@override_settings(ROOT_URLCONF="tests.error_urls")
def test_403(client):
    assert_our_page(client.get("/forbidden/"), 403, errors.PAGES[403][0])


@override_settings(ROOT_URLCONF="tests.error_urls")
def test_400(client):
    assert_our_page(client.get("/bad/"), 400, errors.PAGES[400][0])


def test_400_for_an_unknown_host(client):
    assert_our_page(client.get("/", HTTP_HOST="evil.example.com"), 400, errors.PAGES[400][0])


@override_settings(ROOT_URLCONF="tests.error_urls")
def test_500_shows_the_request_id_from_the_proxy(client):
    client.raise_request_exception = False
    response = client.get("/boom/", headers={"X-Request-ID": "lb-42"})
    html = assert_our_page(response, 500, errors.PAGES[500][0])
    assert "<code>lb-42</code>" in html
    assert "a bug" not in html


def test_csrf_failure_is_our_page(pm, workspace, monkeypatch):
    install(monkeypatch, FakeMixpanel())
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(pm)
    response = browser.post(reverse("logout"))
    html = assert_our_page(response, 403, errors.CSRF_PAGE[0])
    assert "Nothing was changed" in html
    assert "CSRF cookie" not in html  # Django's reason is for developers


def test_error_page_needs_no_database(client, monkeypatch):
    """A 500 caused by the database must still draw: the page reads nothing but its context."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    def down(*args, **kwargs):
        raise AssertionError("the error page touched the database")

    monkeypatch.setattr(BaseDatabaseWrapper, "cursor", down)
    request = client.get("/healthz").wsgi_request
    request.request_id = "r-1"
    response = errors.server_error(request)
    assert response.status_code == 500
    assert "<code>r-1</code>" in response.content.decode()


def test_pages_are_reachable_by_keyboard_first(pm_client):
    html = pm_client.get("/no/such/page/").content.decode()
    # The skip link comes first in the body, the main landmark is focusable.
    body = html[html.index("<body>") :]
    assert re.search(r"<body>\s*<a class=\"skip-link\"", body)
    assert 'tabindex="-1"' in body


def test_a_401_from_mixpanel_is_shown_in_plain_words_and_logged_for_operators(standin, pm_client, workspace, caplog):
    standin.set_fault("unauthorized")
    response = pm_client.get(reverse("experiments:experiment-list", args=[workspace.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Ask the dashboard&#x27;s operators to renew them" in html
    assert "MIXPANEL_" not in html
    assert "MIXPANEL_SERVICE_ACCOUNT_SECRET" in caplog.text  # what to fix, for the people who can
