"""The staff admin: every page, vector sets (create and compute, upload, download, delete,
preview, recompute), dimensions edited one example per line, and logs nobody can edit."""

import json

import pytest
import torch
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from steering.serving import runtime
from steering.engine import SteeringVectors
from steering.serving import runtime
from steering.models import (
    Conversation,
    Evaluation,
    Feedback,
    InteractionLog,
    Message,
    PreferenceDimension,
    PreferenceProfile,
    ProfileUpdate,
    VectorSet,
)
from steering.services import vector_sets
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

# The embedded SmolLM2-135M-Instruct.
SITE_LAYERS, SITE_HIDDEN = 30, 576

ADMIN_MODELS = {
    "accounts.user",
    "steering.preferencedimension",
    "steering.vectorset",
    "steering.evaluation",
    "steering.preferenceprofile",
    "steering.conversation",
    "steering.interactionlog",
    "steering.feedback",
    "steering.profileupdate",
}
READ_ONLY_MODELS = {
    "steering.preferenceprofile", "steering.conversation", "steering.interactionlog", "steering.feedback",
    "steering.profileupdate", "steering.evaluation",
}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def tone():
    return PreferenceDimension.objects.create(
        name="tone",
        negative_label="Casual",
        positive_label="Formal",
        positive_examples=[
            "Good afternoon. I would be delighted to assist you with your enquiry.",
            "Kindly find the requested documents attached for your consideration.",
            "We sincerely regret any inconvenience this delay may have caused.",
            "Please do not hesitate to contact me should you require further information.",
            "I am writing to formally request an extension of the submission deadline.",
            "It would be an honour to attend the ceremony on your behalf.",
        ],
        negative_examples=[
            "Hey! Sure thing, happy to help you out with that.",
            "Here's the stuff you asked for, lemme know if it works.",
            "Oops, sorry it's late, my bad!",
            "Just ping me if you need anything else, cool?",
            "Any chance I could get a few more days on this?",
            "Yeah I'll totally swing by the party for you.",
        ],
    )


def vector_file(*, hidden=SITE_HIDDEN, layers=SITE_LAYERS, model_id=None, nan=False) -> bytes:
    """A SteerLab vector file for one dimension, "tone", as bytes."""
    vector = torch.randn(layers, hidden)
    if nan:
        vector[3, 7] = float("nan")
    tensors = {"vector.tone": vector, "residual_norms": torch.full((layers,), 10.0)}
    meta = {
        "model_id": model_id or runtime.site_model_id(),
        "hidden_size": hidden,
        "num_layers": layers,
        "layers": [10, 11, 12],
        "method": "caa",
        "dimensions": ["tone"],
        "functional_range": {"tone": 0.5},
        "labels": {"tone": ["Casual", "Formal"]},
    }
    raw_meta = {key: json.dumps(value) for key, value in meta.items()}
    if not nan:
        SteeringVectors.from_tensors(tensors, raw_meta)  # a valid file, as the engine reads it
    return safetensors_bytes(tensors, metadata=raw_meta)


def upload_file(content: bytes, name="tone.safetensors"):
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def ready_vector_set(name="Tone set") -> VectorSet:
    """A ready vector set with a file in media, registered without loading a model."""
    tensors = {"vector.tone": torch.randn(SITE_LAYERS, SITE_HIDDEN), "residual_norms": torch.ones(SITE_LAYERS)}
    raw_meta = {
        "model_id": json.dumps(runtime.site_model_id()), "hidden_size": "576", "num_layers": "30",
        "layers": "[5, 6]", "dimensions": '["tone"]', "functional_range": '{"tone": 0.5}',
    }
    return vector_sets.vector_set_register(vectors=SteeringVectors.from_tensors(tensors, raw_meta), name=name)


def files_in(folder) -> list:
    return [p for p in folder.rglob("*") if p.is_file()]


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


