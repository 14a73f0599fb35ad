"""WSGI entry point, for tools that want one. SteerLab itself is served over ASGI (asgi.py):
the chat websocket needs it."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "steerlab_site.settings")

application = get_wsgi_application()
