"""Recording activations and extracting steering vectors.

`record_activations` runs texts through the model in padded batches and returns, for every
decoder layer at once, one activation per text: the mean over the text's tokens or its last
token. Padding never counts, and neither does the first token, whose activations are huge
outliers (the attention sink) that would swamp a mean.

Three ways to turn one layer's positive and negative activations ([n, hidden] each) into a
direction, all pure functions on tensors: `mean_difference` (CAA, the seed's method),
`probe_direction` (a logistic-regression probe, the paper's method) and `pca_direction`
(first principal component of paired differences). `compute_vectors` applies one of them to
every layer and dimension, scores every layer on held-out data, and can steer the top k; the
readout's reference ends (readout.py) are the two classes' examples read as answers.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .layers import Classifier, default_layers, held_out_likelihood, held_out_separation, top_layers
from .loading import LoadedModel, pad_left
from .readout import ReadoutEnds, read_layer
from .vectorfile import READS, SteeringVectors

Progress = Callable[[int, int], None]

# Strength 1 adds this fraction of each steered layer's mean residual norm. Measured on
# SmolLM2-135M with the formality vector over its 15 middle layers: 0.02 clearly changes
# the register while the text stays fluent; from 0.04 it starts to repeat and derail.
DEFAULT_FUNCTIONAL_RANGE = 0.02

# Examples are few (tens) and activations wide (hundreds of features), so the classes are
# almost always linearly separable: without a penalty the probe's weights grow without
# bound and its direction is whatever the optimiser last moved.
PROBE_L2 = 1e-2
PROBE_STEPS = 200


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """CAA: mean(positive) − mean(negative) over examples ([n, hidden] each → [hidden]).
    Not normalised: its norm says how far apart the classes are."""
    return positive.mean(0) - negative.mean(0)


def fit_probe(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A logistic-regression probe, positive = 1, on activations ([n, hidden] each).

    Fitted with L-BFGS from zero on standardised features (otherwise the few huge
    residual-stream features dominate the penalty and the fit), then mapped back: returns
    (weight [hidden], bias []) in raw activation space, with x · weight + bias the logit.
    Starting from zero with a deterministic optimiser makes it the same on every run."""
    # Callers often hold no_grad or inference mode (activations are recorded in it); the fit
    # needs autograd, and every tensor it touches must be made outside inference mode.
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.cat([positive, negative]).double()
        y = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).double()
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        z = (x - mean) / std
        weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=PROBE_STEPS, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimiser.zero_grad()
            logits = z @ weight + bias
            # The logistic loss written out: F.binary_cross_entropy_with_logits costs ~7 ms a
            # call on a CPU even for 100 values, 50× this.
            value = (F.softplus(logits) - y * logits).mean() + PROBE_L2 / 2 * weight.square().sum()
            value.backward()
            return value

        optimiser.step(loss)
    raw = weight.detach() / std  # w·(x − mean)/std + b  =  (w/std)·x + (b − (w/std)·mean)
    return raw.float(), (bias.detach() - raw @ mean).float()


