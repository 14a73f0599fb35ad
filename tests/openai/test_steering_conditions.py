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
