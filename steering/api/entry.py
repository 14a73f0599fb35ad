"""The API's entry: what it offers (GET /api/) and an API token for a username and password."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.response import Response
from rest_framework.views import APIView

from ops.throttling import LoginAttempt, client_address, too_many_message
from steering.api import serializers as s
from steering.serving import runtime


class ApiRootView(APIView):
    """What the API offers (the seed's GET /)."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: dict})
    def get(self, request):
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


class TokenView(ObtainAuthToken):
    """Your API token for a username and password; failed attempts spend the log-in page's
    budgets (ops/throttling.py; 429 with Retry-After)."""

    throttle_classes = []

    @extend_schema(request=AuthTokenSerializer, responses={200: AuthTokenSerializer, 429: s.ErrorSerializer})
    def post(self, request, *args, **kwargs):
        username = request.data.get("username") if hasattr(request.data, "get") else None
        attempt = LoginAttempt(address=client_address(request), username=username if isinstance(username, str) else "")
        if attempt.wait:
            return Response({"detail": too_many_message(attempt.wait, "failed log-in attempts")},
                            status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(attempt.wait)})
        response = super().post(request, *args, **kwargs)  # a wrong password raises: it stays spent
        attempt.succeeded()
        return response
