"""What requests name, parsed the same way for every view: object ids, and the vector set a
query string or a body names (the site default when none)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound, ValidationError

from steering import selectors
from steering.models import VectorSet


VECTOR_SET_PARAM = OpenApiParameter(
    "vector_set", int, description="Vector set id; the one you chose (else the site's default) when omitted.", required=False
)


def parse_id(raw: str, *, field: str) -> int:
    """An object id from a query string: ASCII digits only. str.isdigit() alone would pass "²"
    or Arabic-Indic digits, which int() then refuses (a 500); ids past a 64-bit key are refused
    as well, since no row can have them."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > 2**63 - 1:
        raise ValidationError({field: ["Must be a positive integer id (ASCII digits)."]})
    return int(raw)


def vector_set_from_query(request) -> VectorSet:
    """The vector set named by ?vector_set= (visible to the caller), else the caller's chosen
    set, else the site default."""
    raw = request.query_params.get("vector_set")
    if raw in (None, ""):
        vector_set = selectors.vector_set_for_user(user=request.user)
        if vector_set is None:
            raise NotFound("No default vector set is ready yet; pass ?vector_set=<id>.")
        return vector_set
    pk = parse_id(raw, field="vector_set")
    vector_set = selectors.vector_sets_visible(user=request.user).filter(pk=pk).first()
    if vector_set is None:
        raise NotFound(f"Vector set {raw} not found.")
    return vector_set


def vector_set_from_body(request, raw) -> VectorSet:
    """The vector set named by a request body's id (visible to the caller), else the caller's
    chosen set, else the site default."""
    if raw is None:
        vector_set = selectors.vector_set_for_user(user=request.user)
        if vector_set is None:
            raise NotFound("No default vector set is ready yet; pass vector_set=<id>.")
        return vector_set
    vector_set = selectors.vector_sets_visible(user=request.user).filter(pk=raw).first()
    if vector_set is None:
        raise NotFound(f"Vector set {raw} not found.")
    return vector_set
