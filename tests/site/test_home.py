import pytest


def test_it_explains_steerlab_to_visitors(client):
    response = client.get("/")

    assert response.status_code == 200
    text = response.content.decode()
    assert "activation steering" in text
    for mode in ("SELECT", "CALIBRATE", "LEARN"):
        assert mode in text
    assert "/api/" in text
    assert "2505.04260" in text
    assert 'href="/accounts/signup/"' in text
    assert 'href="/accounts/login/"' in text


@pytest.mark.django_db
def test_it_shows_the_username_and_a_logout_form(client, alice):
    client.force_login(alice)

    text = client.get("/").content.decode()

    assert "alice" in text
    assert 'action="/accounts/logout/"' in text
    assert 'href="/accounts/signup/"' not in text
    assert 'href="/admin/"' not in text


@pytest.mark.django_db
def test_it_links_the_admin_for_staff(client, alice):
    alice.is_staff = True
    alice.save()
    client.force_login(alice)

    assert 'href="/admin/"' in client.get("/").content.decode()
