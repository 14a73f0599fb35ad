"""Password guessing and mass sign-up cost the guesser: log-in (page and /api/auth/token/) and
sign-up are throttled per client address and per account name, answering 429 with Retry-After
(the pages say it in words)."""

import pytest

from accounts.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def _rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login": f"{LIMIT}/hour", "signup": f"{LIMIT}/hour",
        },
    }


def login_page(client, username, password, address="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def token(client, username, password, address="10.0.0.1"):
    return client.post("/api/auth/token/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_it_refuses_guesses_at_one_account_past_the_budget(client, alice, attempt):
    for n in range(LIMIT):
        assert attempt(client, "alice", f"wrong-{n}", address=f"10.0.0.{n}").status_code in (200, 400)
    # From a fresh address, even the right password: the account name's budget is spent.
    response = attempt(client, "Alice", PASSWORD, address="10.9.9.9")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "Try again in" in response.content.decode()


@pytest.mark.parametrize("attempt", [login_page, token])
def test_it_refuses_one_address_guessing_many_accounts(client, alice, bob, attempt):
    for n in range(LIMIT):
        attempt(client, f"user{n}", "wrong")
    response = attempt(client, "bob", PASSWORD)
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    # Another address still logs bob in.
    assert attempt(client, "bob", PASSWORD, address="10.0.0.2").status_code in (200, 302)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_successful_log_ins_spend_no_budget(client, alice, attempt):
    for _ in range(LIMIT + 2):
        assert attempt(client, "alice", PASSWORD).status_code in (200, 302)


def test_the_log_in_page_says_it_in_words_and_logs_nobody_in(client, alice):
    for n in range(LIMIT):
        login_page(client, "alice", "wrong")
    response = login_page(client, "alice", PASSWORD)
    assert response.status_code == 429
    text = response.content.decode()
    assert "Too many failed log-in attempts" in text and 'name="password"' in text
    assert "_auth_user_id" not in client.session


def signup(client, username, address="10.0.0.1"):
    password = "a-long-unusual-passphrase-42"
    return client.post("/accounts/signup/", {"username": username, "email": "", "password1": password,
                                             "password2": password}, REMOTE_ADDR=address)


def test_it_throttles_sign_ups_per_address(client):
    for n in range(LIMIT):
        assert signup(client, f"user{n}").status_code == 302
        client.logout()
    response = signup(client, "one-more")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Too many sign-ups" in response.content.decode()
    assert not User.objects.filter(username="one-more").exists()
    assert signup(client, "one-more", address="10.0.0.2").status_code == 302


def test_it_throttles_sign_ups_per_account_name(client):
    for n in range(LIMIT):
        signup(client, "taken", address=f"10.0.1.{n}")  # one account, then "already exists"
        client.logout()
    assert signup(client, "TAKEN", address="10.0.2.1").status_code == 429


def admin_login(client, username, password, address="10.0.0.1"):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def test_the_admin_log_in_page_shares_the_budget(client, charlie):
    for n in range(LIMIT - 1):
        assert admin_login(client, "charlie", "wrong", address=f"10.0.3.{n}").status_code == 200
    assert token(client, "charlie", "wrong", address="10.0.4.1").status_code == 400  # the last one, via the API
    response = admin_login(client, "charlie", PASSWORD, address="10.0.5.1")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Too many failed log-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_staff_log_in_to_the_admin_spends_nothing(client, charlie):
    for _ in range(LIMIT + 1):
        assert admin_login(client, "charlie", PASSWORD).status_code == 302
        client.logout()
