from __future__ import annotations

import dataclasses
import datetime as dt
import http.cookies
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from microasgi.background import BackgroundTask, BackgroundTasks
from microasgi.datastructures import URL, MutableHeaders
from microasgi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from microasgi.types import Message, Receive, Scope


def http_scope(spec_version: str | None = None, **extra: Any) -> Scope:
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    if spec_version is not None:
        scope["asgi"] = {"version": "3.0", "spec_version": spec_version}
    scope.update(extra)
    return scope


async def receive_nothing() -> Message:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def call(
    response: Response, scope: Scope | None = None, receive: Any = receive_nothing
) -> list[Message]:
    """Run `response` as an ASGI app and return the messages it sent."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await response(http_scope() if scope is None else scope, receive, send)
    return messages


def disconnect_once(event: anyio.Event) -> Receive:
    """A receive that reports the client gone once ``event`` is set."""

    async def receive() -> Message:
        await event.wait()
        return {"type": "http.disconnect"}

    return receive


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


# --- Response -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_response_sends_start_then_body() -> None:
    response = Response(b"hello", status_code=201, media_type="application/octet-stream")
    messages = await call(response)
    assert messages == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-length", b"5"),
                (b"content-type", b"application/octet-stream"),
            ],
        },
        {"type": "http.response.body", "body": b"hello"},
    ]


@pytest.mark.parametrize(
    ("content", "body"),
    [
        (None, b""),
        (b"bytes", b"bytes"),
        ("caf\u00e9", "caf\u00e9".encode()),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
    ],
)
def test_response_renders_content(content: Any, body: bytes) -> None:
    response = Response(content)
    assert response.body == body
    assert response.raw_headers == [(b"content-length", str(len(body)).encode())]


def test_response_rejects_other_content() -> None:
    with pytest.raises(TypeError, match="use JSONResponse"):
        Response({"a": 1})


def test_text_media_types_get_a_charset() -> None:
    assert PlainTextResponse("x").raw_headers == [
        (b"content-length", b"1"),
        (b"content-type", b"text/plain; charset=utf-8"),
    ]
    assert HTMLResponse("<p>").headers["content-type"] == "text/html; charset=utf-8"
    given = Response("x", media_type="text/csv; Charset=latin-1")
    assert given.headers["content-type"] == "text/csv; Charset=latin-1"
    assert Response("x", media_type="image/png").headers["content-type"] == "image/png"


def test_subclass_charset_is_used() -> None:
    class Latin1Text(PlainTextResponse):
        charset = "latin-1"

    response = Latin1Text("caf\u00e9")
    assert response.body == b"caf\xe9"
    assert response.headers["content-type"] == "text/plain; charset=latin-1"


@pytest.mark.parametrize("status_code", [100, 101, 204, 304])
def test_no_content_length_for_bodiless_statuses(status_code: int) -> None:
    assert Response(status_code=status_code).raw_headers == []


@pytest.mark.anyio
@pytest.mark.parametrize("status_code", [103, 204, 304])
async def test_bodiless_statuses_send_no_body(status_code: int) -> None:
    # A body here would be read as the start of the next response on the connection.
    response = Response(b"abc", status_code=status_code)
    messages = await call(response)
    assert messages[0]["status"] == status_code
    assert body_of(messages) == b""
    assert response.body == b"abc"


@pytest.mark.anyio
async def test_a_status_changed_to_204_after_construction_sends_no_body() -> None:
    response = PlainTextResponse("gone")
    response.status_code = 204
    assert body_of(await call(response)) == b""


@pytest.mark.anyio
@pytest.mark.parametrize("status_code", [103, 204, 304])
async def test_bodiless_statuses_send_no_content_length(status_code: int) -> None:
    # A Content-Length there frames a body that never comes: uvicorn waits for it, logs an
    # error and drops the connection.
    stale = PlainTextResponse("gone")
    stale.status_code = status_code
    given = Response(status_code=status_code, headers={"content-length": "5", "etag": '"v1"'})
    for response in (stale, given):
        start, body = await call(response)
        assert start["status"] == status_code
        assert b"content-length" not in dict(start["headers"])
        assert body == {"type": "http.response.body", "body": b""}
    assert given.headers["content-length"] == "5"
    assert dict(stale.raw_headers)[b"content-type"] == b"text/plain; charset=utf-8"


def test_str_content_is_encoded_in_the_charset_of_the_media_type() -> None:
    response = PlainTextResponse("caf\u00e9", media_type="text/plain; Charset=ISO-8859-1")
    assert response.body == b"caf\xe9"
    assert response.headers["content-type"] == "text/plain; Charset=ISO-8859-1"
    quoted = HTMLResponse("\u00e9", media_type='text/html; charset="latin-1"; x=y')
    assert quoted.body == b"\xe9"
    assert Response("\u00e9", media_type="text/plain; charset=").body == b"\xc3\xa9"
    assert PlainTextResponse("\u00e9").body == b"\xc3\xa9"  # the class stays utf-8
    with pytest.raises(LookupError):
        PlainTextResponse("x", media_type="text/plain; charset=no-such-codec")


def test_media_types_are_text_whatever_their_case() -> None:
    response = Response("x", media_type="Text/HTML")
    assert response.headers["content-type"] == "Text/HTML; charset=utf-8"


def test_headers_as_pairs_may_repeat_a_name() -> None:
    pairs = [("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("content-type", "x/y")]
    response = PlainTextResponse("x", headers=pairs)
    assert response.headers.getlist("set-cookie") == ["a=1", "b=2"]
    assert response.headers.getlist("content-type") == ["x/y"]
    redirect = RedirectResponse("/b", headers=(("x-a", "1"), ("x-a", "2")))
    assert redirect.headers.getlist("x-a") == ["1", "2"]
    assert redirect.headers["location"] == "/b"
    with pytest.raises(ValueError, match="CR, LF and NUL"):
        Response(headers=[("x-a", "1\r\nx-b: 2")])


def test_given_headers_are_kept_and_not_duplicated() -> None:
    response = Response(
        "body",
        media_type="text/plain",
        headers={"Content-Length": "99", "Content-Type": "x/y", "X-Extra": "1"},
    )
    assert response.raw_headers == [
        (b"content-length", b"99"),
        (b"content-type", b"x/y"),
        (b"x-extra", b"1"),
    ]


def test_headers_mapping_with_repeated_names() -> None:
    source = MutableHeaders()
    source.append("x-a", "1")
    source.append("x-a", "2")
    response = Response(headers=source)
    assert response.headers.getlist("x-a") == ["1", "2"]


def test_headers_view_is_lazy_cached_and_writes_through() -> None:
    response = Response(b"x")
    assert "_headers" not in response.__dict__
    headers = response.headers
    assert response.headers is headers
    headers["x-time"] = "1"
    assert response.raw_headers[-1] == (b"x-time", b"1")
    response.raw_headers = [(b"x-new", b"1")]
    assert response.headers is not headers
    assert response.headers.items() == [("x-new", "1")]


@pytest.mark.parametrize(
    "headers",
    [
        {"x": "a\r\nSet-Cookie: s=1"},
        {"x": "a\nb"},
        {"x": "a\x00"},
        {"x\r\nSet-Cookie": "s=1"},
        {"bad name": "v"},
        {"x": "\u20ac"},
    ],
)
def test_header_injection_raises_at_construction(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Response(headers=headers)
    with pytest.raises(ValueError):
        StreamingResponse([], headers=headers)


def test_media_type_injection_raises() -> None:
    with pytest.raises(ValueError):
        Response(media_type="text/html\r\nSet-Cookie: s=1")


def test_response_headers_setters_validate() -> None:
    response = Response()
    with pytest.raises(ValueError):
        response.headers["x"] = "a\r\nb"
    with pytest.raises(ValueError):
        response.headers.append("x", "a\nb")


def test_content_type_cache_stays_bounded() -> None:
    for index in range(300):
        media_type = f"application/x-{index}"
        assert Response(media_type=media_type).headers["content-type"] == media_type
    from microasgi import responses

    assert len(responses._content_types) <= responses._CONTENT_TYPES_MAX


@pytest.mark.anyio
async def test_background_runs_after_the_body() -> None:
    events: list[str] = []

    async def task(name: str) -> None:
        events.append(name)

    messages: list[Message] = []

    async def send(message: Message) -> None:
        events.append(message["type"])
        messages.append(message)

    response = Response(b"x", background=BackgroundTask(task, "background"))
    await response(http_scope(), receive_nothing, send)
    assert events == ["http.response.start", "http.response.body", "background"]


@pytest.mark.anyio
async def test_background_tasks_run_in_order() -> None:
    events: list[str] = []
    tasks = BackgroundTasks()
    tasks.add_task(events.append, "sync")

    async def later() -> None:
        events.append("async")

    tasks.add_task(later)
    await call(Response(b"x", background=tasks))
    assert events == ["sync", "async"]


@pytest.mark.anyio
async def test_response_on_a_websocket_scope_is_a_denial_response() -> None:
    messages = await call(PlainTextResponse("no", status_code=403), http_scope(type="websocket"))
    assert [m["type"] for m in messages] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert messages[0]["status"] == 403
    assert messages[1]["body"] == b"no"


# --- cookies ------------------------------------------------------------------------------------


def set_cookies(response: Response) -> list[str]:
    return response.headers.getlist("set-cookie")


def simple_cookie(key: str, value: str, **attributes: Any) -> str:
    cookie: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    cookie[key] = value
    for name, attribute in attributes.items():
        cookie[key][name] = attribute
    return cookie.output(header="").strip()


def test_set_cookie_defaults() -> None:
    response = Response()
    response.set_cookie("sid", "abc")
    assert set_cookies(response) == ["sid=abc; Path=/; SameSite=lax"]


def test_set_cookie_all_attributes() -> None:
    response = Response()
    expires = dt.datetime(2037, 1, 22, 12, 0, 10, tzinfo=dt.timezone.utc)
    response.set_cookie(
        "mycookie",
        "myvalue",
        max_age=10,
        expires=expires,
        path="/app",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="none",
        partitioned=True,
    )
    assert set_cookies(response) == [
        "mycookie=myvalue; Domain=example.com; expires=Thu, 22 Jan 2037 12:00:10 GMT; HttpOnly; "
        "Max-Age=10; Partitioned; Path=/app; SameSite=none; Secure"
    ]


@pytest.mark.parametrize(
    "expires",
    [
        dt.datetime(2037, 1, 22, 14, 0, 10, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(2037, 1, 22, 7, 0, 10, tzinfo=dt.timezone(-dt.timedelta(hours=5))),
        dt.datetime(2037, 1, 22, 12, 0, 10),  # naive: taken as UTC
    ],
)
def test_set_cookie_expires_in_any_time_zone(expires: dt.datetime) -> None:
    response = Response()
    response.set_cookie("a", "b", expires=expires)
    assert set_cookies(response) == [
        "a=b; expires=Thu, 22 Jan 2037 12:00:10 GMT; Path=/; SameSite=lax"
    ]


@pytest.mark.parametrize(
    ("value", "attributes"),
    [
        ("plain", {"path": "/"}),
        ('with space;and"quote\\', {"path": "/"}),
        ("", {"path": "/", "samesite": "strict"}),
        ("caf\u00e9\r\n", {"domain": "example.com", "max-age": 5, "secure": True}),
        ("x", {"expires": "Thu, 01 Jan 2037 00:00:00 GMT", "httponly": True}),
    ],
)
def test_set_cookie_matches_simple_cookie(value: str, attributes: dict[str, Any]) -> None:
    response = Response()
    response.set_cookie(
        "k",
        value,
        max_age=attributes.get("max-age"),
        expires=attributes.get("expires"),
        path=attributes.get("path"),
        domain=attributes.get("domain"),
        secure=attributes.get("secure", False),
        httponly=attributes.get("httponly", False),
        samesite=attributes.get("samesite"),
    )
    assert set_cookies(response) == [simple_cookie("k", value, **attributes)]


def test_set_cookie_value_cannot_break_the_header() -> None:
    response = Response()
    response.set_cookie("k", "a\r\nSet-Cookie: evil=1; Path=/")
    [header] = set_cookies(response)
    assert "\r" not in header and "\n" not in header
    assert header.startswith('k="a\\015\\012Set-Cookie: evil=1\\073 Path=/"')


def test_set_cookie_expires_in_seconds() -> None:
    response = Response()
    response.set_cookie("k", "v", expires=60)
    [header] = set_cookies(response)
    expires = header.split("expires=")[1].split(";")[0]
    delta = parsedate_to_datetime(expires) - dt.datetime.now(dt.timezone.utc)
    assert 0 < delta.total_seconds() <= 61


def test_delete_cookie() -> None:
    response = Response()
    response.delete_cookie("sid", path="/app", domain="example.com", secure=True, httponly=True)
    [header] = set_cookies(response)
    assert header.startswith('sid=""; Domain=example.com; expires=')
    assert header.endswith("GMT; HttpOnly; Max-Age=0; Path=/app; SameSite=lax; Secure")


def test_several_cookies_are_separate_headers() -> None:
    response = Response()
    response.set_cookie("a", "1")
    response.set_cookie("b", "2", samesite=None, path=None)
    assert set_cookies(response) == ["a=1; Path=/; SameSite=lax", "b=2"]


@pytest.mark.parametrize("key", ["", "a b", "a;b", "a=b", "a\r\nb", "a,b", "caf\u00e9", 'a"b'])
def test_invalid_cookie_name_raises(key: str) -> None:
    with pytest.raises(ValueError, match="cookie name"):
        Response().set_cookie(key, "v")


@pytest.mark.parametrize(
    "attributes",
    [
        {"path": "/; Domain=evil.com"},
        {"path": "/\r\nSet-Cookie: x=1"},
        {"path": "/\n"},
        {"domain": "example.com; Secure"},
        {"domain": "example.com\r\n"},
        {"expires": "Thu, 01 Jan 2037 00:00:00 GMT; Domain=evil.com"},
        {"expires": "x\x00"},
        {"samesite": "lax; Domain=evil.com"},
        {"samesite": "sometimes"},
        {"max_age": "10; Domain=evil.com"},
    ],
)
def test_cookie_attribute_injection_raises(attributes: dict[str, Any]) -> None:
    response = Response()
    with pytest.raises(ValueError):
        response.set_cookie("k", "v", **attributes)
    assert set_cookies(response) == []


def test_delete_cookie_validates_too() -> None:
    with pytest.raises(ValueError):
        Response().delete_cookie("k", path="/\r\nx: y")


# --- JSONResponse, RedirectResponse -------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_json_response() -> None:
    response = JSONResponse({"message": "Hello, World!", "n": [1, 2.5, None, True]})
    assert response.body == b'{"message":"Hello, World!","n":[1,2.5,null,true]}'
    assert response.raw_headers == [
        (b"content-length", str(len(response.body)).encode()),
        (b"content-type", b"application/json"),
    ]


def test_json_response_serialises_dataclasses_datetimes_and_uuids() -> None:
    identifier = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    response = JSONResponse({"p": Point(1, 2), "at": when, "id": identifier, "u": "\u00fc"})
    assert response.body == (
        b'{"p":{"x":1,"y":2},"at":"2024-01-02T03:04:05+00:00",'
        b'"id":"12345678-1234-5678-1234-567812345678","u":"\xc3\xbc"}'
    )


def test_json_response_options() -> None:
    response = JSONResponse([1], status_code=202, headers={"x-a": "b"}, media_type="a/b+json")
    assert response.status_code == 202
    assert response.headers["x-a"] == "b"
    assert response.headers["content-type"] == "a/b+json"
    assert JSONResponse(None).body == b"null"


def test_json_response_rejects_unserialisable_content() -> None:
    with pytest.raises(TypeError):
        JSONResponse({"x": object()})


def test_redirect_response() -> None:
    response = RedirectResponse("/next?a=1")
    assert response.status_code == 307
    assert response.body == b""
    assert response.raw_headers == [(b"content-length", b"0"), (b"location", b"/next?a=1")]


def test_redirect_response_quotes_the_location() -> None:
    response = RedirectResponse(URL("https://example.com/caf\u00e9 x?q=a b#f"), status_code=303)
    assert response.status_code == 303
    assert response.headers["location"] == "https://example.com/caf%C3%A9%20x?q=a%20b#f"
    injected = RedirectResponse("/x\r\nSet-Cookie: s=1")
    assert injected.headers["location"] == "/x%0D%0ASet-Cookie:%20s=1"
    assert injected.headers.getlist("set-cookie") == []


def test_redirect_response_location_replaces_a_given_one() -> None:
    response = RedirectResponse("/b", headers={"Location": "/a", "x-a": "1"})
    assert response.headers.getlist("location") == ["/b"]
    assert response.headers["x-a"] == "1"


# --- StreamingResponse --------------------------------------------------------------------------


async def numbers(count: int) -> AsyncIterator[str]:
    for number in range(count):
        yield str(number)


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", [None, "2.3", "2.4", "2.10", "bogus"])
async def test_streaming_response_sends_every_chunk(spec_version: str | None) -> None:
    response = StreamingResponse(numbers(3), media_type="text/plain", headers={"x-a": "1"})
    messages = await call(response, http_scope(spec_version))
    assert messages == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-a", b"1"), (b"content-type", b"text/plain; charset=utf-8")],
        },
        {"type": "http.response.body", "body": b"0", "more_body": True},
        {"type": "http.response.body", "body": b"1", "more_body": True},
        {"type": "http.response.body", "body": b"2", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


@pytest.mark.anyio
async def test_streaming_response_from_a_sync_iterator_runs_it_in_worker_threads() -> None:
    threads: list[int] = []

    def chunks() -> Iterator[str | bytes]:
        threads.append(threading.get_ident())
        yield "a"
        yield b"b"
        yield memoryview(b"c")  # type: ignore[misc]

    messages = await call(StreamingResponse(chunks(), status_code=201))
    assert messages[0]["status"] == 201
    assert messages[0]["headers"] == []
    assert body_of(messages) == b"abc"
    assert threads[0] != threading.get_ident()


@pytest.mark.anyio
@pytest.mark.parametrize("status_code", [204, 304])
async def test_streaming_bodiless_statuses_send_no_body(status_code: int) -> None:
    produced: list[bytes] = []

    async def chunks() -> AsyncIterator[bytes]:
        produced.append(b"abc")  # pragma: no cover
        yield b"abc"  # pragma: no cover

    ran: list[str] = []
    response = StreamingResponse(
        chunks(),
        status_code=status_code,
        headers={"content-length": "3"},
        background=BackgroundTask(ran.append, "task"),
    )
    start, body = await call(response)
    assert (start["status"], start["headers"]) == (status_code, [])
    assert body == {"type": "http.response.body", "body": b""}
    assert produced == []
    assert ran == ["task"]


@pytest.mark.anyio
async def test_streaming_str_chunks_use_the_charset_of_the_media_type() -> None:
    response = StreamingResponse(numbers(1), media_type="text/plain; charset=utf-16-le")
    assert body_of(await call(response)) == "0".encode("utf-16-le")


@pytest.mark.anyio
async def test_streaming_response_from_an_async_iterable_object() -> None:
    class Chunks:
        def __aiter__(self) -> AsyncIterator[bytes]:
            return self.generate()

        async def generate(self) -> AsyncIterator[bytes]:
            yield b"x"

    assert body_of(await call(StreamingResponse(Chunks()))) == b"x"


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_streaming_background_runs_after_the_stream(spec_version: str) -> None:
    events: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x"
        events.append("stream done")

    response = StreamingResponse(chunks(), background=BackgroundTask(events.append, "task"))
    await call(response, http_scope(spec_version))
    assert events == ["stream done", "task"]


@pytest.mark.anyio
async def test_streaming_background_runs_when_disconnect_arrives_after_the_last_body() -> None:
    # NOTE: some servers answer `receive()` with http.disconnect once the response is done.
    done = anyio.Event()
    ran: list[str] = []

    async def send(message: Message) -> None:
        if not message.get("more_body", True):
            done.set()
            await anyio.sleep(0)

    response = StreamingResponse(numbers(2), background=BackgroundTask(ran.append, "task"))
    await response(http_scope("2.3"), disconnect_once(done), send)
    assert ran == ["task"]


@pytest.mark.anyio
async def test_a_disconnect_answered_while_the_last_body_is_sent_does_not_cut_it() -> None:
    # NOTE: hypercorn's trio worker answers `receive()` with http.disconnect as soon as it
    # has the last body, and its `send` goes on writing and closing the connection after
    # that: cancelled there, the connection stays open, and the background never runs.
    done = anyio.Event()
    ran: list[str] = []
    finished: list[Message] = []

    async def send(message: Message) -> None:
        if not message.get("more_body", True):
            done.set()
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
        finished.append(message)

    response = StreamingResponse(numbers(2), background=BackgroundTask(ran.append, "task"))
    with anyio.fail_after(5):
        await response(http_scope("2.3"), disconnect_once(done), send)
    assert finished[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert ran == ["task"]


class DisconnectAfter:
    """An ASGI receive/send pair whose client goes away after `chunks` body chunks."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.messages: list[Message] = []
        self.gone = anyio.Event()
        self.body_received = False

    async def receive(self) -> Message:
        if not self.body_received:
            self.body_received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone.is_set():
            raise OSError("connection lost")
        self.messages.append(message)
        if sum(1 for m in self.messages if m.get("more_body")) >= self.chunks:
            self.gone.set()


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_disconnect_stops_and_closes_an_async_generator(spec_version: str) -> None:
    produced: list[int] = []
    closed = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                produced.append(1)
                yield b"chunk"
                await anyio.sleep(0.001)
        finally:
            closed.set()

    ran: list[str] = []
    client = DisconnectAfter(chunks=3)
    response = StreamingResponse(endless(), background=BackgroundTask(ran.append, "task"))
    with anyio.fail_after(5):
        await response(http_scope(spec_version), client.receive, client.send)
    assert closed.is_set()
    assert 3 <= len(produced) <= 5
    assert ran == []
    assert not any(m.get("more_body") is False for m in client.messages)


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_disconnect_stops_and_closes_a_sync_generator(spec_version: str) -> None:
    produced: list[int] = []
    closed = threading.Event()

    def endless() -> Iterator[bytes]:
        try:
            while True:
                produced.append(1)
                yield b"chunk"
        finally:
            closed.set()

    ran: list[str] = []
    client = DisconnectAfter(chunks=3)
    response = StreamingResponse(endless(), background=BackgroundTask(ran.append, "task"))
    with anyio.fail_after(5):
        await response(http_scope(spec_version), client.receive, client.send)
    assert closed.is_set()
    assert 3 <= len(produced) <= 5
    assert ran == []


