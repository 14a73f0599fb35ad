"""This process's runtime: the site's one shared model and what hangs off it, loaded lazily
once per process.

Lazily, because django-q2 forks its workers from the cluster process: a model (and CUDA)
initialised before the fork would be shared badly, so each process loads on first use.
Hooks sit on every decoder layer from the start, so any vector set can be used without
touching the model while the scheduler's thread runs it; steering vectors are read from a
vector set's file once per process and kept in a cache bounded by bytes
(STEERLAB_VECTOR_CACHE_BYTES) that evicts the least recently used set. A set's entry is
keyed by its file, so a recomputed set (a new file) replaces its old entry; deleting a set
drops it from this process's cache (other processes let it age out). `steered_request_for` turns a
vector set's id and strengths into the generation request, steered as the set serves it: the
backends name steering, and only this module reads the set from the database.

Everything is keyed by (STEERLAB_MODEL, STEERLAB_DEVICE, STEERLAB_DTYPE), so a test that points the setting
at another model gets that model, and the first one is still there when it points back."""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete

from steering import files

from steering.data import catalog
from steering.engine import (
    GenerationParams, GenerationRequest, LoadedModel, SteeringHooks, SteeringVectors, VectorFileError, load_model, record_activations,
)
from steering.engine.loading import ChatTokenizer, load_chat_tokenizer
from steering.engine.prompting import WordedPrompt
from steering.engine.readout import ReadoutProbe
from steering.engine.request import steered_request
from steering.files import VectorSetUnavailable
from steering.inference import Scheduler
from steering.models import PreferenceDimension, VectorSet, site_model_id

_lock = threading.RLock()


@dataclass
class _Site:
    loaded: LoadedModel
    hooks: SteeringHooks
    # (vector set id, file name) → vectors, least recently used first
    vectors: OrderedDict[tuple[int, str], SteeringVectors] = field(default_factory=OrderedDict)
    scheduler: Scheduler | None = None
    residual_norms: object | None = None  # torch.Tensor [layers], measured on first use


class VectorSetNotFound(Exception):
    """A generation names a vector set that no longer exists (deleted since it was chosen)."""


_sites: dict[tuple[str, str, str], _Site] = {}
_tokenizers: dict[str, ChatTokenizer] = {}  # by model name: worker mode's web process has no model
_load_errors: dict[tuple[str, str, str], str] = {}
_warming: threading.Thread | None = None
_warming_lock = threading.Lock()


def _key() -> tuple[str, str, str]:
    return (settings.STEERLAB_MODEL, settings.STEERLAB_DEVICE, settings.STEERLAB_DTYPE)


def site_system_prompt() -> str | None:
    """What frames every chat that brings no system turn (STEERLAB_SYSTEM_PROMPT); None: the
    chat template's own default."""
    return settings.STEERLAB_SYSTEM_PROMPT or None


def _framed(loaded: LoadedModel | ChatTokenizer) -> LoadedModel | ChatTokenizer:
    # Set on every access rather than at load: the setting is not part of the model's key (a
    # change of framing needs no reload), and tests change it.
    loaded.system_prompt = site_system_prompt()
    return loaded


def _site() -> _Site:
    key = _key()
    with _lock:
        site = _sites.get(key)
        if site is None:
            try:
                # The key's own name and device, not the settings read again: a thread that
                # waited on the lock would otherwise load whatever the settings say by now
                # (tests change them) and file it under the old key.
                loaded = load_model(key[0], device=key[1], dtype=key[2])
            except Exception as exc:
                _load_errors[key] = f"{exc.__class__.__name__}: {exc}"
                raise
            _load_errors.pop(key, None)
            site = _sites[key] = _Site(loaded, SteeringHooks(loaded.layers, range(loaded.num_layers)))
        _framed(site.loaded)
        return site


def site_model() -> LoadedModel:
    return _site().loaded


def site_hooks() -> SteeringHooks:
    return _site().hooks


def site_model_loaded() -> bool:
    return _key() in _sites


def runs_model() -> bool:
    """Whether this process runs the site model. Worker mode's web process does not: it sends
    generations to the inference workers, and needs only the tokenizer to make prompt ids."""
    return settings.STEERLAB_INFERENCE != "worker"


def site_tokenizer() -> LoadedModel | ChatTokenizer:
    """What a chat turn is tokenised with (`chat_ids`, `context_tokens`): the site model, where
    this process runs it (or has it loaded anyway); else the tokenizer alone, loaded once."""
    if runs_model() or site_model_loaded():
        return site_model()
    name = _key()[0]
    with _lock:
        tokenizer = _tokenizers.get(name)
        if tokenizer is None:
            try:
                tokenizer = _tokenizers[name] = load_chat_tokenizer(name)
            except Exception as exc:
                _load_errors[_key()] = f"{exc.__class__.__name__}: {exc}"
                raise
            _load_errors.pop(_key(), None)
        return _framed(tokenizer)


