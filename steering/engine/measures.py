"""How well steering works: the paper's evaluation metrics, as plain functions.

- `effect_scores`: Effect = cos(e_out, mean e+) − cos(e_out, mean e−) per answer, with sentence
  embeddings of the answer and of the dimension's two reference sets (> 0: closer to the
  positive end).
- `answer_nll` / `perplexity`: how surprising an answer is to the *unsteered* model, given its
  prompt; fluency's proxy. Batched, left-padded, loss on the answer's tokens only.
- `pne`: (Effect_d − Effect_0) / (PPL_d / PPL_0), effect per unit of fluency lost.
- `spearman`: rank correlation (of Effect with strength: does more strength mean more effect?).
- `repetition_rate`: the share of repeated word n-grams, the usual sign of over-steering.
- `prompt_similarities` / `relevance`: does the answer still answer? The answer's MiniLM cosine
  to its prompt, and the steered answers' mean cosine over the unsteered answers' (1 = as
  on-topic as without steering).
- `degeneracy` / `is_degenerate`: is the answer still language? Repeated 3-grams, distinct-2
  and the share of words that are not words (against an English word list and the embedding
  model's vocabulary); thresholds below, calibrated on real answers (docs/evaluation.md).
- `composite`: AxBench-style harmonic mean of concept (Effect moved, scaled), instruction
  (relevance) and fluency (perplexity ratio, degenerate answers), each in 0…1.
- `bootstrap_interval`: how far a figure read off a dozen prompts could move on other prompts
  of the same kind (percentile bootstrap over the prompts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Callable, Sequence

import torch

from .embedding import SentenceEmbedder, embedder_path, relative_similarity
from .generation import accepts_logits_to_keep
from .loading import LoadedModel, pad_left


def effect_scores(
    embedder: SentenceEmbedder, texts: Sequence[str], positive_refs: Sequence[str], negative_refs: Sequence[str]
) -> list[float]:
    """Effect of each text against the two reference sets, in −2…2 (in practice −0.3…0.3)."""
    if not texts:
        return []
    scores = relative_similarity(
        embedder.embed(texts), embedder.centroid(positive_refs), embedder.centroid(negative_refs)
    )
    return [float(x) for x in scores]


@dataclass(frozen=True)
class AnswerNLL:
    """Summed negative log-likelihood (nats) of an answer's tokens and how many there were."""

    total: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.total / self.tokens) if self.tokens else math.nan


@torch.inference_mode()
def answer_nll(
    loaded: LoadedModel, prompt_ids: Sequence[list[int]], answers: Sequence[str], *, batch_size: int = 16
) -> list[AnswerNLL]:
    """NLL of each answer given its prompt (token ids, e.g. `loaded.chat_ids(prompt)`), under the
    model as it is: callers measure with no steering active, i.e. under the unsteered model.
    Rows are left-padded and batched; an empty answer scores AnswerNLL(0, 0)."""
    if len(prompt_ids) != len(answers):
        raise ValueError("One prompt per answer")
    tokenizer = loaded.tokenizer
    answer_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] if text else [] for text in answers]
    out: list[AnswerNLL | None] = [None] * len(answers)
    todo = []
    for i, ids in enumerate(answer_ids):
        if ids:
            todo.append(i)
        else:
            out[i] = AnswerNLL(0.0, 0)
    # Longest first keeps the padding in each batch small.
    todo.sort(key=lambda i: -(len(prompt_ids[i]) + len(answer_ids[i])))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        rows = [list(prompt_ids[i]) + answer_ids[i] for i in chunk]
        input_ids, mask, positions = pad_left(rows, loaded.pad_id, loaded.device)
        # Only the answers' predictions are needed: the logits of the last (longest answer + 1)
        # positions, not a [batch, tokens, vocabulary] tensor over the prompts as well.
        keep = max(len(answer_ids[i]) for i in chunk) + 1
        extra = {"logits_to_keep": keep} if accepts_logits_to_keep(loaded.model) else {}
        logits = loaded.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra
        ).logits[:, -keep:]
        # Column t of `logits` predicts the token after it.
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = input_ids[:, -keep + 1 :]
        token_nll = -logprobs.gather(-1, targets[..., None])[..., 0]  # [B, keep - 1]
        for row, i in enumerate(chunk):
            n = len(answer_ids[i])
            # The answer is the last n tokens of its row (left padding), so the last n columns.
            out[i] = AnswerNLL(float(token_nll[row, -n:].double().sum()), n)
    return out  # type: ignore[return-value]


