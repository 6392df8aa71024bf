"""Password sign-in: throttled per username and per address, the admin's form too, and switchable off."""

from __future__ import annotations

from unittest import mock

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import Client
from django.urls import reverse

from experiments.signin.views import MSG_LOCKED_OUT

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
LOCKED = MSG_LOCKED_OUT.format(minutes=15)


def _post(client: Client, username: str, password: str, *, address: str = "10.0.0.1", url: str = LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def _locked(response) -> bool:
    return response.status_code == 429 and LOCKED in response.content.decode()


def test_five_failures_for_one_username_lock_it_out_from_any_address(client, pm):
    for i in range(5):
        response = _post(client, "pat", "wrong", address=f"10.0.1.{i}")
    assert _locked(response)  # the fifth failure already answers with the cool-off
    # The right password from a new address is refused too, during the cool-off.
    assert _locked(_post(client, "pat", "pw-pat", address="10.9.9.9"))
    assert "_auth_user_id" not in client.session


def test_four_failures_then_the_right_password_signs_in(client, pm):
    for _ in range(4):
        assert _post(client, "pat", "wrong").status_code == 200
    assert _post(client, "pat", "pw-pat").status_code == 302


def test_a_locked_username_does_not_lock_others(client, pm, teammate):
    for i in range(5):
        _post(client, "pat", "wrong", address=f"10.0.2.{i}")
    assert _post(client, "tess", "pw-tess", address="10.0.2.200").status_code == 302


def test_twenty_failures_from_one_address_lock_that_address(client, pm):
    for i in range(20):
        response = _post(client, f"guess-{i}", "wrong", address="10.0.3.1")  # 1 per username: under 5
    assert _locked(response)
    assert _locked(_post(client, "pat", "pw-pat", address="10.0.3.1"))
    assert _post(client, "pat", "pw-pat", address="10.0.3.2").status_code == 302


def test_sixty_wrong_passwords_in_a_row_are_refused_after_the_limit(client, pm):
    answers = [_post(client, "pat", f"guess-{i}", address="10.0.4.1") for i in range(60)]
    assert [a.status_code for a in answers[:4]] == [200] * 4  # "wrong password" for the first four
    assert all(_locked(a) for a in answers[4:])  # then only the cool-off, 56 times
    with mock.patch.object(MD5PasswordHasher, "encode", wraps=MD5PasswordHasher().encode) as hashing:
        _post(client, "pat", "pw-pat", address="10.0.4.1")
    assert hashing.call_count == 0  # refused before any password is even checked


@pytest.mark.parametrize("url", [LOGIN, ADMIN_LOGIN])
def test_an_overlong_username_is_a_wrong_password_not_a_500(client, pm, url):
    # Axes records the posted username in a 255-character column; PostgreSQL refused longer ones.
    response = _post(client, "x" * 300, "wrong", url=url)
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_overlong_usernames_are_still_counted_towards_the_limit(client, pm):
    for i in range(4):
        assert _post(client, "y" * 300, "wrong", address=f"10.0.5.{i}").status_code == 200
    assert _locked(_post(client, "y" * 300, "wrong", address="10.0.5.9"))


def test_admin_login_is_throttled_the_same_way(client, pm):
    for i in range(5):
        response = _post(client, "pat", "wrong", address=f"10.0.5.{i}", url=ADMIN_LOGIN)
    assert _locked(response)
    # One account's lock holds on both forms: they count the same attempts.
    assert _locked(_post(client, "pat", "pw-pat", address="10.0.5.99"))


def test_known_and_unknown_usernames_get_the_same_message_and_the_same_work(client, pm):
    def attempt(username: str) -> tuple[str, int]:
        with mock.patch.object(MD5PasswordHasher, "encode", wraps=MD5PasswordHasher().encode) as hashing:
            response = _post(client, username, "wrong", address="10.0.6.1")
        text = response.content.decode().replace(username, "USERNAME")
        return text.split('<div class="error" role="alert">')[1].split("</div>")[0], hashing.call_count

    known, unknown = attempt("pat"), attempt("nobody-by-this-name")
    assert known == unknown
    assert known[1] == 1  # one password hash each way


def test_locked_message_is_the_same_for_known_and_unknown_usernames(client, pm):
    for i in range(5):
        known = _post(client, "pat", "wrong", address=f"10.0.7.{i}")
        unknown = _post(client, "nobody", "wrong", address=f"10.0.8.{i}")
    assert _locked(known)
    assert _locked(unknown)

    def main(response) -> str:
        return response.content.decode().split('<main id="main" tabindex="-1">')[1].split("</main>")[0]

    assert main(known) == main(unknown)


# --- Switching password sign-in off ------------------------------------------------------
@pytest.fixture
def no_password_login(settings):
    settings.PASSWORD_LOGIN = False
    settings.LOGIN_URL = "signin"
    settings.LOGOUT_REDIRECT_URL = "signin"


def test_password_login_off_form_gone_and_url_404(client, no_password_login, pm):
    assert client.get(LOGIN).status_code == 404
    assert _post(client, "pat", "pw-pat").status_code == 404
    page = client.get(reverse("signin")).content.decode()
    assert 'name="password"' not in page
    assert client.get("/").url.startswith(reverse("signin"))


def test_password_login_off_admin_login_sends_to_sign_in(client, no_password_login, pm):
    response = client.get(ADMIN_LOGIN)
    assert response.status_code == 302
    assert response.url.startswith(reverse("signin"))
    assert _post(client, "pat", "pw-pat", url=ADMIN_LOGIN).status_code == 302
    assert "_auth_user_id" not in client.session


def test_password_login_on_by_default(client):
    page = client.get(LOGIN).content.decode()
    assert 'name="password"' in page
