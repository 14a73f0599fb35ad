"""The admin of profiles and their history of changes (read-only)."""

from __future__ import annotations

from django.contrib import admin

from steering.admin.read_only import ReadOnlyAdmin, ReadOnlyInline
from steering.models import PreferenceProfile, ProfileUpdate


class ProfileUpdateInline(ReadOnlyInline):
    model = ProfileUpdate
    fields = ["created_at", "dimension", "old_strength", "new_strength", "source", "reason", "undone"]
    verbose_name_plural = "history of changes (newest first)"


@admin.register(PreferenceProfile)
class PreferenceProfileAdmin(ReadOnlyAdmin):
    list_display = ["user", "vector_set", "mode", "strengths", "updated_at"]
    list_filter = ["mode", "vector_set"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "vector_set"]
    inlines = [ProfileUpdateInline]
    changelist_help = (
        "A user's strength per dimension (−100 %…+100 %) on one vector set, and how it was set. Users change "
        "their own profile (sliders, calibration, feedback); every change is in its history."
    )


@admin.register(ProfileUpdate)
class ProfileUpdateAdmin(ReadOnlyAdmin):
    changelist_help = "Every change of one strength of one profile, with where it came from and why. Read-only."
    list_display = ["created_at", "profile", "dimension", "old_strength", "new_strength", "source", "undone"]
    list_filter = ["source", "undone", "dimension"]
    search_fields = ["profile__user__username", "dimension", "reason"]
    list_select_related = ["profile__user", "profile__vector_set"]
