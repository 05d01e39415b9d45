from __future__ import annotations

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
