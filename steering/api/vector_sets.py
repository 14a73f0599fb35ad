"""Dimensions and vector sets: list, compute, recompute, upload, download, delete (GGUF import
and export: gguf.py). Ownership is enforced by the selectors' querysets, so another
user's set is a 404, never a 403 that confirms it exists."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from ops.body_limit import FORM_OVERHEAD
from steering import selectors
from steering.api import serializers as s
from steering.engine import VectorFileError
from steering.models import VectorSet
from steering.services import vector_sets


def may_manage_shared(user, action: str) -> bool:
    """Whether `user` may `action` ("add", "change", "delete") shared vector sets: staff holding
    Django's model permission for it, so that a view-only staff role cannot start jobs."""
    return user.is_staff and user.has_perm(f"steering.{action}_vectorset")


def new_set_owner(request, *, shared: bool, verb: str):
    """Who owns a vector set being created: nobody when shared (staff only), else the caller."""
    if shared and not may_manage_shared(request.user, "add"):
        raise PermissionDenied(f"Only staff with the permission to add vector sets can {verb} shared vector sets.")
    return None if shared else request.user


def may_change(user, vector_set: VectorSet, action: str = "change") -> bool:
    return vector_set.owner_id == user.pk or (vector_set.owner_id is None and may_manage_shared(user, action))


class DimensionListView(generics.ListAPIView):
    serializer_class = s.DimensionSerializer
    queryset = selectors.dimensions_all()


class DimensionDetailView(generics.RetrieveAPIView):
    serializer_class = s.DimensionSerializer
    queryset = selectors.dimensions_all()
    lookup_field = "name"


class VectorSetListView(generics.ListAPIView):
    """Vector sets you can use: the shared ones and your own. POST computes a new one (the
    seed's /compute-vectors) in the background; poll its detail for status and progress."""

    serializer_class = s.VectorSetSerializer
    throttle_scope = "compute"

    def get_throttles(self):
        return [ScopedRateThrottle()] if self.request.method == "POST" else []

    def get_queryset(self):
        return selectors.vector_sets_visible(user=self.request.user)

    @extend_schema(request=s.VectorSetCreateSerializer, responses={202: s.VectorSetSerializer})
    def post(self, request):
        form = s.VectorSetCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            vector_set = vector_sets.vector_set_start(
                name=data["name"],
                dimensions=data["dimensions"],
                method=data["method"],
                top_k=data.get("top_k"),
                owner=new_set_owner(request, shared=data["shared"], verb="create"),
            )
        except vector_sets.UploadQuotaExceeded as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(self.get_serializer(vector_set).data, status=status.HTTP_202_ACCEPTED)


class VectorSetDetailView(generics.RetrieveDestroyAPIView):
    serializer_class = s.VectorSetSerializer

    def get_queryset(self):
        return selectors.vector_sets_visible(user=self.request.user)

    def perform_destroy(self, instance):
        if not may_change(self.request.user, instance, "delete"):
            raise PermissionDenied("Only staff with the permission to delete vector sets can delete shared ones.")
        instance.delete()


class VectorSetComputeView(APIView):
    """Compute a vector set again (after a failure, or after its dimensions' examples changed)."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "compute"

    @extend_schema(request=None, responses={202: s.VectorSetSerializer})
    def post(self, request, pk: int):
        vector_set = get_object_or_404(selectors.vector_sets_visible(user=request.user), pk=pk)
        if not may_change(request.user, vector_set):
            raise PermissionDenied("Only staff with the permission to change vector sets can recompute shared ones.")
        try:
            vector_set = vector_sets.vector_set_restart(vector_set=vector_set)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.VectorSetSerializer(vector_set, context={"request": request}).data, status=202)


def upload_refused(request, *, limit: int | None = None) -> Response | None:
    """A 413 for an upload whose declared length is over `limit` (default
    STEERLAB_MAX_UPLOAD_BYTES) plus its form's overhead, refused before request.data parses the
    whole body: parsing an 8 MiB form grew the web process by 60–90 MiB (bench/hostile.py),
    whatever the file held. On a URL in STEERLAB_UPLOAD_LIMITS_BY_URL ops.body_limit has refused
    such a body already, while it arrived: this is the second line, under any server."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    limit = settings.STEERLAB_MAX_UPLOAD_BYTES if limit is None else limit
    if declared.isascii() and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        return Response(
            {"detail": f"The request is {declared} bytes; vector files are limited to {limit} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return None


class VectorSetUploadView(APIView):
    """Register a vector file computed elsewhere (the seed's /load-vectors). The file is
    validated (shapes, dtype, finite values, this server's model) before anything is saved."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "compute"

    @extend_schema(request={"multipart/form-data": s.VectorSetUploadSerializer}, responses={201: s.VectorSetSerializer})
    def post(self, request):
        refused = upload_refused(request)
        if refused is not None:
            return refused
        form = s.VectorSetUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        owner = new_set_owner(request, shared=data["shared"], verb="upload")
        try:
            vector_set = vector_sets.vector_set_upload(upload=data["file"], name=data["name"], owner=owner)
        except VectorFileError as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        except vector_sets.UploadQuotaExceeded as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(s.VectorSetSerializer(vector_set, context={"request": request}).data, status=201)


class VectorSetDownloadView(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk: int):
        vector_set = get_object_or_404(selectors.vector_sets_visible(user=request.user), pk=pk)
        if not vector_set.is_ready or not vector_set.file:
            raise NotFound("This vector set has no file yet.")
        return FileResponse(
            vector_set.file.open("rb"), as_attachment=True, filename=f"vector-set-{vector_set.pk}.safetensors"
        )
