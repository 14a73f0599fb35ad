"""Websocket URL patterns, mounted by asgi.py under the origin and auth checks."""

from django.urls import path

from steering.chat.native import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/", ChatConsumer.as_asgi()),
]
