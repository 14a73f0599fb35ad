"""GGUF control vectors over the API: export one dimension of a set at one strength
(`GET vector-sets/{id}/export.gguf`) and import a file as a one-dimension set
(`POST vector-sets/import-gguf/`). The work is steering.services.gguf's."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse
from django.utils.http import content_disposition_header
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from steering import selectors
from steering.services import gguf
from steering.api import serializers as s
from steering.api.vector_sets import new_set_owner, upload_refused
from steering.engine.controlvector import ControlVectorError
from steering.services import vector_sets


class GgufImportSerializer(s.SizedUploadSerializer):
    name = serializers.CharField(max_length=100)
    file = serializers.FileField(help_text="A GGUF control vector (repeng, llama.cpp's cvector-generator, EasySteer, SteerLab).")
    dimension = serializers.SlugField(max_length=50, help_text="The name of the set's one dimension.")
    negative_label = serializers.CharField(max_length=60, required=False, default="")
    positive_label = serializers.CharField(max_length=60, required=False, default="",
                                           help_text="The end the file's direction points to (strength +1).")
    shared = serializers.BooleanField(default=False, help_text="Shared with every user (staff only).")


class VectorSetExportGgufView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("dimension", str, description="Dimension to export; optional when the set has one."),
            OpenApiParameter("strength", float, description="SteerLab strength the file adds at scale 1 (default 1)."),
        ],
        responses={(200, "application/octet-stream"): bytes},
    )
    def get(self, request, pk: int):
        vector_set = get_object_or_404(selectors.vector_sets_visible(user=request.user), pk=pk)
        names = vector_set.dimension_names()
        dimension = request.query_params.get("dimension") or (names[0] if len(names) == 1 else "")
        if not dimension:
            raise ValidationError({"dimension": [f"Choose one of: {', '.join(names)}."]})
        try:
            strength = float(request.query_params.get("strength", "1"))
        except ValueError:
            strength = math.nan
        if not math.isfinite(strength) or strength == 0 or abs(strength) > 1:
            raise ValidationError({"strength": ["Must be a non-zero number in -1…1."]})
        # Small (layers × hidden floats: 40 KB for SmolLM2, 0.5 MB for a 7B model): built in
        # a temporary folder and sent from memory, so nothing is left on disk.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "export.gguf"
            try:
                gguf.vector_set_export_gguf(vector_set=vector_set, dimension=dimension, strength=strength, path=path)
            except (ControlVectorError, ValueError) as exc:
                raise ValidationError({"detail": str(exc)}) from exc
            content = path.read_bytes()
        response = HttpResponse(content, content_type="application/octet-stream")
        filename = gguf.export_filename(vector_set, dimension, strength)
        response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=filename)
        return response


class VectorSetImportGgufView(APIView):
    """Register a GGUF control vector as a one-dimension vector set, validated against this
    server's model. A file SteerLab exported for this model is ready at once (201); any other
    file's functional range is measured in the background (202: poll the set's detail for its
    status and progress, as for a computed set). A bad file, or the set quota reached, is a
    400 with a message that stores nothing."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "compute"

    @extend_schema(request={"multipart/form-data": GgufImportSerializer},
                   responses={201: s.VectorSetSerializer, 202: s.VectorSetSerializer,
                              400: OpenApiResponse(description="A file refused (the reason under `file`), "
                                                   "or the set quota reached (`detail`); nothing is stored.")})
    def post(self, request):
        refused = upload_refused(request, limit=settings.STEERLAB_GGUF_MAX_BYTES)
        if refused is not None:
            return refused
        form = GgufImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        owner = new_set_owner(request, shared=data["shared"], verb="import")
        try:
            vector_set = gguf.vector_set_import_gguf(
                upload=data["file"], name=data["name"], dimension=data["dimension"],
                negative_label=data["negative_label"], positive_label=data["positive_label"], owner=owner,
            )
        except ControlVectorError as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        except vector_sets.UploadQuotaExceeded as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        status = 201 if vector_set.is_ready else 202
        return Response(s.VectorSetSerializer(vector_set, context={"request": request}).data, status=status)
