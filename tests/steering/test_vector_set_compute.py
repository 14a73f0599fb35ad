import pytest
import torch

from steering.engine import SteeringVectors, top_layers
from steering.engine.range_search import MAX_PPL_RATIO, MIN_RELEVANCE, JointSearch, RangeSearch
from steering.models import PreferenceDimension, VectorSet
from steering.services import measurement, vector_sets

from tests.tiny_models import CORPUS, build_tiny

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def tiny():
    return build_tiny("llama")


@pytest.fixture
def formality():
    return PreferenceDimension.objects.create(
        name="formality", negative_label="Casual", positive_label="Formal",
        positive_examples=CORPUS[0::2], negative_examples=CORPUS[1::2],
    )


def test_it_computes_writes_and_marks_ready(tiny, formality, media):
    vector_set = vector_sets.vector_set_create(name="f", model_id="tiny-llama", dimensions=[formality])
    assert vector_set.status == VectorSet.Status.PENDING
    reported = []
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny, report=reported.append)
    assert vector_set.status == VectorSet.Status.READY
    assert vector_set.progress == 100
    assert reported == sorted(reported) and reported
    assert vector_set.layers == [1, 2] and vector_set.num_layers == 4 and vector_set.hidden_size == 64
    vectors = SteeringVectors.load(media / vector_set.file.name)
    assert vectors.dimensions == ["formality"]
    assert vectors.labels == {"formality": ["Casual", "Formal"]}
    assert vectors.model_id == "tiny-llama"


def test_a_failure_leaves_a_readable_error_and_no_file(tiny, media):
    empty = PreferenceDimension.objects.create(name="empty", negative_label="A", positive_label="B")
    vector_set = vector_sets.vector_set_create(name="e", model_id="tiny-llama", dimensions=[empty])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.status == VectorSet.Status.FAILED
    assert "'empty' has no training examples" in vector_set.error
    assert not vector_set.file
    assert not any(media.rglob("*.safetensors*"))


def test_it_refuses_to_compute_on_another_model(tiny, formality, media):
    vector_set = vector_sets.vector_set_create(name="f", model_id="other/model", dimensions=[formality])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.status == VectorSet.Status.FAILED
    assert "'other/model'" in vector_set.error and "'tiny-llama'" in vector_set.error
    assert not any(media.rglob("*.safetensors*"))


def test_deleting_a_vector_set_deletes_its_file(tiny, formality, media, django_capture_on_commit_callbacks):
    vector_set = vector_sets.vector_set_create(name="f", model_id="tiny-llama", dimensions=[formality])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    path = media / vector_set.file.name
    assert path.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        vector_set.delete()
    assert not path.exists()


def test_it_imports_the_shipped_dimension_once():
    first = vector_sets.dimension_import_default(name="formality")
    again = vector_sets.dimension_import_default(name="formality")
    assert first.pk == again.pk
    assert (first.negative_label, first.positive_label) == ("Casual", "Formal")
    assert len(first.positive_examples) >= 50 and len(first.negative_examples) >= 50
    with pytest.raises(KeyError, match="No default dimension 'nope'"):
        vector_sets.dimension_import_default(name="nope")


@pytest.mark.parametrize("method", ["probe", "pca"])
def test_it_computes_with_the_chosen_method(tiny, formality, media, method):
    vector_set = vector_sets.vector_set_create(name=method, model_id="tiny-llama", dimensions=[formality], method=method)
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    vectors = SteeringVectors.load(media / vector_set.file.name)
    assert vectors.method == method
    assert vectors.layer_scores["formality"] and len(vectors.layer_scores["formality"]) == 4


