"""REST views: parse, call a selector or service, answer. Ownership is enforced by the
selectors' querysets, so another user's object is a 404, never a 403 that confirms it exists."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user
from django.db import DatabaseError, connection, transaction
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import AuthenticationFailed, NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from ops.throttling import UserBudgetThrottle, client_address, credentials_refused, credentials_spend, too_many_message
from ops.views import has_metrics_token
from steering import runtime, selectors
from steering.api import serializers as s
from steering.api.authentication import StrictTokenAuthentication
from steering.engine import SteeringVectors, VectorFileError
from steering.models import InteractionLog, ProfileUpdate, VectorSet
from steering.services import feedback, health, profiles, vector_sets

VECTOR_SET_PARAM = OpenApiParameter(
    "vector_set", int, description="Vector set id; the site's default set when omitted.", required=False
)


def parse_id(raw: str, *, field: str) -> int:
    """An object id from a query string: ASCII digits only. str.isdigit() alone would pass "²"
    or Arabic-Indic digits, which int() then refuses (a 500); ids past a 64-bit key are refused
    as well, since no row can have them."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > 2**63 - 1:
        raise ValidationError({field: ["Must be a positive integer id (ASCII digits)."]})
    return int(raw)


def _vector_set_from_query(request) -> VectorSet:
    """The vector set named by ?vector_set= (visible to the caller), else the site default."""
    raw = request.query_params.get("vector_set")
    if raw in (None, ""):
        vector_set = selectors.vector_set_default()
        if vector_set is None:
            raise NotFound("No default vector set is ready yet; pass ?vector_set=<id>.")
        return vector_set
    pk = parse_id(raw, field="vector_set")
    vector_set = selectors.vector_sets_visible(user=request.user).filter(pk=pk).first()
    if vector_set is None:
        raise NotFound(f"Vector set {raw} not found.")
    return vector_set


def may_manage_shared(user, action: str) -> bool:
    """Whether `user` may `action` ("add", "change", "delete") shared vector sets: staff holding
    Django's model permission for it, so that a view-only staff role cannot start jobs."""
    return user.is_staff and user.has_perm(f"steering.{action}_vectorset")


def _new_set_owner(request, *, shared: bool, verb: str):
    """Who owns a vector set being created: nobody when shared (staff only), else the caller."""
    if shared and not may_manage_shared(request.user, "add"):
        raise PermissionDenied(f"Only staff with the permission to add vector sets can {verb} shared vector sets.")
    return None if shared else request.user


def _may_change(user, vector_set: VectorSet, action: str = "change") -> bool:
    return vector_set.owner_id == user.pk or (vector_set.owner_id is None and may_manage_shared(user, action))


# -- token ----------------------------------------------------------------------------------------


class TokenView(ObtainAuthToken):
    """Your API token for a username and password; failed attempts are throttled per client
    address and per account name (429 with Retry-After)."""

    throttle_classes = []

    @extend_schema(request=AuthTokenSerializer, responses={200: AuthTokenSerializer, 429: s.ErrorSerializer})
    def post(self, request, *args, **kwargs):
        address = client_address(request)
        username = request.data.get("username") if hasattr(request.data, "get") else None
        username = username if isinstance(username, str) else ""
        wait = credentials_refused(scope="login", address=address, username=username)
        if wait:
            return Response({"detail": too_many_message(wait, "failed log-in attempts")},
                            status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(wait)})
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            credentials_spend(scope="login", address=address, username=username)
            raise


# -- health -----------------------------------------------------------------------------------


def _may_read_health_details(request) -> bool:
    """Staff (session or API token) and the metrics scraper's bearer token. The details name the
    model path, private sets and exception classes, which anonymous callers must not learn."""
    if has_metrics_token(request):
        return True
    try:
        # DRF has set request.user to anonymous (no authenticators here), so read the session itself.
        user = get_user(request._request)
        if not user.is_authenticated:
            try:
                found = StrictTokenAuthentication().authenticate(request)
            except AuthenticationFailed:  # a probe with a stale token still gets the status
                found = None
            user = found[0] if found else None
    except (DatabaseError, connection.Database.Error):
        # Sessions and tokens live in the database; while it is down only the metrics token
        # reads the details, and the status (503) still comes.
        return False
    return bool(user and user.is_active and user.is_staff)


