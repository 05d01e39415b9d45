"""ProxyHeadersMiddleware: believe X-Forwarded-* or Forwarded from trusted proxies only."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from microasgi._utils import ascii_int
from microasgi.types import ASGIApp, RawHeaders, Receive, Scope, Send

__all__ = ["ProxyHeadersMiddleware"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# SECURITY: what a forwarded host may be before it becomes the Host header: a DNS name or
# a bracketed IPv6 literal, and a port; nothing that could carry a path or a userinfo.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?", re.ASCII)
# SECURITY: what a forwarded client may be besides an IP address: RFC 7239's "unknown" and
# obfuscated identifiers; anything else is ignored, since request.client reaches log lines.
_NODE_NAME = re.compile(r"unknown|_[A-Za-z0-9._-]+", re.ASCII | re.IGNORECASE)
# SECURITY: the zone of an IPv6 address ("fe80::1%eth0") is free text to `ipaddress`
# (spaces, quotes, escape sequences); a forwarded one is taken only when it is a plain name.
_ZONE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_HEADER_KINDS = ("x-forwarded", "forwarded")
_NO_PORT = 65536  # past the last port: a value this high is no port
_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_HTTP_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
# NOTE: a proxy chain longer than this is not believed past its last hops.
_MAX_HOPS = 32


class ProxyHeadersMiddleware:
    """Take the client, scheme and host from the proxy in front of the app.

    Only when the connection comes from one of ``trusted_hosts`` (IP addresses and
    networks such as ``"10.0.0.0/8"``; ``"*"`` trusts any peer, for a server only a proxy
    can reach) are the headers read: those the proxy writes, ``headers="x-forwarded"``
    (``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``, the default) or
    ``headers="forwarded"`` (RFC 7239 ``Forwarded``). The other kind is ignored: a proxy
    passes on what the client sent of it. The client is the right-most address
    that is not itself a trusted proxy; ``scope["client"]``, ``scope["scheme"]`` and the
    ``Host`` header are rewritten, so ``request.client`` and ``request.url`` are the ones
    the client used. A connection without a peer address (a Unix socket) is trusted only
    with ``"*"``.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted_hosts: str | Iterable[str] = "127.0.0.1",
        headers: str = "x-forwarded",
    ) -> None:
        if headers not in _HEADER_KINDS:
            raise ValueError(
                f"Invalid headers {headers!r}: use the kind the proxy writes, "
                '"x-forwarded" (X-Forwarded-For, -Proto, -Host) or "forwarded" (RFC 7239)'
            )
        self.app = app
        self.headers = headers
        hosts = (
            [h.strip() for h in trusted_hosts.split(",")]
            if isinstance(trusted_hosts, str)
            else [h.strip() for h in trusted_hosts]
        )
        self.trust_all = "*" in hosts
        networks: list[_Network] = []
        for host in hosts:
            if host == "*":
                continue
            try:
                networks.append(ipaddress.ip_network(host, strict=False))
            except ValueError:
                raise ValueError(
                    f"Invalid trusted host {host!r}: use IP addresses or networks "
                    '("10.0.0.0/8"), or "*" to trust every peer'
                ) from None
        self.networks = tuple(networks)

    def is_trusted(self, host: str | None) -> bool:
        """Return whether the address ``host`` is one of the trusted proxies."""
        if self.trust_all:
            return True
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if self.is_trusted(client[0] if client else None):
                self.rewrite(scope)
        await self.app(scope, receive, send)

    def rewrite(self, scope: Scope) -> None:
        """Apply the forwarded client, scheme and host to ``scope``."""
        # SECURITY: only the kind of header the proxy writes. A proxy that writes
        # X-Forwarded-* passes on a Forwarded header the client made up, and the reverse.
        if self.headers == "forwarded":
            forwarded = [v.decode("latin-1") for n, v in scope["headers"] if n == b"forwarded"]
            hops = _parse_forwarded(",".join(forwarded))
        else:
            xff: list[str] = []
            proto = host = None
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    xff.append(value.decode("latin-1"))
                elif name == b"x-forwarded-proto":
                    proto = value.decode("latin-1")
                elif name == b"x-forwarded-host":
                    host = value.decode("latin-1")
            hops = _x_forwarded_hops(xff, proto, host)
        hop = self._client_hop(hops[-_MAX_HOPS:])
        if hop is None:
            return
        self._apply(scope, hop)

    def _client_hop(self, hops: list[dict[str, str]]) -> dict[str, str] | None:
        """The hop that describes the client: the right-most not from a trusted proxy."""
        if not hops:
            return None
        for hop in reversed(hops):
            address = hop.get("for")
            if address is None or not self.is_trusted(_split_host_port(address)[0]):
                return hop
        return hops[0]

    @staticmethod
    def _apply(scope: Scope, hop: dict[str, str]) -> None:
        address = hop.get("for")
        if address is not None:
            host, port = _split_host_port(address)
            if _is_client_address(host) or _NODE_NAME.fullmatch(host):
                scope["client"] = (host, port)
        proto = hop.get("proto", "").lower()
        if proto in _SCHEMES:
            schemes = _WEBSOCKET_SCHEMES if scope["type"] == "websocket" else _HTTP_SCHEMES
            scope["scheme"] = schemes[proto]
        forwarded_host = hop.get("host")
        if forwarded_host and _HOST.fullmatch(forwarded_host):
            headers: RawHeaders = [item for item in scope["headers"] if item[0] != b"host"]
            headers.append((b"host", forwarded_host.encode("latin-1")))
            scope["headers"] = headers


