"""/v1/ routes: the OpenAI-compatible API (see steering.api.openai_views)."""

from django.urls import path

from steering.api import openai_views

urlpatterns = [
    path("chat/completions", openai_views.ChatCompletionsView.as_view(), name="v1-chat-completions"),
    path("models", openai_views.ModelsView.as_view(), name="v1-models"),
]
