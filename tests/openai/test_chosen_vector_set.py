"""/v1 and the vector set a user chose (issue 27, item 10): the served model's name steers with
the user's chosen set, as the chat page does; a steerlab/ model still names its own set."""

from __future__ import annotations

from steering.serving import runtime
from steering.services import profiles, vector_sets
from tests.api.conftest import make_vectors

MESSAGES = [{"role": "user", "content": "Say something about coffee."}]


def test_the_served_model_steers_with_the_chosen_set_and_a_set_model_with_its_own(tiny_set, alice, alice_key, client_for):
    loaded = runtime.site_model()
    vector_sets.dimension_import_default(name="age")
    age = vector_sets.vector_set_register(
        vectors=make_vectors(["age"], seed=3, hidden=loaded.hidden_size, layers=loaded.num_layers, range_=0.5),
        name="age only",
    )
    client = client_for(alice_key)

    def steered_with(model: str) -> int:
        reply = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2, temperature=0)
        return reply.model_extra["steering"]["vector_set"]

    assert steered_with(runtime.site_model_id()) == tiny_set.pk  # no choice yet: the site default
    profiles.profile_choose(user=alice, vector_set_id=age.pk)
    assert steered_with(runtime.site_model_id()) == age.pk
    assert steered_with("steerlab/tiny-default") == tiny_set.pk
