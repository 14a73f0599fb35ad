"""The OpenAPI schema's grouping: one tag per domain of the API (listed in this
order, with their descriptions, in settings.SPECTACULAR_SETTINGS["TAGS"]), rather than one "api" group."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema

# The first path segment after /api/ → its domain.
DOMAINS = {
    "": "API and tokens",
    "schema": "API and tokens",
    "auth": "API and tokens",
    "health": "Health",
    "chat": "Chat",
    "conversations": "Conversations",
    "profile": "Profile",
    "calibrate": "Calibrate",
    "interactions": "Interactions and feedback",
    "feedback": "Interactions and feedback",
    "dimensions": "Vector sets",
    "vector-sets": "Vector sets",
}



class DomainAutoSchema(AutoSchema):
    """Tags an operation by its domain; extend_schema(tags=...) still wins (it overrides this)."""

    def get_tags(self) -> list[str]:
        segment = self.path.removeprefix("/api/").split("/", 1)[0]
        return [DOMAINS.get(segment, segment)]
