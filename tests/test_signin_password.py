"""Password sign-in: locked per username and address and per username, checked per address, the admin's
form too, and switchable off."""

from __future__ import annotations

from html import unescape
from unittest import mock

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import Client
from django.urls import reverse

from experiments.signin.challenge import MSG_CHALLENGE
from experiments.signin.views import MSG_LOCKED_OUT
from tests.signin_check import check_fields

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
LOCKED = MSG_LOCKED_OUT.format(minutes=15)


def _post(client: Client, username: str, password: str, *, address: str = "10.0.0.1", url: str = LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def _locked(response) -> bool:
    return response.status_code == 429 and LOCKED in response.content.decode()


def test_five_failures_for_one_username_from_one_address_lock_that_pair(client, pm):
    for _ in range(5):
        response = _post(client, "pat", "wrong", address="10.0.1.1")
    assert _locked(response)  # the fifth failure already answers with the cool-off
    # The right password from that address is refused too, during the cool-off...
    assert _locked(_post(client, "pat", "pw-pat", address="10.0.1.1"))
    assert "_auth_user_id" not in client.session
    # ...but one address cannot lock the person out everywhere.
    assert _post(client, "pat", "pw-pat", address="10.0.1.2").status_code == 302


def test_ten_failures_for_one_username_from_anywhere_lock_it_out_everywhere(client, pm):
    for i in range(10):
        response = _post(client, "pat", "wrong", address=f"10.0.1.{i}")
    assert _locked(response)
    assert _locked(_post(client, "pat", "pw-pat", address="10.9.9.9"))
    assert "_auth_user_id" not in client.session


def test_refused_attempts_from_a_locked_pair_do_not_count_towards_everywhere(client, pm):
    for _ in range(30):
        _post(client, "pat", "wrong", address="10.0.1.1")  # 5 checked, then 25 refused unchecked
    assert _post(client, "pat", "pw-pat", address="10.0.1.2").status_code == 302


def test_four_failures_then_the_right_password_signs_in(client, pm):
    for _ in range(4):
        assert _post(client, "pat", "wrong").status_code == 200
    assert _post(client, "pat", "pw-pat").status_code == 302


def test_a_locked_username_does_not_lock_others(client, pm, teammate):
    for _ in range(5):
        _post(client, "pat", "wrong", address="10.0.2.1")
    assert _post(client, "tess", "pw-tess", address="10.0.2.1").status_code == 302


def test_twenty_failures_from_one_address_ask_for_the_check_not_a_lock_out(client, pm, settings):
    settings.LOGIN_CHALLENGE_BITS = 8
    for i in range(20):
        response = _post(client, f"guess-{i}", "wrong", address="10.0.3.1")  # 1 per username: under 5
    assert response.status_code == 200
    # Pat never failed: without the check the password is not even tried, and it is not a lock-out.
    unchecked = _post(client, "pat", "pw-pat", address="10.0.3.1")
    assert unchecked.status_code == 200
    assert MSG_CHALLENGE in unescape(unchecked.content.decode())
    assert "_auth_user_id" not in client.session
    # With the check answered (as the page's script does), Pat signs in.
    answer = check_fields(client.get(LOGIN, REMOTE_ADDR="10.0.3.1").content.decode())
    assert answer is not None
    signed_in = client.post(LOGIN, {"username": "pat", "password": "pw-pat", **answer}, REMOTE_ADDR="10.0.3.1")
    assert signed_in.status_code == 302
    # Other addresses are asked nothing.
    client.logout()
    assert check_fields(client.get(LOGIN, REMOTE_ADDR="10.0.3.2").content.decode()) is None
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
    for _ in range(4):
        assert _post(client, "y" * 300, "wrong", address="10.0.5.1").status_code == 200
    assert _locked(_post(client, "y" * 300, "wrong", address="10.0.5.1"))


def test_admin_login_is_throttled_the_same_way(client, pm):
    for _ in range(5):
        response = _post(client, "pat", "wrong", address="10.0.5.1", url=ADMIN_LOGIN)
    assert _locked(response)
    # One account's lock holds on both forms: they count the same attempts.
    assert _locked(_post(client, "pat", "pw-pat", address="10.0.5.1"))


def test_admin_login_from_an_address_that_must_pass_the_check_sends_to_our_form(client, pm):
    for i in range(20):
        _post(client, f"guess-{i}", "wrong", address="10.0.5.7")
    response = _post(client, "pat", "pw-pat", address="10.0.5.7", url=ADMIN_LOGIN)
    assert response.status_code == 302
    assert response.url.startswith(LOGIN)
    assert "_auth_user_id" not in client.session


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
    for _ in range(5):
        known = _post(client, "pat", "wrong", address="10.0.7.1")
        unknown = _post(client, "nobody", "wrong", address="10.0.8.1")
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
