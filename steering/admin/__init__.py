"""The staff admin, one module per model: dimensions, vector sets (with their GGUF import and
export), evaluations, and what users did (profiles, conversations, logs, feedback), read-only.
Django imports this package at start-up; importing the modules registers their admins."""

from django.contrib import admin

from steering.admin import dimensions, evaluations, interactions, profiles, vector_sets  # noqa: F401  (registers)

admin.site.site_header = "SteerLab administration"
admin.site.site_title = "SteerLab admin"
admin.site.index_title = "Dimensions, vector sets and what users did"
