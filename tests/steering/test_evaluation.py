"""Evaluations end to end on a tiny model that the site loads by path: the django-q2 task, the
`evaluate_steering` command, and the admin that starts them and shows their report and plot."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django_q.tasks import async_task

from steering.models import Evaluation, PreferenceDimension, VectorSet
from steering.serving.runtime import site_model
from steering.services import evaluations, vector_sets
from tests.tiny_models import CORPUS

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_range_search(settings):
    settings.STEERLAB_RANGE_SEARCH = False  # the search is tested in tests/engine/test_sweep.py


@pytest.fixture
def ready_set(tiny_site):
    dimension = PreferenceDimension.objects.create(
        name="formality", negative_label="Casual", positive_label="Formal",
        positive_examples=CORPUS[0::2], negative_examples=CORPUS[1::2],
        reference_positive=["I should be most grateful for your assistance."],
        reference_negative=["lol sure, whatever works"],
    )
    vector_set = vector_sets.vector_set_create(name="tiny", model_id=str(tiny_site), dimensions=[dimension])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=site_model())
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    return vector_set


def _start(vector_set, **options):
    return evaluations.evaluation_start(
        vector_set=vector_set, dimension="formality", strengths=options.pop("strengths", [-1, 1]),
        prompts=["Hi there", "What is tea?"], max_new_tokens=6, **options,
    )


def test_the_task_stores_a_report_and_a_plot(ready_set, settings):
    run = _start(ready_set, enqueue=False)
    assert run.strengths == [-1.0, 1.0] and run.status == Evaluation.Status.PENDING
    async_task("steering.tasks.run_evaluation", run.pk, hook="steering.tasks.run_evaluation_finished", sync=True)
    run.refresh_from_db()
    assert run.status == Evaluation.Status.READY and run.progress == 100, run.error
    report = run.report
    assert [p["strength"] for p in report["points"]] == [-1.0, 0.0, 1.0]
    assert set(report["summary"]) >= {"effect_minus_1", "effect_0", "effect_plus_1", "spearman", "pne_plus_1", "pne_minus_1"}
    assert report["vector_set"] == {"id": ready_set.pk, "name": "tiny"}
    assert report["functional_range"] == 0.02 and report["method"] == "caa"
    assert all(len(p["answers"]) == 2 for p in report["points"])
    # The plain-prompting baselines, in the shipped dimension's words for its ends.
    assert set(report["summary"]["baselines"]) == {"prompt", "prompt+steering"}
    prompt = report["baselines"]["prompt"]
    assert prompt["instructions"]["1.0"] == "Answer for someone who strongly prefers a formal, polished register."
    assert [p["strength"] for p in prompt["points"]] == [-1.0, 0.0, 1.0]
    assert report["references"]["negative"] == ["lol sure, whatever works"]
    # Relevance comes with its 90 % interval over the prompts, which holds it, and its parts.
    for point in report["points"]:
        low, high = point["relevance_interval"]
        assert low <= point["relevance"] <= high and len(point["cosines"]) == 2
    assert report["summary"]["relevance_plus_1_interval"] == report["points"][2]["relevance_interval"]
    json.dumps(report, allow_nan=False)  # plain JSON, no NaN
    assert (settings.MEDIA_ROOT / run.plot.name).read_bytes().startswith(PNG)


def test_a_failed_run_says_why_and_keeps_no_plot(ready_set, settings):
    PreferenceDimension.objects.filter(name="formality").update(reference_negative=[])
    run = evaluations.evaluation_run(evaluation=_start(ready_set, enqueue=False))
    assert run.status == Evaluation.Status.FAILED and "reference texts" in run.error
    assert not run.plot
    assert not list(settings.MEDIA_ROOT.glob("evaluations/*"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dimension": "cost"}, "no dimension 'cost'"),
        ({"strengths": [2]}, "between -1 and 1"),
        ({"strengths": []}, "between -1 and 1"),
    ],
)
def test_it_refuses_what_cannot_run(ready_set, change, message):
    with pytest.raises(ValueError, match=message):
        evaluations.evaluation_start(
            vector_set=ready_set, dimension=change.get("dimension", "formality"),
            strengths=change.get("strengths", [1]), enqueue=False,
        )
    VectorSet.objects.filter(pk=ready_set.pk).update(status=VectorSet.Status.RUNNING)
    ready_set.refresh_from_db()
    with pytest.raises(ValueError, match="not ready"):
        _start(ready_set, enqueue=False)
    assert not Evaluation.objects.exists()


def test_the_command_writes_the_json_report_and_the_plot(ready_set, tmp_path, capsys):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": ["Hi there", "What is tea?", "Unused"]}))
    output = tmp_path / "out" / "report.json"
    call_command(
        "evaluate_steering", vector_set=ready_set.pk, dimension="formality", strengths="-1,0,1",
        prompts=str(prompts), limit=2, max_new_tokens=5, output=str(output),
    )
    report = json.loads(output.read_text())
    assert report["prompts"] == ["Hi there", "What is tea?"]
    assert output.with_suffix(".png").read_bytes().startswith(PNG)
    out = capsys.readouterr().out
    assert "Spearman" in out and "relevance at +1" in out and "(90 % interval [" in out
    assert Evaluation.objects.get().status == Evaluation.Status.READY


def test_the_command_evaluates_on_the_held_out_split(ready_set, tmp_path):
    from steering.data import catalog

    output = tmp_path / "report.json"
    call_command(
        "evaluate_steering", vector_set=ready_set.pk, dimension="formality", strengths="-1,1", limit=1,
        max_new_tokens=3, output=str(output), split="heldout", no_baselines=True,
    )
    report = json.loads(output.read_text())
    assert report["prompts"] == catalog.heldout()["prompts"][:1]
    assert report["references"]["positive"] == catalog.heldout_references("formality")[0]
    assert report["baselines"] == {} and report["summary"]["baselines"] == {}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"vector_set": 999, "dimension": "formality"}, "no vector set 999"),
        ({"dimension": "formality", "strengths": "a,b"}, "comma-separated numbers"),
        ({"dimension": "nope"}, "no dimension 'nope'"),
        ({"dimension": "formality", "limit": 0}, "at least 1"),
    ],
)
def test_the_command_explains_what_it_cannot_do(ready_set, options, message):
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_steering", **{"vector_set": ready_set.pk, **options})


def test_staff_start_an_evaluation_from_the_admin_and_see_its_report_and_plot(
    ready_set, charlie, client, settings, django_capture_on_commit_callbacks
):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    client.force_login(charlie)
    charlie.is_superuser = True  # model permissions: the admin's own tests cover staff without them
    charlie.save()
    url = reverse("admin:steering_vectorset_evaluate", args=[ready_set.pk])
    assert "Start the evaluation" in client.get(url).content.decode()
    bad = client.post(url, {"dimension": ready_set.dimensions.get().pk, "strengths": "5", "prompts": 2, "max_new_tokens": 5})
    assert "between -1 and 1" in bad.content.decode() and not Evaluation.objects.exists()
    with pytest.MonkeyPatch.context() as patch, django_capture_on_commit_callbacks(execute=True):
        patch.setattr(evaluations.catalog, "neutral_prompts", lambda: ["Hi there", "What is tea?", "x"])
        response = client.post(
            url, {"dimension": ready_set.dimensions.get().pk, "strengths": "-1, 1", "prompts": 2, "max_new_tokens": 5}
        )
    run = Evaluation.objects.get()
    assert response.status_code == 302 and response.url == reverse("admin:steering_evaluation_change", args=[run.pk])
    assert run.status == Evaluation.Status.READY and run.created_by == charlie
    page = client.get(response.url).content.decode()
    assert "Spearman ρ" in page and "prompt+steering" in page and reverse("admin:steering_evaluation_plot", args=[run.pk]) in page
    low, high = run.report["points"][2]["relevance_interval"]
    assert f"{run.report['points'][2]['relevance']:.2f} ({low:.2f}–{high:.2f})" in page and "90 % interval" in page
    plot = client.get(reverse("admin:steering_evaluation_plot", args=[run.pk]))
    assert plot["Content-Type"] == "image/png" and b"".join(plot.streaming_content).startswith(PNG)
    assert "Evaluate" in client.get(reverse("admin:steering_vectorset_changelist")).content.decode()


def test_non_staff_never_reach_evaluations(ready_set, alice, client):
    client.force_login(alice)
    run = _start(ready_set, enqueue=False)
    for url in (
        reverse("admin:steering_vectorset_evaluate", args=[ready_set.pk]),
        reverse("admin:steering_evaluation_change", args=[run.pk]),
        reverse("admin:steering_evaluation_plot", args=[run.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response.url


def test_a_worded_dimension_is_evaluated_with_its_words_as_served(ready_set):
    """A set's worded dimension is served with its words (where it applies): its steering rows are
    then the prompt + steering rows, answer for answer, and the report and admin say so."""
    plain = evaluations.evaluation_run(evaluation=_start(ready_set, enqueue=False)).report
    assert plain["worded"] is False
    VectorSet.objects.filter(pk=ready_set.pk).update(worded_dimensions=["formality"])
    ready_set.refresh_from_db()
    report = evaluations.evaluation_run(evaluation=_start(ready_set, enqueue=False)).report
    assert report["worded"] is True
    both = {p["strength"]: p["answers"] for p in report["baselines"]["prompt+steering"]["points"]}
    for point in report["points"]:
        assert point["answers"] == both[point["strength"]]
    moved = [p["answers"] != q["answers"] for p, q in zip(plain["points"], report["points"]) if p["strength"]]
    assert any(moved)  # the words changed the steered answers
