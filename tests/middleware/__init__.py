"""Helpers for the middleware tests: raw ASGI scopes and a recording server side."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio

from microasgi.types import Message, Scope


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    *,
    scheme: str = "http",
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    spec_version: str = "2.4",
    query_string: bytes = b"",
    scope_type: str = "http",
) -> Scope:
    """A scope as a server builds it; header names are lowercased."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return {
        "type": scope_type,
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query_string,
        "root_path": "",
        "headers": raw,
        "client": client,
        "server": ("testserver", 80),
        "extensions": {},
    }


class Server:
    """The server side of one exchange: hands out the body, records what the app sends.

    ``on_message(message)`` runs for every message sent; ``disconnected`` is set to make
    ``receive`` report the disconnect (it is also set once the response is complete).
    """

    def __init__(
        self,
        body: bytes | list[bytes] = b"",
        on_message: Callable[[Message], Any] | None = None,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else list(body)
        self._requests: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
        self.messages: list[Message] = []
        self.events: list[str] = []
        self.disconnected = anyio.Event()
        self._on_message = on_message

    async def receive(self) -> Message:
        if self._requests:
            return self._requests.pop(0)
        if not self.disconnected.is_set():
            await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self.messages:
            # NOTE: as a server does: the response has started already.
            raise RuntimeError("Unexpected ASGI message 'http.response.start' sent")
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.events.append(f"body:{bytes(message.get('body', b'')).decode('latin-1')}")
            if not message.get("more_body", False):
                self.events.append("complete")
                self.disconnected.set()
        else:
            self.events.append(message["type"])
        if self._on_message is not None:
            await self._on_message(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in self.messages[0]["headers"]
        }

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )
