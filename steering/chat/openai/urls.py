"""/v1/ routes: the OpenAI-compatible API (see steering.chat.openai.views)."""

from django.urls import path

from steering.chat.openai import views

urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view(), name="v1-chat-completions"),
    path("models", views.ModelsView.as_view(), name="v1-models"),
]
