"""The vector-set admin's GGUF pages: export one dimension as a llama.cpp / repeng control
vector (a download button per ready set), and import such a file as a shared one-dimension
set. A mixin of VectorSetAdmin, kept apart so the admin module stays about its model."""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.validators import FileExtensionValidator
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path

from steering.services import gguf
from steering.engine.controlvector import ControlVectorError
from steering.forms import SizedUploadForm, _OneDimensionForm


class GgufExportForm(_OneDimensionForm):
    dimension_help = "The file holds this dimension's steering vector."
    strength = forms.FloatField(
        initial=1.0, min_value=-1.0, max_value=1.0,
        help_text="The strength (−1…1, not 0) the file adds at llama.cpp's scale 1: "
        "llama-cli --control-vector-scaled file.gguf:1.0 adds what SteerLab adds at this strength.",
    )

    def clean_strength(self) -> float:
        value = self.cleaned_data["strength"]
        if value == 0 or not math.isfinite(value):
            raise forms.ValidationError("Choose a strength other than 0.")
        return value


class GgufImportForm(SizedUploadForm):
    name = forms.CharField(max_length=100, help_text="A name users see when they choose a vector set.")
    file = forms.FileField(
        label="Control vector", validators=[FileExtensionValidator(["gguf"])],
        help_text="A .gguf control vector (repeng, llama.cpp's cvector-generator, EasySteer or SteerLab) for this "
        "server's model: checked by llama.cpp's own rules and against the model's hidden size and layers.",
    )
    dimension = forms.SlugField(max_length=50, help_text="The name of the set's one dimension.")
    negative_label = forms.CharField(max_length=60, required=False, help_text="The end at −100 %.")
    positive_label = forms.CharField(max_length=60, required=False,
                                     help_text="The end at +100 %: the way the file's vectors point.")


class ControlVectorAdminMixin:
    def gguf_urls(self, prefix: str) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("import-gguf/", wrap(self.gguf_import_view), name=f"{prefix}_import_gguf"),
            path("<int:object_id>/export-gguf/", wrap(self.gguf_export_view), name=f"{prefix}_export_gguf"),
        ]

    def gguf_export_view(self, request, object_id: int):
        vector_set = self._get_or_404(request, object_id)
        if not self.has_view_permission(request, vector_set):
            raise PermissionDenied
        if not vector_set.is_ready:
            raise Http404("This vector set is not ready.")
        form = GgufExportForm(request.POST or None, vector_set=vector_set)
        if request.method == "POST" and form.is_valid():
            dimension, strength = form.cleaned_data["dimension"].name, form.cleaned_data["strength"]
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "export.gguf"
                try:
                    gguf.vector_set_export_gguf(vector_set=vector_set, dimension=dimension,
                                                          strength=strength, path=target)
                except (ControlVectorError, ValueError) as exc:
                    form.add_error(None, str(exc))
                else:
                    return FileResponse(io.BytesIO(target.read_bytes()), as_attachment=True,
                                        content_type="application/octet-stream",
                                        filename=gguf.export_filename(vector_set, dimension, strength))
        return TemplateResponse(request, "admin/steering/vectorset/gguf_export.html", self._context(
            request, title=f"Export “{vector_set.name}” as a GGUF control vector", original=vector_set, form=form))

    def gguf_import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        # The reader's own cap; a body much over it was refused while it arrived (ops.body_limit).
        limit = settings.STEERLAB_GGUF_MAX_BYTES
        form = GgufImportForm(request.POST or None, request.FILES or None, max_bytes=limit,
                              setting="STEERLAB_GGUF_MAX_BYTES")
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                vector_set = gguf.vector_set_import_gguf(
                    upload=data["file"], name=data["name"], dimension=data["dimension"],
                    negative_label=data["negative_label"], positive_label=data["positive_label"], owner=None,
                )
            except ControlVectorError as exc:
                form.add_error("file", str(exc))
            else:
                self.log_addition(request, vector_set, [{"added": {}}])
                if vector_set.is_ready:
                    self.message_user(request, (
                        f"Imported “{vector_set.name}”: {data['dimension']} on layers {vector_set.layers}, functional "
                        f"range {vector_set.range_text(data['dimension'])}. It is shared and ready to use."
                    ), messages.SUCCESS)
                else:
                    self.message_user(request, (
                        f"Imported “{vector_set.name}”: {data['dimension']} on layers {vector_set.layers}. Its functional "
                        "range is being measured in the background; its status and progress show in the list."
                    ), messages.INFO)
                return HttpResponseRedirect(self._url("change", vector_set))
        # A refused file is a 400, as over the API, with the form and its reasons.
        return TemplateResponse(request, "admin/steering/vectorset/gguf_import.html", self._context(
            request, title="Import a GGUF control vector", form=form, max_upload_bytes=limit),
            status=400 if request.method == "POST" else 200)
