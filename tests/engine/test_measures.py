import math

import pytest
import torch

from steering.data import catalog
from steering.engine.embedding import shared_embedder
from steering.engine.measures import (
    AnswerNLL, answer_nll, answer_similarity, composite, degeneracy, degenerate_rate, distinct_n, effect_scores,
    is_degenerate, is_word, nonword_share, pearson, perplexity, pne, prompt_similarities, relevance, repetition_rate,
    spearman,
)

from tests.tiny_models import build_tiny


def test_spearman_is_one_for_any_increasing_relation_and_minus_one_for_a_decreasing_one():
    strengths = [-1, -0.5, 0, 0.5, 1]
    assert spearman(strengths, [x**3 for x in strengths]) == pytest.approx(1.0)
    assert spearman(strengths, [-math.exp(x) for x in strengths]) == pytest.approx(-1.0)


def test_pearson_is_the_linear_correlation_and_nan_when_undefined():
    # r = Sxy / sqrt(Sxx Syy) = 5 / sqrt(2 × 114/9)
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert pearson([0, 1, 2], [3, 5, 7]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 2, 3], [4, 4, 4]))
    assert math.isnan(pearson([1], [1]))


def test_spearman_averages_ties_and_is_nan_for_a_constant_side():
    # Ranks of y with a tie: [1, 2.5, 2.5, 4]; Pearson of [1, 2, 3, 4] with them.
    assert spearman([1, 2, 3, 4], [10, 20, 20, 30]) == pytest.approx(0.9486833, abs=1e-6)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_repetition_rate_counts_repeated_word_trigrams():
    assert repetition_rate("The cat sat on the mat and looked around.") == 0.0
    # 6 words → 4 trigrams, all the same: 3 of 4 repeat an earlier one.
    assert repetition_rate("very very very very very very") == 0.75
    assert repetition_rate("Luxury, luxury! LUXURY luxury") == 0.5  # case and punctuation do not matter
    assert repetition_rate("too short") == 0.0
    assert repetition_rate("a b a b", n=2) == pytest.approx(1 / 3)


def test_pne_divides_the_effect_gain_by_the_perplexity_ratio():
    assert pne(0.3, 0.1, 20.0, 10.0) == pytest.approx(0.1)
    assert pne(-0.1, 0.1, 10.0, 10.0) == pytest.approx(-0.2)  # signed: the negative end


def test_corpus_perplexity_weights_by_tokens_and_is_nan_without_tokens():
    nlls = [AnswerNLL(2.0, 2), AnswerNLL(4.0, 2), AnswerNLL(0.0, 0)]
    assert perplexity(nlls) == pytest.approx(math.exp(6.0 / 4))
    assert nlls[0].perplexity == pytest.approx(math.e)
    assert math.isnan(perplexity([AnswerNLL(0.0, 0)]))
    assert math.isnan(AnswerNLL(0.0, 0).perplexity)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_answer_nll_is_the_answers_own_log_loss_whatever_the_batch(family):
    tiny = build_tiny(family)
    prompts = [tiny.chat_ids("Hello there"), tiny.chat_ids("A much longer question about many things, please")]
    answers = ["Fine, thanks.", "It depends on what you mean by things", ""]
    prompts.append(prompts[0])
    batched = answer_nll(tiny, prompts, answers, batch_size=8)
    for prompt, answer, got in zip(prompts, answers, batched):
        ids = tiny.tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert got.tokens == len(ids)
        if not ids:
            assert got.total == 0.0
            continue
        # Straight from one unpadded forward pass: the log-probability of each answer token.
        with torch.no_grad():
            logits = tiny.model(input_ids=torch.tensor([prompt + ids])).logits
        logprobs = torch.log_softmax(logits[0, :-1].double(), -1)
        expected = -sum(float(logprobs[len(prompt) - 1 + j, token]) for j, token in enumerate(ids))
        assert got.total == pytest.approx(expected, rel=1e-6)
    one_at_a_time = [answer_nll(tiny, [p], [a])[0] for p, a in zip(prompts, answers)]
    assert [x.total for x in one_at_a_time] == pytest.approx([x.total for x in batched], rel=1e-6)