def test_it_steers_the_top_k_layers_and_measures_each_functional_range(tiny, formality, media, monkeypatch, settings):
    searched = {}

    def fake_search(loaded, vectors, prompts, *, max_ppl_ratio, min_relevance, hooks, progress, per_side):
        searched.update(prompts=prompts, factor=max_ppl_ratio, relevance=min_relevance, per_side=per_side)
        progress(1, 2)
        return {
            dim: RangeSearch(dim, 0.045, 10.0, {0.03: 1.1, 0.045: 1.2, 0.06: float("nan")}, relevances={0.03: 0.97, 0.045: 0.93})
            for dim in vectors.dimensions
        }

    monkeypatch.setattr(measurement, "search_functional_range", fake_search)
    vector_set = vector_sets.vector_set_create(name="k", model_id="tiny-llama", dimensions=[formality], top_k=2)
    reported = []
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny, report=reported.append)
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    vectors = SteeringVectors.load(media / vector_set.file.name)
    mean_scores = vectors.layer_scores["formality"]
    assert vector_set.layers == vectors.layers == top_layers(mean_scores, 2)
    # The measured range is stored on the row and in the file, which every generation reads.
    assert vector_set.functional_range == vectors.functional_range == {"formality": 0.045}
    # What the search tried is kept for the set's plots (JSON: no NaN).
    vector_set.refresh_from_db()
    words = vector_set.range_search["formality"].pop("words")  # the worded choice's, beside it
    assert set(words) == {"+", "−"}
    assert vector_set.range_search == {
        "formality": {"candidates": [0.03, 0.045, 0.06], "ppl_ratio": [1.1, 1.2, None], "relevance": [0.97, 0.93, None]}
    }
    # The setting's default is the engine's limit, and the search gets the configured number of
    # prompts (production's default is the engine's RANGE_PROMPTS; the tests' settings ask fewer).
    assert searched["factor"] == MAX_PPL_RATIO and len(searched["prompts"]) == settings.STEERLAB_RANGE_PROMPTS
    assert searched["relevance"] == MIN_RELEVANCE == 0.9 and searched["per_side"] is settings.STEERLAB_RANGE_PER_SIDE
    assert 80 <= max(reported[:-1]) < 100  # extraction fills 0–80 %, the search the rest


@pytest.mark.parametrize("per_side", [True, False])
def test_each_end_gets_its_own_range_in_the_file_on_the_row_and_in_the_search_kept(
    tiny, formality, media, monkeypatch, settings, per_side
):
    settings.STEERLAB_RANGE_PER_SIDE = per_side
    candidates = (0.01, 0.02)

    def fake_search(loaded, vectors, prompts, *, max_ppl_ratio, min_relevance, hooks, progress, per_side):
        sides = {"+": {0.01: (1.1, 0.95, 0), 0.02: (1.3, 0.92, 0)}, "−": {0.01: (1.2, 0.93, 0), 0.02: (3.0, 0.7, 1)}}
        worse = {c: (max(sides["+"][c][0], sides["−"][c][0]), min(sides["+"][c][1], sides["−"][c][1])) for c in candidates}
        return {dim: RangeSearch(dim, 0.02 if per_side else 0.01, 10.0, {c: w[0] for c, w in worse.items()},
                                 relevances={c: w[1] for c, w in worse.items()},
                                 negative_range=0.01 if per_side else None, sides=sides if per_side else {})
                for dim in vectors.dimensions}

    monkeypatch.setattr(measurement, "search_functional_range", fake_search)
    vector_set = vector_sets.vector_set_create(name="sided", model_id="tiny-llama", dimensions=[formality])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    vectors = SteeringVectors.load(media / vector_set.file.name)
    vector_set.refresh_from_db()
    if per_side:
        assert vectors.functional_range == vector_set.functional_range == {"formality": 0.02}
        assert vectors.negative_range == vector_set.negative_range == {"formality": 0.01}
        assert vector_set.range_text("formality") == "−0.01 / +0.02"
        assert vector_set.range_search["formality"]["sides"] == {
            "+": {"ppl_ratio": [1.1, 1.3], "relevance": [0.95, 0.92]},
            "−": {"ppl_ratio": [1.2, 3.0], "relevance": [0.93, 0.7]},
        }
    else:
        assert vectors.negative_range == vector_set.negative_range == {} and vector_set.range_text("formality") == "±0.01"
        assert "sides" not in vector_set.range_search["formality"]


