"""Oversized request bodies are refused with 413 before anything buffers them, on every URL
and for anonymous clients alike; one setting, STEERLAB_MAX_BODY_BYTES, is the cap.

Two layers, because daphne itself buffers:
- `BodyLimit`, an ASGI middleware in front of the whole application: a declared
  Content-Length over the cap is answered 413 before the application runs, and a body without
  one (chunked) is counted as it streams in and answered 413 the moment it passes the cap,
  without handing the application a byte more. This holds under any ASGI server.
- daphne (Twisted) writes the whole body to a temporary file before it starts the
  application, and then queues all of it in memory at once: a 1 GiB body cost 1 GiB of RSS
  before any middleware could see it. `install_in_daphne` swaps daphne's request class for one
  that applies the same cap while the body arrives (refusing on the Content-Length header, or
  on the bytes counted so far) and closes the connection. asgi.py installs it when daphne
  serves the application.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _message(limit: int) -> bytes:
    return f"Request bodies are limited to {limit} bytes.\n".encode()


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
            return await self.refuse(send)
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
                await self.refuse(send)

    async def refuse(self, send) -> None:
        body = _message(self.limit)
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


def install_in_daphne(limit: int) -> bool:
    """Make daphne refuse bodies over `limit` while they arrive. False when daphne is not
    importable (another ASGI server: BodyLimit alone then applies)."""
    try:
        from daphne import http_protocol
    except ImportError:
        return False
    base = getattr(http_protocol.WebRequest, "_steerlab_base", http_protocol.WebRequest)

    class LimitedWebRequest(base):
        _steerlab_base = base
        _steerlab_refused = False

        def gotLength(self, length):
            super().gotLength(length)
            if length is not None and length > limit:
                self._steerlab_refuse()

        def handleContentChunk(self, data):
            if self._steerlab_refused:
                return  # dropped, not written to the temporary file
            if self.content.tell() + len(data) > limit:
                return self._steerlab_refuse()
            super().handleContentChunk(data)

        def allContentReceived(self):
            if not self._steerlab_refused:
                super().allContentReceived()

        def _steerlab_refuse(self):
            self._steerlab_refused = True
            body = _message(limit)
            # Written to the socket directly: Twisted's response machinery needs a request line
            # it has not parsed as a whole yet. Then the connection closes, unread body and all.
            self.channel.transport.write(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            self.channel.transport.loseConnection()
            log.warning("Refused a request body over %d bytes from %s", limit, self.channel.transport.getPeer())

    # daphne's HTTPFactory.buildProtocol reads this module global for every connection.
    http_protocol.WebRequest = LimitedWebRequest
    return True
