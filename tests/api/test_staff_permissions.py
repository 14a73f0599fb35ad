"""Staff actions that create, change or run things check Django model permissions, not just
is_staff: a view-only staff user sees vector sets but cannot create, upload or delete shared
ones through the API, nor run the admin's Preview (a generation) or Evaluate (a job)."""

import io

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework.test import APIClient

from steering.models import Evaluation, VectorSet
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(django_user_model):
    """Staff with the view permissions only (what a support role gets)."""
    user = django_user_model.objects.create_user("viewer", "viewer@example.org", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


@pytest.fixture
def editor(django_user_model):
    user = django_user_model.objects.create_user("editor", "editor@example.org", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="steering"))
    return user


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_view_only_staff_user_cannot_upload_a_shared_set(viewer, dimensions):
    upload = io.BytesIO(b"refused before it is read")
    upload.name = "v.safetensors"
    response = api(viewer).post("/api/vector-sets/upload/", {"file": upload, "name": "up", "shared": "true"},
                                format="multipart")
    assert response.status_code == 403 and "permission" in response.json()["detail"].lower()
    assert not VectorSet.objects.exists()


def test_a_view_only_staff_user_cannot_create_a_shared_set(viewer, dimensions):
    response = api(viewer).post("/api/vector-sets/", {"name": "x", "dimensions": ["formality"], "shared": True},
                                format="json")
    assert response.status_code == 403 and "permission" in response.json()["detail"].lower()
    assert not VectorSet.objects.exists()


def test_a_view_only_staff_user_cannot_delete_a_shared_set(viewer, shared_set):
    response = api(viewer).delete(f"/api/vector-sets/{shared_set.pk}/")
    assert response.status_code == 403
    assert VectorSet.objects.filter(pk=shared_set.pk).exists()


def test_a_view_only_staff_user_cannot_recompute_a_shared_set(viewer, shared_set):
    assert api(viewer).post(f"/api/vector-sets/{shared_set.pk}/compute/").status_code == 403


def test_staff_with_the_permissions_can_delete_a_shared_set(editor, shared_set):
    assert api(editor).delete(f"/api/vector-sets/{shared_set.pk}/").status_code == 204


def test_a_view_only_staff_user_cannot_preview_or_evaluate(client, viewer, shared_set):
    client.force_login(viewer)
    preview = reverse("admin:steering_vectorset_preview", args=[shared_set.pk])
    evaluate = reverse("admin:steering_vectorset_evaluate", args=[shared_set.pk])
    assert client.get(preview).status_code == 403
    assert client.post(preview, {"dimension": 1, "prompt": "Hi", "max_new_tokens": 8}).status_code == 403
    assert client.post(evaluate, {"dimension": 1, "strengths": "-1,0,1", "prompts": 1, "max_new_tokens": 8}).status_code == 403
    assert not Evaluation.objects.exists()


def test_staff_with_the_permissions_reach_preview_and_evaluate(client, editor, shared_set):
    client.force_login(editor)
    assert client.get(reverse("admin:steering_vectorset_preview", args=[shared_set.pk])).status_code == 200
    assert client.get(reverse("admin:steering_vectorset_evaluate", args=[shared_set.pk])).status_code == 200