def test_several_dimensions_get_a_joint_budget_measured_on_their_ranges_and_stored_in_the_file(
    tiny, formality, media, monkeypatch
):
    mood = PreferenceDimension.objects.create(
        name="mood", negative_label="Sad", positive_label="Happy",
        positive_examples=CORPUS[1::2], negative_examples=CORPUS[0::2][::-1],
    )
    seen = {}

    def fake_joint(loaded, vectors, prompts, *, max_ppl_ratio, min_relevance, hooks, progress, words):
        seen.update(ranges=dict(vectors.functional_range), factor=max_ppl_ratio, relevance=min_relevance, words=words)
        progress(1, 1)
        return JointSearch(0.03, {0.03: (1.5, 0.95, 0), None: (3.0, 0.5, 2)})

    monkeypatch.setattr(measurement, "search_joint_range", fake_joint)
    vector_set = vector_sets.vector_set_create(name="two", model_id="tiny-llama", dimensions=[formality, mood])
    reported = []
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny, report=reported.append)
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    vectors = SteeringVectors.load(media / vector_set.file.name)
    assert vectors.joint_range == 0.03
    # The budget is measured on the ranges just found, by the same bar.
    assert seen["ranges"] == vectors.functional_range and seen["factor"] == MAX_PPL_RATIO and seen["relevance"] == 0.9
    # ... with the dimensions chosen to be worded said in every pattern, as they are served.
    assert seen["words"] == {dim.name: dim.words() for dim in (formality, mood) if dim.name in vector_set.worded_dimensions}
    assert reported == sorted(reported)


def test_without_the_search_the_default_range_stays(tiny, formality, media, settings):
    settings.STEERLAB_RANGE_SEARCH = False
    vector_set = vector_sets.vector_set_create(name="f", model_id="tiny-llama", dimensions=[formality])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.functional_range == {"formality": 0.02}


def test_a_top_k_the_model_cannot_take_fails_with_a_readable_error(tiny, formality, media):
    vector_set = vector_sets.vector_set_create(name="k", model_id="tiny-llama", dimensions=[formality], top_k=9)
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.status == VectorSet.Status.FAILED and "top_k must be between 1 and 3" in vector_set.error


def test_a_set_deleted_while_it_computes_stays_deleted_and_leaves_no_file(tiny, formality, media):
    vector_set = vector_sets.vector_set_create(name="f", model_id="tiny-llama", dimensions=[formality])
    reported = []

    def delete_midway(percent):
        if not reported:
            VectorSet.objects.filter(pk=vector_set.pk).delete()
        reported.append(percent)

    vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny, report=delete_midway)
    assert len(reported) == 1  # it stopped at its next progress report, not at the end
    assert not VectorSet.objects.filter(pk=vector_set.pk).exists()
    assert not any(media.rglob("*.safetensors*"))


def test_a_set_deleted_after_its_last_progress_report_is_not_brought_back(tiny, formality, media):
    vector_set = vector_sets.vector_set_create(name="f", model_id="tiny-llama", dimensions=[formality])

    def delete_at_the_end(percent):
        if percent == 99:  # the last report: only the file and the final update are left
            VectorSet.objects.filter(pk=vector_set.pk).delete()

    vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny, report=delete_at_the_end)
    assert not VectorSet.objects.filter(pk=vector_set.pk).exists()
    assert not any(media.rglob("*.safetensors*"))


def test_a_set_deleted_before_its_task_runs_ends_the_task_quietly(formality, media):
    from steering import tasks

    vector_set = vector_sets.vector_set_create(name="f", model_id="tiny-llama", dimensions=[formality])
    VectorSet.objects.filter(pk=vector_set.pk).delete()
    assert tasks.compute_vector_set(vector_set.pk) == "deleted"
    assert vector_sets.vector_set_compute(vector_set=vector_set, loaded=None) is vector_set
    assert not VectorSet.objects.exists()


