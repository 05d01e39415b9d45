"""The workload every benchmark app exposes, and the responses it must give.

One definition shared by the apps and the harness, so that every framework answers the
same requests with the same bytes (JSON is compared as a parsed value: whitespace is the
serialiser's choice, not the framework's speed).
"""

from __future__ import annotations

from typing import Any

import orjson

PLAINTEXT = "Hello, World!"
JSON_PAYLOAD: dict[str, Any] = {"message": "Hello, World!"}
USER_ID = 12345

# NOTE: about 100 bytes of JSON, the size of a small API payload.
ECHO_PAYLOAD: dict[str, Any] = {
    "id": 12345,
    "name": "microasgi benchmark",
    "tags": ["fast", "asgi", "python"],
    "active": True,
    "score": 98.6,
}
ECHO_BODY = orjson.dumps(ECHO_PAYLOAD)

WS_TEXT = "Hello, WebSocket!"

# The I/O-bound endpoint (GET /io, end to end only) awaits this long before answering
# PLAINTEXT: a stand-in for a database call.
IO_DELAY = 0.05

# The users app registers this many parameterised routes before /users/{user_id:int}.
ROUTES_BEFORE_USERS = 100
ROUTING_SIZES = (10, 100, 1000)
ROUTING_A = "abc"
ROUTING_B = "42"
ROUTING_BODY = f"{ROUTING_A}/{ROUTING_B}"


def routing_template(i: int) -> str:
    """The i-th parameterised route, in the neutral ``{name}`` spelling."""
    return f"/r{i}/{{a}}/items/{{b}}"


def routing_target(n: int) -> str:
    """The path that reaches the last of ``n`` parameterised routes."""
    return f"/r{n - 1}/{ROUTING_A}/items/{ROUTING_B}"


def routing_text(a: str, b: str) -> str:
    """What a routing-scale handler answers: its two parameters, so they must be parsed."""
    return f"{a}/{b}"
