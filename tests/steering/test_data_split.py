"""The held-out split grades what the other prompt sets built: it must share none of their prompts."""

from steering.data import catalog


def fitting_prompts() -> set[str]:
    on_topic, off_topic = catalog.condition_prompts()
    return (set(catalog.neutral_prompts()) | set(catalog.suggestion_prompts()) | set(off_topic)
            | {p for prompts in on_topic.values() for p in prompts})


def test_the_held_out_split_shares_no_prompt_with_the_fitting_and_search_prompts():
    split = catalog.heldout()
    held_out = set(split["prompts"]) | set(split["everyday"]) | {p for ps in split["on_topic"].values() for p in ps}
    assert held_out and fitting_prompts()
    assert held_out.isdisjoint(fitting_prompts()), sorted(held_out & fitting_prompts())


def test_every_topical_dimension_has_enough_on_topic_prompts_for_its_range_search():
    on_topic, _ = catalog.condition_prompts()
    for name in catalog.dimension_names():
        if catalog.dimension(name).get("kind") == "topical":
            assert len(on_topic[name]) >= 12, name