@pytest.mark.parametrize("word, kind", [(True, "style"), (False, "style"), (True, "topical")])
def test_computing_a_set_chooses_its_worded_dimensions_by_the_ranges_bar(tiny, formality, media, settings, word, kind):
    """The set's worded dimensions are range_search.choose_worded's on the search's prompts, under
    the site's bar (a topical dimension's on open suggestion requests too); none with
    STEERLAB_WORD_PREFERENCES off."""
    from steering.data import catalog
    from steering.engine.range_search import choose_worded

    settings.STEERLAB_WORD_PREFERENCES = word
    formality.kind = kind
    formality.save()
    vector_set = vector_sets.vector_set_create(name="w", model_id="tiny-llama", dimensions=[formality])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=tiny)
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    vector_set.refresh_from_db()
    if not word:
        assert vector_set.worded_dimensions == []
        return
    vectors = SteeringVectors.load(media / vector_set.file.name)
    choice = choose_worded(tiny, vectors, catalog.range_prompts(settings.STEERLAB_RANGE_PROMPTS),
                           {"formality": formality.words()}, max_ppl_ratio=settings.STEERLAB_RANGE_PPL_FACTOR,
                           min_relevance=settings.STEERLAB_RANGE_MIN_RELEVANCE,
                           also_on={"formality": catalog.suggestion_prompts()} if kind == "topical" else None)
    assert vector_set.worded_dimensions == choice.worded
    assert set(choice.measured["formality"]) == {"+", "−"}
    # What the choice measured is kept beside the range search, for the admin's table.
    kept = vector_set.range_search["formality"]["words"]
    for side, (ratio, relevance, made) in choice.measured["formality"].items():
        assert kept[side] == {"ppl_ratio": ratio, "relevance": relevance, "made_degenerate": made}


def test_a_dimension_is_worded_only_if_both_ends_keep_the_bar(tiny, formality):
    from steering.data import catalog
    from steering.engine.range_search import choose_worded

    vectors = SteeringVectors(
        model_id="tiny-llama", hidden_size=tiny.hidden_size, num_layers=tiny.num_layers, layers=[1, 2],
        vectors={name: torch.randn(tiny.num_layers, tiny.hidden_size, generator=torch.Generator().manual_seed(i))
                 for i, name in enumerate(("formality", "cost"))},
        residual_norms=torch.full((tiny.num_layers,), 10.0), functional_range={"formality": 0.02, "cost": 0.02},
    )
    prompts, ends = catalog.range_prompts(2), {"formality": ("formal", "casual"), "cost": ("luxury", "thrift")}
    lax = choose_worded(tiny, vectors, prompts, ends, max_ppl_ratio=1e9, min_relevance=-1e9)
    for dim, sides in lax.measured.items():
        assert set(sides) == {"+", "−"}
        assert (dim in lax.worded) == all(made == 0 for _, _, made in sides.values())
    assert choose_worded(tiny, vectors, prompts, ends, min_relevance=1e9).worded == []
    only = choose_worded(tiny, vectors, prompts, {"cost": ends["cost"]}, max_ppl_ratio=1e9, min_relevance=-1e9)
    assert set(only.measured) == {"cost"}  # a dimension without words is not tried


def test_a_topical_dimension_s_words_are_judged_on_its_own_requests_too(tiny):
    """`also_on`: each end is judged by the worse of the neutral prompts and the requests its
    words are said on; a dimension not listed is judged on the neutral prompts alone."""
    from steering.data import catalog
    from steering.engine.range_search import choose_worded

    vectors = SteeringVectors(
        model_id="tiny-llama", hidden_size=tiny.hidden_size, num_layers=tiny.num_layers, layers=[1, 2],
        vectors={name: torch.randn(tiny.num_layers, tiny.hidden_size, generator=torch.Generator().manual_seed(i))
                 for i, name in enumerate(("formality", "cost"))},
        residual_norms=torch.full((tiny.num_layers,), 10.0), functional_range={"formality": 0.02, "cost": 0.02},
    )
    neutral, requests = catalog.range_prompts(2), catalog.suggestion_prompts()[:2]
    ends = {"formality": ("formal", "casual"), "cost": ("luxury", "thrift")}
    lax = {"max_ppl_ratio": 1e9, "min_relevance": -1e9}
    alone = choose_worded(tiny, vectors, neutral, ends, **lax).measured
    on_requests = choose_worded(tiny, vectors, requests, ends, **lax).measured
    both = choose_worded(tiny, vectors, neutral, ends, also_on={"cost": requests}, **lax)
    for side in ("+", "−"):
        assert both.measured["formality"][side] == pytest.approx(alone["formality"][side], rel=1e-4)
        (ratio, kept, made), (ratio2, kept2, made2) = alone["cost"][side], on_requests["cost"][side]
        assert both.measured["cost"][side] == pytest.approx((max(ratio, ratio2), min(kept, kept2), made + made2), rel=1e-4)
    # A bar between the two sets' worst relevance: the neutral prompts alone keep it or not, as
    # they do; with the requests too, the worse set decides.
    lowest = {name: min(kept for _, kept, _ in sides["cost"].values()) for name, sides in
              (("neutral", alone), ("requests", on_requests))}
    assert lowest["neutral"] != lowest["requests"]
    bar = sum(lowest.values()) / 2
    strict = {"max_ppl_ratio": 1e9, "min_relevance": bar}
    clean = all(made == 0 for sides in (alone, on_requests) for _, _, made in sides["cost"].values())
    assert ("cost" in choose_worded(tiny, vectors, neutral, ends, **strict).worded) == (clean and lowest["neutral"] > bar)
    assert "cost" not in choose_worded(tiny, vectors, neutral, ends, also_on={"cost": requests}, **strict).worded