@pytest.fixture
def records(alice, tone):
    """One row of every model the admin shows."""
    vector_set = vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    profile = PreferenceProfile.objects.create(user=alice, vector_set=vector_set, strengths={"tone": 0.5})
    conversation = Conversation.objects.create(user=alice, title="Dinner", vector_set=vector_set)
    log = InteractionLog.objects.create(
        user=alice, conversation=conversation, vector_set=vector_set, prompt="What should I cook?",
        response="Pasta, my good sir.", strengths={"tone": 0.5}, tokens=5, latency_ms=120,
    )
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content="What should I cook?")
    feedback = Feedback.objects.create(user=alice, interaction=log, thumbs=-1, text="too stiff")
    update = ProfileUpdate.objects.create(
        profile=profile, dimension="tone", old_strength=0.0, new_strength=0.5, source=ProfileUpdate.Source.SELECT
    )
    evaluation = Evaluation.objects.create(vector_set=vector_set, dimension="tone", strengths=[-1, 1], prompts=["Hi"])
    return {
        "accounts.user": alice,
        "steering.preferencedimension": tone,
        "steering.vectorset": vector_set,
        "steering.preferenceprofile": profile,
        "steering.conversation": conversation,
        "steering.interactionlog": log,
        "steering.feedback": feedback,
        "steering.profileupdate": update,
        "steering.evaluation": evaluation,
    }


# -- every page --------------------------------------------------------------------------------


def test_it_registers_every_model_of_ours():
    registered = {
        model._meta.label_lower for model in admin.site._registry if model._meta.app_label in ("accounts", "steering")
    }
    assert registered == ADMIN_MODELS


@pytest.mark.parametrize("label", sorted(ADMIN_MODELS))
def test_it_serves_changelist_add_and_change_pages_to_staff(staff_client, records, label):
    app_label, model_name = label.split(".")
    obj = records[label]
    response = staff_client.get(url(f"{app_label}_{model_name}_changelist"))
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1
    response = staff_client.get(url(f"{app_label}_{model_name}_change", obj.pk))
    assert response.status_code == 200
    assert response.context["original"] == obj
    response = staff_client.get(url(f"{app_label}_{model_name}_add"))
    assert response.status_code == (403 if label in READ_ONLY_MODELS else 200)


@pytest.mark.parametrize("label", sorted(ADMIN_MODELS))
def test_it_sends_a_non_staff_user_to_the_login_page(client, alice, records, label):
    client.force_login(alice)
    app_label, model_name = label.split(".")
    changelist, change = f"{app_label}_{model_name}_changelist", f"{app_label}_{model_name}_change"
    for page in (url(changelist), url(change, records[label].pk)):
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_it_keeps_the_custom_vector_set_views_from_non_staff(client, alice, media):
    vector_set = ready_vector_set()
    client.force_login(alice)
    for page in (
        url("steering_vectorset_upload"),
        url("steering_vectorset_download", vector_set.pk),
        url("steering_vectorset_preview", vector_set.pk),
    ):
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    response = client.post(url("steering_vectorset_upload"), {"name": "x", "file": upload_file(vector_file())})
    assert response.status_code == 302
    assert VectorSet.objects.count() == 1


def test_it_explains_each_changelist(staff_client):
    response = staff_client.get(url("steering_interactionlog_changelist"))
    assert "cannot be edited" in response.content.decode()
    response = staff_client.get(url("steering_vectorset_changelist"))
    assert "Upload a vector file" in response.content.decode()


# -- vector sets: list, add, change ------------------------------------------------------------------


def test_the_vector_set_list_shows_progress_dimensions_and_owner(staff_client, tone, alice):
    shared = vector_sets.vector_set_create(name="Shared tone", model_id=runtime.site_model_id(), dimensions=[tone])
    VectorSet.objects.filter(pk=shared.pk).update(status=VectorSet.Status.RUNNING, progress=42)
    vector_sets.vector_set_create(name="Alice's", model_id="x/y", dimensions=[tone], owner=alice)
    content = staff_client.get(url("steering_vectorset_changelist")).content.decode()
    assert '<progress class="vs-progress" value="42" max="100"' in content and "42 %" in content
    assert "Shared tone" in content and "running" in content
    assert "<td class=\"field-dimension_list\">tone</td>" in content
    assert '<td class="field-owner_or_shared">shared</td>' in content
    assert '<td class="field-owner_or_shared">alice</td>' in content
    shared_only = staff_client.get(url("steering_vectorset_changelist") + "?shared=yes")
    assert [v.name for v in shared_only.context["cl"].result_list] == ["Shared tone"]


