"""/v1 tells which topical dimensions applied, in its `steering` echo."""

import pytest

from steering.serving import runtime
from tests.api.conftest import dimensions  # noqa: F401 (a fixture)
from tests.api.test_chat_conditions import conditional_set  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_v1_echoes_the_decision_in_its_steering_field(conditional_set, alice_key, client_for):
    client = client_for(alice_key)
    reply = client.chat.completions.create(
        model=runtime.site_model_id(), messages=[{"role": "user", "content": "hello world"}], max_tokens=4, temperature=0,
        extra_body={"steering": {"preferences": {"cost": -1.0}}},
    )
    assert reply.model_extra["steering"]["conditions"]["cost"]["applied"] is False


def test_v1_usage_counts_the_prompt_as_served_with_the_words_that_applied(conditional_set, alice_key, client_for):
    """A worded dimension's words are added by the engine once its condition holds; usage
    counts that prompt, not the one the turn queued without words."""
    from steering.models import PreferenceDimension, VectorSet

    VectorSet.objects.filter(pk=conditional_set.pk).update(worded_dimensions=["cost"])
    client, messages = client_for(alice_key), [{"role": "user", "content": "hello world"}]
    loaded = runtime.site_model()

    def usage():
        return client.chat.completions.create(
            model=runtime.site_model_id(), messages=messages, max_tokens=2, temperature=0,
            extra_body={"steering": {"preferences": {"cost": 1.0}}},
        ).usage.prompt_tokens

    plain = len(loaded.chat_ids("hello world"))
    assert usage() == plain  # cost's condition never holds: no words
    PreferenceDimension.objects.filter(name="cost").update(condition_threshold=-1.0)  # every prompt passes
    cost = PreferenceDimension.objects.get(name="cost").words()
    worded = len(loaded.chat_ids("hello world", system=f"Answer for someone who strongly prefers {cost[0]}."))
    assert usage() == worded > plain
