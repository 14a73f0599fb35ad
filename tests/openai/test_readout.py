"""/v1 carries the answer's readout in its `readout` extension field, beside `steering`."""

import pytest

from steering.serving import runtime
from tests.api.conftest import dimensions  # noqa: F401 (a fixture)
from tests.api.test_chat_readout import readout_set  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_v1_answers_carry_the_readout_whole_and_streamed(readout_set, alice_key, client_for):
    client = client_for(alice_key)
    ask = dict(model=runtime.site_model_id(), messages=[{"role": "user", "content": "hello world"}], max_tokens=4,
               temperature=0, extra_body={"steering": {"preferences": {"formality": -1.0}}})
    reply = client.chat.completions.create(**ask)
    readout = reply.model_extra["readout"]
    assert readout["dimensions"] == ["formality", "cost"] and len(readout["tokens"]) == reply.usage.completion_tokens
    chunks = list(client.chat.completions.create(**ask, stream=True))
    carrying = [c for c in chunks if (c.model_extra or {}).get("readout")]
    assert len(carrying) == 1 and carrying[0] is chunks[-1]
    assert carrying[0].model_extra["readout"] == readout  # greedy: the same answer, read the same
