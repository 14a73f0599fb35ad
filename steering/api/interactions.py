"""Your logged answers (each generation, with its prompt, strengths and timings)."""

from __future__ import annotations

from rest_framework import generics

from steering import selectors
from steering.api import serializers as s


class InteractionListView(generics.ListAPIView):
    serializer_class = s.InteractionSerializer

    def get_queryset(self):
        return selectors.interactions_for(user=self.request.user)


class InteractionDetailView(generics.RetrieveAPIView):
    serializer_class = s.InteractionSerializer

    def get_queryset(self):
        return selectors.interactions_for(user=self.request.user)
