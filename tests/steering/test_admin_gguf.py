"""The vector-set admin's GGUF pages, on the tiny site model: the download button and its
form, the import page, and both closed to non-staff users."""

import io

import numpy as np
import pytest
from django.urls import reverse

from steering.engine.controlvector import read_control_vector
from steering.models import VectorSet
from steering.services import vector_sets
from steering.serving import runtime
from tests.api.test_gguf import gguf_bytes
from tests.conftest import PASSWORD


@pytest.fixture
def staff_client(client, django_user_model, tiny_site):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD))
    return client


@pytest.fixture
def tiny_set(tiny_site, db):
    from tests.api.conftest import make_vectors

    loaded = runtime.site_model()
    vector_sets.dimension_import_default(name="formality")
    vectors = make_vectors(["formality"], hidden=loaded.hidden_size, layers=loaded.num_layers, range_=0.5)
    return vector_sets.vector_set_register(vectors=vectors, name="tiny")


def gguf_upload(content):
    file = io.BytesIO(content)
    file.name = "mood.gguf"
    return file


def test_the_list_offers_a_gguf_download_and_an_import(staff_client, tiny_set):
    page = staff_client.get(reverse("admin:steering_vectorset_changelist")).content.decode()
    assert reverse("admin:steering_vectorset_export_gguf", args=[tiny_set.pk]) in page
    assert reverse("admin:steering_vectorset_import_gguf") in page


def test_the_export_page_downloads_the_chosen_dimension_and_strength(staff_client, tiny_set, tmp_path):
    url = reverse("admin:steering_vectorset_export_gguf", args=[tiny_set.pk])
    assert "control-vector-scaled" in staff_client.get(url).content.decode()
    dimension = tiny_set.dimensions.get().pk
    response = staff_client.post(url, {"dimension": dimension, "strength": "-0.5"})
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    (tmp_path / "f.gguf").write_bytes(b"".join(response.streaming_content))
    assert read_control_vector(tmp_path / "f.gguf").metadata["steerlab.strength"] == -0.5
    refused = staff_client.post(url, {"dimension": dimension, "strength": "0"})
    assert refused.status_code == 200 and "other than 0" in refused.content.decode()


def test_the_import_page_registers_a_shared_set_or_says_why_not(staff_client, tiny_set, tmp_path, settings):
    settings.STEERLAB_RANGE_SEARCH = False
    hidden = runtime.site_model().hidden_size
    url = reverse("admin:steering_vectorset_import_gguf")
    response = staff_client.post(url, {"name": "mood", "dimension": "mood", "negative_label": "Sad",
                                       "positive_label": "Happy",
                                       "file": gguf_upload(gguf_bytes({1: np.ones(hidden)}, tmp_path))})
    assert response.status_code == 302
    imported = VectorSet.objects.get(name="mood")
    assert imported.owner is None and imported.is_ready and imported.layers == [1]
    bad = staff_client.post(url, {"name": "bad", "dimension": "mood2",
                                  "file": gguf_upload(gguf_bytes({1: np.ones(hidden + 3)}, tmp_path))})
    assert bad.status_code == 400 and "hidden size" in bad.content.decode()
    assert not VectorSet.objects.filter(name="bad").exists()


def test_a_foreign_file_is_measured_in_the_background(staff_client, tiny_set, tmp_path, settings,
                                                      django_capture_on_commit_callbacks):
    settings.STEERLAB_RANGE_SEARCH = True
    file = gguf_upload(gguf_bytes({1: np.ones(runtime.site_model().hidden_size)}, tmp_path))
    with django_capture_on_commit_callbacks() as queued:
        response = staff_client.post(reverse("admin:steering_vectorset_import_gguf"),
                                     {"name": "mood", "dimension": "mood", "file": file}, follow=True)
    assert response.status_code == 200 and "measured in the background" in response.content.decode()
    assert VectorSet.objects.get(name="mood").status == VectorSet.Status.PENDING and len(queued) == 1


def test_a_malformed_steerlab_file_is_a_400_with_a_message(staff_client, tiny_set, tmp_path):
    from tests.api.test_gguf import steerlab_file

    response = staff_client.post(reverse("admin:steering_vectorset_import_gguf"), {
        "name": "zero", "dimension": "mood", "file": gguf_upload(steerlab_file(tmp_path, strength=0.0))})
    assert response.status_code == 400 and "steerlab.strength must be a non-zero" in response.content.decode()
    assert not VectorSet.objects.filter(name="zero").exists()


def test_non_staff_users_are_sent_to_the_login_page(client, alice, tiny_set):
    client.force_login(alice)
    for url in (reverse("admin:steering_vectorset_import_gguf"),
                reverse("admin:steering_vectorset_export_gguf", args=[tiny_set.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