def test_the_add_form_creates_a_set_for_the_site_model_and_queues_it(
    staff_client, tone, django_capture_on_commit_callbacks
):
    response = staff_client.get(url("steering_vectorset_add"))
    assert response.context["adminform"].form["model_id"].value() == runtime.site_model_id()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(
            url("steering_vectorset_add"),
            # model_id is shown, not chosen: a posted one is ignored.
            {"name": "Tone", "dimensions": [tone.pk], "method": "caa", "model_id": "other/model", "owner": ""},
        )
    assert response.status_code == 302
    vector_set = VectorSet.objects.get()
    assert response["Location"] == url("steering_vectorset_changelist")
    assert (vector_set.name, vector_set.model_id, vector_set.method) == ("Tone", runtime.site_model_id(), "caa")
    assert vector_set.owner is None and vector_set.dimension_names() == ["tone"]
    assert vector_set.status == VectorSet.Status.PENDING
    assert len(callbacks) == 1  # the computation, queued for after the commit
    assert any("queued" in str(m) for m in get_messages(response.wsgi_request))


def test_the_add_form_holds_an_owner_to_the_set_quota(staff_client, tone, alice, settings):
    settings.STEERLAB_UPLOAD_MAX_SETS = 1
    VectorSet.objects.create(name="alice's", model_id="m", owner=alice)
    response = staff_client.post(url("steering_vectorset_add"), {"name": "Tone", "dimensions": [tone.pk],
                                                                "method": "caa", "owner": alice.pk})
    assert response.status_code == 200
    assert "alice already has 1 vector sets" in str(response.context["adminform"].form.errors["owner"])
    assert VectorSet.objects.count() == 1


def test_the_add_form_needs_a_dimension(staff_client):
    response = staff_client.post(url("steering_vectorset_add"), {"name": "Empty", "method": "caa"})
    assert response.status_code == 200
    assert "dimensions" in response.context["adminform"].form.errors
    assert not VectorSet.objects.exists()


def test_the_add_form_offers_only_shared_dimensions(staff_client, tone, alice):
    uploaded = VectorSet.objects.create(name="alice's upload", model_id="m", owner=alice)
    private = PreferenceDimension.objects.create(name="sarcasm", negative_label="a", positive_label="b",
                                                 private_to=uploaded)
    form = staff_client.get(url("steering_vectorset_add")).context["adminform"].form
    assert list(form.fields["dimensions"].queryset) == [tone]
    response = staff_client.post(url("steering_vectorset_add"), {"name": "X", "dimensions": [private.pk], "method": "caa"})
    assert "dimensions" in response.context["adminform"].form.errors
    assert VectorSet.objects.count() == 1


@pytest.mark.slow
def test_the_add_form_computes_the_set_for_real(
    staff_client, tone, settings, media, django_capture_on_commit_callbacks
):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            url("steering_vectorset_add"), {"name": "Tone", "dimensions": [tone.pk], "method": "caa", "owner": ""}
        )
    assert response.status_code == 302
    vector_set = VectorSet.objects.get()
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    assert vector_set.progress == 100
    vectors = SteeringVectors.load(media / vector_set.file.name)
    assert vectors.dimensions == ["tone"] and vectors.hidden_size == SITE_HIDDEN
    content = staff_client.get(url("steering_vectorset_changelist")).content.decode()
    assert "ready" in content and "100 %" in content


def test_the_change_page_shows_computed_fields_read_only(staff_client, tone):
    vector_set = vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    VectorSet.objects.filter(pk=vector_set.pk).update(status=VectorSet.Status.FAILED, error="ValueError: no luck")
    page = url("steering_vectorset_change", vector_set.pk)
    response = staff_client.get(page)
    content = response.content.decode()
    assert "ValueError: no luck" in content
    assert set(response.context["adminform"].form.fields) == {"name", "owner", "prompt_with_steering", "worded_dimensions"}
    assert 'name="status"' not in content and 'name="layers"' not in content
    assert "Recompute" in content and url("steering_vectorset_recompute", vector_set.pk) in content
    assert "Download file" not in content  # nothing to download from a failed set
    response = staff_client.post(page, {"name": "Renamed", "owner": "", "status": "ready", "progress": "100"})
    assert response.status_code == 302
    vector_set.refresh_from_db()
    assert vector_set.name == "Renamed"
    assert (vector_set.status, vector_set.progress) == (VectorSet.Status.FAILED, 0)


