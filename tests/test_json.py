from __future__ import annotations

import dataclasses
import json
from collections import namedtuple
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
