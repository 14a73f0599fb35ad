"""Worker mode with two vLLM workers over Redis: the builtin workers' exactly-once and failover
tests (tests/ws/test_worker_queue.py), with `manage.py inference_worker` processes serving
through vLLM (STEERLAB_ENGINE=vllm in their environment).

The model is a tiny random Llama that vLLM loads (`build_tiny_llama_for_vllm`; the main suite's
tiny Llama has a head size vLLM's CPU attention does not take). Every user is greedy here: on
vLLM a resumed stream is re-prefilled, but a seeded sampler does not continue its sequence
(docs/vllm.md, "Differences"), so a sampled stream taken over by the survivor would not equal its
solo text. The users' different formality strengths still tell a stream continued with the
wrong steering, or mixed with another's, from its own."""

import pytest

from tests.vllm.conftest import SKIP_REASON

pytest.importorskip("vllm", reason=SKIP_REASON)

from tests.ws.test_worker_queue import (  # noqa: E402,F401
    start_workers,
    test_it_resumes_the_streams_of_a_killed_worker_on_the_survivor,
    test_it_serves_each_of_8_concurrent_requests_once_over_2_workers,
    users,
    worker_site,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="session")
def vllm_tiny_model_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_llama_for_vllm

    loaded = build_tiny_llama_for_vllm()
    directory = tmp_path_factory.mktemp("models") / "tiny-llama-vllm"
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_site(settings, tmp_path, vllm_tiny_model_dir, monkeypatch):
    """The site's model is the tiny Llama vLLM loads, and the worker processes (which get this
    process's environment) generate with vLLM."""
    monkeypatch.setenv("STEERLAB_ENGINE", "vllm")
    settings.STEERLAB_MODEL = str(vllm_tiny_model_dir)
    settings.STEERLAB_DEVICE = "cpu"
    settings.MEDIA_ROOT = tmp_path / "media"
    return vllm_tiny_model_dir


@pytest.fixture
def sampling():
    """Greedy for every user (see the module docstring)."""
    return lambda index: {"temperature": 0}