def _x_forwarded_hops(xff: list[str], proto: str | None, host: str | None) -> list[dict[str, str]]:
    """The X-Forwarded-* headers as hops, like the elements of ``Forwarded``."""
    addresses = [address.strip() for address in ",".join(xff).split(",") if address.strip()]
    hops: list[dict[str, str]] = [{"for": address} for address in addresses] or [{}]
    for key, header in (("proto", proto), ("host", host)):
        if header is None:
            continue
        values = [value.strip() for value in header.split(",")]
        # NOTE: one value per hop when the proxies appended theirs; otherwise the nearest
        # proxy's (the last) stands for every hop.
        for index, hop in enumerate(hops):
            hop[key] = values[index] if len(values) == len(hops) else values[-1]
    return hops if hops != [{}] else []


def _address(host: str | None) -> _Address | None:
    if not host:
        return None
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_client_address(host: str) -> bool:
    """Whether a forwarded ``host`` is an IP address, with a zone (if any) that is a name."""
    address = _address(host)
    if address is None:
        return False
    zone = getattr(address, "scope_id", None)
    return zone is None or _ZONE.fullmatch(zone) is not None


def _split_host_port(value: str) -> tuple[str, int]:
    """``"1.2.3.4:80"``, ``"[::1]:80"``, ``"::1"`` or ``"1.2.3.4"`` → (host, port or 0)."""
    value = value.strip().strip('"')
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    number = ascii_int(port, _NO_PORT)
    return host, 0 if number is None or number == _NO_PORT else number


def _parse_forwarded(header: str) -> list[dict[str, str]]:
    """The elements of an RFC 7239 ``Forwarded`` header, left to right, as dicts."""
    hops: list[dict[str, str]] = []
    for element in _split_quoted(header, ","):
        hop: dict[str, str] = {}
        for pair in _split_quoted(element, ";"):
            name, separator, value = pair.partition("=")
            if separator:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1].replace('\\"', '"')
                hop[name.strip().lower()] = value
        hops.append(hop)
    return hops


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` outside double quotes; linear in its length."""
    parts: list[str] = []
    start = 0
    quoted = False
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            quoted = not quoted
        elif char == "\\" and quoted:
            index += 1
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]
