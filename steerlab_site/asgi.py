"""ASGI entry point: HTTP goes to Django, websockets to the Channels consumers.

Served by daphne: `daphne steerlab_site.asgi:application` (without --proxy-headers: forwarded
headers are read by ops/forwarded.py, from STEERLAB_TRUSTED_PROXIES only).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "steerlab_site.settings")

# Set up Django (the app registry) before importing anything that may import models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from ops.body_limit import BodyLimit, install_in_daphne, site_uploads  # noqa: E402
from ops.forwarded import TrustedProxies  # noqa: E402
from ops.metrics import count_websockets  # noqa: E402
from steerlab_site.routing import websocket_urlpatterns  # noqa: E402

# daphne has no static file serving of its own; without this the CSS and the admin's assets
# would 404 under `make run` and in the Docker image. A proxy serving STATIC_ROOT can take
# over with SERVE_STATIC=0.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app
# In front of everything HTTP, so no URL and no anonymous client gets a large body buffered;
# daphne, which buffers bodies before any application runs, gets the same caps. The GGUF
# imports' bodies are capped at their file's own limit (STEERLAB_UPLOAD_LIMITS_BY_URL).
uploads = site_uploads()
http_app = BodyLimit(http_app, limit=settings.STEERLAB_MAX_BODY_BYTES, uploads=uploads)
install_in_daphne(settings.STEERLAB_MAX_BODY_BYTES, uploads)

# Outermost: the client address and scheme are settled (from a trusted proxy's headers, or the
# peer itself) before the throttles, logs or HTTPS checks below read them.
application = TrustedProxies(ProtocolTypeRouter(
    {
        "http": http_app,
        # Browsers send cookies on cross-site websocket handshakes, so the origin check is what
        # stops another site from chatting as a logged-in user.
        "websocket": count_websockets(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
))
