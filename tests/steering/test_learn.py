"""LEARN: the paper's update rule, the reading of feedback texts with the real packaged
sentence-embedding model, and a profile learned over a sequence of logged feedback."""

import pytest

from steering.data import catalog
from steering.modes import learn
from steering.engine.embedding import relative_similarity, shared_embedder


@pytest.fixture(scope="module")
def reader():
    phrases = [
        learn.DimensionPhrases(name, catalog.dimension(name)["feedback_positive"], catalog.dimension(name)["feedback_negative"])
        for name in catalog.dimension_names()
    ]
    return learn.FeedbackReader(shared_embedder(), phrases)


# -- the rule ---------------------------------------------------------------------------------


def reading(dimension, direction):
    return learn.Reading(dimension, direction, 0.8, "")


def test_thumbs_down_moves_by_rate_times_direction():
    changed = learn.updated_strengths({"cost": 0.0}, [reading("cost", -1.0)], dissatisfaction=1.0, rate=0.35)
    assert changed == {"cost": -0.35}


def test_the_sign_follows_the_direction_and_the_size_scales_with_both_factors():
    up = learn.updated_strengths({}, [reading("formality", 0.5)], dissatisfaction=0.5, rate=0.4)
    down = learn.updated_strengths({}, [reading("formality", -0.5)], dissatisfaction=0.5, rate=0.4)
    assert up == {"formality": 0.1} and down == {"formality": -0.1}


def test_the_result_is_clipped_to_minus_one_one():
    assert learn.updated_strengths({"cost": -0.9}, [reading("cost", -1.0)], dissatisfaction=1.0, rate=0.35) == {"cost": -1.0}
    assert learn.updated_strengths({"cost": 0.95}, [reading("cost", 1.0)], dissatisfaction=1.0, rate=0.35) == {"cost": 1.0}
    # Already at the end: nothing changes.
    assert learn.updated_strengths({"cost": 1.0}, [reading("cost", 1.0)], dissatisfaction=1.0) == {}


def test_other_dimensions_are_left_alone():
    changed = learn.updated_strengths({"cost": 0.2, "time": -0.4}, [reading("cost", 1.0)], dissatisfaction=1.0, rate=0.2)
    assert changed == {"cost": 0.4}


@pytest.mark.parametrize(
    "thumbs, text, sentiment, expected",
    [
        (-1, "", 0.0, 1.0),
        (-1, "too formal", 0.3, 1.0),
        (1, "", 0.0, 0.0),  # thumbs up with no text: no change
        (1, "more luxury next time", -0.2, 0.0),  # a satisfied user is not moved
        (None, "cheaper please", 0.05, 0.5),
        (None, "this is bad, too expensive", -0.1, 1.0),
        (None, "   ", -0.5, 0.0),
    ],
)
def test_dissatisfaction(thumbs, text, sentiment, expected):
    assert learn.dissatisfaction(thumbs=thumbs, text=text, sentiment=sentiment) == expected


def test_no_change_on_thumbs_up_with_no_text_end_to_end(reader):
    amount = learn.dissatisfaction(thumbs=1, text="")
    assert learn.updated_strengths({"cost": 0.3}, reader.read(""), dissatisfaction=amount) == {}


# -- reading texts (real all-MiniLM-L6-v2) ------------------------------------------------------


@pytest.mark.parametrize(
    "text, dimension, sign",
    [
        ("too expensive", "cost", -1),
        ("way too pricey for me", "cost", -1),
        ("more upscale please", "cost", 1),
        ("cheaper", "cost", -1),
        ("way too fancy", "cost", -1),
        ("this is too formal", "formality", -1),
        ("less formal please", "formality", -1),
        ("can you talk more casually?", "formality", -1),
        ("stop being so stiff", "formality", -1),
        ("my children are with me", "age", -1),
        ("too childish", "age", 1),
        ("I'm a morning person", "time", 1),
        ("too early for me", "time", -1),
        ("I want sushi", "culture", -1),
        ("burgers please", "culture", 1),
        ("too touristy", "ambiance", 1),
        ("where do locals actually go?", "ambiance", 1),
    ],
)
def test_a_text_is_routed_to_its_dimension_with_the_right_sign(reader, text, dimension, sign):
    readings = reader.read(text)
    assert readings, f"{text!r} was read as about nothing"
    assert readings[0].dimension == dimension, readings
    assert readings[0].direction * sign > 0, readings


@pytest.mark.parametrize("text", ["nice", "thanks", "ok", ""])
def test_texts_about_no_dimension_give_no_direction(reader, text):
    assert reader.read(text) == []


def test_a_complaint_is_read_by_flipping_what_it_wants_less_of():
    assert learn.complaint_object("this is too formal") == "formal"
    assert learn.complaint_object("I don't want expensive places") == "expensive places"
    assert learn.complaint_object("more luxury") is None
    assert learn.complaint_object("too") is None


def test_two_requests_in_one_text_are_both_read(reader):
    readings = {r.dimension: r.direction for r in reader.read("too formal, and I want sushi")}
    assert readings.get("formality", 0) < 0 and readings.get("culture", 0) < 0


def test_sentiment_tells_pleased_from_displeased(reader):
    assert reader.sentiment("great answer, thank you") > 0
    assert reader.sentiment("this is useless and wrong") < 0


def test_labels_alone_give_usable_phrases():
    positive, negative = learn.fallback_phrases("Budget", "Luxury")
    assert "luxury" in positive and "budget" in negative
    custom = learn.FeedbackReader(shared_embedder(), [learn.DimensionPhrases("cost", positive, negative)])
    (only,) = custom.read("I want more luxury")
    assert only.dimension == "cost" and only.direction > 0


def test_the_embedder_gives_unit_rows_and_zero_for_empty_text():
    embedder = shared_embedder()
    rows = embedder.embed(["a cheap meal", "", "an expensive dinner"])
    assert rows.shape == (3, embedder.dimension)
    assert abs(float(rows[0].norm()) - 1) < 1e-5 and float(rows[1].norm()) == 0.0
    pos, neg = embedder.centroid(["luxury", "expensive"]), embedder.centroid(["budget", "cheap"])
    scores = relative_similarity(rows, pos, neg)
    assert scores[2] > 0 > scores[0]


def test_a_reader_needs_dimensions():
    with pytest.raises(ValueError):
        learn.FeedbackReader(shared_embedder(), [])
