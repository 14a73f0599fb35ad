"""Oversized request bodies are refused with 413 before anything buffers them, on every URL
and for anonymous clients alike. STEERLAB_MAX_BODY_BYTES caps every body; a URL that takes one
file with a smaller cap of its own (the GGUF imports: STEERLAB_GGUF_MAX_BYTES) is capped at that
file's size plus a form's overhead, one table in settings (STEERLAB_UPLOAD_LIMITS_BY_URL). Under
/v1/ the refusal is an OpenAI-shaped error, which OpenAI's clients can read; under /api/ it is
DRF's `{"detail": …}`.

Two layers, because daphne itself buffers:
- `BodyLimit`, an ASGI middleware in front of the whole application: a declared
  Content-Length over the cap is answered 413 before the application runs, and a body without
  one (chunked) is counted as it streams in and answered 413 the moment it passes the cap,
  without handing the application a byte more. This holds under any ASGI server.
- daphne (Twisted) writes the whole body to a temporary file before it starts the
  application, and then queues all of it in memory at once: a 1 GiB body cost 1 GiB of RSS
  before any middleware could see it, and an 8 MB GGUF upload, refused by its view, grew the
  server by up to 61 MiB. `install_in_daphne` swaps daphne's request class for one that applies
  the same caps while the body arrives (on the Content-Length header, or on the bytes counted
  so far), stops storing the body, and never starts the application for a refused request: a
  refused body cannot reach it truncated to the cap. Installing checks that the swap took
  effect by sending requests through Twisted's own HTTP channel, and raises if it did not.

A URL's cap applies to every path that ends with it: daphne lets a client name a root path
(its `Daphne-Root-Path` header), and Django resolves what follows it, so `/x/api/…` with a root
path of `/x` reaches the same view as `/api/…`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

log = logging.getLogger(__name__)

# What a multipart form adds around its one file: boundaries, part headers, the short fields.
FORM_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class Cap:
    body: int  # bytes a request body may hold
    file: int | None = None  # on an upload URL: the file's own cap, which the message names

    def message(self) -> str:
        if self.file is None:
            return f"Request bodies are limited to {self.body} bytes."
        return (f"Files sent to this URL are limited to {self.file} bytes "
                f"(the request body, form included, to {self.body} bytes).")


class Limits:
    """Each request's cap: `general`, or on a path ending with a key of `uploads` that file cap
    plus `form_overhead` (never more than `general`)."""

    def __init__(self, general: int, uploads: Mapping[str, int] | None = None, *,
                 form_overhead: int = FORM_OVERHEAD) -> None:
        self.general = Cap(general)
        self.uploads = {path: Cap(min(file + form_overhead, general), file) for path, file in (uploads or {}).items()}

    def cap(self, path: str) -> Cap:
        for suffix, cap in self.uploads.items():
            if path.endswith(suffix):
                return cap
        return self.general


def site_uploads() -> dict[str, int]:
    """STEERLAB_UPLOAD_LIMITS_BY_URL (URL name → file cap) as path → file cap."""
    from django.conf import settings
    from django.urls import reverse

    return {reverse(name): limit for name, limit in settings.STEERLAB_UPLOAD_LIMITS_BY_URL.items()}


def refusal(cap: Cap, path: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 413's headers and body for a request to `path`."""
    message = cap.message()
    if path.startswith("/v1/"):
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "request_too_large"}}).encode()
        kind = b"application/json"
    elif path.startswith("/api/"):
        body, kind = json.dumps({"detail": message}).encode(), b"application/json"
    else:
        body, kind = f"{message}\n".encode(), b"text/plain; charset=utf-8"
    return [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"connection", b"close")], body


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for HTTP request bodies over `limit` bytes, or over an upload
    path's cap (`uploads`: path → file bytes), websockets pass."""

    def __init__(self, app, *, limit: int, uploads: Mapping[str, int] | None = None) -> None:
        self.app, self.limit, self.limits = app, limit, Limits(limit, uploads)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.limits.cap(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > cap.body:
            return await self.refuse(cap, scope, send)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap.body:
                    # The application is reading the body (Django spools it before the view
                    # runs): stop it here, before it holds a byte over the cap.
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(cap, scope, send)

    async def refuse(self, cap: Cap, scope, send) -> None:
        headers, body = refusal(cap, scope.get("path", ""))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install_in_daphne(limit: int, uploads: Mapping[str, int] | None = None) -> bool:
    """Make daphne refuse bodies over `limit`, or over an upload path's cap (`uploads`: path →
    file bytes, as BodyLimit), while they arrive. False when daphne is not importable (another
    ASGI server: BodyLimit alone then applies); RuntimeError when the installed daphne or
    Twisted does not take the patch (a version whose hooks moved)."""
    try:
        from daphne import http_protocol
    except ImportError:
        return False
    from twisted.web import http

    base = getattr(http_protocol.WebRequest, "_steerlab_base", http_protocol.WebRequest)

    class LimitedWebRequest(base):
        _steerlab_base = base
        _steerlab_limits = Limits(limit, uploads)
        _steerlab_cap: Cap | None = None  # this request's, known once its headers are in
        _steerlab_refused = False
        _steerlab_answered = False
        _steerlab_dropped = 0

        # Twisted parses every POST's multipart or urlencoded body into `args`, in memory and
        # with the email parser, before daphne runs; daphne never reads `args` (the
        # application parses the body itself). Twisted's __init__ sets this: it stays off.
        @property
        def _parsePOSTFormSubmission(self):
            return False

        @_parsePOSTFormSubmission.setter
        def _parsePOSTFormSubmission(self, value):
            pass

        # Twisted's channel calls these three on the request: gotLength once the headers are
        # in, handleContentChunk per piece of body, requestReceived when the body is complete
        # (which calls process, where daphne starts the application).
        def gotLength(self, length):
            super().gotLength(length)
            limits = self._steerlab_limits
            self._steerlab_cap = limits.cap(self._steerlab_path())
            if length is not None and length > self._steerlab_cap.body:
                # A client waiting for "100 Continue" has sent no body: it gets the 413 instead
                # (the channel sends the 100 after this call, unless the header is gone).
                waiting = bool(self.requestHeaders.getRawHeaders(b"expect"))
                self.requestHeaders.removeHeader(b"expect")
                self._steerlab_refuse()
                if waiting or length > limits.general.body:
                    self._steerlab_close()

        def handleContentChunk(self, data):
            general = self._steerlab_limits.general.body
            if self._steerlab_refused:
                # Dropped, not stored. Up to the general cap the client may send the rest, so
                # that it reads the 413 (a connection closed on unread data is reset, and the
                # client's copy of the answer with it); past that cap it is cut off.
                self._steerlab_dropped += len(data)
                if self._steerlab_dropped > general:
                    self._steerlab_close()
                return
            cap = self._steerlab_cap or self._steerlab_limits.general
            if self.content.tell() + len(data) > cap.body:
                self._steerlab_dropped = self.content.tell() + len(data)
                self._steerlab_refuse()
                if self._steerlab_dropped > general:
                    self._steerlab_close()
                return
            super().handleContentChunk(data)

        def process(self):
            if not self._steerlab_refused:
                return self._steerlab_dispatch()
            # The rest of a refused body can arrive in the same read as the refusal (a
            # chunked body's end, say), and the channel then completes the request: what was
            # stored is a truncated body, which no application may see.
            if not self._steerlab_answered:
                self._steerlab_answer()
            else:
                self._steerlab_close()  # answered when refused; the body is over

        def _steerlab_dispatch(self):
            return super().process()

        def _steerlab_path(self) -> str:
            """The path as daphne hands it to the application (HTTP/1.x; '' elsewhere)."""
            uri = getattr(self.channel, "_path", b"") or b""
            return unquote(uri.split(b"?", 1)[0].decode("latin-1"))

        def _steerlab_refuse(self):
            self._steerlab_refused = True
            cap = self._steerlab_cap or self._steerlab_limits.general
            self._steerlab_note(cap)
            if isinstance(self.channel, http.HTTPChannel):
                # HTTP/1.x: answered now, while the client may still be sending. Written to
                # the socket directly, because Twisted's response machinery needs the request
                # line, which it hands the request only once the body is complete.
                headers, body = refusal(cap, self._steerlab_path())
                self.channel.transport.write(
                    b"HTTP/1.1 413 Payload Too Large\r\n"
                    + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
                )
                self._steerlab_answered = True
            # Any other channel (an HTTP/2 stream) is answered through daphne's own response
            # path in process(), which frames it for that protocol; the body is not stored.

        def _steerlab_close(self):
            if isinstance(self.channel, http.HTTPChannel):
                self.channel.transport.loseConnection()

        def _steerlab_note(self, cap: Cap):
            log.warning("Refused a request body over %d bytes from %s", cap.body, self.client)

        def _steerlab_answer(self):
            self._steerlab_answered = True
            headers, body = refusal(self._steerlab_cap or self._steerlab_limits.general, self.path.decode("latin-1"))
            self.handle_reply({"type": "http.response.start", "status": 413, "headers": headers})
            self.handle_reply({"type": "http.response.body", "body": body})

    # daphne's HTTPFactory.buildProtocol reads this module global for every connection.
    http_protocol.WebRequest = LimitedWebRequest
    _check_daphne_patch(http_protocol, LimitedWebRequest)
    return True


def _check_daphne_patch(http_protocol, request_class) -> None:
    """Raise RuntimeError unless daphne builds its requests from `request_class` and Twisted's
    HTTP/1.1 channel drives it the way the caps rely on: a chunked body and a declared length
    over the general cap, and a declared length over an upload path's cap (sent whole, as a
    client that has not read the answer yet does), are refused and never reach the
    application; bodies within the caps reach it whole, their forms unparsed by Twisted."""
    from twisted.internet.testing import StringTransport
    from twisted.web import http

    if http_protocol.HTTPFactory.buildProtocol.__globals__.get("WebRequest") is not request_class:
        raise RuntimeError("daphne does not build its requests from the body-limited class")
    reached: list[tuple[bytes, dict]] = []

    class Probe(request_class):
        _steerlab_limits = Limits(32, {"/upload": 8}, form_overhead=0)

        def __init__(self, channel, *args, **kwargs):
            http.Request.__init__(self, channel, *args, **kwargs)  # without daphne's server

        def _steerlab_dispatch(self):
            reached.append((self.content.read(), self.args))
            http.Request.finish(self)

        def _steerlab_answer(self):
            self._steerlab_answered = True
            self.setResponseCode(413)
            http.Request.finish(self)

        def _steerlab_note(self, cap):
            pass  # the probe's refusals are no one's

    def exchange(request: bytes) -> bytes:
        channel = http.HTTPChannel()
        channel.requestFactory = Probe
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        return transport.value()

    def post(path: bytes, body: bytes, headers: bytes = b"") -> bytes:
        return b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (path, headers, len(body), body)

    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" + b"a" * 32
    chunked += b"\r\n20\r\n" + b"b" * 32 + b"\r\n0\r\n\r\n"
    form = b"x=" + b"d" * 14
    within = [post(b"/", form, b"Content-Type: application/x-www-form-urlencoded\r\n"), post(b"/x/upload?y=1", b"e" * 8)]
    try:
        answers = [exchange(chunked), exchange(post(b"/", b"c" * 33)), exchange(post(b"/x/upl%6fad?y", b"f" * 9))]
        if reached or not all(answer.startswith(b"HTTP/1.1 413 ") for answer in answers):
            raise RuntimeError(f"{reached!r} reached the application")
        for request in within:
            exchange(request)
    except Exception as error:
        raise RuntimeError(f"daphne's body limit did not take effect: {error}") from error
    if reached != [(form, {}), (b"e" * 8, {b"y": [b"1"]})]:
        raise RuntimeError(f"daphne's body limit kept a body within the cap from the application: {reached!r}")
