from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from microasgi.app import App
from microasgi.middleware import Middleware, ProxyHeadersMiddleware
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse
from microasgi.testing import TestClient
from microasgi.websockets import WebSocket

ClientFactory = Callable[..., TestClient]

PROXY = ("10.0.0.5", 40000)


def make_app(trusted_hosts: Any = "10.0.0.0/8", headers: str = "x-forwarded") -> App:
    layer = Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted_hosts, headers=headers)
    app = App(middleware=[layer])

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        client = request.client
        return {
            "client": [client.host, client.port] if client else None,
            "url": str(request.url),
        }

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(str(websocket.url))
        await websocket.close()

    return app


def seen(client: TestClient, **headers: str) -> Any:
    return client.get("/", headers=headers).json()


def test_x_forwarded_headers_from_a_trusted_proxy(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        result = seen(
            client,
            **{
                "x-forwarded-for": "203.0.113.7",
                "x-forwarded-proto": "https",
                "x-forwarded-host": "shop.example.com",
            },
        )
        assert result == {"client": ["203.0.113.7", 0], "url": "https://shop.example.com/"}


def test_headers_from_an_untrusted_peer_are_ignored(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=("198.51.100.1", 1234)) as client:
        result = seen(client, **{"x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https"})
        assert result == {"client": ["198.51.100.1", 1234], "url": "http://testserver/"}
    with client_factory(make_app(), client=None) as client:
        assert seen(client, **{"x-forwarded-for": "1.2.3.4"})["client"] is None


def test_the_client_is_the_right_most_untrusted_address(client_factory: ClientFactory) -> None:
    with client_factory(make_app(["10.0.0.0/8", "192.168.1.1"]), client=PROXY) as client:
        # NOTE: the client wrote "6.6.6.6" itself; the first proxy appended the real peer.
        headers = {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 192.168.1.1, 10.1.1.1"}
        assert seen(client, **headers)["client"] == ["203.0.113.7", 0]
        headers = {"x-forwarded-for": "10.2.2.2, 10.3.3.3"}
        assert seen(client, **headers)["client"] == ["10.2.2.2", 0]


def test_several_x_forwarded_for_headers(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        response = client.get(
            "/", headers=[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]
        )
        assert response.json()["client"] == ["2.2.2.2", 0]


def test_proto_and_host_per_hop(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        headers = {
            "x-forwarded-for": "203.0.113.7, 10.1.1.1",
            "x-forwarded-proto": "https, http",
            "x-forwarded-host": "shop.example.com, internal:8080",
        }
        assert seen(client, **headers)["url"] == "https://shop.example.com/"
        headers = {"x-forwarded-for": "203.0.113.7, 10.1.1.1", "x-forwarded-proto": "https"}
        assert seen(client, **headers)["url"] == "https://testserver/"


def test_proto_and_host_without_for(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        headers = {"x-forwarded-proto": "https", "x-forwarded-host": "example.com:8443"}
        assert seen(client, **headers) == {
            "client": list(PROXY),
            "url": "https://example.com:8443/",
        }
        assert seen(client) == {"client": list(PROXY), "url": "http://testserver/"}


@pytest.mark.parametrize(
    "host", ["evil.com/path", "user@evil.com", "evil.com\\x", "a b", "evil.com:99999999"]
)
def test_a_forwarded_host_that_is_not_a_host(client_factory: ClientFactory, host: str) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-host": host})["url"] == "http://testserver/"


@pytest.mark.parametrize("proto", ["ftp", "javascript", ""])
def test_unknown_schemes_are_ignored(client_factory: ClientFactory, proto: str) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-proto": proto})["url"] == "http://testserver/"


def test_rfc_7239_forwarded(client_factory: ClientFactory) -> None:
    with client_factory(make_app(headers="forwarded"), client=PROXY) as client:
        header = (
            'for=6.6.6.6;proto=http, For="[2001:db8::1]:4711";Proto=https;host="a.example", '
            "for=10.1.1.1"
        )
        assert seen(client, forwarded=header) == {
            "client": ["2001:db8::1", 4711],
            "url": "https://a.example/",
        }
        assert seen(client, forwarded="for=192.0.2.60:8080")["client"] == ["192.0.2.60", 8080]
        assert seen(client, forwarded="for=unknown")["client"] == ["unknown", 0]
        header = 'for="1.2.3.4";host="a\\"b", for=10.9.9.9'
        assert seen(client, forwarded=header)["client"] == ["1.2.3.4", 0]
        assert seen(client, forwarded="proto=https;;junk")["url"] == "https://testserver/"
        assert seen(client, forwarded=",,")["client"] == list(PROXY)
        assert seen(client, forwarded='for=""')["client"] == list(PROXY)
        header = "for=1.1.1.1"
        both = {"forwarded": header, "x-forwarded-for": "2.2.2.2", "x-forwarded-proto": "https"}
        assert seen(client, **both) == {"client": ["1.1.1.1", 0], "url": "http://testserver/"}
        assert seen(client, **{"x-forwarded-for": "2.2.2.2"})["client"] == list(PROXY)


def test_a_forwarded_header_from_the_client_is_ignored(client_factory: ClientFactory) -> None:
    # SECURITY: a proxy that writes X-Forwarded-* (nginx, most load balancers) passes on a
    # Forwarded header the client made up; believing it would let the client pick its
    # address, scheme and host.
    headers = {
        "x-forwarded-for": "203.0.113.9",
        "forwarded": "for=127.0.0.1;proto=https;host=evil.example",
    }
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **headers) == {
            "client": ["203.0.113.9", 0],
            "url": "http://testserver/",
        }
        assert seen(client, forwarded="for=1.1.1.1")["client"] == list(PROXY)


def test_an_unknown_kind_of_headers_is_refused() -> None:
    with pytest.raises(ValueError, match=r'"x-forwarded" .* or "forwarded"'):
        ProxyHeadersMiddleware(PlainTextResponse("x"), headers="both")


def test_trust_everyone(client_factory: ClientFactory) -> None:
    with client_factory(make_app("*"), client=None) as client:
        headers = {"x-forwarded-for": "1.1.1.1, 2.2.2.2", "x-forwarded-proto": "https"}
        assert seen(client, **headers)["client"] == ["1.1.1.1", 0]


def test_a_list_of_hosts_in_a_string(client_factory: ClientFactory) -> None:
    with client_factory(make_app("127.0.0.1, 10.0.0.5"), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-for": "1.1.1.1"})["client"] == ["1.1.1.1", 0]
    with client_factory(make_app("::1"), client=("::1", 5)) as client:
        assert seen(client, **{"x-forwarded-for": "[2001:db8::2]:80"})["client"] == [
            "2001:db8::2",
            80,
        ]
    with client_factory(make_app("127.0.0.1"), client=("not-an-ip", 5)) as client:
        assert seen(client, **{"x-forwarded-for": "1.1.1.1"})["client"] == ["not-an-ip", 5]


def test_websocket_schemes(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        headers = {"x-forwarded-proto": "https"}
        with client.websocket_connect("/ws", headers=headers) as session:
            assert session.receive_text() == "wss://testserver/ws"
        with client.websocket_connect("/ws", headers={"x-forwarded-proto": "wss"}) as session:
            assert session.receive_text() == "wss://testserver/ws"
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-proto": "wss"})["url"] == "https://testserver/"


def test_a_long_chain_is_cut(client_factory: ClientFactory) -> None:
    chain = ", ".join(["9.9.9.9"] + ["10.0.0.1"] * 40)
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-for": chain})["client"] == ["10.0.0.1", 0]


@pytest.mark.parametrize("host", ["example.com", "10.0.0.0/33", "unix"])
def test_invalid_trusted_hosts(host: str) -> None:
    with pytest.raises(ValueError, match="IP addresses or networks"):
        ProxyHeadersMiddleware(PlainTextResponse("x"), trusted_hosts=[host])


@pytest.mark.parametrize(
    "name, value",
    [
        ("x-forwarded-for", "203.0.113.7:\xb2"),
        ("x-forwarded-for", "203.0.113.7:99999"),
        ("forwarded", 'for="[2001:db8::1]:\xb9"'),
    ],
)
def test_a_port_that_is_not_a_port(client_factory: ClientFactory, name: str, value: str) -> None:
    # NOTE: "²" is a digit to str.isdigit() but not to int().
    kind = "forwarded" if name == "forwarded" else "x-forwarded"
    with client_factory(make_app(headers=kind), client=PROXY) as client:
        response = client.get("/", headers={name: value.encode("latin-1")})
        assert response.json()["client"][1] == 0


@pytest.mark.parametrize(
    "address", ["evil\x1b[31m", "<script>", "a b", "1.2.3.4.5", "example.com", "_", "_\x1b"]
)
def test_a_forwarded_for_that_is_not_an_address(
    client_factory: ClientFactory, address: str
) -> None:
    # SECURITY: request.client reaches log lines (the server's access log too): only an
    # IP address, or RFC 7239's "unknown" and "_obfuscated" names, replace the peer's.
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-for": address})["client"] == list(PROXY)
        headers = {"x-forwarded-for": address, "x-forwarded-proto": "https"}
        assert seen(client, **headers)["url"] == "https://testserver/"
    with client_factory(make_app(headers="forwarded"), client=PROXY) as client:
        assert seen(client, forwarded=f'for="{address}"')["client"] == list(PROXY)
        assert seen(client, forwarded="for=_hidden-1.x")["client"] == ["_hidden-1.x", 0]


@pytest.mark.parametrize(
    "zone", ["\x1b[2J\x1b[31mFAKE", '<script>"x"', "a b", "eth0;x", "e" * 65, ""]
)
def test_a_forwarded_ipv6_zone_that_is_not_a_name(client_factory: ClientFactory, zone: str) -> None:
    # SECURITY: ipaddress takes any text after "%" as an IPv6 zone, so a zone could carry
    # header text (and, over HTTP/2, escape sequences) into request.client and access logs.
    address = f"fe80::1%{zone}"
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-for": address})["client"] == list(PROXY)
    with client_factory(make_app(headers="forwarded"), client=PROXY) as client:
        assert seen(client, forwarded=f'for="[{address}]:80"')["client"] == list(PROXY)


def test_a_forwarded_ipv6_zone_that_is_a_name(client_factory: ClientFactory) -> None:
    with client_factory(make_app(), client=PROXY) as client:
        assert seen(client, **{"x-forwarded-for": "fe80::1%eth0"})["client"] == ["fe80::1%eth0", 0]
    with client_factory(make_app(headers="forwarded"), client=PROXY) as client:
        result = seen(client, forwarded='for="[fe80::2%en0.1_a-b]:8080"')
        assert result["client"] == ["fe80::2%en0.1_a-b", 8080]
