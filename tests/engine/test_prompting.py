import pytest

from steering.engine.prompting import preference_instruction


def test_the_wording_is_graded_by_strength_and_names_the_right_end():
    def say(strength):
        return preference_instruction("luxury", "low cost", strength)

    assert say(1.0) == "Answer for someone who strongly prefers luxury."
    assert say(0.5) == "Answer for someone who somewhat prefers luxury."
    assert say(-0.5) == "Answer for someone who somewhat prefers low cost."
    assert say(-1.0) == "Answer for someone who strongly prefers low cost."
    assert say(0.0) is None and say(0.1) is None  # no system prompt: the plain answer


@pytest.mark.parametrize("strength", [1.5, -2, float("nan")])
def test_it_refuses_strengths_outside_the_range(strength):
    with pytest.raises(ValueError):
        preference_instruction("a", "b", strength)


def test_several_dimensions_make_one_prompt_and_weak_ones_are_left_out():
    from steering.engine.prompting import preferences_instruction

    text = preferences_instruction([("luxury", "low cost", 0.9), ("mornings", "evenings", -0.5), ("a", "b", 0.1)])
    assert text == "Answer for someone who strongly prefers luxury. Answer for someone who somewhat prefers evenings."
    assert preferences_instruction([("a", "b", 0.0)]) is None
