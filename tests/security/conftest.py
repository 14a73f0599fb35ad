"""Security fixtures: the three users (alice owns data, bob must never reach it, charlie is
staff), a `world` of alice's private data marked with a secret string that must never show up
in bob's answers, and a tiny model the site loads by path, so that every endpoint, chat
included, answers in milliseconds instead of waiting on SmolLM2."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from steering.models import Conversation, Feedback, InteractionLog, Message, ProfileUpdate
from steering.services import chat, profiles, vector_sets
from steering.serving import runtime
from tests.api.conftest import _client, as_alice, as_bob, as_charlie, dimensions, make_vectors  # noqa: F401
from tests.tiny_models import NUM_LAYERS

SECRET = "alice-private-7f3a"
TINY_HIDDEN = 64


def tiny_vectors(dims, *, seed=0):
    return make_vectors(dims, model_id=runtime.site_model_id(), hidden=TINY_HIDDEN, layers=NUM_LAYERS, seed=seed)


def tiny_vector_file(tmp_path, dims=("formality",)) -> bytes:
    path = tiny_vectors(list(dims), seed=5).save(tmp_path / "upload.safetensors")
    return path.read_bytes()


def tiny_gguf_file(tmp_path) -> bytes:
    """A GGUF control vector for the tiny model: one of the shared set's dimensions, exported."""
    from steering.engine.controlvector import control_vector_from, write_control_vector

    control = control_vector_from(tiny_vectors(["mood"], seed=6), "mood", 1.0, model_hint="llama")
    return write_control_vector(control, tmp_path / "upload.gguf").read_bytes()


@pytest.fixture
def world(tiny_site, alice, bob, charlie, dimensions):  # noqa: F811
    """Alice's private data on the tiny site: her own vector set, a profile with history on
    the shared set, a conversation with one turn, its interaction log and her feedback. Every
    text of hers carries SECRET."""
    shared = vector_sets.vector_set_register(vectors=tiny_vectors(["formality", "cost"]), name="shared")
    private = vector_sets.vector_set_register(vectors=tiny_vectors(["formality"], seed=1), name=f"set {SECRET}", owner=alice)
    profile = profiles.profile_get_or_create(user=alice, vector_set=shared)
    profiles.profile_update(profile=profile, strengths={"formality": 0.9}, source=ProfileUpdate.Source.API)
    conversation = Conversation.objects.create(user=alice, title=f"chat {SECRET}", vector_set=shared)
    interaction = chat.interaction_record(
        user=alice, prompt=f"prompt {SECRET}", response=f"answer {SECRET}", status=InteractionLog.Status.OK,
        vector_set=shared, strengths={"formality": 0.9}, params={}, tokens=3, latency_ms=5, conversation=conversation,
    )
    feedback = Feedback.objects.create(user=alice, interaction=interaction, thumbs=-1, text=f"feedback {SECRET}")
    # An answer is rated once: the feedback route's own requests rate this one.
    unrated = chat.interaction_record(
        user=alice, prompt=f"another prompt {SECRET}", response=f"another answer {SECRET}", status=InteractionLog.Status.OK,
        vector_set=shared, strengths={}, params={}, tokens=3, latency_ms=5,
    )
    return SimpleNamespace(
        alice=alice, bob=bob, charlie=charlie, shared=shared, private=private, profile=profile,
        update=ProfileUpdate.objects.get(profile=profile), conversation=conversation, interaction=interaction,
        feedback=feedback, unrated=unrated,
    )


def alices_data_snapshot(world) -> dict:
    """Everything of alice's that a foreign request might change, to compare before and after."""
    world.profile.refresh_from_db()
    return {
        "sets": sorted(world.alice.vector_sets.values_list("pk", "name", "status", "file")),
        "strengths": dict(world.profile.strengths),
        "updates": sorted(ProfileUpdate.objects.filter(profile__user=world.alice).values_list("pk", "undone")),
        "interactions": sorted(InteractionLog.objects.filter(user=world.alice).values_list("pk", "status")),
        "feedback": sorted(Feedback.objects.filter(interaction__user=world.alice).values_list("pk", "user_id")),
        "messages": sorted(Message.objects.filter(conversation__user=world.alice).values_list("pk", "content")),
    }


# Fields a client might send to pick the model, a file or code: every write must ignore them.
def hostile_fields(tmp_path) -> dict:
    target = tmp_path / "hostile"
    return {
        "model": str(target / "model"), "model_id": "evil/model", "model_path": str(target / "model"),
        "STEERLAB_MODEL": str(target / "model"), "device": "cuda:7", "gguf_file": str(target / "x.gguf"),
        "file": "/etc/passwd", "path": str(target / "written"), "file_path": str(target / "written"),
        "filename": "../../escape.safetensors", "code": f"open({str(target / 'ran')!r}, 'w')",
        "exec": f"open({str(target / 'ran')!r}, 'w')", "eval": "1/0", "template": "{{ settings.SECRET_KEY }}",
        "owner": 999, "user": 999, "user_id": 999, "is_staff": True,
    }