def _ready() -> bool:
    """Whether what this process needs of the model is loaded (all of it, or the tokenizer)."""
    return site_model_loaded() or (not runs_model() and _key()[0] in _tokenizers)


def warm_up() -> None:
    """Start loading the model (in worker mode's web process, its tokenizer) in a background
    thread (once), so a health probe or the first page view does not wait ~20 s for it."""
    global _warming
    # Not _lock: the loading thread holds that for the whole load, and a health probe that
    # waited on it would hang (holding Django's one thread for sync views) instead of
    # answering "loading".
    with _warming_lock:
        if _ready() or (_warming is not None and _warming.is_alive()):
            return
        _warming = threading.Thread(target=_warm, name="steerlab-model-load", daemon=True)
        _warming.start()


def _warm() -> None:
    try:
        if not runs_model():
            site_tokenizer()
            return
        _site()
        if settings.STEERLAB_ENGINE == "vllm":
            site_scheduler()  # vLLM's start-up takes a minute: here, not on the event loop of a first chat
    except Exception:  # recorded in _load_errors, reported by model_status()
        pass


def model_status() -> dict:
    site = _sites.get(_key())
    error = _load_errors.get(_key())
    if site is None and error is None:
        warm_up()
    return {
        "model_id": site_model_id(),
        "loaded": _ready(),
        "device": str(site.loaded.device) if site is not None else None,
        "dtype": str(site.loaded.dtype).removeprefix("torch.") if site is not None else None,
        "error": error,
    }


def site_vectors(vector_set) -> SteeringVectors:
    """The vectors of a ready `vector_set`, checked against the site model. A file that is
    missing, unreadable or does not fit the model marks the set unavailable (with the reason,
    for staff) and raises VectorSetUnavailable."""
    site = _site()
    key = (vector_set.pk, vector_set.file.name if vector_set.file else "")
    with _lock:
        cached = site.vectors.get(key)
        if cached is not None:
            site.vectors.move_to_end(key)
            return cached
    loaded = site.loaded
    try:
        if not vector_set.file or not vector_set.file.storage.exists(vector_set.file.name):
            reason = "its vector file is missing"
            raise VectorFileError(reason)
        reason = "its vector file is unreadable, corrupt or does not fit the model"
        vectors = files.vectors_load(vector_set.file)
        vectors.check_model(model_id=loaded.model_id, num_layers=loaded.num_layers, hidden_size=loaded.hidden_size)
    except VectorFileError as exc:
        detail = str(exc).replace(str(Path(settings.MEDIA_ROOT)), "<media>")
        vector_set.mark_unavailable(f"{reason} ({detail})")
        raise VectorSetUnavailable(
            f"Vector set {vector_set.pk} is unavailable: {reason}. An administrator must recompute or replace it."
        ) from exc
    _cache_put(site, key, vectors)
    return vectors


RESIDUAL_NORM_PROMPTS = 8


def site_residual_norms():
    """The mean residual-stream norm of each layer of the site model, measured once per
    process on shipped neutral prompts: what uploaded vectors are scaled to, so that their
    own claims about the model cannot make an addition larger."""
    site = _site()
    if site.residual_norms is None:
        # Outside the lock: chat requests resolving their vectors meanwhile must not wait.
        _, norms = record_activations(site.loaded, catalog.neutral_prompts()[:RESIDUAL_NORM_PROMPTS])
        with _lock:
            if site.residual_norms is None:
                site.residual_norms = norms
    return site.residual_norms


def _cache_put(site: _Site, key: tuple[int, str], vectors: SteeringVectors) -> None:
    limit = settings.STEERLAB_VECTOR_CACHE_BYTES
    with _lock:
        for old in [k for k in site.vectors if k[0] == key[0] and k != key]:
            del site.vectors[old]  # the set was recomputed: its old file's vectors are stale
        site.vectors[key] = vectors
        total = sum(v.nbytes for v in site.vectors.values())
        # The newest entry stays even alone over the limit: the request at hand needs it.
        while total > limit and len(site.vectors) > 1:
            _, evicted = site.vectors.popitem(last=False)
            total -= evicted.nbytes


