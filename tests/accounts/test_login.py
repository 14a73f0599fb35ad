import pytest

from tests.conftest import PASSWORD

URL = "/accounts/login/"


def test_it_shows_the_form(client):
    response = client.get(URL)

    assert response.status_code == 200
    assert b'name="password"' in response.content
    assert b'href="/accounts/signup/"' in response.content


@pytest.mark.django_db
def test_it_logs_in_and_goes_home(client, alice):
    response = client.post(URL, {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    assert response.url == "/"
    assert client.session["_auth_user_id"] == str(alice.pk)


@pytest.mark.django_db
def test_it_follows_a_safe_next(client, alice):
    response = client.post(URL, {"username": "alice", "password": PASSWORD, "next": "/admin/"})

    assert response.url == "/admin/"


@pytest.mark.django_db
def test_it_ignores_an_offsite_next(client, alice):
    response = client.post(
        URL, {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    )

    assert response.url == "/"


@pytest.mark.django_db
def test_it_rejects_a_wrong_password(client, alice):
    response = client.post(URL, {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert "_auth_user_id" not in client.session
