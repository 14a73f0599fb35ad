"""Password guessing and mass sign-up cost the guesser: log-in (page and /api/auth/token/) is
throttled per (account name, address), per address and per account name (except from the
owner's own addresses), sign-up per address and per account name, answering 429 with
Retry-After (the pages say it in words). Every attempt is counted before it is evaluated."""

import threading

import pytest
from django.contrib.auth.signals import user_login_failed
from django.test import Client

from accounts.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 3  # per (account, address), and sign-ups per address
ADDRESS_LIMIT = 5  # per address, any account
ACCOUNT_LIMIT = 7  # per account, from addresses it has not logged in from


@pytest.fixture(autouse=True)
def _rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login": f"{LIMIT}/hour", "signup": f"{LIMIT}/hour",
            "login_address": f"{ADDRESS_LIMIT}/hour", "login_account": f"{ACCOUNT_LIMIT}/day",
        },
    }


def login_page(client, username, password, address="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def token(client, username, password, address="10.0.0.1"):
    return client.post("/api/auth/token/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_it_refuses_one_address_guessing_one_account_past_the_budget(client, alice, attempt):
    for n in range(LIMIT):
        assert attempt(client, "alice", f"wrong-{n}").status_code in (200, 400)
    # Even the right password: the pair's budget is spent.
    response = attempt(client, "Alice", PASSWORD)
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "Try again in" in response.content.decode()
    assert attempt(client, "alice", PASSWORD, address="10.0.0.2").status_code in (200, 302)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_it_refuses_many_addresses_guessing_one_account_past_its_account_budget(client, alice, attempt):
    for n in range(ACCOUNT_LIMIT):
        assert attempt(client, "alice", "wrong", address=f"10.0.1.{n}").status_code in (200, 400)
    response = attempt(client, "alice", PASSWORD, address="10.9.9.9")
    assert response.status_code == 429 and 3600 < int(response["Retry-After"]) <= 86400


@pytest.mark.parametrize("attempt", [login_page, token])
def test_it_refuses_one_address_guessing_many_accounts(client, alice, bob, attempt):
    for n in range(ADDRESS_LIMIT):
        attempt(client, f"user{n}", "wrong")
    response = attempt(client, "bob", PASSWORD)
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    # Another address still logs bob in.
    assert attempt(client, "bob", PASSWORD, address="10.0.0.2").status_code in (200, 302)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_the_owner_still_logs_in_from_their_own_address_while_others_guess(client, alice, attempt):
    # Attackers elsewhere spend every (account, address) budget they can reach.
    for address in ("10.0.2.1", "10.0.2.2"):
        for n in range(LIMIT):
            attempt(client, "alice", f"wrong-{n}", address=address)
        assert attempt(client, "alice", PASSWORD, address=address).status_code == 429
    assert attempt(client, "alice", PASSWORD, address="192.0.2.10").status_code in (200, 302)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_an_account_budget_spent_by_many_addresses_does_not_lock_out_its_owners_address(client, alice, attempt):
    assert attempt(client, "alice", PASSWORD, address="192.0.2.10").status_code in (200, 302)
    client.logout()
    for n in range(ACCOUNT_LIMIT + 2):
        attempt(client, "alice", "wrong", address=f"10.0.3.{n}")
    assert attempt(client, "alice", PASSWORD, address="10.0.4.1").status_code == 429  # a new address waits
    assert attempt(client, "alice", PASSWORD, address="192.0.2.10").status_code in (200, 302)


@pytest.mark.parametrize("attempt", [login_page, token])
def test_a_look_alike_name_counts_against_the_account_it_reaches(client, alice, attempt):
    for n in range(ACCOUNT_LIMIT):
        attempt(client, "alice", "wrong", address=f"10.0.1.{n}")
    # Fullwidth "ａlice": the log-in form NFKC-normalises it to "alice" before checking it.
    response = attempt(client, "\uff41lice", PASSWORD, address="10.9.9.9")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_refused_attempt_spends_no_other_budget(client, alice, bob):
    for n in range(LIMIT):
        login_page(client, "alice", f"wrong-{n}")
    for _ in range(ADDRESS_LIMIT):  # refused by alice's budget at this address, not counted for it
        assert login_page(client, "alice", "wrong").status_code == 429
    assert login_page(client, "bob", PASSWORD).status_code == 302


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
    assert signup(client, "\uff54aken", address="10.0.2.2").status_code == 429  # fullwidth "ｔaken"


def admin_login(client, username, password, address="10.0.0.1"):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def test_the_admin_log_in_page_shares_the_budget(client, charlie):
    for n in range(LIMIT - 1):
        assert admin_login(client, "charlie", "wrong").status_code == 200
    assert token(client, "charlie", "wrong").status_code == 400  # the last one, via the API
    response = admin_login(client, "charlie", PASSWORD)
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Too many failed log-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_staff_log_in_to_the_admin_spends_nothing(client, charlie):
    for _ in range(LIMIT + 1):
        assert admin_login(client, "charlie", PASSWORD).status_code == 302
        client.logout()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/accounts/login/", "/api/auth/token/"])
def test_concurrent_guesses_are_counted_before_any_is_evaluated(settings, alice, path):
    """24 wrong passwords at once for one account from one address: at most the budget reach
    the password check. A real (slow) hasher keeps each check in flight while the others
    arrive, as on a production server."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    alice.set_password(PASSWORD)
    alice.save()
    evaluated, lock = [], threading.Lock()

    def count(sender, credentials, **kwargs):
        with lock:
            evaluated.append(credentials["username"])

    user_login_failed.connect(count)
    barrier, statuses = threading.Barrier(24), []

    def guess(n):
        barrier.wait()
        response = Client().post(path, {"username": "alice", "password": f"wrong-{n}"}, REMOTE_ADDR="10.0.0.1")
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(24)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        user_login_failed.disconnect(count)
    assert len(statuses) == 24
    assert len(evaluated) <= LIMIT
    assert statuses.count(429) == 24 - len(evaluated)
