from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator

import pytest

from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.middleware import Middleware, RequestIDFilter, RequestIDMiddleware
from microasgi.middleware.requestid import get_request_id
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response
from microasgi.testing import TestClient
from microasgi.websockets import WebSocket

ClientFactory = Callable[..., TestClient]

logger = logging.getLogger("tests.requestid")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
        self.addFilter(RequestIDFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def make_app(**options: object) -> App:
    app = App(middleware=[Middleware(RequestIDMiddleware, **options)])

    @app.get("/")
    async def index(request: Request) -> Response:
        logger.info("handling")
        task = BackgroundTask(logger.info, "in the background")
        return PlainTextResponse(request.state.request_id, background=task)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"{websocket.state.request_id} {get_request_id()}")
        await websocket.close()

    return app


def test_a_new_id_for_each_request(client_factory: ClientFactory, records: Records) -> None:
    with client_factory(make_app()) as client:
        first = client.get("/")
        second = client.get("/")
    assert re.fullmatch("[0-9a-f]{32}", first.text)
    assert first.headers["x-request-id"] == first.text
    assert second.text != first.text
    assert records.lines[:2] == [f"{first.text} handling", f"{first.text} in the background"]
    assert get_request_id() is None


def test_a_sane_incoming_id_is_kept(client_factory: ClientFactory, records: Records) -> None:
    with client_factory(make_app()) as client:
        for incoming in ("abc-123", "f" * 128, "req.1:2/3+4=5@6_7"):
            response = client.get("/", headers={"x-request-id": incoming})
            assert response.text == incoming
            assert response.headers.get_list("x-request-id") == [incoming]


@pytest.mark.parametrize(
    "incoming",
    ["", "a" * 129, "line\nbreak", "\x1b[31mred", "has space", "semi;colon", "é"],
)
def test_an_unsafe_incoming_id_is_replaced(
    client_factory: ClientFactory, records: Records, incoming: str
) -> None:
    with client_factory(make_app()) as client:
        response = client.get("/", headers={"x-request-id": incoming.encode("latin-1")})
        assert re.fullmatch("[0-9a-f]{32}", response.text)
    assert all(re.fullmatch(r"[0-9a-f]{32} .*", line) for line in records.lines)


def test_incoming_ids_can_be_ignored(client_factory: ClientFactory) -> None:
    with client_factory(make_app(trust_incoming=False)) as client:
        response = client.get("/", headers={"x-request-id": "abc"})
        assert response.text != "abc"


def test_another_header_name(client_factory: ClientFactory) -> None:
    with client_factory(make_app(header_name="X-Correlation-ID")) as client:
        response = client.get("/", headers={"x-correlation-id": "corr-1"})
        assert response.text == "corr-1"
        assert response.headers["x-correlation-id"] == "corr-1"
        assert "x-request-id" not in response.headers
    with pytest.raises(ValueError, match="header name"):
        RequestIDMiddleware(PlainTextResponse("x"), header_name="bad name")


def test_websockets_get_an_id(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client:
        with client.websocket_connect("/ws", headers={"x-request-id": "ws-1"}) as session:
            assert session.receive_text() == "ws-1 ws-1"


def test_the_filter_outside_a_request(records: Records) -> None:
    logger.info("no request")
    assert records.lines == ["- no request"]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIDFilter(default="none").filter(record)
    assert record.request_id == "none"
