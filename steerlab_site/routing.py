"""Websocket URL patterns, mounted by asgi.py under the origin and auth checks.

The steering app adds its chat consumer here (/ws/chat/).
"""

websocket_urlpatterns = []