def test_words_that_fail_at_a_dimension_s_range_may_keep_the_bar_with_its_steering_lowered(tiny):
    """`lower_to`: a dimension whose words fail the bar at its range is worded at the largest
    lower candidate, at least half the range, at which they keep it, with that candidate's
    figures; one that keeps the bar at its range is not lowered, and none below half is tried."""
    from steering.data import catalog
    from steering.engine.range_search import RANGE_CANDIDATES, choose_worded

    vectors = SteeringVectors(
        model_id="tiny-llama", hidden_size=tiny.hidden_size, num_layers=tiny.num_layers, layers=[1, 2],
        vectors={"cost": torch.randn(tiny.num_layers, tiny.hidden_size, generator=torch.Generator().manual_seed(3))},
        residual_norms=torch.full((tiny.num_layers,), 1.0), functional_range={"cost": 0.02},
    )
    prompts, ends, lax = catalog.range_prompts(3), {"cost": ("luxury", "thrift")}, {"max_ppl_ratio": 1e9}
    lower = [c for c in RANGE_CANDIDATES if 0.01 <= c < 0.02]
    # Each candidate measured on its own, as the range the vectors carry.
    at = {c: choose_worded(tiny, vectors.with_ranges({"cost": c}), prompts, ends, min_relevance=-1e9, **lax).measured["cost"]
          for c in [0.02, *lower]}
    worst = {c: min(kept for _, kept, _ in sides.values()) for c, sides in at.items()}
    clean = {c for c, sides in at.items() if all(made == 0 for _, _, made in sides.values())}
    better = [c for c in lower if c in clean and worst[c] > worst[0.02]]
    assert better, "no lower candidate keeps more relevance with this seed: pick another"
    bar = sorted(worst[c] for c in better)[len(better) // 2]  # kept by some lower candidates, not by all
    expected = max(c for c in lower if c in clean and worst[c] >= bar)
    choice = choose_worded(tiny, vectors, prompts, ends, min_relevance=bar, lower_to=RANGE_CANDIDATES, **lax)
    assert choice.worded == ["cost"] and choice.ranges == {"cost": expected}
    for side in ("+", "−"):
        assert choice.measured["cost"][side] == pytest.approx(at[expected][side], rel=1e-4)
    # Without lowering it fails; at its range with a bar it keeps, nothing is lowered.
    assert choose_worded(tiny, vectors, prompts, ends, min_relevance=bar, **lax).worded == []
    kept = choose_worded(tiny, vectors, prompts, ends, min_relevance=worst[0.02], lower_to=RANGE_CANDIDATES, **lax)
    assert kept.ranges == {} and kept.worded == (["cost"] if 0.02 in clean else [])
    # A bar no candidate from half the range up keeps: not worded.
    above = max(worst[c] for c in [0.02, *lower]) + 1e-3
    assert choose_worded(tiny, vectors, prompts, ends, min_relevance=above, lower_to=RANGE_CANDIDATES, **lax).worded == []
