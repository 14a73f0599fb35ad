"""The chat and profile pages (server side; the browser tests drive their JavaScript)."""

import pytest

from steering.models import Conversation, InteractionLog, Message, ProfileUpdate
from steering.services import profiles, vector_sets
from tests.api.conftest import make_vectors

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def shared_set(db):
    for name in ("formality", "cost"):
        vector_sets.dimension_import_default(name=name)
    return vector_sets.vector_set_register(vectors=make_vectors(["formality", "cost"]), name="shared")


@pytest.fixture
def alices_conversation(alice):
    conversation = Conversation.objects.create(user=alice, title="Where to eat tonight")
    log = InteractionLog.objects.create(
        user=alice, prompt="Where to eat?", response="Try the <b>noodle</b> bar.", strengths={"formality": 0.8}
    )
    Message.objects.create(conversation=conversation, role="user", content="Where to eat?")
    Message.objects.create(conversation=conversation, role="assistant", content=log.response, interaction=log)
    return conversation


@pytest.mark.parametrize("url", ["/chat/", "/profile/", "/chat/1/"])
def test_it_sends_anonymous_users_to_the_login_page(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/?next=")


def test_it_shows_the_chat_page_to_its_owner(client, alice, alices_conversation, shared_set):
    client.force_login(alice)

    response = client.get(f"/chat/{alices_conversation.pk}/")

    assert response.status_code == 200
    text = response.content.decode()
    assert "Where to eat tonight" in text
    # Model output is escaped on the page (and only ever set with textContent by the script).
    assert "Try the &lt;b&gt;noodle&lt;/b&gt; bar." in text
    assert "80 % Formal" in text  # the steering applied, under the answer
    assert "js/chat.js" in text and "js/preferences.js" in text
    assert "csrftoken" in response.cookies


def test_it_marks_a_stopped_answer_and_an_unsteered_one(client, alice, alices_conversation):
    for strengths, status in (({}, "ok"), ({"cost": -0.35}, "cancelled")):
        log = InteractionLog.objects.create(user=alice, prompt="p", response="r", strengths=strengths, status=status)
        Message.objects.create(conversation=alices_conversation, role="assistant", content="r", interaction=log)
    vector_sets.dimension_import_default(name="cost")
    client.force_login(alice)

    text = client.get(f"/chat/{alices_conversation.pk}/").content.decode()

    assert '<div class="chat-steering">unsteered</div>' in text
    assert '<div class="chat-steering">35 % Budget · stopped</div>' in text


def test_it_hides_another_users_conversation(client, bob, alices_conversation):
    client.force_login(bob)

    assert client.get(f"/chat/{alices_conversation.pk}/").status_code == 404
    assert "Where to eat tonight" not in client.get("/chat/").content.decode()


def test_it_renders_one_slider_per_dimension_with_its_labels(client, alice, shared_set):
    profile = profiles.profile_get_or_create(user=alice, vector_set=shared_set)
    profiles.profile_update(profile=profile, strengths={"cost": -0.35}, source=ProfileUpdate.Source.SELECT)
    client.force_login(alice)

    text = client.get("/chat/").content.decode()

    assert text.count('type="range"') == 2
    for name, negative, positive in (("formality", "Casual", "Formal"), ("cost", "Budget", "Luxury")):
        assert f'id="pref-{name}"' in text
        assert f"<span>{negative}</span><span>{positive}</span>" in text
    assert "35 % Budget" in text
    assert 'value="-35"' in text
    assert 'data-mode="select"' in text


def test_it_explains_that_no_vector_set_is_ready(client, alice):
    client.force_login(alice)

    text = client.get("/chat/").content.decode()

    assert 'type="range"' not in text
    assert "administrator must compute one" in text


def test_it_shows_strengths_history_and_interactions_on_the_profile_page(client, alice, bob, shared_set):
    profile = profiles.profile_get_or_create(user=alice, vector_set=shared_set)
    profiles.profile_update(profile=profile, strengths={"formality": 0.5}, source=ProfileUpdate.Source.SELECT)
    profiles.profile_update(profile=profile, strengths={"formality": -0.25}, source=ProfileUpdate.Source.API)
    InteractionLog.objects.create(user=alice, prompt="alice asks about tea", response="Green tea.")
    InteractionLog.objects.create(user=bob, prompt="bob's secret question", response="No.")
    client.force_login(alice)

    text = client.get("/profile/").content.decode()

    assert "25 % Casual" in text
    assert text.count('class="history-entry') == 2
    # Summaries as the chat page words them, never raw signed percentages (issue 27, item 8).
    assert "Neutral → 50 % Formal" in text and "50 % Formal → 25 % Casual" in text
    assert "Slider" in text and "REST API" in text
    assert "alice asks about tea" in text
    assert "bob&#x27;s secret question" not in text and "bob's secret question" not in text


def test_it_links_chat_profile_and_api_docs_for_logged_in_users(client, alice):
    assert 'href="/chat/"' not in client.get("/").content.decode()
    client.force_login(alice)

    text = client.get("/").content.decode()

    for href in ("/chat/", "/profile/", "/api/docs/"):
        assert f'href="{href}"' in text
