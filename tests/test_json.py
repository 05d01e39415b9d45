from __future__ import annotations

import dataclasses
import json
import sys
from collections import namedtuple
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest

from microasgi._json import dump_json, load_json
from microasgi.app import App
from microasgi.testing import TestClient

BIG = 2**64
Point = namedtuple("Point", "x y")


@dataclasses.dataclass
class Account:
    id: int
    tags: tuple[int, ...]


@pytest.mark.parametrize(
    "value",
    [
        {"n": BIG},
        {"n": -(2**63) - 1},
        [1, [2, {"deep": 10**40}]],
        {"point": Point(BIG, 1)},
        {BIG: "int key", 1: "small key"},
        {"u64": 2**64 - 1, "i64": -(2**63)},
    ],
)
def test_integers_of_any_size_are_written_exactly(value: Any) -> None:
    assert json.loads(dump_json(value)) == json.loads(json.dumps(value))


def test_big_integers_in_dataclasses() -> None:
    assert json.loads(dump_json({"account": Account(BIG, (1, -BIG))})) == {
        "account": {"id": BIG, "tags": [1, -BIG]}
    }


def test_what_no_encoder_takes_is_still_an_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dump_json({"n": BIG, "x": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        dump_json(object())


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 123456789012345678901234567890}',
        "[-18446744073709551617, 18446744073709551616]",
        '{"id": "1234567890123456789012", "n": 1.5}',  # a long run of digits in a string
        '{"n": 9223372036854775807}',
        '{"n": 922337203685477580, "s": "x"}',
    ],
)
@pytest.mark.parametrize("as_bytes", [True, False])
def test_reading_keeps_integers_exact(text: str, as_bytes: bool) -> None:
    assert load_json(text.encode() if as_bytes else text) == json.loads(text)


def test_reading_stays_strict() -> None:
    for bad in (b"NaN", b'["\\ud800"]', b"[" * 2000 + b"]" * 2000, b"\xff"):
        with pytest.raises(orjson.JSONDecodeError):
            load_json(bad)


def test_numbers_past_a_doubles_range_are_malformed() -> None:
    assert load_json(b"1" * 300) == int("1" * 300)
    with pytest.raises(orjson.JSONDecodeError):
        load_json(b"1" * 5000)


def test_a_huge_path_integer_is_echoed_exactly() -> None:
    app = App()

    @app.get("/items/{item_id:int}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    with TestClient(app) as client:
        response = client.get("/items/99999999999999999999")
    assert response.status_code == 200
    assert response.content == b'{"id":99999999999999999999}'


def test_a_websocket_reads_and_writes_big_integers() -> None:
    app = App()

    @app.websocket("/ws")
    async def echo(ws: Any) -> None:
        await ws.accept()
        async for data in ws.iter_json():
            await ws.send_json({"twice": data["n"] * 2})

    with TestClient(app) as client, client.websocket_connect("/ws") as session:
        session.send_text('{"n": 123456789012345678901234567890}')
        assert session.receive_json() == {"twice": 246913578024691357802469135780}


# NOTE: orjson reads 1024 levels of nesting. Before Python 3.12 the standard library's
# decoder, which keeps the long integer exact, has the stack for fewer; since 3.12 it has.
DEEP = b"[" * 1000 + b"12345678901234567890" + b"]" * 1000
OLD_DECODER = sys.version_info < (3, 12)


def test_deep_nesting_with_a_long_integer_is_no_recursion_error() -> None:
    if OLD_DECODER:
        with pytest.raises(orjson.JSONDecodeError, match="depth limit exceeded"):
            load_json(DEEP)
    else:
        assert load_json(DEEP) == json.loads(DEEP)


def test_deep_json_with_a_long_integer_is_a_400_not_a_500() -> None:
    app = App()

    @app.post("/")
    async def read(request: Any) -> dict[str, bool]:
        await request.json()
        return {"read": True}

    with TestClient(app) as client:
        response = client.post("/", content=DEEP, headers={"content-type": "application/json"})
    if OLD_DECODER:
        assert response.status_code == 400
        assert response.json() == {
            "detail": "Malformed JSON body: depth limit exceeded: line 1 column 1 (char 0)"
        }
    else:
        assert response.json() == {"read": True}


def test_a_deep_websocket_message_with_a_long_integer_closes_1007_not_1011() -> None:
    app = App()

    @app.websocket("/ws")
    async def echo(ws: Any) -> None:
        await ws.accept()
        async for _ in ws.iter_json():
            await ws.send_text("read")

    with TestClient(app) as client, client.websocket_connect("/ws") as session:
        session.send_text(DEEP.decode())
        message = session.receive()
    if OLD_DECODER:
        assert message == {
            "type": "websocket.close",
            "code": 1007,
            "reason": "Malformed JSON message",
        }
    else:
        assert message == {"type": "websocket.send", "text": "read"}


def nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def test_content_deeper_than_orjson_writes_is_written_as_the_standard_library_does() -> None:
    # NOTE: orjson writes 255 levels of nesting; it reads 1024, and so does request.json().
    leaf = {"z": 2**70, "a": datetime(2020, 1, 2, tzinfo=timezone.utc), "s": "é"}
    assert dump_json(nested(leaf, 300)) == b"[" * 300 + dump_json(leaf) + b"]" * 300
    assert dump_json(nested(leaf, 300), option=orjson.OPT_SORT_KEYS) == (
        b"[" * 300 + dump_json(leaf, option=orjson.OPT_SORT_KEYS) + b"]" * 300
    )
    assert dump_json(nested(object(), 300), fallback=lambda _: "x") == (
        b"[" * 300 + b'"x"' + b"]" * 300
    )
    with pytest.raises(TypeError, match="not JSON serializable"):
        dump_json(nested(object(), 300))
    with pytest.raises(TypeError, match="Recursion limit reached"):
        dump_json(nested(1, 5000))


def test_a_json_body_nested_300_deep_can_be_echoed() -> None:
    app = App()

    @app.post("/")
    async def echo(request: Any) -> Any:
        return await request.json()

    body = b"[" * 300 + b'{"n":1}' + b"]" * 300
    with TestClient(app) as client:
        response = client.post("/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.content == body
