"""`SteerableModel`: the engine in a few lines, for notebooks, scripts and the platform.

    model = SteerableModel.load()                       # the embedded SmolLM2
    vectors = model.compute_vectors({"formality": (formal_texts, casual_texts)})
    vectors.save("formality.safetensors")
    model.add_vectors(vectors)
    model.generate("How do I ask for a day off?", preferences={"formality": 0.8})

Preferences are arguments of each call, never state of the model: two calls (or two rows of
one batch) with different preferences never see each other's steering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch

from .extraction import compute_vectors
from .generation import stream_batch
from .request import GenerationParams, GenerationRequest, TokenEvent
from .hooks import SteeringHooks
from .loading import EMBEDDED, LoadedModel, load_model
from .vectorfile import SteeringVectors, UnknownDimension


class SteerableModel:
    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.vector_sets: dict[str, SteeringVectors] = {}
        self.hooks = SteeringHooks(loaded.layers)

    @classmethod
    def load(
        cls, name: str = EMBEDDED, *, device: str = "auto", dtype: torch.dtype | str | None = None, system_prompt: str | None = None
    ) -> SteerableModel:
        return cls(load_model(name, device=device, dtype=dtype, system_prompt=system_prompt))

    # -- vectors ------------------------------------------------------------------------

    def compute_vectors(self, examples: dict[str, tuple[Sequence[str], Sequence[str]]], **options) -> SteeringVectors:
        """{dimension: (positive texts, negative texts)} → SteeringVectors (see extraction)."""
        return compute_vectors(self.loaded, examples, **options)

    def add_vectors(self, vectors: SteeringVectors, name: str = "default") -> SteeringVectors:
        """Make a vector set usable by name; its layers get their hook (once)."""
        vectors.check_model(
            model_id=None, num_layers=self.loaded.num_layers, hidden_size=self.loaded.hidden_size
        )
        self.hooks.attach(vectors.layers)
        self.vector_sets[name] = vectors
        return vectors

    def load_vectors(self, path: str | Path, name: str | None = None) -> SteeringVectors:
        vectors = SteeringVectors.load(path)
        vectors.check_model(
            model_id=self.loaded.model_id, num_layers=self.loaded.num_layers, hidden_size=self.loaded.hidden_size
        )
        return self.add_vectors(vectors, name or Path(path).stem)

    def layer_deltas(self, preferences: dict[str, float] | None, vector_set: str | None = None) -> dict[int, torch.Tensor]:
        """The per-layer additions for one request. Dimensions are looked up in `vector_set`, or
        else in whichever added set has them; several sets combine additively."""
        if not preferences:
            return {}
        if vector_set is not None:
            if vector_set not in self.vector_sets:
                raise KeyError(f"No vector set named {vector_set!r}; added: {', '.join(self.vector_sets) or 'none'}")
            return self.vector_sets[vector_set].layer_deltas(preferences)
        by_set: dict[str, dict[str, float]] = {}
        for dim, strength in preferences.items():
            owners = [name for name, vs in self.vector_sets.items() if dim in vs.vectors]
            if not owners:
                known = sorted({d for vs in self.vector_sets.values() for d in vs.dimensions})
                raise UnknownDimension(f"Unknown dimension {dim!r}; known: {', '.join(known) or 'none'}")
            if len(owners) > 1:
                raise ValueError(f"Dimension {dim!r} is in vector sets {owners}; name one with vector_set=")
            by_set.setdefault(owners[0], {})[dim] = strength
        total: dict[int, torch.Tensor] = {}
        for name, prefs in by_set.items():
            for layer, delta in self.vector_sets[name].layer_deltas(prefs).items():
                total[layer] = total[layer] + delta if layer in total else delta
        return total

    # -- generation ---------------------------------------------------------------------

    def request(
        self,
        prompt: str | list[dict],
        preferences: dict[str, float] | None = None,
        *,
        vector_set: str | None = None,
        system: str | None = None,
        **params,
    ) -> GenerationRequest:
        used = [self.vector_sets[vector_set]] if vector_set is not None else [
            vs for vs in self.vector_sets.values() if set(preferences or ()) & set(vs.vectors)
        ]
        return GenerationRequest(
            prompt_ids=self.loaded.chat_ids(prompt, system=system),
            params=GenerationParams(**params),
            steering=self.layer_deltas(preferences, vector_set),
            # Each set's ranges hold under its own prompt policy; sets of both kinds at once
            # steer the prompt too (the old way) rather than under-steer one of them.
            steer_prompt=any(vs.steer_prompt for vs in used) if used else True,
        )

    def stream_requests(self, requests: Sequence[GenerationRequest]) -> Iterator[TokenEvent]:
        return stream_batch(self.loaded, self.hooks, requests)

    def stream(self, prompt: str | list[dict], preferences: dict[str, float] | None = None, **options) -> Iterator[str]:
        """Yield the answer's text as it is generated."""
        for event in self.stream_requests([self.request(prompt, preferences, **options)]):
            if event.text:
                yield event.text

    def generate(self, prompt: str | list[dict], preferences: dict[str, float] | None = None, **options) -> str:
        return "".join(self.stream(prompt, preferences, **options))

    def generate_batch(self, items: Sequence[dict]) -> list[str]:
        """Several requests in one batch: each item is the keyword arguments of `request`."""
        requests = [self.request(**item) for item in items]
        texts = [""] * len(requests)
        for event in self.stream_requests(requests):
            texts[event.index] += event.text
        return texts