def perplexity(nlls: Sequence[AnswerNLL]) -> float:
    """Corpus perplexity of several answers: exp(total NLL / total tokens); NaN without tokens."""
    tokens = sum(x.tokens for x in nlls)
    return math.exp(sum(x.total for x in nlls) / tokens) if tokens else math.nan


def pne(effect_d: float, effect_0: float, ppl_d: float, ppl_0: float) -> float:
    """Perplexity-normalised effect: (Effect_d − Effect_0) / (PPL_d / PPL_0). Signed: at a
    negative strength a working vector gives a negative value."""
    return (effect_d - effect_0) / (ppl_d / ppl_0)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1…n, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; NaN if either side is constant or has fewer than two values."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    if len(x) < 2:
        return math.nan
    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    tx, ty = tx - tx.mean(), ty - ty.mean()
    denominator = float(tx.norm() * ty.norm())
    return float(tx @ ty) / denominator if denominator else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (Pearson's r of the ranks, ties averaged); NaN if either side is constant."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    return pearson(_ranks(x), _ranks(y))


_WORD = re.compile(r"\w+", re.UNICODE)


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of the text's word n-grams that repeat an earlier one: 0 for varied text, near 1
    for a loop ("the the the …"). Texts shorter than n words score 0."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(text: str, n: int = 2) -> float:
    """Unique word n-grams over all word n-grams: 1 for varied text, low for a loop. Texts
    shorter than n words score 1 (nothing repeats)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


# Letters only: numbers, underscores and punctuation are neither words nor non-words.
_LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)


@cache
def known_words() -> frozenset[str]:
    """Lowercase words that count as words: English's (web2 and GCIDE, the `english-words`
    package, base forms mostly) and the whole words of the embedding model's uncased WordPiece
    vocabulary (which adds common plurals, names of places and everyday foreign words such as
    "vida" or "bistro")."""
    from english_words import get_english_words_set

    words = set(get_english_words_set(["web2", "gcide"], lower=True, alpha=True))
    vocab = (embedder_path() / "vocab.txt").read_text(encoding="utf-8").split()
    words.update(token for token in vocab if token.isalpha())
    return frozenset(words)


def _inflections(word: str) -> list[str]:
    """The base forms a word may be an inflection of (plurals, -ed, -ing, -ly, -er, -est)."""
    out = [word]
    for suffix, bases in (("ies", ("y",)), ("es", ("",)), ("s", ("",)), ("ied", ("y",)), ("ed", ("", "e")),
                          ("ing", ("", "e")), ("ly", ("",)), ("ier", ("y",)), ("iest", ("y",)), ("er", ("", "e")),
                          ("est", ("", "e"))):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            out += [stem + base for base in bases]
            if len(stem) > 2 and stem[-1] == stem[-2]:  # running → run, biggest → big
                out.append(stem[:-1])
    return out


def is_word(word: str) -> bool:
    """Whether `word` (letters only) is a word: single letters always are; otherwise it, or a
    base form of it, is in `known_words`. Hyphenated and apostrophe parts are checked apart."""
    word = word.lower()
    forms = _inflections(word)
    if word.endswith("in") and len(word) > 3:  # casual speech's dropped g: talkin', somethin'
        forms += _inflections(word + "g")
    return len(word) < 2 or any(form in known_words() for form in forms)


def nonword_share(text: str) -> float:
    """The share of the text's words that are not words (0 for a text without words)."""
    words = _LETTERS.findall(text)
    return sum(not is_word(w) for w in words) / len(words) if words else 0.0


@dataclass(frozen=True)
class Degeneracy:
    repetition: float  # share of repeated word 3-grams
    distinct2: float  # unique word bigrams over all
    nonwords: float  # share of words that are not words
    words: int
    # Share of letters among the characters that are not spaces (1 for a text too short to judge)
    letters: float = 1.0

    @property
    def degenerate(self) -> bool:
        return (
            self.words == 0
            or self.letters < DEGENERATE_LETTERS
            or self.repetition > DEGENERATE_REPETITION
            or self.distinct2 < DEGENERATE_DISTINCT2
            or self.nonwords > DEGENERATE_NONWORDS
        )


# An answer is degenerate when any one of these is crossed (or it has no words at all). Set on
# real greedy answers of SmolLM2-135M (docs/evaluation.md, "Degenerate answers"): unsteered
# answers of 24–48 tokens reach a repeated-3-gram share of up to ~0.3 by listing ("- a ..., - a
# ...") and invent up to ~6 % non-words (rare names, typos, "Wi-Fi"); the garbled steered
# answers of issue 24 have 15–40 % non-words, loops have most of their 3-grams repeated.
DEGENERATE_REPETITION = 0.5
DEGENERATE_DISTINCT2 = 0.5
DEGENERATE_NONWORDS = 0.12
# Mostly digits and punctuation ("A: 1000000000000 ⏎ 1.11.10.2018 ⏎ 2.11.10.2018", culture at −1,
# 2026-12-06) is not an answer in words either; a text under 20 characters is not judged so.
DEGENERATE_LETTERS = 0.5
LETTERS_JUDGED_FROM = 20  # characters, spaces not counted


