"""Your conversations on the chat page: list and search them, read one with its messages,
rename it, delete it. Another user's conversation is simply not found."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.response import Response

from steering import selectors
from steering.api import serializers as s
from steering.services import chat


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter(
                "search", OpenApiTypes.STR, description="Only conversations whose title or messages contain this text."
            )
        ]
    )
)
class ConversationListView(generics.ListAPIView):
    """Your conversations, most recently active first."""

    serializer_class = s.ConversationSerializer

    def get_queryset(self):
        return selectors.conversations_for(user=self.request.user, search=self.request.query_params.get("search", ""))


class ConversationDetailView(generics.RetrieveUpdateDestroyAPIView):
    """One of your conversations with its messages. PATCH renames it; DELETE removes it and its
    messages and blanks the prompt and answer text of its logged interactions (their steering,
    tokens and timings stay, without text)."""

    serializer_class = s.ConversationDetailSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.conversations_for(user=self.request.user).prefetch_related("messages")

    def perform_update(self, serializer):
        title = serializer.validated_data.get("title", serializer.instance.title)
        chat.conversation_rename(conversation=serializer.instance, title=title)

    @extend_schema(responses={200: s.ConversationDeletedSerializer})
    def delete(self, request, *args, **kwargs):
        blanked = chat.conversation_delete(conversation=self.get_object())
        return Response({"deleted": True, "interactions_blanked": blanked}, status=status.HTTP_200_OK)