class HealthView(APIView):
    permission_classes = [permissions.AllowAny]
    # No authenticators: a bad token must not turn a health probe into a 401.
    authentication_classes = []

    @extend_schema(responses={200: s.HealthSerializer, 503: s.HealthSerializer})
    def get(self, request):
        """Whether the database and the model are usable; 503 when either is not. Anonymous
        callers get the status only; staff and the metrics token get the details."""
        report = health.health_report()
        # "degraded": some vector sets are out of use, but the server answers everyone else.
        code = status.HTTP_200_OK if report["status"] in ("ok", "degraded") else status.HTTP_503_SERVICE_UNAVAILABLE
        if not _may_read_health_details(request):
            report = {"status": report["status"]}
        return Response(report, status=code)


# -- dimensions and vector sets -----------------------------------------------------------------


class DimensionList(generics.ListAPIView):
    serializer_class = s.DimensionSerializer
    queryset = selectors.dimensions_all()


class DimensionDetail(generics.RetrieveAPIView):
    serializer_class = s.DimensionSerializer
    queryset = selectors.dimensions_all()
    lookup_field = "name"


class VectorSetList(generics.ListAPIView):
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
        vector_set = vector_sets.vector_set_start(
            name=data["name"],
            dimensions=data["dimensions"],
            method=data["method"],
            top_k=data.get("top_k"),
            owner=_new_set_owner(request, shared=data["shared"], verb="create"),
        )
        return Response(self.get_serializer(vector_set).data, status=status.HTTP_202_ACCEPTED)


class VectorSetDetail(generics.RetrieveDestroyAPIView):
    serializer_class = s.VectorSetSerializer

    def get_queryset(self):
        return selectors.vector_sets_visible(user=self.request.user)

    def perform_destroy(self, instance):
        if not _may_change(self.request.user, instance, "delete"):
            raise PermissionDenied("Only staff with the permission to delete vector sets can delete shared ones.")
        instance.delete()


