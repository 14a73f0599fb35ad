import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def has_metrics_token(request) -> bool:
    """Whether the request carries `Authorization: Bearer $METRICS_TOKEN` (compared in constant time)."""
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _may_scrape(request) -> bool:
    if settings.METRICS_PUBLIC or has_metrics_token(request):
        return True
    return request.user.is_authenticated and request.user.is_staff


@require_GET
def metrics(request):
    """Prometheus text exposition: staff sessions, `Authorization: Bearer $METRICS_TOKEN`, or
    anyone with METRICS_PUBLIC=1."""
    if not _may_scrape(request):
        response = HttpResponse("Metrics need a staff session or the metrics bearer token.\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
