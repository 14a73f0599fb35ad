"""The admin of conversations, logged answers and feedback (read-only)."""

from __future__ import annotations

from django.contrib import admin

from steering.admin.read_only import ReadOnlyAdmin, ReadOnlyInline
from steering.models import Conversation, Feedback, InteractionLog, Message


class MessageInline(ReadOnlyInline):
    model = Message
    fields = ["created_at", "role", "content", "interaction"]
    show_change_link = False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "user", "vector_set", "created_at", "updated_at"]
    search_fields = ["title", "user__username"]
    list_select_related = ["user", "vector_set"]
    inlines = [MessageInline]
    changelist_help = "Users' chat conversations, message by message. Read-only."


class FeedbackInline(ReadOnlyInline):
    model = Feedback
    fk_name = "interaction"
    fields = ["created_at", "thumbs", "text", "choice", "other_interaction", "learn_status", "learn_note"]


@admin.register(InteractionLog)
class InteractionLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "user", "source", "status", "short_prompt", "tokens", "latency_ms", "first_token_ms",
        "vector_set",
    ]
    list_filter = ["status", "source", "vector_set"]
    search_fields = ["user__username", "prompt", "response", "session_id"]
    date_hierarchy = "created_at"
    list_select_related = ["user", "vector_set"]
    inlines = [FeedbackInline]
    changelist_help = (
        "One row per generation: prompt, answer, the steering strengths applied, tokens and timings. "
        "Logs are records and cannot be edited; a superuser may delete them."
    )

    @admin.display(description="prompt")
    def short_prompt(self, obj: InteractionLog) -> str:
        return obj.prompt if len(obj.prompt) <= 80 else obj.prompt[:79] + "…"


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    changelist_help = (
        "Users' judgements of answers: thumbs and text (which LEARN turns into profile changes) and the "
        "choices made while calibrating. Read-only."
    )
    list_display = ["created_at", "user", "interaction", "thumbs", "choice", "short_text"]
    list_filter = ["thumbs", "choice"]
    search_fields = ["user__username", "text"]
    list_select_related = ["user", "interaction"]

    @admin.display(description="text")
    def short_text(self, obj: Feedback) -> str:
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"
