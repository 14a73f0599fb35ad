"""GET /api/health/: whether the site can answer (services/health.py), with details for staff."""

from __future__ import annotations

from django.contrib.auth import get_user
from django.db import DatabaseError, connection
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import APIView

from ops.views import has_metrics_token
from steering.api import serializers as s
from steering.api.authentication import StrictTokenAuthentication
from steering.services import health


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