def test_recompute_queues_a_failed_set_again(staff_client, tone, django_capture_on_commit_callbacks):
    vector_set = vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    VectorSet.objects.filter(pk=vector_set.pk).update(status=VectorSet.Status.FAILED, error="boom", progress=30)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(url("steering_vectorset_recompute", vector_set.pk))
    assert response["Location"] == url("steering_vectorset_change", vector_set.pk)
    vector_set.refresh_from_db()
    assert (vector_set.status, vector_set.error, vector_set.progress) == (VectorSet.Status.PENDING, "", 0)
    assert len(callbacks) == 1


def test_recompute_leaves_a_ready_set_alone(staff_client, django_capture_on_commit_callbacks):
    vector_set = ready_vector_set()
    assert staff_client.get(url("steering_vectorset_recompute", vector_set.pk)).status_code == 405
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(url("steering_vectorset_recompute", vector_set.pk))
    assert response.status_code == 302
    vector_set.refresh_from_db()
    assert vector_set.status == VectorSet.Status.READY and not callbacks


def test_the_recompute_action_queues_only_failed_sets(staff_client, tone, django_capture_on_commit_callbacks):
    failed = vector_sets.vector_set_create(name="Failed", model_id=runtime.site_model_id(), dimensions=[tone])
    VectorSet.objects.filter(pk=failed.pk).update(status=VectorSet.Status.FAILED, error="boom")
    ready = ready_vector_set()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff_client.post(
            url("steering_vectorset_changelist"), {"action": "recompute", "_selected_action": [failed.pk, ready.pk]}
        )
    assert response.status_code == 302
    failed.refresh_from_db()
    ready.refresh_from_db()
    assert failed.status == VectorSet.Status.PENDING and ready.status == VectorSet.Status.READY
    assert len(callbacks) == 1
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Queued again: Failed." in notes and "Not failed, so left alone: Tone set." in notes


# -- upload --------------------------------------------------------------------------------------


def post_upload(client, content: bytes, name="tone.safetensors"):
    return client.post(url("steering_vectorset_upload"), {"name": "Uploaded tone", "file": upload_file(content, name)})


def test_the_upload_page_says_what_it_checks(staff_client):
    content = staff_client.get(url("steering_vectorset_upload")).content.decode()
    assert "50.0\xa0MB" in content and "finite values" in content
    assert 'enctype="multipart/form-data"' in content


@pytest.mark.slow
def test_it_registers_a_valid_upload(staff_client, media):
    content = vector_file()
    response = post_upload(staff_client, content)
    vector_set = VectorSet.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("steering_vectorset_change", vector_set.pk)
    assert (vector_set.name, vector_set.status, vector_set.owner) == ("Uploaded tone", VectorSet.Status.READY, None)
    assert vector_set.layers == [10, 11, 12] and vector_set.dimension_names() == ["tone"]
    stored = SteeringVectors.load(media / vector_set.file.name)
    assert torch.equal(stored.vectors["tone"], safetensors_load(content)["vector.tone"])
    assert files_in(media) == [media / vector_set.file.name]


def assert_refused(response, media, *fragments):
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors["file"])
    for fragment in fragments:
        assert fragment in errors
    assert "errornote" in response.content.decode()
    assert not VectorSet.objects.exists()
    assert not PreferenceDimension.objects.exists()
    assert files_in(media) == []


def test_it_refuses_garbage(staff_client, media):
    garbage = b"this is not a tensor file" * 10
    assert_refused(post_upload(staff_client, garbage), media, "not a readable safetensors file")


def test_it_refuses_non_finite_values(staff_client, media):
    assert_refused(post_upload(staff_client, vector_file(nan=True)), media, "'tone' has non-finite values")


def test_it_refuses_an_oversized_file(staff_client, settings, media):
    settings.STEERLAB_MAX_UPLOAD_BYTES = 4096
    assert_refused(post_upload(staff_client, vector_file()), media, "the limit is 4,096 bytes")


def test_it_refuses_another_extension(staff_client, media):
    assert_refused(post_upload(staff_client, vector_file(), name="tone.pt"), media, "extension “pt” is not allowed")


@pytest.mark.slow
def test_it_refuses_vectors_for_another_model_shape(staff_client, media):
    assert_refused(
        post_upload(staff_client, vector_file(hidden=64)), media, "hidden size 64, the model has 576"
    )
    assert_refused(
        post_upload(staff_client, vector_file(model_id="someone/else")), media, "computed for model 'someone/else'"
    )