def probe_direction(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """The probe's weight as a unit vector ([hidden]) pointing to the positive end."""
    weight, _ = fit_probe(positive, negative)
    return _toward_positive(weight, positive, negative)


def pca_direction(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """First principal component of the paired differences positive_i − negative_i (the
    first min(n_pos, n_neg) of each), as a unit vector ([hidden]) pointing to the positive end.

    Uncentred on purpose: every pair is positive minus negative, so the shared direction is
    the differences' mean, and centring would remove exactly that."""
    pairs = min(len(positive), len(negative))
    differences = (positive[:pairs] - negative[:pairs]).double()
    _, _, right = torch.linalg.svd(differences, full_matrices=False)
    return _toward_positive(right[0].float(), positive, negative)


def _toward_positive(direction: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Unit-normalised, signed so that positive examples project above negative ones on average
    (an SVD's sign is arbitrary, and the steering rule needs + to mean the positive end)."""
    if direction @ mean_difference(positive, negative) < 0:
        direction = -direction
    return direction / direction.norm().clamp_min(1e-12)


DIRECTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "caa": mean_difference,
    "probe": probe_direction,
    "pca": pca_direction,
}


def _midway(direction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Classifier:
    """A classifier along a direction, with its threshold halfway between the class means
    (for CAA, exactly the nearest-centroid classifier)."""

    def fit(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = direction(positive, negative)
        return weight, -(weight @ (positive.mean(0) + negative.mean(0))) / 2

    return fit


def layer_score(method: str, positive: torch.Tensor, negative: torch.Tensor) -> float:
    """How well one layer separates the classes ([n, hidden] each), on held-out data; higher
    is better. The probe is scored as its own classifier (the paper's criterion), by its
    held-out likelihood (exp −log-loss, 0.5 at chance, 1 at best) rather than its accuracy,
    which is 95–100 % on every layer of SmolLM2 and so ranks nothing. CAA and PCA are scored by
    held-out class separation (d′) along their direction, thresholded halfway between the
    class means."""
    if method == "probe":
        return held_out_likelihood(positive, negative, fit_probe)
    return held_out_separation(positive, negative, _midway(DIRECTIONS[method]))


def _batches(ids: list[list[int]], batch_size: int):
    for start in range(0, len(ids), batch_size):
        yield start, ids[start : start + batch_size]


# The short questions texts answer when they are read as answers ("answer" read): read as
# bare text, everyday answers of SmolLM2 sat near the negative end of every dimension
# (formality −0.9 and cost −1.0 at strength 0 on the held-out prompts), because an answer's
# activations are not a bare text's.
READ_PROMPTS = ("Tell me something.", "Can you help me with this?", "What do you think?", "Any advice?")


def paired_questions(positive: Sequence[str], negative: Sequence[str]) -> list[str]:
    """The question each of [*positive, *negative] answers: READ_PROMPTS in turn within each
    class, so the two texts of a contrast pair answer the same question and it cancels out of
    their difference."""
    return [READ_PROMPTS[i % len(READ_PROMPTS)] for texts in (positive, negative) for i in range(len(texts))]


def _answer_rows(
    loaded: LoadedModel, texts: Sequence[str], questions: Sequence[str]
) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Each text as an assistant's answer to its question, and the span [first, stop) of
    positions that choose its tokens: the question's last position up to the text's
    next-to-last. Answer-only steering adds its delta at exactly those positions of a chat turn."""
    rows, spans = [], []
    for text, asked in zip(texts, questions, strict=True):
        question = loaded.chat_ids(asked)
        answer = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        rows.append(question + answer)
        spans.append((len(question) - 1, len(question) + len(answer) - 1))
    return rows, spans


@torch.inference_mode()
def record_activations(
    loaded: LoadedModel,
    texts: Sequence[str] | Sequence[list[int]],
    *,
    read: str = "mean",
    batch_size: int = 16,
    progress: Progress | None = None,
    layers: Sequence[int] | None = None,
    questions: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations of every layer (or of `layers`) for each text: ([texts, layers, hidden],
    token_norms) where token_norms is [layers], the mean residual norm per layer over all
    counted tokens.

    `read`: "mean" over the text's tokens (the first skipped: the attention sink), "last" its
    last token, "answer" the mean over the positions that would choose its tokens were it an
    assistant's answer in the chat template (`_answer_rows`) to its question in `questions`
    (READ_PROMPTS in turn if not given), where the answers it is compared with are read and
    where answer-only steering adds its delta."""
    if read not in READS:
        raise ValueError(f"read must be one of {', '.join(READS)}, not {read!r}")
    if not texts:
        raise ValueError("No texts to record activations from")
    if read == "answer":
        if any(not isinstance(text, str) for text in texts):
            raise ValueError('read="answer" takes texts, not token ids')
        asked = questions or [READ_PROMPTS[i % len(READ_PROMPTS)] for i in range(len(texts))]
        ids, spans = _answer_rows(loaded, texts, asked)
    else:
        # A text is tokenized as it is; token ids (a chat turn through its template) are taken as given.
        ids = [list(text) if isinstance(text, list) else loaded.tokenizer(text)["input_ids"] for text in texts]
        spans = [(1, len(row)) for row in ids]
    short = [i for i, (first, stop) in enumerate(spans) if stop - first < 1]
    if short:
        raise ValueError(f"Texts {short} are too short: at least two tokens are needed (the first is skipped)")
    recorded = list(range(loaded.num_layers)) if layers is None else list(layers)
    # Longest first keeps padding within a batch small.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty(len(texts), len(recorded), loaded.hidden_size)
    norm_sum = torch.zeros(len(recorded), dtype=torch.float64)
    token_count = 0
    captured: dict[int, torch.Tensor] = {}
    # Only this thread's passes: the site's scheduler may be running the same model meanwhile.
    me = threading.get_ident()
    handles = [
        loaded.layers[layer].register_forward_hook(
            lambda module, args, output, index=index: captured.__setitem__(
                index, output[0] if isinstance(output, tuple) else output
            ) if threading.get_ident() == me else None
        )
        for index, layer in enumerate(recorded)
    ]
    base = loaded.model.base_model  # skips the LM head: only layer outputs are needed
    try:
        done = 0
        for _, chunk in _batches([ids[i] for i in order], batch_size):
            input_ids, mask, positions = pad_left(chunk, loaded.pad_id, loaded.device)
            base(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
            width = input_ids.shape[1]
            counted = torch.zeros_like(mask, dtype=torch.bool)  # [B, T]
            for j, row in enumerate(chunk):
                first, stop = spans[order[done + j]]
                offset = width - len(row)  # left padding
                counted[j, offset + first : offset + stop] = True
            weights = counted / counted.sum(-1, keepdim=True)
            token_count += int(counted.sum())
            for index in range(len(recorded)):
                # Zeroed, not multiplied by the mask: with eager attention, padding positions
                # can hold NaN, and NaN × 0 is NaN.
                hidden = captured[index].float().masked_fill(~counted[..., None], 0.0)  # [B, T, H]
                norm_sum[index] += hidden.norm(dim=-1).sum().double().cpu()
                if read == "last":
                    reduced = hidden[:, -1, :]  # left padding puts every text's last token last
                else:
                    reduced = torch.einsum("bt,bth->bh", weights, hidden)
                for j, row in enumerate(reduced.cpu()):
                    out[order[done + j], index] = row
            done += len(chunk)
            captured.clear()
            if progress:
                progress(done, len(ids))
    finally:
        for handle in handles:
            handle.remove()
    return out, (norm_sum / max(token_count, 1)).float()


def compute_vectors(
    loaded: LoadedModel,
    examples: dict[str, tuple[Sequence[str], Sequence[str]]],
    *,
    method: str = "caa",
    read: str = "answer",
    layers: Sequence[int] | None = None,
    top_k: int | None = None,
    functional_range: float | dict[str, float] = DEFAULT_FUNCTIONAL_RANGE,
    labels: dict[str, list[str]] | None = None,
    batch_size: int = 16,
    progress: Progress | None = None,
    steer_prompt: bool = False,
) -> SteeringVectors:
    """Steering vectors for each dimension from (positive, negative) example texts.

    `method` picks the direction at every layer l: "caa" mean(a_l | positive) − mean(a_l |
    negative); "probe" a logistic-regression probe's weight; "pca" the first principal
    component of paired differences (both unit vectors). Every layer is also scored on
    held-out data (`layer_score`), kept as `layer_scores`. The steered layers are `layers`
    if given, else the `top_k` best-scoring layers (mean score over dimensions) if given,
    else the middle half. `progress(done, total)` is called after each batch, counted over
    all dimensions. `steer_prompt` (see SteeringVectors): a new set steers only the answer,
    which keeps far more of it on the question at the same Effect (docs/evaluation.md).
    `read` (record_activations): a new set reads its examples as answers, where it steers;
    on SmolLM2 that kept the answers closer to their questions at the same Effect than
    reading them as bare text ("mean"; docs/evaluation.md, third pass)."""
    if method not in DIRECTIONS:
        raise ValueError(f"Unknown extraction method {method!r}; use one of {', '.join(DIRECTIONS)}")
    if layers is not None and top_k is not None:
        raise ValueError("Give either layers or top_k, not both")
    for dim, (positive, negative) in examples.items():
        if not positive or not negative:
            raise ValueError(f"Dimension {dim!r} needs positive and negative examples")
    total = sum(len(p) + len(n) for p, n in examples.values())
    offset = 0

    def step(done: int, _: int) -> None:
        if progress:
            progress(offset + done, total)

    vectors, scores, norm_parts = {}, {}, []
    for dim, (positive, negative) in examples.items():
        acts, norms = record_activations(
            loaded, [*positive, *negative], read=read, batch_size=batch_size, progress=step,
            questions=paired_questions(positive, negative) if read == "answer" else None,
        )
        offset += len(positive) + len(negative)
        pos, neg = acts[: len(positive)], acts[len(positive) :]
        per_layer = range(loaded.num_layers)
        vectors[dim] = torch.stack([DIRECTIONS[method](pos[:, l], neg[:, l]) for l in per_layer])
        scores[dim] = [layer_score(method, pos[:, l], neg[:, l]) for l in per_layer]
        norm_parts.append(norms)
    if layers is not None:
        steered = list(layers)
    elif top_k is not None:
        steered = top_layers([sum(column) / len(column) for column in zip(*scores.values())], top_k)
    else:
        steered = default_layers(loaded.num_layers)
    ranges = functional_range if isinstance(functional_range, dict) else dict.fromkeys(vectors, functional_range)
    computed = SteeringVectors(
        model_id=loaded.model_id,
        hidden_size=loaded.hidden_size,
        num_layers=loaded.num_layers,
        layers=steered,
        vectors=vectors,
        residual_norms=torch.stack(norm_parts).mean(0),
        functional_range=ranges,
        method=method,
        read=read,
        labels=labels or {},
        layer_scores=scores,
        steer_prompt=steer_prompt,
    )
    # The readout's read layer depends on the steered layers, known only now.
    return calibrate_readout(loaded, computed, examples)



def orthogonalised(vectors: SteeringVectors) -> SteeringVectors:
    """A copy whose dimensions' directions are, at each layer, mutually orthogonal and each as
    close to its own as that allows (symmetric, Löwdin orthogonalisation: U (UᵀU)^−½ of the unit
    directions U): one lever of issue 24 against entangled dimensions (CAA's age and cost
    vectors share cosine ~0.44, age and ambiance ~0.38 on SmolLM2, so "adults" also pushed
    "expensive"). Sizes are kept (only directions are used). Layers where the directions are
    (nearly) linearly dependent are left as they were."""
    dims = vectors.dimensions
    if len(dims) < 2:
        return vectors
    stacked = torch.stack([vectors.vectors[dim].float() for dim in dims]).transpose(0, 1)  # [layers, dims, hidden]
    sizes = stacked.norm(dim=-1, keepdim=True)
    units = stacked / sizes.clamp_min(1e-12)
    gram = units @ units.transpose(1, 2)  # [layers, dims, dims]
    values, basis = torch.linalg.eigh(gram)
    solid = values.min(dim=-1).values > 1e-3
    inverse_root = basis @ torch.diag_embed(values.clamp_min(1e-3).rsqrt()) @ basis.transpose(1, 2)
    turned = torch.where(solid[:, None, None], (inverse_root @ units) * sizes, stacked)
    return SteeringVectors(**{**vectors._fields(), "vectors": {dim: turned[:, i].contiguous() for i, dim in enumerate(dims)}})


def calibrate_readout(
    loaded: LoadedModel, vectors: SteeringVectors, examples: dict[str, tuple[Sequence[str], Sequence[str]]]
) -> SteeringVectors:
    """`vectors` with readout ends for the dimensions of `examples` ({dimension: (positive
    texts, negative texts)}): at each one's read layer, the mean of its positive and of its
    negative examples read as answers (`record_activations`' "answer" read). `compute_vectors` calls it; a set
    computed before the readout existed can be given ends with it too.

    Only the activations at the read layer are used, so the ends follow whatever steering the
    model may be under: none here (hooks of other threads' passes are not active in this one)."""
    ends = dict(vectors.readout)
    for dim, (positive, negative) in examples.items():
        if dim not in vectors.vectors or not positive or not negative:
            continue
        layer = read_layer(vectors, dim)
        acts = record_activations(
            loaded, [*positive, *negative], read="answer", layers=[layer], questions=paired_questions(positive, negative)
        )[0][:, 0]
        ends[dim] = ReadoutEnds(layer, acts[len(positive) :].mean(0), acts[: len(positive)].mean(0))
    return vectors.with_readout(ends)
