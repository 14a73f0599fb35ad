"""CALIBRATE over the API: start a calibration of one dimension, then send each choice between
answers A and B. Stateless: the client holds the state. The rule: steering/modes/calibrate.py;
the writes: services/profiles.py; the browser's side: static/js/calibrate.js."""

from __future__ import annotations

from dataclasses import asdict

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from steering import selectors
from steering.api import serializers as s
from steering.api.lookups import VECTOR_SET_PARAM, vector_set_from_body, vector_set_from_query
from steering.models import VectorSet
from steering.modes import calibrate
from steering.services import profiles


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


class CalibrationStartView(APIView):
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
        vector_set = vector_set_from_query(request)
        _check_dimension(vector_set, form.validated_data["dimension"])
        state = calibrate.CalibrationState(form.validated_data["dimension"], rounds=form.validated_data["rounds"])
        return Response(s.CalibrationStateSerializer(_calibration_body(state, vector_set)).data)


class CalibrationChooseView(APIView):
    """One choice between answers A and B. Stateless: the client sends back the state it was
    given. Returns the next state; after the last round the result is written to the profile
    (source and mode "calibrate") and the updated profile comes back too."""

    @extend_schema(request=s.CalibrationChooseSerializer, responses=s.CalibrationStateSerializer)
    def post(self, request):
        form = s.CalibrationChooseSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        vector_set = vector_set_from_body(request, data.get("vector_set"))
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
