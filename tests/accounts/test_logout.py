import pytest

URL = "/accounts/logout/"


@pytest.mark.django_db
def test_it_logs_out_on_post(client, alice):
    client.force_login(alice)

    response = client.post(URL)

    assert response.status_code == 302
    assert response.url == "/"
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_it_refuses_get(client, alice):
    client.force_login(alice)

    response = client.get(URL)

    assert response.status_code == 405
    assert client.session["_auth_user_id"] == str(alice.pk)
