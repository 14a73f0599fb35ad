"""`VllmScheduler`: the inference service's scheduler interface over vLLM's V1 `LLMEngine`.

It takes the same `GenerationRequest`s as `steering.inference.scheduler.Scheduler` and hands
back the same `Ticket`s with the same `TokenEvent`s, refusals (`Busy`, `TooManyForUser`,
`SchedulerClosed`, ValueError) and `stats()`, so the local backend, the Redis worker and the
metrics work unchanged whichever engine generates.

One background thread owns the engine (its engine core in this process; the model runs here,
or with `tensor_parallel` > 1 in one vLLM worker process per rank) and loops: admit waiting
requests, abort cancelled ones, run calls to the workers, `engine.step()`, publish.

- Admission: a steered request takes a row of the steering table first; with every row taken
  it stays in our queue, FIFO, until one frees. It never goes to vLLM without its row, so it
  never runs unsteered. The row and the deltas travel to every rank's runner in
  `SamplingParams.extra_args`, with, for a request that steers only its answer
  (`steer_prompt` False), its first steered position: its last prompt position (a resumed
  answer's tokens come after it, steered as when they were generated).
- Prefix caching: a steered request's prompt carries a `cache_salt` made from its deltas (and
  an answer-only request's first steered position), so keys and values computed under one
  steering never serve another (the same steering shares).
- Text: vLLM does not detokenize; the builtin engine's `Detokenizer` makes the same text.
- A request that leaves (end of turn, length, cancel, error) gives its row back at once.

Differences from the builtin engine (docs/vllm.md): `no_repeat_ngram_size` is not applied,
`repetition_penalty` is vLLM's (over prompt and answer), and seeded sampling draws from vLLM's
generator, so sampled texts differ between the engines; greedy texts agree.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Hashable

from steering.engine import GenerationRequest, TokenEvent
from steering.engine.tokens import Detokenizer
from steering.inference.admission import Admission, Ticket

from .model_runner import CONFIG_KEY, DELTAS_ARG, ROW_ARG, STEERED_FROM_ARG, worker_class_name
from .steering_table import SteeringRows, TableFull, pack_deltas, steering_salt

log = logging.getLogger(__name__)


def configure_environment(threads: int | None = None) -> None:
    """vLLM's settings that this integration relies on, set before vLLM reads them (vLLM's
    worker processes inherit them)."""
    # The engine core in this process, stepped by the scheduler's thread (the tests reach its
    # scheduler); the steering itself travels with each request and works wherever the runner is.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # The V1 runner: the hook's touch points (`_update_states`, `_model_forward`) are its methods.
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per rank; the embedded model needs little
    # In-process vLLM sets torch to one thread unless told otherwise (10.8 vs ~68 tok/s on 2 cores).
    # VLLM_CPU_OMP_THREADS_BIND is left to vLLM: only its worker processes (tensor parallelism)
    # read it, one core list per rank (docs/vllm.md).
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or os.cpu_count() or 1))


class _Live:
    """One request inside vLLM."""

    def __init__(self, ticket: Ticket, request_id: str, row: int, detok: Detokenizer, budget: int) -> None:
        self.ticket = ticket
        self.request_id = request_id
        self.row = row
        self.detok = detok
        self.budget = budget  # tokens this engine may still generate (resumed streams: fewer)


class VllmScheduler(Admission):
    """See the module docstring. `loaded` is the site's builtin model (tokenizer, stop ids,
    shapes); `model_path` the safetensors directory vLLM loads (the same weights);
    `tensor_parallel`: vLLM's `tensor_parallel_size` (ranks in worker processes of their own)."""

    def __init__(
        self,
        loaded,
        model_path: str | Path,
        *,
        max_batch: int = 8,
        max_queue: int = 32,
        max_per_user: int | None = 2,
        steered_rows: int = 16,
        eager: bool = True,
        dtype: str = "float32",
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        tensor_parallel: int = 1,
        name: str = "steerlab-vllm",
        load_format: str = "auto",
    ) -> None:
        self._admission_init(max_batch=max_batch, max_queue=max_queue, max_per_user=max_per_user)
        configure_environment()
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        self.loaded = loaded
        args = EngineArgs(
            model=str(model_path),
            dtype=dtype,
            enforce_eager=eager,
            max_num_seqs=max_batch,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            seed=0,
            disable_log_stats=True,
            generation_config="vllm",  # every sampling setting comes from the request, none from the model
            tensor_parallel_size=tensor_parallel,
            # Every rank's worker is ours (the hook installed when its model loads), told its rows.
            worker_cls=worker_class_name(),
            additional_config={CONFIG_KEY: {"rows": steered_rows}},
            # "dummy": random weights of the directory's config, for benchmarks of model shapes
            # nobody can download here (bench/vllm_gpu.py).
            load_format=load_format,
        )
        self.engine = LLMEngine.from_engine_args(args)
        self.table = SteeringRows(num_layers=loaded.num_layers, hidden_size=loaded.hidden_size, rows=steered_rows)
        self._live: dict[str, _Live] = {}  # vLLM request id → request, touched under the lock
        # Taken from the queue but not yet in _live (vLLM's add_request runs outside the lock):
        # still counted, or a user's second request slips past max_per_user in between.
        self._admitting: list[Ticket] = []
        self._calls: deque[tuple[str, Future]] = deque()  # collective_rpc calls for the thread
        self._start_thread(name)
        try:
            states = self.runner_state(timeout=300)
        except Exception:
            self.close()
            raise
        if len(states) != tensor_parallel:  # each rank's worker answered: each has its hook
            self.close()
            raise RuntimeError(f"{len(states)} of vLLM's {tensor_parallel} ranks have SteerLab's steering hook")

    # -- the callers' side (as Scheduler) ---------------------------------------------------

    def submit(self, request: GenerationRequest, *, user: Hashable | None = None, logprobs: int | None = None) -> Ticket:
        """As `Scheduler.submit`. With `logprobs=k` the ticket also gets `logprobs`: per
        generated token, the k most likely tokens' log-probabilities from the raw logits
        (the tests compare them with the builtin engine's). Every ticket gets
        `cached_tokens`: how many prompt tokens vLLM's prefix cache served.

        Conditional steering is not decided here (vLLM's batches are not ours to read during
        the prefill): a request's topical dimensions steer it always, as before conditions,
        and its decision stays None; so are the words of its worded dimensions (GenerationRequest.apply_words)."""
        if request.conditions is not None:
            request.steering = request.conditions.total(request.steering, request.conditions.all_deltas())
            request.conditions = None
        request.apply_words(self.loaded)
        with self._lock:  # reentrant: the thread sees the ticket only once it is complete
            ticket = self._enqueue(request, user, self._cancel)
            ticket.want_logprobs, ticket.logprobs, ticket.cached_tokens = logprobs, [], None
        return ticket

    def runner_state(self, timeout: float | None = 60) -> list[dict]:
        """Each rank's steering hook, as its worker reports it (`SteeringWorkerMixin.steerlab_state`):
        passes run, steered passes, requests bound, rows holding a vector. Asked between two
        steps by the engine's thread, the only one that may talk to vLLM's workers."""
        future: Future = Future()
        with self._lock:
            if self._closing or not self._thread.is_alive():
                raise RuntimeError("The vLLM scheduler is closed")
            self._calls.append(("steerlab_state", future))
            self._lock.notify_all()
        return future.result(timeout)

    def _running_tickets(self) -> list[Ticket]:
        return [live.ticket for live in self._live.values() if live is not None] + self._admitting

    def _cancel(self, ticket: Ticket) -> None:
        with self._lock:
            try:
                self._waiting.remove(ticket)
            except ValueError:
                self._lock.notify_all()  # running: the thread aborts it before its next step
                return
        ticket.push(TokenEvent(ticket.key, "", None, "cancelled"))

    # -- the engine's thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closing and not self._live and not self._admissible() and not self._calls:
                        self._lock.wait(0.5)
                    if self._closing:
                        return
                    admitted = self._admit()
                    calls = list(self._calls)
                    self._calls.clear()
                for ticket, row in admitted:
                    self._add(ticket, row)
                self._abort_cancelled()
                for method, future in calls:
                    try:
                        future.set_result(self.engine.collective_rpc(method))
                    except Exception as exc:
                        future.set_exception(exc)
                if not self._live:
                    continue
                started = time.perf_counter()
                try:
                    outputs = self.engine.step()
                except Exception as exc:
                    self._fail_all(exc)
                    continue
                elapsed = time.perf_counter() - started
                self._counts["steps"] += 1
                self._step_seconds = elapsed if self._counts["steps"] == 1 else 0.9 * self._step_seconds + 0.1 * elapsed
                self._publish(outputs)
        except Exception:
            log.exception("The vLLM scheduler's thread died")
        finally:
            self._shut_down()

    def _admissible(self) -> bool:
        if not self._waiting or len(self._live) >= self.max_batch:
            return False
        head = self._waiting[0]
        return not head.request.steering or self.table.free_rows > 0

    def _admit(self) -> list[tuple[Ticket, int]]:
        """Waiting requests that can start now, with their steering rows (under the lock).
        FIFO: a steered request at the head that finds no free row holds the others back
        too, so it cannot be overtaken for ever."""
        admitted = []
        while self._waiting and len(self._live) + len(admitted) < self.max_batch:
            ticket = self._waiting[0]
            row = 0
            if ticket.request.steering:
                try:
                    row = self.table.allocate(ticket.request.steering)
                except TableFull:
                    break
                except ValueError as exc:
                    self._waiting.popleft()
                    ticket.push(TokenEvent(ticket.key, "", None, "error", error=str(exc), fault="request"))
                    continue
            self._waiting.popleft()
            self._admitting.append(ticket)
            admitted.append((ticket, row))
        return admitted

    def _add(self, ticket: Ticket, row: int) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        request = ticket.request
        params = request.params
        request_id = f"steerlab-{ticket.key}"
        budget = params.max_new_tokens - len(request.generated_ids)
        detok = Detokenizer(self.loaded.tokenizer)
        for token in request.generated_ids:
            detok.push(token)
        # Answer-only: the prompt is read unsteered but for its last position (whose output is
        # the first answer token), as the builtin engine's DecodeBatch._prompt_columns.
        steered_from = 0 if request.steer_prompt or not row else len(request.prompt_ids) - 1
        extra = {ROW_ARG: row, DELTAS_ARG: pack_deltas(request.steering),
                 **({STEERED_FROM_ARG: steered_from} if steered_from else {})}
        try:
            sampling = SamplingParams(
                max_tokens=max(1, budget),
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                seed=params.seed,
                repetition_penalty=params.repetition_penalty,
                stop_token_ids=sorted(self.loaded.stop_ids),
                ignore_eos=False,
                detokenize=False,
                output_kind=RequestOutputKind.DELTA,
                extra_args=extra if row else None,
                logprobs=ticket.want_logprobs,
            )
            prompt = TokensPrompt(prompt_token_ids=list(request.prompt_ids) + list(request.generated_ids))
            salt = steering_salt(request.steering, steered_from)
            if salt is not None:
                prompt["cache_salt"] = salt
            self.engine.add_request(request_id, prompt, sampling)
        except Exception as exc:
            self.table.free(row)
            with self._lock:
                self._live.pop(request_id, None)
                self._admitting.remove(ticket)
            fault = "request" if isinstance(exc, ValueError) else "server"
            ticket.push(TokenEvent(ticket.key, "", None, "error", error=f"{type(exc).__name__}: {exc}", fault=fault))
            return
        with self._lock:
            self._live[request_id] = _Live(ticket, request_id, row, detok, budget)
            self._admitting.remove(ticket)
        self._counts["prefills"] += 1

    def _abort_cancelled(self) -> None:
        with self._lock:
            gone = [live for live in self._live.values() if live is not None and live.ticket.request.cancel.is_set()]
        if not gone:
            return
        self.engine.abort_request([live.request_id for live in gone])
        for live in gone:
            self._leave(live, TokenEvent(live.ticket.key, live.detok.flush(), None, "cancelled"))

    def _leave(self, live: _Live, event: TokenEvent) -> None:
        with self._lock:
            self._live.pop(live.request_id, None)
            self._lock.notify_all()
        self.table.free(live.row)
        live.ticket.push(event)

    def _publish(self, outputs) -> None:
        stop_ids = self.loaded.stop_ids
        for output in outputs:
            live = self._live.get(output.request_id)
            if live is None:
                continue  # aborted meanwhile
            completion = output.outputs[0]
            key = live.ticket.key
            if live.ticket.cached_tokens is None:
                live.ticket.cached_tokens = output.num_cached_tokens
            if completion.logprobs:
                live.ticket.logprobs += [{t: lp.logprob for t, lp in step.items()} for step in completion.logprobs]
            tokens = list(completion.token_ids)
            self._counts["tokens_total"] += len(tokens)
            for position, token in enumerate(tokens):
                last = output.finished and position == len(tokens) - 1
                if token in stop_ids:
                    self._leave(live, TokenEvent(key, live.detok.flush(), token, "stop"))
                    break
                text = live.detok.push(token)
                if last or len(live.detok.ids) >= live.ticket.request.params.max_new_tokens:
                    self._leave(live, TokenEvent(key, text + live.detok.flush(), token, "length"))
                    break
                live.ticket.push(TokenEvent(key, text, token))
            else:
                if output.finished and live.request_id in self._live:
                    # Finished without a new token (an abort from inside vLLM): say so.
                    reason = completion.finish_reason or "error"
                    finish = reason if reason in ("stop", "length") else "error"
                    self._leave(live, TokenEvent(key, live.detok.flush(), None, finish,
                                                 error=None if finish != "error" else f"vLLM ended it: {reason}",
                                                 fault="server" if finish == "error" else None))

    def _fail_all(self, exc: BaseException) -> None:
        log.error("A vLLM step failed", exc_info=exc)
        with self._lock:
            live = [l for l in self._live.values() if l is not None]
            self._counts["errors"] += len(live)
        if live:
            try:
                self.engine.abort_request([l.request_id for l in live])
            except Exception:
                log.exception("Aborting the failed requests failed too")
        for l in live:
            self._leave(l, TokenEvent(l.ticket.key, "", None, "error",
                                      error=f"Generation failed: {type(exc).__name__}: {exc}", fault="server"))

    def _shut_down(self) -> None:
        with self._lock:
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
            live = [l for l in self._live.values() if l is not None]
        message = "The inference service shut down before this generation ended"
        if live:
            try:
                self.engine.abort_request([l.request_id for l in live])
            except Exception:
                pass
        for l in live:
            self._leave(l, TokenEvent(l.ticket.key, "", None, "error", error=message, fault="server"))
        for ticket in waiting:
            ticket.push(TokenEvent(ticket.key, "", None, "error", error=message, fault="server"))
        for _, future in self._calls:
            future.set_exception(RuntimeError(message))
        self._calls.clear()
        try:
            # Ends vLLM's worker processes (tensor parallelism) now rather than at exit.
            self.engine.engine_core.shutdown()
        except Exception:
            log.exception("Shutting vLLM's engine down failed")