def test_effect_is_positive_near_the_positive_references_and_negative_near_the_negative_ones():
    spec = catalog.dimension("cost")
    texts = [
        "Book a suite at a five-star hotel and dine at a Michelin-starred restaurant with a sommelier.",
        "Grab a cheap sandwich from the corner shop and stay at a hostel to save money.",
        "",
    ]
    luxury, budget, empty = effect_scores(shared_embedder(), texts, spec["reference_positive"], spec["reference_negative"])
    assert luxury > 0.05 and budget < -0.05
    assert empty == 0.0
    assert effect_scores(shared_embedder(), [], ["a"], ["b"]) == []


# Real greedy answers of SmolLM2-135M from docs/evaluation.md's before/after runs: unsteered, and
# age at +1 with the old range of 0.02.
NORMAL = (
    "A Sunday afternoon can be a wonderful opportunity to celebrate with your family. Here are some ideas "
    "to get you started:\n\nYou could plan a family dinner together, where everyone can share a meal of their choice."
)
FOREIGN_GARBLE = "La vista de la vida, específica. Esto es un paísht de la vida, un camino de la vida. Esto es un paísht de la vida,"
# Issue 24's quoted answer, continued in its own manner (the issue quotes only its first line).
GARBLED = (
    "The culinary dream of your life. The opélouise d'Aberleké, the most exclusive and luxurious "
    "dining experience in the world, with the finest cuisinière of Fulification and Embraalic "
    "wines, a cinemocha of delicacies served by the Vélouriste."
)
LOOP = "a váš váš, a váš váš, a váš váš, a váš váš, a váš váš, a váš váš, a váš váš"


def test_words_that_are_words_are_known_in_their_inflected_forms_and_names_of_places():
    for word in ("restaurants", "recommendations", "hiking", "museums", "cheaper", "Chicago", "Lisbon", "bistro"):
        assert is_word(word), word
    for word in ("opélouise", "Aberleké", "Embraalic", "Fulification", "cinemocha"):
        assert not is_word(word), word


def test_casual_speech_that_drops_its_gs_is_not_garbled():
    # Formality at −1 on SmolLM2 (bf16, 2026-12-06): the casual end, not a broken answer.
    casual = ("A new day in the city, huh? You're talkin' about a dream? I'm all about helpin' you out there, "
              "makin' plans for the future. You're lookin' for somethin' to")
    assert nonword_share(casual) == 0.0 and not is_degenerate(casual)
    assert not is_word("opélouisin")  # a made-up word ending so is still one


def test_an_answer_of_digits_and_dots_is_degenerate_and_figures_among_words_are_not():
    assert is_degenerate("A: 1000000000000\n1.11.10.2018\n2.11.10.2018\n3.11.")  # culture at −1, bf16
    assert not is_degenerate("It boils at about 93 °C (199 °F) at 2,000 m.")  # figures among words


def test_the_nonword_share_is_near_zero_for_a_normal_answer_and_high_for_a_garbled_one():
    assert nonword_share(NORMAL) == 0.0
    assert nonword_share(GARBLED) > 0.15
    assert nonword_share("") == 0.0 and nonword_share("42, 7 & 9!") == 0.0


def test_distinct_2_is_one_for_varied_text_and_low_for_a_loop():
    assert distinct_n(NORMAL, 2) == 1.0
    assert distinct_n(LOOP, 2) < 0.3
    assert distinct_n("one", 2) == 1.0


def test_a_garbled_answer_and_a_loop_are_degenerate_and_a_normal_answer_is_not():
    assert not is_degenerate(NORMAL)
    assert is_degenerate(GARBLED) and degeneracy(GARBLED).nonwords > 0.12
    assert is_degenerate(FOREIGN_GARBLE) and degeneracy(FOREIGN_GARBLE).nonwords > 0.2
    assert is_degenerate(LOOP) and degeneracy(LOOP).repetition > 0.5
    assert is_degenerate("")  # no words at all: no answer
    assert degenerate_rate([NORMAL, GARBLED, LOOP, NORMAL]) == 0.5
    assert degenerate_rate([]) == 0.0


