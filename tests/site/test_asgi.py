from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator

from steerlab_site.asgi import application


async def http_get(path):
    """GET `path` through the ASGI application; returns (status, body).

    channels' HttpCommunicator expects a "body" key in every body message, but the ASGI spec
    lets it be left out, as Django's file responses do in their last message.
    """
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=5)
    body = b""
    while True:
        message = await communicator.receive_output(timeout=5)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await communicator.wait()
    return start["status"], body


async def test_it_serves_pages_over_asgi():
    status, body = await http_get("/")

    assert status == 200
    assert b"SteerLab" in body


async def test_it_serves_static_files_without_a_proxy():
    status, body = await http_get("/static/css/steerlab.css")

    assert status == 200
    assert b"--accent" in body


async def test_it_refuses_websockets_from_another_origin():
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[(b"host", b"testserver"), (b"origin", b"https://evil.example")],
    )

    connected, _ = await communicator.connect()

    assert connected is False