# -- download and delete ---------------------------------------------------------------------------


def test_it_downloads_the_file_of_a_ready_set(staff_client, media):
    vector_set = ready_vector_set()
    response = staff_client.get(url("steering_vectorset_download", vector_set.pk))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="tone-set-{vector_set.pk}.safetensors"'
    assert b"".join(response.streaming_content) == (media / vector_set.file.name).read_bytes()
    changelist = staff_client.get(url("steering_vectorset_changelist")).content.decode()
    assert url("steering_vectorset_download", vector_set.pk) in changelist


def test_there_is_nothing_to_download_from_a_pending_set(staff_client, tone):
    vector_set = vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    assert staff_client.get(url("steering_vectorset_download", vector_set.pk)).status_code == 404


def test_deleting_a_set_deletes_its_file(staff_client, media, django_capture_on_commit_callbacks):
    vector_set = ready_vector_set()
    assert files_in(media)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url("steering_vectorset_delete", vector_set.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not VectorSet.objects.exists()
    assert files_in(media) == []


def test_bulk_deleting_sets_deletes_their_files(staff_client, media, django_capture_on_commit_callbacks):
    first, second, kept = ready_vector_set("One"), ready_vector_set("Two"), ready_vector_set("Kept")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            url("steering_vectorset_changelist"),
            {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert list(VectorSet.objects.values_list("name", flat=True)) == ["Kept"]
    assert files_in(media) == [media / kept.file.name]


# -- preview ---------------------------------------------------------------------------------------


def test_a_set_that_is_not_ready_has_no_preview(staff_client, tone):
    vector_set = vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    response = staff_client.get(url("steering_vectorset_preview", vector_set.pk))
    assert response["Location"] == url("steering_vectorset_change", vector_set.pk)


@pytest.mark.slow
def test_the_preview_shows_one_prompt_at_three_strengths(staff_client, media):
    formality = vector_sets.dimension_import_default(name="formality")
    vector_set = vector_sets.vector_set_create(name="Formality", model_id=runtime.site_model_id(), dimensions=[formality])
    vector_set = vector_sets.vector_set_compute(vector_set=vector_set, loaded=runtime.site_model())
    assert vector_set.status == VectorSet.Status.READY, vector_set.error
    page = url("steering_vectorset_preview", vector_set.pk)

    form = staff_client.get(page).context["form"]
    assert form["max_new_tokens"].value() == 60 and form["prompt"].value()
    assert list(form.fields["dimension"].queryset) == [formality]

    response = staff_client.post(
        page, {"dimension": formality.pk, "prompt": "How do I make a cup of tea?", "max_new_tokens": 25}
    )
    assert response.status_code == 200
    columns = response.context["columns"]
    assert [label for label, _ in columns] == ["−100 % · Casual", "0 · unsteered", "+100 % · Formal"]
    texts = [text for _, text in columns]
    assert all(texts) and len(set(texts)) == 3
    content = response.content.decode()
    assert content.count('class="preview-column"') == 3


# -- dimensions ------------------------------------------------------------------------------------


def test_dimension_examples_are_edited_one_per_line(staff_client, tone):
    page = url("steering_preferencedimension_change", tone.pk)
    response = staff_client.get(page)
    assert response.context["adminform"].form["positive_examples"].value() == "\n".join(tone.positive_examples)
    response = staff_client.post(
        page,
        {
            "name": "tone",
            "negative_label": "Casual",
            "positive_label": "Formal",
            "description": "",
            "positive_examples": "  Dear Sir,\r\n\r\nYours faithfully.\r\n   \r\n",
            "negative_examples": "hey\nsee ya",
            "reference_positive": "",
            "reference_negative": "lol",
            "kind": "style",
        },
    )
    assert response.status_code == 302
    tone.refresh_from_db()
    assert tone.positive_examples == ["Dear Sir,", "Yours faithfully."]
    assert tone.negative_examples == ["hey", "see ya"]
    assert (tone.reference_positive, tone.reference_negative) == ([], ["lol"])
    content = staff_client.get(url("steering_preferencedimension_changelist")).content.decode()
    assert '<td class="field-positive_count">2</td>' in content
    assert '<td class="field-reference_count">0 / 1</td>' in content


def test_a_dimension_in_use_keeps_its_name(staff_client, tone):
    vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    response = staff_client.get(url("steering_preferencedimension_change", tone.pk))
    assert "name" not in response.context["adminform"].form.fields


def test_a_new_dimension_can_be_added(staff_client):
    response = staff_client.post(
        url("steering_preferencedimension_add"),
        {"name": "cost", "negative_label": "Budget", "positive_label": "Luxury", "positive_examples": "caviar\n",
         "kind": "topical"},
    )
    assert response.status_code == 302
    cost = PreferenceDimension.objects.get(name="cost")
    assert (cost.positive_examples, cost.negative_examples, cost.kind) == (["caviar"], [], "topical")
    assert cost.condition_threshold is None  # the set's calibrated threshold


# -- logs -------------------------------------------------------------------------------------------


def test_logs_are_not_editable(staff_client, records):
    log = records["steering.interactionlog"]
    page = url("steering_interactionlog_change", log.pk)
    content = staff_client.get(page).content.decode()
    assert "Pasta, my good sir." in content and "too stiff" in content  # the answer and its feedback
    assert 'name="_save"' not in content and 'name="prompt"' not in content
    response = staff_client.post(page, {"prompt": "rewritten", "response": "rewritten"})
    assert response.status_code == 403
    log.refresh_from_db()
    assert log.prompt == "What should I cook?"
    assert staff_client.get(url("steering_interactionlog_add")).status_code == 403


def test_only_a_superuser_deletes_logs(client, records, django_user_model):
    log = records["steering.interactionlog"]
    clerk = django_user_model.objects.create_user("clerk", "clerk@example.org", PASSWORD, is_staff=True)
    clerk.user_permissions.set(Permission.objects.filter(codename__endswith="_interactionlog"))
    client.force_login(clerk)
    assert client.get(url("steering_interactionlog_change", log.pk)).status_code == 200
    assert client.post(url("steering_interactionlog_delete", log.pk), {"post": "yes"}).status_code == 403
    assert InteractionLog.objects.filter(pk=log.pk).exists()


def test_staff_make_a_dimension_topical_with_its_threshold_and_questions(staff_client, tone):
    page = url("steering_preferencedimension_change", tone.pk)
    form = {"name": "tone", "negative_label": "Casual", "positive_label": "Formal", "kind": "topical"}
    response = staff_client.post(page, {**form, "condition_threshold": "1.5"})
    assert response.status_code == 200 and "less than or equal to 1.0" in response.content.decode()
    tone.refresh_from_db()
    assert tone.kind == "style"  # a refused form changes nothing
    response = staff_client.post(page, {**form, "condition_threshold": "0.2", "condition_prompts": "Write a letter\n\nDraft an email"})
    assert response.status_code == 302
    tone.refresh_from_db()
    assert (tone.kind, tone.condition_threshold, tone.condition_prompts) == ("topical", 0.2, ["Write a letter", "Draft an email"])
    content = staff_client.get(url("steering_preferencedimension_changelist")).content.decode()
    assert '<td class="field-kind">Topical</td>' in content


def test_staff_choose_a_sets_worded_dimensions_among_its_own(staff_client, tone):
    vector_set = vector_sets.vector_set_create(name="Tone", model_id=runtime.site_model_id(), dimensions=[tone])
    page = url("steering_vectorset_change", vector_set.pk)
    content = staff_client.get(page).content.decode()
    assert 'name="worded_dimensions" value="tone"' in content and "said in words" in content
    refused = staff_client.post(page, {"name": "Tone", "owner": "", "worded_dimensions": ["cost"]})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    vector_set.refresh_from_db()
    assert vector_set.worded_dimensions == []
    assert staff_client.post(page, {"name": "Tone", "owner": "", "worded_dimensions": ["tone"]}).status_code == 302
    vector_set.refresh_from_db()
    assert vector_set.worded_dimensions == ["tone"]
    # The range table says which dimensions are said in words, with what computing the set measured.
    VectorSet.objects.filter(pk=vector_set.pk).update(
        functional_range={"tone": 0.02},
        range_search={"tone": {"words": {"−": {"relevance": 0.94}, "+": {"relevance": 0.915}}}},
    )
    content = staff_client.get(page).content.decode()
    assert "also said in words" in content and "yes (relevance with words 0.94 / 0.92)" in content
