from __future__ import annotations

from http import HTTPStatus

import pytest

from microasgi import (
    HTTPException,
    NoMatchFound,
    RouteConflictError,
    WebSocketDisconnect,
    WebSocketException,
)


def test_http_exception_defaults_to_the_status_phrase() -> None:
    exc = HTTPException(404)
    assert exc.detail == "Not Found"
    assert exc.headers is None
    assert str(exc) == "404: Not Found"
    assert repr(exc) == "HTTPException(status_code=404, detail='Not Found')"
    assert HTTPException(599).detail == ""
    assert HTTPException(400, "bad", {"x": "1"}).headers == {"x": "1"}


def test_websocket_exceptions() -> None:
    exc = WebSocketException(1008)
    assert (exc.code, exc.reason, str(exc)) == (1008, "", "1008: ")
    assert repr(WebSocketException(4000, "r")) == "WebSocketException(code=4000, reason='r')"
    gone = WebSocketDisconnect()
    assert (gone.code, gone.reason) == (1000, "")
    assert (
        repr(WebSocketDisconnect(1001, "away")) == "WebSocketDisconnect(code=1001, reason='away')"
    )


def test_lookup_and_conflict_messages() -> None:
    assert str(NoMatchFound("user", {"b": 1, "a": 2})) == (
        'No route named "user" accepts the parameters (a, b).'
    )
    conflict = RouteConflictError("first", "second")
    assert str(conflict) == "'second' conflicts with 'first'"
    assert (conflict.existing, conflict.new) == ("first", "second")


def test_http_exception_refuses_a_status_no_response_can_have() -> None:
    for status in (0, 99, 600, 1000, -404):
        with pytest.raises(ValueError, match="100-599"):
            HTTPException(status)
    for wrong in ("404", 404.0, True, None):
        with pytest.raises(TypeError, match="must be an int"):
            HTTPException(wrong)  # type: ignore[arg-type]
    exc = HTTPException(HTTPStatus.NOT_FOUND)
    assert (type(exc.status_code), exc.status_code, exc.detail) == (int, 404, "Not Found")
    assert HTTPException(100).status_code == 100


def test_websocket_exception_refuses_a_code_no_close_frame_can_carry() -> None:
    for code in (999, 1005, 1006, 1015, 5000, True):
        with pytest.raises(ValueError, match="Invalid WebSocket close code"):
            WebSocketException(code)
    assert WebSocketException(4999).code == 4999
    assert WebSocketDisconnect(1006).code == 1006  # what the peer sent, reserved or not
