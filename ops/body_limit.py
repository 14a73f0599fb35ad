"""Oversized request bodies are refused with 413 before anything buffers them, on every URL
and for anonymous clients alike; one setting, STEERLAB_MAX_BODY_BYTES, is the cap. Under
/v1/ the refusal is an OpenAI-shaped error, which OpenAI's clients can read.

Two layers, because daphne itself buffers:
- `BodyLimit`, an ASGI middleware in front of the whole application: a declared
  Content-Length over the cap is answered 413 before the application runs, and a body without
  one (chunked) is counted as it streams in and answered 413 the moment it passes the cap,
  without handing the application a byte more. This holds under any ASGI server.
- daphne (Twisted) writes the whole body to a temporary file before it starts the
  application, and then queues all of it in memory at once: a 1 GiB body cost 1 GiB of RSS
  before any middleware could see it. `install_in_daphne` swaps daphne's request class for one
  that applies the same cap while the body arrives (on the Content-Length header, or on the
  bytes counted so far), stops storing the body, and never starts the application for a
  refused request: a refused body cannot reach it truncated to the cap. Installing checks
  that the swap took effect by sending requests through Twisted's own HTTP channel, and
  raises if it did not.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


def refusal(limit: int, path: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 413's headers and body for a request to `path`."""
    message = f"Request bodies are limited to {limit} bytes."
    if path.startswith("/v1/"):
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "request_too_large"}}).encode()
        kind = b"application/json"
    else:
        body, kind = f"{message}\n".encode(), b"text/plain; charset=utf-8"
    return [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"connection", b"close")], body


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for HTTP request bodies over `limit` bytes (websockets pass)."""

    def __init__(self, app, *, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(scope, send)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
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
                await self.refuse(scope, send)

    async def refuse(self, scope, send) -> None:
        headers, body = refusal(self.limit, scope.get("path", ""))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install_in_daphne(limit: int) -> bool:
    """Make daphne refuse bodies over `limit` while they arrive. False when daphne is not
    importable (another ASGI server: BodyLimit alone then applies); RuntimeError when the
    installed daphne or Twisted does not take the patch (a version whose hooks moved)."""
    try:
        from daphne import http_protocol
    except ImportError:
        return False
    from twisted.web import http

    base = getattr(http_protocol.WebRequest, "_steerlab_base", http_protocol.WebRequest)

    class LimitedWebRequest(base):
        _steerlab_base = base
        _steerlab_limit = limit
        _steerlab_refused = False
        _steerlab_answered = False

        # Twisted's channel calls these three on the request: gotLength once the headers are
        # in, handleContentChunk per piece of body, requestReceived when the body is complete
        # (which calls process, where daphne starts the application).
        def gotLength(self, length):
            super().gotLength(length)
            if length is not None and length > self._steerlab_limit:
                self._steerlab_refuse()

        def handleContentChunk(self, data):
            if self._steerlab_refused:
                return  # dropped, not stored
            if self.content.tell() + len(data) > self._steerlab_limit:
                return self._steerlab_refuse()
            super().handleContentChunk(data)

        def process(self):
            if not self._steerlab_refused:
                return self._steerlab_dispatch()
            # The rest of a refused body can arrive in the same read as the refusal (a
            # chunked body's end, say), and the channel then completes the request: what was
            # stored is a truncated body, which no application may see.
            if not self._steerlab_answered:
                self._steerlab_answer()

        def _steerlab_dispatch(self):
            return super().process()

        def _steerlab_refuse(self):
            self._steerlab_refused = True
            self._steerlab_note()
            if isinstance(self.channel, http.HTTPChannel):
                # HTTP/1.x: answered now, while the client may still be sending, and the
                # connection closed, unread body and all. Written to the socket directly,
                # because Twisted's response machinery needs the request line, which it hands
                # the request only once the body is complete.
                headers, body = refusal(self._steerlab_limit, getattr(self.channel, "_path", b"").decode("latin-1"))
                self.channel.transport.write(
                    b"HTTP/1.1 413 Payload Too Large\r\n"
                    + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
                )
                self._steerlab_answered = True
                self.channel.transport.loseConnection()
            # Any other channel (an HTTP/2 stream) is answered through daphne's own response
            # path in process(), which frames it for that protocol; the body is not stored.

        def _steerlab_note(self):
            log.warning("Refused a request body over %d bytes from %s", self._steerlab_limit, self.client)

        def _steerlab_answer(self):
            self._steerlab_answered = True
            headers, body = refusal(self._steerlab_limit, self.path.decode("latin-1"))
            self.handle_reply({"type": "http.response.start", "status": 413, "headers": headers})
            self.handle_reply({"type": "http.response.body", "body": body})

    # daphne's HTTPFactory.buildProtocol reads this module global for every connection.
    http_protocol.WebRequest = LimitedWebRequest
    _check_daphne_patch(http_protocol, LimitedWebRequest)
    return True


def _check_daphne_patch(http_protocol, request_class) -> None:
    """Raise RuntimeError unless daphne builds its requests from `request_class` and Twisted's
    HTTP/1.1 channel drives it the way the cap relies on: a chunked body and a declared
    length over the cap, each sent in one piece, are refused and never reach the application,
    and a body within the cap reaches it whole."""
    from twisted.internet.testing import StringTransport
    from twisted.web import http

    if http_protocol.HTTPFactory.buildProtocol.__globals__.get("WebRequest") is not request_class:
        raise RuntimeError("daphne does not build its requests from the body-limited class")
    reached: list[bytes] = []

    class Probe(request_class):
        _steerlab_limit = 16

        def __init__(self, channel, *args, **kwargs):
            http.Request.__init__(self, channel, *args, **kwargs)  # without daphne's server

        def _steerlab_dispatch(self):
            reached.append(self.content.read())
            http.Request.finish(self)

        def _steerlab_answer(self):
            self._steerlab_answered = True
            self.setResponseCode(413)
            http.Request.finish(self)

        def _steerlab_note(self):
            pass  # the probe's refusals are no one's

    def exchange(request: bytes) -> bytes:
        channel = http.HTTPChannel()
        channel.requestFactory = Probe
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(request)
        return transport.value()

    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"a" * 16
    chunked += b"\r\n10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n"
    declared = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n" + b"c" * 17
    within = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n" + b"d" * 16
    try:
        answers = [exchange(chunked), exchange(declared)]
        if reached or not all(b" 413 " in answer for answer in answers):
            raise RuntimeError(f"{reached!r} reached the application")
        exchange(within)
    except Exception as error:
        raise RuntimeError(f"daphne's body limit did not take effect: {error}") from error
    if reached != [b"d" * 16]:
        raise RuntimeError("daphne's body limit kept a body within the cap from the application")
