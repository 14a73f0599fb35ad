"""An ASGI application for tests/security/test_body_limit.py's live daphne: the site's body
cap (BodyLimit in front, daphne patched, as steerlab_site/asgi.py does) around an application
that appends each body it is handed, by path and length, to the file named by BODY_LOG."""

import os

from ops.body_limit import BodyLimit, install_in_daphne

LIMIT = int(os.environ.get("BODY_LIMIT", "8192"))


async def recording(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    with open(os.environ["BODY_LOG"], "a") as log:
        log.write(f"{scope['path']} {len(body)}\n")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


application = BodyLimit(recording, limit=LIMIT)
install_in_daphne(LIMIT)