def letter_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    if len(chars) < LETTERS_JUDGED_FROM:
        return 1.0
    return sum(c.isalpha() for c in chars) / len(chars)


def degeneracy(text: str) -> Degeneracy:
    return Degeneracy(repetition_rate(text), distinct_n(text, 2), nonword_share(text), len(_LETTERS.findall(text)),
                      letter_share(text))


def is_degenerate(text: str) -> bool:
    return degeneracy(text).degenerate


def degenerate_rate(texts: Sequence[str]) -> float:
    """The share of `texts` that are degenerate (0 for none)."""
    return sum(is_degenerate(t) for t in texts) / len(texts) if texts else 0.0


def prompt_similarities(embedder: SentenceEmbedder, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
    """Each answer's embedding cosine to its own prompt (one prompt per answer)."""
    if len(prompts) != len(answers):
        raise ValueError("One prompt per answer")
    if not answers:
        return []
    return [float(x) for x in (embedder.embed(prompts) * embedder.embed(answers)).sum(-1)]


def relevance(similarities: Sequence[float], unsteered: Sequence[float]) -> float:
    """Mean cosine of the steered answers to their prompts over the unsteered answers' (same
    prompts): 1 when steering leaves the answers as close to the question, 0.5 when it halves
    that. A ratio of means, since one short unsteered answer's cosine can be near zero."""
    base = sum(unsteered) / len(unsteered) if unsteered else math.nan
    return (sum(similarities) / len(similarities)) / base if similarities and base > 0 else math.nan


def answer_similarity(embedder: SentenceEmbedder, answers: Sequence[str], others: Sequence[str]) -> float:
    """Mean embedding cosine of each answer to its counterpart (e.g. steered to unsteered)."""
    if len(answers) != len(others):
        raise ValueError("One counterpart per answer")
    if not answers:
        return math.nan
    return float((embedder.embed(answers) * embedder.embed(others)).sum(-1).mean())


# Composite: Effect counts fully once it has moved half the target spread (0.12 between −1 and +1).
CONCEPT_FULL_EFFECT = 0.06


def composite(*, strength: float, effect: float, effect_0: float, relevance: float, ppl_ratio: float,
              degenerate: float) -> float:
    """AxBench's idea (harmonic mean of concept, instruction and fluency scores) with measured
    scores in 0…1: concept = the Effect moved the strength's way, over CONCEPT_FULL_EFFECT;
    instruction = relevance; fluency = 1 / perplexity ratio (1 when no less fluent), times the
    share of answers that are not degenerate. 0 when any is 0 (harmonic mean); NaN at strength 0,
    where there is no concept to move."""
    if strength == 0 or any(math.isnan(x) for x in (effect, effect_0, relevance, ppl_ratio)):
        return math.nan
    concept = min(max(math.copysign(1, strength) * (effect - effect_0) / CONCEPT_FULL_EFFECT, 0.0), 1.0)
    instruction = min(max(relevance, 0.0), 1.0)
    fluency = min(1.0 / ppl_ratio, 1.0) * (1.0 - degenerate) if ppl_ratio > 0 else 0.0
    scores = (concept, instruction, fluency)
    return 0.0 if min(scores) <= 0 else 3.0 / sum(1.0 / x for x in scores)


def bootstrap_interval(
    statistic: Callable[[Sequence[int]], float], count: int, *, resamples: int = 2000, level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of `statistic`, a figure of `count` prompts computed
    from the prompt indices it is given: `statistic(range(count))` is the figure itself, and it
    is recomputed on `resamples` draws of `count` indices with replacement (seeded, so a run
    repeats). Paired figures (steered and unsteered answers of the same prompt) stay paired:
    both are read at the same indices. Why: the held-out targets are bars (relevance 0.9, spread
    0.12) read off 12 prompts, where one changed greedy answer moves the figure by about 0.1, so
    a miss or a pass near the bar may say nothing about the next dozen prompts."""
    if count < 1:
        raise ValueError("The interval needs at least one prompt")
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, count, (resamples, count), generator=generator).tolist()
    values = sorted(v for v in (statistic(draw) for draw in draws) if not math.isnan(v))
    if not values:
        return math.nan, math.nan
    tail = (1 - level) / 2
    pick = lambda q: values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]  # noqa: E731
    return pick(tail), pick(1 - tail)