def steered_request_for(
    vector_set_id: int | None, strengths: dict[str, float], prompt_ids: list[int], params: GenerationParams, *,
    generated_ids: Sequence[int] = (), vector_set: VectorSet | None = None, worded: WordedPrompt | None = None,
) -> GenerationRequest:
    """The generation `strengths` on vector set `vector_set_id` ask of the site model, built as
    the set serves it (engine.request.steered_request: its topical dimensions conditional, its
    joint budget, its prompt policy), resolved in one call so that the backends never query
    the database. No strengths, no steering (and no query). Raises VectorSetNotFound,
    VectorSetUnavailable, or LookupError/ValueError for an unknown dimension or a bad strength.
    `vector_set`: the row, when the caller has read it already. `worded`: the dimensions said in
    words where they apply (the turn's `WordedPrompt`)."""
    if not strengths:
        return GenerationRequest(prompt_ids=list(prompt_ids), params=params, generated_ids=list(generated_ids))
    if vector_set is None or vector_set.pk != vector_set_id:
        try:
            vector_set = VectorSet.objects.get(pk=vector_set_id)
        except VectorSet.DoesNotExist:
            raise VectorSetNotFound(f"Vector set {vector_set_id} no longer exists") from None
    topical = dict(
        vector_set.dimensions.filter(kind=PreferenceDimension.Kind.TOPICAL).values_list("name", "condition_threshold")
    )
    return steered_request(site_vectors(vector_set), prompt_ids, strengths, topical=topical, params=params,
                           generated_ids=generated_ids, worded=worded)


def readout_for(vector_set_id: int | None, *, vector_set: VectorSet | None = None) -> ReadoutProbe | None:
    """What a turn on this vector set reads (engine/readout.py), steered or not; None when the
    set has no readout ends (computed before the readout existed: recomputing it adds them)
    or cannot be read. A reading is an extra: it never stops an answer, so an unusable set
    gives None here and only a steered turn fails over it (in `steered_request_for`)."""
    if vector_set_id is None:
        return None
    try:
        if vector_set is None or vector_set.pk != vector_set_id:
            vector_set = VectorSet.objects.get(pk=vector_set_id)
        if vector_set.status != VectorSet.Status.READY:
            return None
        return site_vectors(vector_set).readout_probe
    except (VectorSet.DoesNotExist, VectorSetUnavailable):
        return None


def forget_vector_set(pk: int) -> None:
    """Drop a vector set's vectors from this process's cache (it was deleted or recomputed)."""
    with _lock:
        for site in _sites.values():
            for key in [k for k in site.vectors if k[0] == pk]:
                del site.vectors[key]


def _forget_deleted(sender, instance: VectorSet, **kwargs) -> None:
    # After commit: a rolled-back delete keeps its set, and so its cached vectors.
    pk = instance.pk
    transaction.on_commit(lambda: forget_vector_set(pk))


post_delete.connect(_forget_deleted, sender=VectorSet, dispatch_uid="steering.serving.runtime.forget_deleted")


def loaded_vector_sets() -> list[int]:
    site = _sites.get(_key())
    if site is None:
        return []
    with _lock:
        return sorted({pk for pk, _ in site.vectors})


def site_scheduler() -> Scheduler:
    """This process's inference scheduler for the site model, started on first use."""
    site = _site()
    with _lock:
        if site.scheduler is None and settings.STEERLAB_ENGINE == "vllm":
            from steering.serving.engines import vllm_scheduler

            site.scheduler = vllm_scheduler(site.loaded)  # same interface, vLLM's engine
        if site.scheduler is None:
            site.scheduler = Scheduler(
                site.loaded,
                site.hooks,
                max_batch=settings.STEERLAB_MAX_BATCH,
                max_queue=settings.STEERLAB_MAX_QUEUE,
                max_per_user=settings.STEERLAB_MAX_PER_USER,
                prefill_chunk=settings.STEERLAB_PREFILL_CHUNK or None,
            )
        return site.scheduler


def _forget_in_child() -> None:
    # A forked child (a live test server, a task worker) inherits the parent's sites, but not
    # the scheduler's thread: it must load and schedule for itself.
    global _warming
    _sites.clear()
    _tokenizers.clear()
    _load_errors.clear()
    _warming = None


os.register_at_fork(after_in_child=_forget_in_child)


@atexit.register
def _close_schedulers() -> None:
    # Stop the decode threads before the interpreter tears down: a daemon thread killed in
    # the middle of a torch call aborts the process ("terminate called without an active
    # exception") and turns a clean exit into a crash.
    for site in list(_sites.values()):
        if site.scheduler is not None:
            site.scheduler.close(timeout=10)


def inference_queue_depth() -> dict[str, int]:
    """Waiting and running generations in this process's scheduler (nothing before it starts)."""
    site = _sites.get(_key())
    if site is None or site.scheduler is None:
        return {}
    stats = site.scheduler.stats()
    return {"waiting": stats.waiting, "active": stats.active_rows}


def site_generate(requests: Sequence[GenerationRequest]) -> list[str]:
    """Generate `requests` to completion on the scheduler and return their texts (admin
    previews): they share batches with chat instead of running the model beside it."""
    return [ticket.text for ticket in site_scheduler().complete(requests)]
