import pytest

from accounts.models import User

URL = "/accounts/signup/"
PASSWORD = "a-long-unusual-passphrase-42"


def test_it_shows_the_form(client):
    response = client.get(URL)

    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password1"' in response.content


@pytest.mark.django_db
def test_it_creates_the_custom_user_and_logs_in(client):
    response = client.post(
        URL,
        {
            "username": "dana",
            "email": "dana@example.org",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )

    assert response.status_code == 302
    assert response.url == "/"
    user = User.objects.get(username="dana")
    assert user.email == "dana@example.org"
    assert user.check_password(PASSWORD)
    assert client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.django_db
def test_it_rejects_mismatched_passwords(client):
    response = client.post(
        URL, {"username": "dana", "password1": PASSWORD, "password2": PASSWORD + "x"}
    )

    assert response.status_code == 200
    assert "password2" in response.context["form"].errors
    assert b"errorlist" in response.content
    assert not User.objects.filter(username="dana").exists()


@pytest.mark.django_db
def test_it_rejects_a_common_password(client):
    response = client.post(
        URL, {"username": "dana", "password1": "password", "password2": "password"}
    )

    assert response.status_code == 200
    assert "too common" in response.content.decode()
    assert not User.objects.filter(username="dana").exists()


@pytest.mark.django_db
def test_it_rejects_a_taken_username(client, alice):
    response = client.post(URL, {"username": "alice", "password1": PASSWORD, "password2": PASSWORD})

    assert response.status_code == 200
    assert "username" in response.context["form"].errors
    assert User.objects.filter(username="alice").count() == 1


@pytest.mark.django_db
def test_it_sends_logged_in_users_home(client, alice):
    client.force_login(alice)

    response = client.get(URL)

    assert response.status_code == 302
    assert response.url == "/"
