"""How well steering works: the paper's evaluation metrics, as plain functions.

- `effect_scores`: Effect = cos(e_out, mean e+) − cos(e_out, mean e−) per answer, with sentence
  embeddings of the answer and of the dimension's two reference sets (> 0: closer to the
  positive end).
- `answer_nll` / `perplexity`: how surprising an answer is to the *unsteered* model, given its
  prompt; fluency's proxy. Batched, left-padded, loss on the answer's tokens only.
- `pne`: (Effect_d − Effect_0) / (PPL_d / PPL_0), effect per unit of fluency lost.
- `spearman`: rank correlation (of Effect with strength: does more strength mean more effect?).
- `repetition_rate`: the share of repeated word n-grams, the usual sign of over-steering.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .embedding import SentenceEmbedder, relative_similarity
from .extraction import pad_left
from .generation import accepts_logits_to_keep
from .loading import LoadedModel


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
