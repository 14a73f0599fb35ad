"""The steering engine: plain PyTorch + transformers, no Django.

models (loading, layer discovery) · extraction (activations, CAA vectors) · hooks (per-row
steering) · generation (batched streaming decode) · vectorfile (SteeringVectors and their
safetensors file) · steerable (SteerableModel, the few-lines API).
"""

from .extraction import compute_vectors, default_layers, record_activations
from .generation import DecodeBatch, GenerationParams, GenerationRequest, TokenEvent, stream_batch
from .hooks import RowSteering, SteeringHooks
from .models import EMBEDDED, LoadedModel, ModelNotFound, UnsupportedModel, find_layers, load_model
from .steerable import SteerableModel
from .vectorfile import SteeringVectors, UnknownDimension, VectorFileError

__all__ = [
    "EMBEDDED", "DecodeBatch", "GenerationParams", "GenerationRequest", "LoadedModel", "ModelNotFound",
    "RowSteering", "SteerableModel", "SteeringHooks", "SteeringVectors", "TokenEvent", "UnknownDimension",
    "UnsupportedModel", "VectorFileError", "compute_vectors", "default_layers", "find_layers", "load_model",
    "record_activations", "stream_batch",
]