class VectorSetCompute(APIView):
    """Compute a vector set again (after a failure, or after its dimensions' examples changed)."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "compute"

    @extend_schema(request=None, responses={202: s.VectorSetSerializer})
    def post(self, request, pk: int):
        vector_set = get_object_or_404(selectors.vector_sets_visible(user=request.user), pk=pk)
        if not _may_change(request.user, vector_set):
            raise PermissionDenied("Only staff with the permission to change vector sets can recompute shared ones.")
        try:
            vector_set = vector_sets.vector_set_restart(vector_set=vector_set)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.VectorSetSerializer(vector_set, context={"request": request}).data, status=202)


# Room for the multipart boundaries and the other form fields around the file itself.
UPLOAD_FORM_OVERHEAD = 64 * 1024


class VectorSetUpload(APIView):
    """Register a vector file computed elsewhere (the seed's /load-vectors). The file is
    validated (shapes, dtype, finite values, this server's model) before anything is saved."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "compute"

    @extend_schema(request={"multipart/form-data": s.VectorSetUploadSerializer}, responses={201: s.VectorSetSerializer})
    def post(self, request):
        # Refused on the declared length, before request.data streams the whole body to disk.
        declared = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.STEERLAB_MAX_UPLOAD_BYTES
        if declared.isascii() and declared.isdigit() and int(declared) > limit + UPLOAD_FORM_OVERHEAD:
            return Response(
                {"detail": f"The request is {declared} bytes; vector files are limited to {limit} bytes."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        form = s.VectorSetUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        owner = _new_set_owner(request, shared=data["shared"], verb="upload")
        try:
            vector_set = vector_sets.vector_set_upload(upload=data["file"], name=data["name"], owner=owner)
        except VectorFileError as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        except vector_sets.UploadQuotaExceeded as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(s.VectorSetSerializer(vector_set, context={"request": request}).data, status=201)


class VectorSetDownload(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, pk: int):
        vector_set = get_object_or_404(selectors.vector_sets_visible(user=request.user), pk=pk)
        if not vector_set.is_ready or not vector_set.file:
            raise NotFound("This vector set has no file yet.")
        return FileResponse(
            vector_set.file.open("rb"), as_attachment=True, filename=f"vector-set-{vector_set.pk}.safetensors"
        )


# -- profile --------------------------------------------------------------------------------------


class ProfileView(APIView):
    """Your preference profile on a vector set (the seed's /preferences). PUT replaces every
    strength (dimensions left out go to 0); PATCH changes only those given."""

    @extend_schema(parameters=[VECTOR_SET_PARAM], responses=s.ProfileSerializer)
    def get(self, request):
        vector_set = _vector_set_from_query(request)
        return Response(s.ProfileSerializer(selectors.profile_summary(user=request.user, vector_set=vector_set)).data)

    @extend_schema(parameters=[VECTOR_SET_PARAM], request=s.ProfileSerializer, responses=s.ProfileSerializer)
    def put(self, request):
        return self._write(request, replace=True)

    @extend_schema(parameters=[VECTOR_SET_PARAM], request=s.ProfileSerializer, responses=s.ProfileSerializer)
    def patch(self, request):
        return self._write(request, replace=False)

    def _write(self, request, *, replace: bool):
        vector_set = _vector_set_from_query(request)
        form = s.ProfileSerializer(data=request.data, partial=not replace)
        form.is_valid(raise_exception=True)
        data = form.validated_data
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


class ProfileHistory(generics.ListAPIView):
    """Changes to your profile on a vector set, newest first, with where each came from."""

    serializer_class = s.ProfileUpdateSerializer

    @extend_schema(parameters=[VECTOR_SET_PARAM])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return selectors.profile_history(user=self.request.user, vector_set=_vector_set_from_query(self.request))


class ProfileUndo(APIView):
    @extend_schema(request=None, responses={200: s.ProfileUpdateSerializer})
    def post(self, request, pk: int):
        update = get_object_or_404(ProfileUpdate.objects.filter(profile__user=request.user), pk=pk)
        try:
            profiles.profile_update_undo(update=update)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.ProfileUpdateSerializer(update).data)


# -- interactions and feedback --------------------------------------------------------------------


class InteractionList(generics.ListAPIView):
    serializer_class = s.InteractionSerializer

    def get_queryset(self):
        return selectors.interactions_for(user=self.request.user)


class InteractionDetail(generics.RetrieveAPIView):
    serializer_class = s.InteractionSerializer

    def get_queryset(self):
        return selectors.interactions_for(user=self.request.user)


class InteractionFeedback(APIView):
    # Feedback may queue a LEARN task: it spends the same per-user budget as a chat.
    throttle_classes = [UserBudgetThrottle]
    throttle_scope = "chat"

    @extend_schema(request=s.FeedbackSerializer, responses={201: s.FeedbackSerializer})
    def post(self, request, pk: int):
        interaction: InteractionLog = get_object_or_404(selectors.interactions_for(user=request.user), pk=pk)
        form = s.FeedbackSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        if data.get("choice"):
            given = feedback.feedback_create(user=request.user, interaction=interaction, **data)
        else:
            given = feedback.feedback_submit(
                user=request.user, interaction=interaction, thumbs=data.get("thumbs"), text=data.get("text", "")
            )
        return Response(s.FeedbackSerializer(given).data, status=status.HTTP_201_CREATED)


class FeedbackDetail(generics.RetrieveAPIView):
    """One of your feedbacks, with what LEARN made of it (poll it while learn_status is pending)."""

    serializer_class = s.FeedbackSerializer

    def get_queryset(self):
        return selectors.feedback_for(user=self.request.user)


class ApiRoot(APIView):
    """What the API offers (the seed's GET /)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: dict})
    def get(self, request):
        from django.urls import reverse

        names = [
            "api-health", "api-chat", "api-dimensions", "api-vector-sets", "api-vector-set-upload", "api-profile",
            "api-profile-history", "api-interactions", "api-token", "api-schema", "api-docs",
        ]
        return Response({
            "name": "SteerLab API",
            "model": runtime.site_model_id(),
            "websocket": request.build_absolute_uri("/ws/chat/").replace("http", "ws", 1),
            "endpoints": {name.removeprefix("api-"): request.build_absolute_uri(reverse(name)) for name in names},
        })


# -- calibration ------------------------------------------------------------------------------

from dataclasses import asdict  # noqa: E402

from steering.modes import calibrate  # noqa: E402


def _vector_set_from_body(request, raw) -> VectorSet:
    """The vector set named by a request body's id (visible to the caller), else the site default."""
    if raw is None:
        vector_set = selectors.vector_set_default()
        if vector_set is None:
            raise NotFound("No default vector set is ready yet; pass vector_set=<id>.")
        return vector_set
    vector_set = selectors.vector_sets_visible(user=request.user).filter(pk=raw).first()
    if vector_set is None:
        raise NotFound(f"Vector set {raw} not found.")
    return vector_set


def _check_dimension(vector_set: VectorSet, dimension: str) -> None:
    known = vector_set.dimension_names()
    if dimension not in known:
        raise ValidationError(
            {"dimension": [f"Unknown dimension {dimension!r} (this vector set has: {', '.join(sorted(known)) or 'none'})."]}
        )


def _calibration_body(state: calibrate.CalibrationState, vector_set: VectorSet, profile=None) -> dict:
    return {
        **asdict(state),
        "done": calibrate.done(state),
        "result": calibrate.result(state),
        "question": calibrate.question_for(state.dimension),
        "vector_set": vector_set.pk,
        "profile": profile,
    }


class CalibrationStart(APIView):
    """The first round of calibrating one dimension: answer A is to be generated at `low`, B at
    `high`, both for `question` (the browser asks the websocket for them). Changes nothing."""

    @extend_schema(
        parameters=[
            VECTOR_SET_PARAM,
            OpenApiParameter("dimension", str, required=True),
            OpenApiParameter("rounds", int, required=False, description="1…5, default 3."),
        ],
        responses=s.CalibrationStateSerializer,
    )
    def get(self, request):
        form = s.CalibrationStartSerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        vector_set = _vector_set_from_query(request)
        _check_dimension(vector_set, form.validated_data["dimension"])
        state = calibrate.CalibrationState(form.validated_data["dimension"], rounds=form.validated_data["rounds"])
        return Response(s.CalibrationStateSerializer(_calibration_body(state, vector_set)).data)


class CalibrationChoose(APIView):
    """One choice between answers A and B. Stateless: the client sends back the state it was
    given. Returns the next state; after the last round the result is written to the profile
    (source and mode "calibrate") and the updated profile comes back too."""

    @extend_schema(request=s.CalibrationChooseSerializer, responses=s.CalibrationStateSerializer)
    def post(self, request):
        form = s.CalibrationChooseSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        vector_set = _vector_set_from_body(request, data.get("vector_set"))
        _check_dimension(vector_set, data["dimension"])
        try:
            state = calibrate.CalibrationState(
                data["dimension"], low=data["low"], high=data["high"], round=data["round"], rounds=data["rounds"]
            )
            state = calibrate.choose(state, data["choice"])
        except ValueError as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from exc
        profile = None
        # The choice's feedback row and the profile change land together or not at all.
        with transaction.atomic():
            try:
                feedback = profiles.calibration_choice_record(
                    user=request.user, choice=data["choice"],
                    answer_ids=(data.get("interaction_a"), data.get("interaction_b")),
                )
            except ValueError as exc:
                raise ValidationError({"interaction_a": [str(exc)]}) from exc
            if calibrate.done(state):
                try:
                    profiles.calibration_apply(
                        user=request.user, vector_set=vector_set, dimension=state.dimension, state=state,
                        feedback=feedback,
                    )
                except ValueError as exc:
                    raise ValidationError({"dimension": [str(exc)]}) from exc
                profile = selectors.profile_summary(user=request.user, vector_set=vector_set)
        return Response(s.CalibrationStateSerializer(_calibration_body(state, vector_set, profile)).data)
