"""The OpenAI chat-completions protocol, as plain data: parsing a request body into a
`CompletionRequest` (or an `OpenAIError` naming the bad parameter), and the shapes of
`chat.completion`, `chat.completion.chunk`, `/v1/models` and error bodies.

No database and no model here: the door (`steering.chat.openai.views`) resolves the
request and runs it as a chat turn. Parameters OpenAI defines that SteerLab cannot honour
(tools, logprobs, n > 1, …) are refused with a 400 naming them, never silently ignored;
tuning knobs that only shade sampling (presence and frequency penalties, logit bias at its
default) are accepted and ignored, as many OpenAI-compatible servers do, so stock clients work.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field

from steering.engine.request import LIMITS, MAX_DIMENSIONS, strength_check

MODEL_PREFIX = "steerlab/"
ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4
# Nesting a request body may have: a chat request needs 5 (body, messages, message, content
# parts, part). Deeper bodies are refused before any recursive walk of them.
MAX_JSON_DEPTH = 16

# Fields a request may carry that would change the answer's shape or meaning: refused rather
# than dropped, so a client relying on one learns at once that it is unsupported.
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "audio", "modalities", "prediction")


class OpenAIError(Exception):
    """An error in OpenAI's shape: {"error": {message, type, param, code}} with `status`."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.retry_after = retry_after

    @property
    def type(self) -> str:
        return self.TYPES.get(self.status, "server_error")

    def body(self) -> dict:
        return error_body(self.message, type_=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def load_body(raw: bytes):
    """A request body's JSON. Raises OpenAIError (400) for anything that is not JSON, nested
    deeper than MAX_JSON_DEPTH included: the decoder recurses per level, and a body of a few
    thousand brackets would otherwise end in a RecursionError (a 500)."""
    try:
        body = json.loads(raw or b"null")
    except RecursionError:
        body = None
        too_deep = True
    except (ValueError, UnicodeDecodeError):
        raise OpenAIError("The body is not valid JSON", code="invalid_json") from None
    else:
        too_deep = _deeper_than(body, MAX_JSON_DEPTH)
    if too_deep:
        raise OpenAIError(f"The body nests JSON deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    return body


def _deeper_than(value, limit: int) -> bool:
    """Whether `value` nests lists and objects more than `limit` deep (without recursing)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


@dataclass
class CompletionRequest:
    """A validated /v1/chat/completions body. `history` is every message before the last
    user turn, `prompt` that turn; `params` are GenerationParams keywords."""

    model: str
    prompt: str
    history: list[dict]
    params: dict
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    preferences: dict[str, float] = field(default_factory=dict)
    vector_set_id: int | None = None
    user: str = ""


def _number(body: dict, name: str, limit: str | None = None) -> float | None:
    """The number `body[name]` within the engine's `LIMITS[limit or name]`, or None if absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OpenAIError(f"{name} must be a number", param=name, code="invalid_type")
    problem = LIMITS[limit or name].problem(name, value)
    if problem:
        raise OpenAIError(problem, param=name, code="invalid_value")
    return float(value)


def _integer(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIError(f"{name} must be an integer", param=name, code="invalid_type")
    if not low <= value <= high:
        raise OpenAIError(f"{name} must be in {low}…{high}, not {value}", param=name, code="invalid_value")
    return value


def _content(message: dict, index: int) -> str:
    """A message's text: a string, or a list of text parts (what newer SDKs send)."""
    content = message.get("content")
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(
                    "Only text content parts are supported", param=f"messages[{index}].content", code="unsupported_content"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise OpenAIError("content must be a string or a list of text parts", param=f"messages[{index}].content",
                      code="invalid_type")


def _has_nul(value) -> str | None:
    """The key under which `value` holds a NUL character, if any ("" for the value itself)."""
    if isinstance(value, str):
        return "" if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return str(key)
        found = _has_nul(item)
        if found is not None:
            return f"{key}.{found}".rstrip(".") if isinstance(key, str) else f"[{key}]{found}"
    return None


def parse_request(
    body, *, max_prompt_chars: int, max_messages: int, max_new_tokens: int, default_new_tokens: int
) -> CompletionRequest:
    """Validate a decoded JSON body (from load_body, which bounds its depth). Raises OpenAIError
    (400) naming the first bad parameter."""
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object", code="invalid_body")
    # PostgreSQL refuses NUL in text: refused here, rather than failing when the turn is logged.
    for name, value in body.items():
        found = _has_nul({name: value})
        if found is not None:
            raise OpenAIError("Text may not contain NUL characters", param=found or name, code="invalid_value")
    for name in UNSUPPORTED:
        if body.get(name):
            raise OpenAIError(f"{name} is not supported by this server", param=name, code="unsupported_parameter")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise OpenAIError("logprobs are not supported by this server", param="logprobs", code="unsupported_parameter")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise OpenAIError("Only response_format {\"type\": \"text\"} is supported", param="response_format",
                          code="unsupported_parameter")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError("model is required: the served model or a steerlab/<vector set> entry of /v1/models",
                          param="model", code="missing_required_parameter")

    n = _integer(body, "n", 1, 128)
    if n not in (None, 1):
        raise OpenAIError("Only n=1 is supported: send one request per choice", param="n", code="unsupported_value")

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError("messages must be a non-empty list", param="messages", code="missing_required_parameter")
    if len(messages) > max_messages:
        # Counted before any message is read: empty messages cost nothing in characters but a
        # render each when the list is fitted to the context.
        raise OpenAIError(f"messages holds {len(messages)} messages; this server takes at most {max_messages}",
                          param="messages", code="array_above_max_length")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise OpenAIError(f"Each message needs a role among {', '.join(ROLES)}", param=f"messages[{index}].role",
                              code="invalid_value")
        role = "system" if message["role"] == "developer" else message["role"]
        turns.append({"role": role, "content": _content(message, index)})
    if turns[-1]["role"] != "user":
        raise OpenAIError("The last message must be the user's", param="messages", code="invalid_value")
    if sum(len(t["content"]) for t in turns) > max_prompt_chars:
        raise OpenAIError(f"The messages exceed {max_prompt_chars} characters", param="messages",
                          code="context_length_exceeded")
    prompt = turns[-1]["content"]
    if not prompt.strip():
        raise OpenAIError("The last user message is empty", param="messages", code="invalid_value")

    max_tokens = _integer(body, "max_tokens", 1, max_new_tokens)
    max_completion = _integer(body, "max_completion_tokens", 1, max_new_tokens)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise OpenAIError("Give max_completion_tokens or max_tokens, not two different values",
                          param="max_completion_tokens", code="invalid_value")
    params = {"max_new_tokens": max_completion or max_tokens or default_new_tokens}
    # OpenAI's default temperature and top_p are 1; temperature 0 is greedy decoding here.
    temperature = _number(body, "temperature")
    params["temperature"] = 1.0 if temperature is None else temperature
    top_p = _number(body, "top_p")
    if top_p is not None:
        params["top_p"] = top_p
    seed = _integer(body, "seed", int(LIMITS["seed"].low), int(LIMITS["seed"].high))
    if seed is not None:
        params["seed"] = seed

    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise OpenAIError("stop must be a string or a list of strings", param="stop", code="invalid_type")
    if len(stops) > MAX_STOP_SEQUENCES or any(not s for s in stops):
        raise OpenAIError(f"stop takes at most {MAX_STOP_SEQUENCES} non-empty strings", param="stop",
                          code="invalid_value")

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise OpenAIError("stream must be a boolean", param="stream", code="invalid_type")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise OpenAIError("stream_options is only allowed with stream: true", param="stream_options",
                              code="invalid_value")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise OpenAIError("stream_options must be {\"include_usage\": bool}", param="stream_options",
                              code="invalid_type")
        include_usage = options.get("include_usage", False)

    user = body.get("user") or ""
    if not isinstance(user, str) or len(user) > 100:
        raise OpenAIError("user must be a string of at most 100 characters", param="user", code="invalid_value")

    preferences, vector_set_id = parse_steering(body.get("steering"))
    return CompletionRequest(
        model=model, prompt=prompt, history=turns[:-1], params=params, stream=stream, include_usage=include_usage,
        stop=stops, preferences=preferences, vector_set_id=vector_set_id, user=user,
    )


def parse_steering(steering) -> tuple[dict[str, float], int | None]:
    """The `steering` extension: {"preferences": {dimension: −1…1}, "vector_set": id}."""
    if steering is None:
        return {}, None
    if not isinstance(steering, dict):
        raise OpenAIError("steering must be an object {preferences, vector_set}", param="steering", code="invalid_type")
    unknown = sorted(set(steering) - {"preferences", "vector_set"})
    if unknown:
        raise OpenAIError(f"Unknown steering field(s): {', '.join(unknown)}", param="steering", code="invalid_value")
    vector_set_id = steering.get("vector_set")
    if vector_set_id is not None and (isinstance(vector_set_id, bool) or not isinstance(vector_set_id, int)):
        raise OpenAIError("steering.vector_set must be a vector set id (an integer)", param="steering.vector_set",
                          code="invalid_type")
    preferences = steering.get("preferences") or {}
    if not isinstance(preferences, dict) or len(preferences) > MAX_DIMENSIONS:
        raise OpenAIError(f"steering.preferences must be an object of at most {MAX_DIMENSIONS} dimension: strength pairs",
                          param="steering.preferences", code="invalid_type")
    clean = {}
    for name, value in preferences.items():
        try:
            clean[str(name)] = strength_check(value)
        except ValueError:
            raise OpenAIError(f"steering.preferences.{name} must be a number in −1…1", param=f"steering.preferences.{name}",
                              code="invalid_value") from None
    return clean, vector_set_id


# -- response shapes ------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(*, id_: str, model: str, created: int, text: str, finish_reason: str, usage_: dict, steering: dict,
               readout: dict | None = None) -> dict:
    """`steering` and `readout` (how the answer read per dimension) are our extension fields."""
    return {
        "id": id_, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_,
        "steering": steering,
        "readout": readout,
    }


def chunk(*, id_: str, model: str, created: int, delta: dict | None, finish_reason: str | None = None,
          usage_: dict | None = None, steering: dict | None = None, readout: dict | None = None) -> dict:
    """One chat.completion.chunk; `delta` None gives the usage chunk's empty choices."""
    body = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish_reason}]}
    if usage_ is not None:
        body["usage"] = usage_
    if steering is not None:
        body["steering"] = steering
    if readout is not None:  # the last chunk's, once the answer is whole
        body["readout"] = readout
    return body


def model_entry(model_id: str, *, created: int, owned_by: str = "steerlab", **extra) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, **extra}


def now() -> int:
    return int(time.time())


class StopScanner:
    """Cuts a streamed text at the first of the stop sequences. `push(piece)` returns the text
    that is safe to send (a tail that could still begin a stop sequence is held back) and
    whether a stop sequence was reached; `flush()` releases what was held at the end."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.text = ""  # everything accepted so far, up to a stop sequence
        self._sent = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        if not self.stops:
            return self._release(len(self.text))
        hits = [i for i in (self.text.find(s, max(0, self._sent - len(s))) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._release(len(self.text))
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        return self._release(len(self.text) - hold)

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        upto = max(upto, self._sent)
        out, self._sent = self.text[self._sent : upto], upto
        return out
