"""LEARN's entrance: feedback on one of your answers (thumbs, text, or a calibration choice), and
what LEARN made of it. The rule: steering/modes/learn.py; the writes: services/feedback.py."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ops.throttling import UserBudgetThrottle
from steering import selectors
from steering.api import serializers as s
from steering.models import InteractionLog
from steering.services import feedback


class InteractionFeedbackView(APIView):
    # Feedback may queue a LEARN task: it spends the same per-user budget as a chat.
    throttle_classes = [UserBudgetThrottle]
    throttle_scope = "chat"

    @extend_schema(request=s.FeedbackSerializer, responses={201: s.FeedbackSerializer, 409: None})
    def post(self, request, pk: int):
        interaction: InteractionLog = get_object_or_404(selectors.interactions_for(user=request.user), pk=pk)
        form = s.FeedbackSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        if data.get("choice"):
            given = feedback.feedback_create(user=request.user, interaction=interaction, **data)
        else:
            try:
                given = feedback.feedback_submit(
                    user=request.user, interaction=interaction, thumbs=data.get("thumbs"), text=data.get("text", "")
                )
            except feedback.AlreadyRated as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(s.FeedbackSerializer(given).data, status=status.HTTP_201_CREATED)


class FeedbackDetailView(generics.RetrieveAPIView):
    """One of your feedbacks, with what LEARN made of it (poll it while learn_status is pending)."""

    serializer_class = s.FeedbackSerializer

    def get_queryset(self):
        return selectors.feedback_for(user=self.request.user)
