"""Worker mode's web process never runs the model: it turns a chat into prompt ids and sends
them to the inference workers, so it loads the tokenizer (with its chat template) and the
model's config, never the weights."""

import time

import pytest

from steering.chat import turn
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.conftest import dimensions  # noqa: F401  (fixture)
from tests.security.conftest import tiny_vectors
from tests.tiny_models import build_tiny


@pytest.fixture
def web_process(settings, tmp_path):
    """Worker mode, on a tiny Llama saved to a directory no other test has loaded (the runtime
    keys its models by path, so nothing is loaded for it yet in this process)."""
    loaded = build_tiny("llama")
    loaded.model.save_pretrained(tmp_path / "model")
    loaded.tokenizer.save_pretrained(tmp_path / "model")
    settings.STEERLAB_MODEL = str(tmp_path / "model")
    settings.STEERLAB_DEVICE = "cpu"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STEERLAB_INFERENCE = "worker"
    return loaded


def refuse_to_load(*args, **kwargs):
    raise AssertionError("worker mode's web process loaded the model")


@pytest.mark.django_db
def test_it_prepares_a_chat_turn_with_the_tokenizer_alone(web_process, dimensions, alice, monkeypatch, settings):  # noqa: F811
    monkeypatch.setattr(runtime, "load_model", refuse_to_load)
    settings.STEERLAB_SYSTEM_PROMPT = "Be brief."
    vector_sets.vector_set_register(vectors=tiny_vectors(["formality", "cost"]), name="shared")
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    plan = turn.chat_prepare(user=alice, prompt="A tip for a trip?", preferences={"formality": 0.5},
                             vector_set_id=None, params={"max_new_tokens": 8}, history=history)
    assert not runtime.site_model_loaded()
    # The same ids the model's own tokenizer gives, chat template, the site's system prompt and
    # history included.
    web_process.system_prompt = "Be brief."
    assert plan.prompt_ids == web_process.chat_ids([*history, {"role": "user", "content": "A tip for a trip?"}])
    assert turn.chat_context_tokens() == web_process.model.config.max_position_embeddings
    assert plan.strengths == {"formality": 0.5}


@pytest.mark.django_db
def test_its_health_probe_warms_the_tokenizer_not_the_model(web_process, monkeypatch):
    monkeypatch.setattr(runtime, "load_model", refuse_to_load)
    runtime.model_status()  # the first probe starts warming up, in the background
    deadline = time.monotonic() + 30
    while not runtime.model_status()["loaded"] and time.monotonic() < deadline:
        time.sleep(0.05)
    status = runtime.model_status()
    assert status["loaded"] and status["error"] is None and status["device"] is None
    assert not runtime.site_model_loaded()


@pytest.mark.django_db
def test_in_local_mode_the_tokenizer_is_the_models_own(web_process, settings):
    settings.STEERLAB_INFERENCE = "local"
    assert runtime.site_tokenizer() is runtime.site_model()