def test_an_answer_to_the_question_is_closer_to_its_prompt_than_one_that_wanders_off():
    prompt = "How do I reset a forgotten email password?"
    answering = "Open the sign-in page, choose 'Forgot password' and follow the link sent to your recovery address."
    wandering = "The opulent dining experience of the finest restaurant, with a tasting menu and a sommelier."
    on, off = prompt_similarities(shared_embedder(), [prompt, prompt], [answering, wandering])
    assert on > off + 0.2
    # Relevance is the steered answers' mean cosine over the unsteered answers'.
    assert relevance([off], [on]) == pytest.approx(off / on)
    assert relevance([on, on], [on, on]) == pytest.approx(1.0)
    assert math.isnan(relevance([], [on]))
    assert answer_similarity(shared_embedder(), [answering], [answering]) == pytest.approx(1.0, abs=1e-5)
    assert answer_similarity(shared_embedder(), [answering], [wandering]) < 0.5
    with pytest.raises(ValueError):
        prompt_similarities(shared_embedder(), [prompt], [])


def test_the_composite_is_a_harmonic_mean_that_any_failing_score_sinks():
    # Concept full (Effect moved 0.06 the strength's way), relevance 0.9, fluency 1/1.25 = 0.8.
    score = composite(strength=1.0, effect=0.10, effect_0=0.04, relevance=0.9, ppl_ratio=1.25, degenerate=0.0)
    assert score == pytest.approx(3 / (1 / 1.0 + 1 / 0.9 + 1 / 0.8))
    # At −1 the Effect must fall: the same move the wrong way counts nothing.
    assert composite(strength=-1.0, effect=0.10, effect_0=0.04, relevance=0.9, ppl_ratio=1.25, degenerate=0.0) == 0.0
    # Half the answers degenerate halves fluency; an answer that no longer answers sinks it all.
    half = composite(strength=1.0, effect=0.10, effect_0=0.04, relevance=1.0, ppl_ratio=1.0, degenerate=0.5)
    assert half == pytest.approx(3 / (1 + 1 + 2))
    assert composite(strength=1.0, effect=0.10, effect_0=0.04, relevance=0.0, ppl_ratio=1.0, degenerate=0.0) == 0.0
    assert math.isnan(composite(strength=0.0, effect=0.0, effect_0=0.0, relevance=1.0, ppl_ratio=1.0, degenerate=0.0))


def test_a_bootstrap_interval_holds_the_figure_repeats_and_narrows_with_more_prompts():
    from steering.engine.measures import bootstrap_interval

    def mean_of(values):
        return lambda idx: sum(values[i] for i in idx) / len(idx)

    few = [0.2, 0.9, 0.4, 1.3, 0.7, 0.1, 1.1, 0.5]
    low, high = bootstrap_interval(mean_of(few), len(few))
    assert low < sum(few) / len(few) < high
    assert min(few) <= low and high <= max(few)
    assert bootstrap_interval(mean_of(few), len(few)) == (low, high)  # seeded: a run repeats
    assert bootstrap_interval(mean_of(few), len(few), seed=1) != (low, high)
    many = few * 8  # the same spread of values over eight times the prompts
    narrow = bootstrap_interval(mean_of(many), len(many))
    assert narrow[1] - narrow[0] < (high - low) / 2
    wider = bootstrap_interval(mean_of(few), len(few), level=0.99)
    assert wider[0] <= low and high <= wider[1]
    # A figure every draw agrees on has no width; paired figures stay paired.
    assert bootstrap_interval(mean_of([0.5] * 6), 6) == (0.5, 0.5)
    steered, unsteered = [0.4, 0.8, 0.6], [0.4, 0.8, 0.6]
    ratio = lambda idx: sum(steered[i] for i in idx) / sum(unsteered[i] for i in idx)  # noqa: E731
    assert bootstrap_interval(ratio, 3) == pytest.approx((1.0, 1.0))
    with pytest.raises(ValueError):
        bootstrap_interval(mean_of(few), 0)
    with pytest.raises(ValueError):
        bootstrap_interval(mean_of(few), len(few), level=1.0)
