"""The steering engine: plain PyTorch + transformers, no Django.

loading (models, layer discovery) · extraction (activations; CAA, probe and PCA vectors) ·
layers (default layers, held-out layer scores, top-k choice) · hooks (per-row
steering) · request (GenerationParams, CHAT_DEFAULTS, GenerationRequest, TokenEvent, and
steered_request: a request as a vector set serves it) ·
generation (the batched streaming decode loop) · tokens (the repetition guard, greedy or
sampled tokens, the Detokenizer) · kvcache, cache_merge (the decode loop's KV cache) · vectorfile
(SteeringVectors and their safetensors file; vectormeta checks its metadata) · steerable (SteerableModel, the few-lines API) · embedding (sentence
embeddings) · measures (Effect, perplexity, PNE, Spearman, repetition) · rows (prompt rows
answered in one batch) · sweep (strengths × prompts: the evaluation) · range_search (the
functional and joint ranges) · readout (how an answer reads on each dimension) · conditions (conditional
steering: a topical dimension applies only to turns about it, decided per row in the prefill)
· condition_reading (prompts read at the condition layer: conditions fitted, then decided).
"""

from .extraction import (
    compute_vectors, fit_probe, layer_score, mean_difference, pca_direction, probe_direction, record_activations,
)
from .generation import DecodeBatch, stream_batch
from .hooks import RowSteering, SteeringHooks
from .layers import default_layers, held_out_likelihood, held_out_separation, top_layers
from .loading import EMBEDDED, LoadedModel, ModelNotFound, UnsupportedModel, find_layers, load_model
from .request import (
    CHAT_DEFAULTS, LIMITS, MAX_DIMENSIONS, STRENGTH, GenerationParams, GenerationRequest, TokenEvent, served_greedy,
    strength_check,
)
from .steerable import SteerableModel
from .vectorfile import SteeringVectors, UnknownDimension, VectorFileError

__all__ = [
    "CHAT_DEFAULTS", "EMBEDDED", "LIMITS", "MAX_DIMENSIONS", "STRENGTH", "DecodeBatch", "GenerationParams", "GenerationRequest", "LoadedModel", "ModelNotFound",
    "RowSteering", "SteerableModel", "SteeringHooks", "SteeringVectors", "TokenEvent", "UnknownDimension",
    "UnsupportedModel", "VectorFileError", "compute_vectors", "default_layers", "find_layers", "fit_probe",
    "held_out_likelihood", "held_out_separation", "layer_score", "load_model", "mean_difference", "pca_direction", "probe_direction",
    "record_activations", "served_greedy", "stream_batch", "strength_check", "top_layers",
]
