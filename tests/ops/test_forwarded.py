"""ops.forwarded.TrustedProxies: the client address and scheme come from X-Forwarded-For and
X-Forwarded-Proto only when the connection's peer is a trusted proxy; from anyone else those
headers are dropped. tests/accounts/test_forwarded_throttles.py holds the same rule against a
live daphne started as compose.yaml starts it."""

import pytest
from asgiref.testing import ApplicationCommunicator

from ops.forwarded import TrustedProxies, parse_address


class Recording:
    """An ASGI app that answers 204 and keeps the scope it was given."""

    scope = None

    async def __call__(self, scope, receive, send):
        self.scope = scope
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(autouse=True)
def _proxies(settings):
    settings.STEERLAB_TRUSTED_PROXIES = ["10.0.0.2/32", "172.30.80.0/24", "fd00::/8"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_SSL", "on")


async def seen(peer, headers, kind="http"):
    app = Recording()
    scope = {"type": kind, "method": "GET", "path": "/", "query_string": b"", "scheme": "http" if kind == "http" else "ws",
             "headers": [(b"host", b"testserver"), *headers], "client": [peer, 40000]}
    communicator = ApplicationCommunicator(TrustedProxies(app), scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    await communicator.receive_output(5)
    await communicator.receive_output(5)
    return app.scope


async def test_an_untrusted_peer_is_the_client_whatever_it_forwards():
    scope = await seen("198.51.100.7", [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https"),
                                        (b"forwarded", b"for=1.2.3.4"), (b"x-real-ip", b"1.2.3.4"),
                                        (b"x-forwarded-ssl", b"on")])
    assert scope["client"] == ["198.51.100.7", 40000] and scope["scheme"] == "http"
    # Nothing below (Django's SECURE_PROXY_SSL_HEADER, a library) can read them by mistake.
    assert [name for name, _ in scope["headers"]] == [b"host"]


async def test_a_trusted_proxy_names_the_rightmost_untrusted_hop():
    # The client wrote "1.2.3.4" itself; the proxy appended the address it saw.
    scope = await seen("10.0.0.2", [(b"x-forwarded-for", b"1.2.3.4, 203.0.113.9"), (b"x-forwarded-proto", b"https")])
    assert scope["client"] == ["203.0.113.9", 0] and scope["scheme"] == "https"


async def test_trusted_hops_are_skipped_and_every_header_line_counts():
    scope = await seen("10.0.0.2", [(b"X-Forwarded-For", b"1.2.3.4, 203.0.113.9"),
                                    (b"x-forwarded-for", b"172.30.80.5:1234")])
    assert scope["client"] == ["203.0.113.9", 0]


async def test_a_chain_of_trusted_hops_gives_its_leftmost_and_garbage_stops_the_walk():
    assert (await seen("10.0.0.2", [(b"x-forwarded-for", b"172.30.80.9, 172.30.80.5")]))["client"][0] == "172.30.80.9"
    assert (await seen("10.0.0.2", [(b"x-forwarded-for", b"1.2.3.4, unknown, 172.30.80.5")]))["client"][0] == "172.30.80.5"


async def test_ipv6_and_ipv4_mapped_peers():
    scope = await seen("fd00::1", [(b"x-forwarded-for", b"[2001:db8::5]:443")])
    assert scope["client"][0] == "2001:db8::5"
    scope = await seen("::ffff:10.0.0.2", [(b"x-forwarded-for", b"203.0.113.9")])
    assert scope["client"][0] == "203.0.113.9"


async def test_the_scheme_follows_the_proxy_for_websockets_too_and_only_http_or_https():
    assert (await seen("10.0.0.2", [(b"x-forwarded-proto", b"https")], kind="websocket"))["scheme"] == "wss"
    assert (await seen("10.0.0.2", [(b"x-forwarded-proto", b"gopher")]))["scheme"] == "http"
    assert (await seen("10.0.0.2", []))["client"] == ["10.0.0.2", 40000]


async def test_no_proxy_is_trusted_by_default(settings):
    settings.STEERLAB_TRUSTED_PROXIES = []
    scope = await seen("127.0.0.1", [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")])
    assert scope["client"] == ["127.0.0.1", 40000] and scope["scheme"] == "http"


def test_it_reads_addresses_as_proxies_write_them():
    assert str(parse_address(" 1.2.3.4:80 ")) == "1.2.3.4" and str(parse_address("[::1]:80")) == "::1"
    assert parse_address("unknown") is None and parse_address("1.2.3.4.5") is None


def test_the_site_application_has_it_in_front():
    from steerlab_site.asgi import application

    assert isinstance(application, TrustedProxies)
