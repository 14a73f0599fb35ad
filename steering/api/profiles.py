"""SELECT: your profile on a vector set (read, set, patch), its history, and undo."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from steering import selectors
from steering.api import serializers as s
from steering.api.lookups import VECTOR_SET_PARAM, vector_set_from_query
from steering.models import ProfileUpdate
from steering.services import profiles


class ProfileView(APIView):
    """Your preference profile on a vector set (the seed's /preferences): ?vector_set=, else the
    set you chose, else the site default. PUT replaces every strength (dimensions left out go to
    0); PATCH changes only those given. A `vector_set` in the body chooses that set for your chats."""

    @extend_schema(parameters=[VECTOR_SET_PARAM], responses=s.ProfileSerializer)
    def get(self, request):
        vector_set = vector_set_from_query(request)
        return Response(s.ProfileSerializer(selectors.profile_summary(user=request.user, vector_set=vector_set)).data)

    @extend_schema(parameters=[VECTOR_SET_PARAM], request=s.ProfileSerializer, responses=s.ProfileSerializer)
    def put(self, request):
        return self._write(request, replace=True)

    @extend_schema(parameters=[VECTOR_SET_PARAM], request=s.ProfileSerializer, responses=s.ProfileSerializer)
    def patch(self, request):
        return self._write(request, replace=False)

    def _write(self, request, *, replace: bool):
        form = s.ProfileSerializer(data=request.data, partial=not replace)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        if "vector_set" in data:
            vector_set = self._choose(request, data["vector_set"])
        else:
            vector_set = vector_set_from_query(request)
        if replace and "strengths" not in data:
            raise ValidationError({"strengths": ["PUT needs strengths; use PATCH to change only the mode."]})
        profile = profiles.profile_get_or_create(user=request.user, vector_set=vector_set)
        try:
            profiles.profile_update(
                profile=profile,
                strengths=data.get("strengths", {}),
                source=data.get("source", ProfileUpdate.Source.API),
                replace=replace,
                mode=data.get("mode"),
            )
        except ValueError as exc:
            raise ValidationError({"strengths": [str(exc)]}) from exc
        return Response(s.ProfileSerializer(selectors.profile_summary(user=request.user, vector_set=vector_set)).data)

    def _choose(self, request, vector_set_id: int):
        """Choose the body's set for the caller's chats; the query may only name the same one."""
        raw = request.query_params.get("vector_set")
        if raw not in (None, "") and raw != str(vector_set_id):
            raise ValidationError({"vector_set": [f"The query names vector set {raw} and the body {vector_set_id}."]})
        try:
            return profiles.profile_choose(user=request.user, vector_set_id=vector_set_id).vector_set
        except ValueError as exc:
            raise ValidationError({"vector_set": [str(exc)]}) from exc


class ProfileHistoryView(generics.ListAPIView):
    """Changes to your profile on a vector set, newest first, with where each came from."""

    serializer_class = s.ProfileUpdateSerializer

    @extend_schema(parameters=[VECTOR_SET_PARAM])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.profile_history(user=self.request.user, vector_set=vector_set_from_query(self.request))


class ProfileUndoView(APIView):
    @extend_schema(request=None, responses={200: s.ProfileUpdateSerializer})
    def post(self, request, pk: int):
        update = get_object_or_404(ProfileUpdate.objects.filter(profile__user=request.user), pk=pk)
        try:
            profiles.profile_update_undo(update=update)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.ProfileUpdateSerializer(update).data)
