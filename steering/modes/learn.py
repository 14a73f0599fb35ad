"""LEARN: the platform moves a profile from the user's feedback on answers.

The paper's rule (arXiv 2505.04260, "Steerable Chatbots"): d ← d + p · dissatisfaction ·
direction, clipped to −1…1, per dimension.

- dissatisfaction: 1 for a thumbs down; 0 for a thumbs up (a satisfied user's profile stays as
  it is, whatever the text says); for a text alone, 1 when its sentiment is negative, else ½
  (asking for a change is itself mild dissatisfaction).
- direction: which end of which dimension the text asks for, read with sentence embeddings.
  Each dimension has affirmative phrases for each end ("expensive, upscale", "I want lower
  cost"); a clause is routed to the dimensions it is about (its best similarity to their phrases
  is high, and near the best dimension's), and its direction is the difference of its mean
  similarity to the two ends' nearest phrases, scaled to −1…1. Sentence embeddings place
  "too expensive" close to "expensive", so a clause that complains ("too X", "less X", "don't
  want X") is read by embedding X alone and flipping the sign.

Plain Python and torch, no Django: steering.services.feedback feeds it the dimensions and the
feedback, and writes what it decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steering.engine.embedding import SentenceEmbedder

# Defaults, each overridable per call (services pass the site's settings).
RATE = 0.35  # p: one clear thumbs down with "too expensive" moves 0 to 35 % Budget
MIN_RELEVANCE = 0.4  # below this a clause is not about the dimension at all
RELEVANCE_MARGIN = 0.05  # dimensions this close to the best one are addressed too
DIRECTION_SCALE = 0.05  # a similarity difference of this size is a full-strength direction
DEAD_ZONE = 0.01  # smaller differences are noise: no direction

# Words after which the clause names what the user wants less of.
_COMPLAINT = re.compile(
    r"\b(too|less|overly|fewer|not so|not as|tone down|no more|don'?t want|do not want|don'?t like|"
    r"dislike|hate|avoid|without|stop being|stop)\b",
    re.IGNORECASE,
)
_CLAUSE_BREAK = re.compile(r"[,.;:!?\n]|\bbut\b|\band\b|\bwhile\b", re.IGNORECASE)

# Remarks about no dimension at all. A clause closer to one of these than to every dimension's
# phrases asks for nothing ("ok", "hmm" otherwise land on whatever short word is nearest).
GENERIC_REMARKS = (
    "ok", "okay", "hmm", "great", "nice", "thanks", "I see", "interesting", "fine", "whatever", "what?", "cool",
    "good answer", "bad answer", "wrong", "too long", "too short", "boring", "I don't understand",
)

POSITIVE_SENTIMENT = (
    "this is great", "I like this", "perfect, thank you", "exactly what I wanted", "very helpful", "good answer",
)
NEGATIVE_SENTIMENT = (
    "this is bad", "I don't like this", "not what I wanted", "this is wrong", "disappointing", "useless answer",
)


@dataclass(frozen=True)
class DimensionPhrases:
    """What a user asking for each end of one dimension says."""

    name: str
    positive: Sequence[str]
    negative: Sequence[str]


@dataclass(frozen=True)
class Reading:
    """One dimension a feedback text is about: which way it asks to go (−1…1), how sure the
    routing is (best cosine to the dimension's phrases), and the words that said so."""

    dimension: str
    direction: float
    relevance: float
    clause: str


def fallback_phrases(negative_label: str, positive_label: str) -> tuple[list[str], list[str]]:
    """Phrases for a dimension that has none of its own, made from its two labels."""

    def phrases(label: str) -> list[str]:
        low = label.lower()
        return [low, f"more {low}", f"I want it more {low}", f"something {low}", f"I prefer {low}"]

    return phrases(positive_label), phrases(negative_label)


def clauses(text: str) -> list[str]:
    return [part.strip() for part in _CLAUSE_BREAK.split(text) if part and part.strip()]


def complaint_object(clause: str) -> str | None:
    """What a complaining clause wants less of ("formal" in "this is too formal"), else None."""
    match = _COMPLAINT.search(clause)
    if match is None:
        return None
    rest = clause[match.end():].strip(" '\"")
    return rest or None


def _near(similarities: torch.Tensor, k: int = 2) -> float:
    """The mean of the k best similarities: the nearest phrases decide, not the whole set."""
    return float(similarities.topk(min(k, similarities.numel())).values.mean())


class FeedbackReader:
    """Reads feedback texts against the phrases of some dimensions with one embedder. The
    phrases are embedded once, when the reader is made."""

    def __init__(
        self,
        embedder: SentenceEmbedder,
        dimensions: Sequence[DimensionPhrases],
        *,
        min_relevance: float = MIN_RELEVANCE,
        margin: float = RELEVANCE_MARGIN,
        scale: float = DIRECTION_SCALE,
    ):
        if not dimensions:
            raise ValueError("a feedback reader needs at least one dimension")
        self.embedder = embedder
        self.min_relevance, self.margin, self.scale = min_relevance, margin, scale
        self._ends = {
            d.name: (embedder.embed(list(d.positive)), embedder.embed(list(d.negative))) for d in dimensions
        }
        self._sentiment = (embedder.centroid(POSITIVE_SENTIMENT), embedder.centroid(NEGATIVE_SENTIMENT))
        self._generic = embedder.embed(list(GENERIC_REMARKS))

    def read(self, text: str) -> list[Reading]:
        """The dimensions `text` asks to change, best-routed first; [] when it names none."""
        parts = clauses(text)
        if not parts:
            return []
        objects = [complaint_object(part) for part in parts]
        whole = self.embedder.embed(parts)
        asked = self.embedder.embed([obj or part for obj, part in zip(objects, parts)])
        best: dict[str, Reading] = {}
        for i, part in enumerate(parts):
            # Each clause is routed on its own: "too formal, and I want sushi" asks two things.
            sign = -1.0 if objects[i] else 1.0
            candidates = []
            for name, (pos, neg) in self._ends.items():
                relevance = max(float((pos @ whole[i]).max()), float((neg @ whole[i]).max()))
                raw = sign * (_near(pos @ asked[i]) - _near(neg @ asked[i]))
                direction = 0.0 if abs(raw) < DEAD_ZONE else max(-1.0, min(1.0, raw / self.scale))
                candidates.append(Reading(name, round(direction, 3), round(relevance, 3), part))
            top = max(r.relevance for r in candidates)
            floor = max(self.min_relevance, float((self._generic @ whole[i]).max()))
            for r in candidates:
                addressed = r.relevance > floor and r.relevance >= top - self.margin
                if addressed and r.direction != 0.0 and (r.dimension not in best or r.relevance > best[r.dimension].relevance):
                    best[r.dimension] = r
        return sorted(best.values(), key=lambda r: -r.relevance)

    def sentiment(self, text: str) -> float:
        """> 0 when `text` sounds pleased, < 0 when displeased (relative cosine)."""
        if not text.strip():
            return 0.0
        emb = self.embedder.embed([text])[0]
        pleased, displeased = self._sentiment
        return float(emb @ pleased - emb @ displeased)


def dissatisfaction(*, thumbs: int | None, text: str, sentiment: float = 0.0) -> float:
    """How unhappy the feedback is, 0…1 (see the module's docstring)."""
    if thumbs == -1:
        return 1.0
    if thumbs == 1 or not text.strip():
        return 0.0
    return 1.0 if sentiment < 0 else 0.5


def updated_strengths(
    current: dict[str, float], readings: Sequence[Reading], *, dissatisfaction: float, rate: float = RATE
) -> dict[str, float]:
    """The paper's step for each dimension read: the new strengths that differ from `current`."""
    changed = {}
    for reading in readings:
        old = float(current.get(reading.dimension, 0.0))
        new = round(max(-1.0, min(1.0, old + rate * dissatisfaction * reading.direction)), 4)
        if new != old:
            changed[reading.dimension] = new
    return changed
