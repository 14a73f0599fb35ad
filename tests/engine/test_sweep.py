import math

import pytest

from steering.engine import SteeringHooks, compute_vectors
from steering.data import catalog
from steering.engine.range_search import (
    functional_range_from, joint_prompts, measured_ranges, monotone, search_functional_range, search_joint_range, sign_patterns,
)
from steering.engine.rows import generate_rows
from steering.engine.sweep import evaluate_dimension
from steering.engine import GenerationParams

from tests.tiny_models import CORPUS, build_tiny

PROMPTS = ["Tell me about your day", "What is a good book?"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("llama")


@pytest.fixture(scope="module")
def vectors(tiny):
    return compute_vectors(tiny, {"f": (CORPUS[0::2], CORPUS[1::2]), "g": (CORPUS[1::2], CORPUS[0::2])})


def test_the_range_is_the_largest_candidate_below_which_every_one_passes():
    assert functional_range_from({0.01: 1.1, 0.02: 1.5, 0.04: 1.9, 0.08: 3.0}, 2.0) == (0.04, True)
    assert functional_range_from({0.01: math.nan, 0.02: 1.0}, 2.0) == (0.01, False)
    assert functional_range_from({0.02: 2.5, 0.01: 3.0}, 2.0) == (0.01, False)  # none passes: the gentlest


def test_perplexity_and_relevance_are_read_off_monotone_fits():
    # A dip back under the limit is pooled with the miss before it: their mean decides.
    assert functional_range_from({0.01: 1.1, 0.02: 2.5, 0.04: 1.2}, 2.0) == (0.04, True)  # (2.5 + 1.2) / 2 ≤ 2
    assert functional_range_from({0.01: 1.1, 0.02: 2.9, 0.04: 1.2}, 2.0) == (0.01, True)  # (2.9 + 1.2) / 2 > 2
    ratios = {0.01: 1.1, 0.02: 1.2, 0.04: 1.3}
    assert functional_range_from(ratios, 2.0, relevances={0.01: 0.97, 0.02: 0.80, 0.04: 0.95}, min_relevance=0.9) == (0.01, True)
    assert functional_range_from(ratios, 2.0, relevances={0.01: 0.97, 0.02: 0.88, 0.04: 0.95}, min_relevance=0.9) == (0.04, True)
    assert functional_range_from(ratios, 2.0, relevances=dict.fromkeys(ratios, 0.5), min_relevance=0.9) == (0.01, False)


def test_a_degenerate_or_unmeasurable_answer_ends_the_search_whatever_the_fits_say():
    ratios = {0.01: 1.1, 0.02: 1.2, 0.04: 1.3}
    assert functional_range_from(ratios, 2.0, degenerate={0.01: 0, 0.02: 0, 0.04: 1}) == (0.02, True)
    assert functional_range_from(ratios, 2.0, degenerate={0.01: 0, 0.02: 1, 0.04: 0}) == (0.01, True)
    assert functional_range_from(ratios, 2.0, relevances={0.01: math.nan}, min_relevance=0.9) == (0.01, False)


def test_noisy_failures_below_the_first_pass_do_not_pin_the_range_to_the_floor():
    # Formality on SmolLM2 (admin preview's set): the gentlest step failed by noise, the next two
    # passed, then relevance really fell. Read one by one, the search kept the floor and −1 read as 0.
    ratios = {0.005: 1.13, 0.0075: 1.31, 0.01: 1.47, 0.0125: 1.61, 0.015: 1.93}
    relevances = {0.005: 0.85, 0.0075: 0.95, 0.01: 1.0, 0.0125: 0.7, 0.015: 0.95}
    assert functional_range_from(ratios, 2.0, relevances=relevances, min_relevance=0.9) == (0.01, True)
    # The default set's search of 2026-12-06 (6 prompts): ambiance read 0.87 at its two gentlest
    # candidates and 0.90 at 0.015; the fit pools them all below the bar.
    ambiance = {0.005: 0.867, 0.0075: 0.866, 0.01: 0.885, 0.0125: 0.872, 0.015: 0.903, 0.02: 0.845}
    assert functional_range_from(dict.fromkeys(ambiance, 1.2), 2.0, relevances=ambiance, min_relevance=0.9) == (0.005, False)


def test_the_monotone_fit_pools_adjacent_violators():
    assert monotone([1.0, 3.0, 2.0, 4.0], increasing=True) == [1.0, 2.5, 2.5, 4.0]
    assert monotone([0.85, 0.95, 1.0, 0.7, 0.95], increasing=False) == pytest.approx([0.9333, 0.9333, 0.9333, 0.825, 0.825], abs=1e-4)
    assert monotone([], increasing=True) == []


def test_the_real_model_search_stops_where_the_answers_stop_answering(smollm):
    # Perplexity may grow 100×: only relevance (or a degenerate answer) can stop the search.
    # At 0.05 of the residual norm formality's answers wander off (issue 24's "opélouise" kind).
    vectors = smollm.compute_vectors({"formality": catalog.examples("formality")})
    prompts = catalog.range_prompts(2)
    result = search_functional_range(
        smollm.loaded, vectors, prompts, candidates=(0.002, 0.05), max_ppl_ratio=100.0, min_relevance=0.9,
        params=GenerationParams(max_new_tokens=16),
    )["formality"]
    assert result.relevances[0.002] >= 0.9 and result.ratios[0.05] <= 100.0
    assert result.relevances[0.05] < 0.9 or result.degenerate[0.05] > 0
    assert result.functional_range == 0.002 and result.within_limit


def test_the_search_keeps_gentle_steering_and_rejects_steering_that_wrecks_the_text(tiny, vectors):
    # Strengths in residual-norm units: 1e-4 changes almost nothing, 50× the residual norm
    # turns the answers into text the unsteered model finds less likely. A random model is
    # nearly uniform over its small vocabulary, so perplexity cannot grow much: a tight limit.
    results = search_functional_range(
        tiny, vectors, PROMPTS, candidates=(1e-4, 1e-3, 50.0, 500.0), max_ppl_ratio=1.1,
        params=GenerationParams(max_new_tokens=8),
    )
    assert set(results) == {"f", "g"}
    for result in results.values():
        # A random model's words are not words, so whether a slightly moved answer counts as made
        # degenerate is chance: either gentle candidate may be the one kept.
        assert result.functional_range in (1e-4, 1e-3) and result.within_limit
        assert result.ratios[1e-4] == pytest.approx(1.0, abs=0.05)
        assert result.ratios[50.0] > 1.1 and result.ratios[500.0] > 1.1
        assert result.baseline_perplexity > 1.0


def test_each_side_can_get_its_own_range_from_the_same_answers(tiny, vectors):
    # The same answers judged per side: the one-range search reads the worse of the two, the
    # per-side search each side alone, so each side's range is at least the shared one.
    kwargs = {"candidates": (1e-4, 1e-3, 50.0), "max_ppl_ratio": 1.1, "params": GenerationParams(max_new_tokens=6)}
    shared = search_functional_range(tiny, vectors, PROMPTS, **kwargs)
    sided = search_functional_range(tiny, vectors, PROMPTS, per_side=True, **kwargs)
    for dim in ("f", "g"):
        one, each = shared[dim], sided[dim]
        assert one.negative_range is None and each.negative_range is not None
        assert each.ratios == pytest.approx(one.ratios)
        for c in kwargs["candidates"]:
            plus, minus = each.sides["+"][c], each.sides["−"][c]
            assert one.ratios[c] == pytest.approx(max(plus[0], minus[0]))
            assert one.relevances[c] == pytest.approx(min(plus[1], minus[1]))
            assert one.degenerate[c] == plus[2] + minus[2]
        for side, chosen in (("+", each.functional_range), ("−", each.negative_range)):
            measured = each.sides[side]
            assert (chosen, True) == functional_range_from(
                {c: m[0] for c, m in measured.items()}, 1.1, relevances={c: m[1] for c, m in measured.items()},
                min_relevance=0.9, degenerate={c: m[2] for c, m in measured.items()})
            assert chosen >= one.functional_range
    ranges, negative = measured_ranges(sided)
    sided_vectors = vectors.with_ranges(ranges, negative)
    assert all(sided_vectors.range_at(dim, -1.0) == sided[dim].negative_range for dim in ("f", "g"))


def test_the_search_reports_progress_up_to_its_total(tiny, vectors):
    seen = []
    search_functional_range(
        tiny, vectors, PROMPTS[:1], dimensions=["f"], candidates=(1e-3,), params=GenerationParams(max_new_tokens=4),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_rows_of_one_batch_answer_as_they_would_alone(tiny, vectors):
    params = GenerationParams(max_new_tokens=6)
    ids = tiny.chat_ids(PROMPTS[0])
    rows = [(ids, vectors.layer_deltas({"f": s})) for s in (-1.0, 0.0, 1.0)]
    with SteeringHooks(tiny.layers, vectors.layers) as hooks:
        together = generate_rows(tiny, hooks, rows, params)
        alone = [generate_rows(tiny, hooks, [row], params)[0] for row in rows]
    assert together == alone


def test_the_evaluation_measures_every_strength_against_strength_zero(tiny, vectors):
    result = evaluate_dimension(
        tiny, vectors.with_ranges({"f": 5.0}), "f", PROMPTS, (["formal text"], ["casual text"]),
        strengths=(-1.0, 1.0), params=GenerationParams(max_new_tokens=6),
    )
    assert [p.strength for p in result.points] == [-1.0, 0.0, 1.0]  # 0 is always measured
    zero = result.at(0.0)
    assert zero.ppl_ratio == pytest.approx(1.0) and zero.pne == pytest.approx(0.0)
    for point in result.points:
        assert len(point.answers) == len(point.effects) == len(PROMPTS)
        assert point.effect == pytest.approx(sum(point.effects) / len(PROMPTS))
        assert point.pne == pytest.approx((point.effect - zero.effect) / point.ppl_ratio)
    assert result.at(1.0).answers != zero.answers  # strong steering changes the text
    assert -1.0 <= result.spearman <= 1.0 or math.isnan(result.spearman)
    assert result.functional_range == 5.0 and result.method == "caa"
    assert result.to_dict()["points"][0]["strength"] == -1.0
    with pytest.raises(KeyError):
        result.at(0.5)


def test_the_evaluation_measures_prompting_and_the_two_combined_on_the_same_prompts(tiny, vectors):
    from steering.engine.prompting import preference_instruction

    def instructions(strength):
        return preference_instruction("formal words", "casual words", strength)

    result = evaluate_dimension(
        tiny, vectors.with_ranges({"f": 5.0}), "f", PROMPTS, (["formal text"], ["casual text"]),
        strengths=(-1.0, 1.0), params=GenerationParams(max_new_tokens=6), instructions=instructions,
    )
    assert set(result.baselines) == {"prompt", "prompt+steering"}
    prompt, both = result.baselines["prompt"], result.baselines["prompt+steering"]
    zero = result.at(0.0)
    for baseline in (prompt, both):
        assert [p.strength for p in baseline.points] == [-1.0, 0.0, 1.0]
        assert baseline.at(0.0).answers == zero.answers  # one unprompted, unsteered reference
        assert baseline.instructions == {"-1.0": instructions(-1.0), "1.0": instructions(1.0)}
        for point in baseline.points:
            assert point.pne == pytest.approx((point.effect - zero.effect) / point.ppl_ratio)
    # Prompting alone differs from steering alone, and adding steering to the prompt changes it.
    assert prompt.at(1.0).answers != result.at(1.0).answers
    assert both.at(1.0).answers != prompt.at(1.0).answers
    assert -1.0 <= result.spearman_of_means <= 1.0
    assert result.to_dict()["baselines"]["prompt"]["points"][0]["strength"] == -1.0


def test_the_evaluation_without_instructions_has_no_baselines(tiny, vectors):
    result = evaluate_dimension(
        tiny, vectors.with_ranges({"f": 5.0}), "f", PROMPTS[:1], (["formal text"], ["casual text"]),
        strengths=(1.0,), params=GenerationParams(max_new_tokens=3),
    )
    assert result.baselines == {}


def test_the_joint_search_measures_every_cap_and_the_plain_sum_over_the_sign_patterns(tiny, vectors):
    assert sign_patterns(["a", "b", "c"]) == [
        {"a": 1.0, "b": 1.0, "c": 1.0}, {"a": -1.0, "b": -1.0, "c": -1.0},
        {"a": -1.0, "b": 1.0, "c": -1.0}, {"a": 1.0, "b": -1.0, "c": 1.0},
    ]
    ranged = vectors.with_ranges({"f": 50.0, "g": 50.0})
    found = search_joint_range(tiny, ranged, PROMPTS, candidates=(1e-4, 200.0), max_ppl_ratio=1.1,
                               params=GenerationParams(max_new_tokens=6))
    assert set(found.measured) == {1e-4, 200.0, None}
    # 50× the residual norm per dimension wrecks the text; a cap of 1e-4 barely moves it.
    assert found.measured[None][0] > 1.1 and found.measured[1e-4][0] == pytest.approx(1.0, abs=0.05)
    assert found.joint_range == 1e-4 and found.within_limit


def test_the_joint_search_with_words_says_the_worded_dimensions_in_every_pattern(tiny, vectors):
    """`words` (bench/heldout.py --joint-words): the patterns are answered with the worded
    dimensions in words, so they measure other answers; none worded is the plain search."""
    ranged = vectors.with_ranges({"f": 0.02, "g": 0.02})
    kwargs = {"candidates": (1e-4,), "max_ppl_ratio": 1.1, "params": GenerationParams(max_new_tokens=6)}
    plain = search_joint_range(tiny, ranged, PROMPTS, **kwargs)
    assert search_joint_range(tiny, ranged, PROMPTS, words={}, **kwargs).measured == plain.measured
    worded = search_joint_range(tiny, ranged, PROMPTS, words={"f": ("formal words", "casual words")}, **kwargs)
    assert worded.measured[1e-4] != plain.measured[1e-4]


def test_a_dimension_with_its_own_prompts_is_searched_on_them(tiny, vectors):
    # The same search as each dimension alone on its prompts: a topical dimension's range is
    # measured on questions about its subject, the others' on the shared prompts.
    own = ["Where should I stay tonight?", "Which restaurant is best?"]
    kwargs = {"candidates": (1e-3, 50.0), "max_ppl_ratio": 1.1, "params": GenerationParams(max_new_tokens=6)}
    seen = []
    both = search_functional_range(tiny, vectors, PROMPTS, prompts_for={"f": own},
                                   progress=lambda done, total: seen.append(done / total), **kwargs)
    alone_f = search_functional_range(tiny, vectors, own, dimensions=["f"], **kwargs)["f"]
    alone_g = search_functional_range(tiny, vectors, PROMPTS, dimensions=["g"], **kwargs)["g"]
    shared_f = search_functional_range(tiny, vectors, PROMPTS, dimensions=["f"], **kwargs)["f"]
    assert both["f"].ratios == pytest.approx(alone_f.ratios) and both["f"].relevances == pytest.approx(alone_f.relevances)
    assert both["f"].baseline_perplexity == pytest.approx(alone_f.baseline_perplexity)
    assert both["f"].baseline_perplexity != pytest.approx(shared_f.baseline_perplexity)
    assert both["g"].ratios == pytest.approx(alone_g.ratios)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_the_joint_budget_is_searched_on_the_topical_dimensions_questions_in_turn():
    shared = ["s1", "s2", "s3", "s4"]
    assert joint_prompts(shared, {"cost": ["c1", "c2", "c3"], "time": ["t1"]}) == ["c1", "t1", "c2", "c3"]
    assert joint_prompts(shared[:2], {"cost": ["c1", "c2", "c3"], "time": ["t1"]}) == ["c1", "t1"]
    assert joint_prompts(shared, {}) == joint_prompts(shared, None) == shared  # no topical dimension: the shared ones


def test_a_set_that_carries_a_joint_budget_is_searched_as_if_it_had_none(tiny, vectors):
    # The budget caps the summed addition; one dimension's candidate above it must still be
    # measured at its own strength (re-measuring a computed set measured every large candidate
    # at the budget instead).
    kwargs = {"candidates": (1e-3, 50.0), "max_ppl_ratio": 1.1, "params": GenerationParams(max_new_tokens=6)}
    plain = search_functional_range(tiny, vectors, PROMPTS, dimensions=["f"], **kwargs)["f"]
    budgeted = search_functional_range(tiny, vectors.with_joint_range(1e-3), PROMPTS, dimensions=["f"], **kwargs)["f"]
    assert budgeted.ratios == pytest.approx(plain.ratios)
    assert plain.ratios[50.0] != pytest.approx(plain.ratios[1e-3])