@pytest.mark.anyio
async def test_generator_closed_on_disconnect_may_await_in_its_cleanup() -> None:
    cleaned_up = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"chunk"
        finally:
            await anyio.sleep(0)
            cleaned_up.set()

    client = DisconnectAfter(chunks=2)
    with anyio.fail_after(5):
        await StreamingResponse(endless())(http_scope("2.4"), client.receive, client.send)
    assert cleaned_up.is_set()


@pytest.mark.anyio
async def test_disconnect_while_the_iterator_waits() -> None:
    closed = anyio.Event()

    async def slow() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await anyio.sleep_forever()
            yield b"never"  # pragma: no cover
        finally:
            closed.set()

    client = DisconnectAfter(chunks=1)
    with anyio.fail_after(5):
        await StreamingResponse(slow())(http_scope("2.0"), client.receive, client.send)
    assert closed.is_set()
    assert body_of(client.messages) == b"first"


@pytest.mark.anyio
async def test_oserror_from_the_iterator_is_not_a_disconnect() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x"
        raise OSError("disk failed")

    with pytest.raises(OSError, match="disk failed"):
        await call(StreamingResponse(broken()), http_scope("2.4"))


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_iterator_errors_propagate_unwrapped(spec_version: str) -> None:
    closed: list[bool] = []

    async def broken() -> AsyncIterator[bytes]:
        try:
            yield b"x"
            raise LookupError("boom")
        finally:
            closed.append(True)

    ran: list[str] = []
    response = StreamingResponse(broken(), background=BackgroundTask(ran.append, "task"))
    with pytest.raises(LookupError, match="boom"):
        await call(response, http_scope(spec_version))
    assert closed == [True]
    assert ran == []


@pytest.mark.anyio
async def test_streaming_denial_response_on_a_websocket_scope() -> None:
    ran: list[str] = []
    response = StreamingResponse(numbers(1), background=BackgroundTask(ran.append, "task"))
    messages = await call(response, http_scope(type="websocket"))
    assert [m["type"] for m in messages] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
        "websocket.http.response.body",
    ]
    assert ran == ["task"]


@pytest.mark.anyio
async def test_a_stream_that_never_waits_stops_when_the_client_goes() -> None:
    # ASGI 2.3: a send to a client that left returns at once, without yielding; the stream
    # must still give the disconnect watcher a turn, and not run on for no one.
    gone = anyio.Event()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 5:
            gone.set()

    async def tight() -> AsyncIterator[bytes]:
        for _ in range(20_000):
            yield b"x"

    await StreamingResponse(tight())(http_scope("2.3"), disconnect_once(gone), send)
    assert 5 <= len(sent) < 200
    assert sent[-1].get("more_body") is True
