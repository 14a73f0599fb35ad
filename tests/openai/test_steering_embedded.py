"""/v1 on the real embedded model: `extra_body` steering moves the answer, measurably, the
same way the chat page's sliders do."""

import statistics

import openai
import pytest

from steering.models import PreferenceDimension
from steering.services import vector_sets
from steering.serving import runtime
from tests.engine.test_embedded_steering import PROMPTS, formality
from tests.ws.conftest import formality_vectors  # noqa: F401  (a session fixture: computed once)

pytestmark = pytest.mark.slow


@pytest.fixture
def formality_set(live, settings, tmp_path, formality_vectors):  # noqa: F811
    settings.MEDIA_ROOT = tmp_path / "media"
    PreferenceDimension.objects.create(name="formality", negative_label="Casual", positive_label="Formal")
    return vector_sets.vector_set_register(vectors=formality_vectors, name="default")


def stream_text(client, prompt, strength):
    stream = client.chat.completions.create(
        model=runtime.site_model_id(), messages=[{"role": "user", "content": prompt}],
        max_tokens=40, temperature=0, stream=True,
        extra_body={"steering": {"preferences": {"formality": strength}}},
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_extra_body_steering_moves_the_answer(formality_set, alice, live):
    from tests.openai.conftest import token_for

    client = openai.OpenAI(base_url=f"{live}/v1", api_key=token_for(alice), max_retries=0, timeout=300)
    texts = {s: [stream_text(client, prompt, s) for prompt in PROMPTS] for s in (-1.0, 1.0)}
    report = "\n".join(f"{s:+}: {t!r}" for s, ts in texts.items() for t in ts)
    print(report)
    scores = {s: [formality(t) for t in ts] for s, ts in texts.items()}
    assert statistics.mean(scores[1.0]) > statistics.mean(scores[-1.0]), report
    assert sum(f > c for f, c in zip(scores[1.0], scores[-1.0])) >= 3, report
