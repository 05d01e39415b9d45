from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest

from microasgi.app import App
from microasgi.background import BackgroundTask
from microasgi.requests import Request
from microasgi.sse import EventSourceResponse, ServerSentEvent
from microasgi.testing import AsyncTestClient, TestClient
from microasgi.types import Message, Scope

ClientFactory = Callable[..., TestClient]


# --- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (ServerSentEvent("hello"), "data: hello\n\n"),
        (ServerSentEvent(""), "data: \n\n"),
        (ServerSentEvent(" leading space"), "data:  leading space\n\n"),
        (ServerSentEvent("a\nb"), "data: a\ndata: b\n\n"),
        (ServerSentEvent("a\r\nb\rc\n"), "data: a\ndata: b\ndata: c\ndata: \n\n"),
        (ServerSentEvent("data: x\n\nid: 9"), "data: data: x\ndata: \ndata: id: 9\n\n"),
        # Only CR and LF end lines: other Unicode line breaks stay inside the data.
        (ServerSentEvent("a\u2028b\x0bc\x85d"), "data: a\u2028b\x0bc\x85d\n\n"),
        (ServerSentEvent(42), "data: 42\n\n"),
        (ServerSentEvent({"a": 1}), "data: {'a': 1}\n\n"),
        (
            ServerSentEvent("x", event="update", id="7", retry=2500),
            "id: 7\nevent: update\ndata: x\nretry: 2500\n\n",
        ),
        (ServerSentEvent(id=8), "id: 8\n\n"),
        (ServerSentEvent(id=""), "id: \n\n"),
        (ServerSentEvent(retry=0), "retry: 0\n\n"),
        (ServerSentEvent(comment="keep\nalive"), ": keep\n: alive\n\n"),
        (ServerSentEvent("d", comment="c"), ": c\ndata: d\n\n"),
        (ServerSentEvent(), "\n"),
        (ServerSentEvent("é€😀"), "data: é€😀\n\n"),
    ],
)
def test_event_encoding(event: ServerSentEvent, wire: str) -> None:
    assert event.encode() == wire.encode("utf-8")


@pytest.mark.parametrize("sep", ["\r\n", "\r"])
def test_event_encoding_with_other_separators(sep: str) -> None:
    event = ServerSentEvent("a\nb", event="e", comment="c")
    assert event.encode(sep) == f": c{sep}event: e{sep}data: a{sep}data: b{sep}{sep}".encode()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"id": "1\n2"},
        {"id": "1\r"},
        {"id": "a\x00b"},
        {"retry": -1},
        {"retry": 1.5},
        {"retry": True},
        {"retry": "100"},
    ],
)
def test_invalid_fields_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Invalid SSE"):
        ServerSentEvent("x", **kwargs)


def test_event_equality_and_repr() -> None:
    assert ServerSentEvent("x", id=1) == ServerSentEvent("x", id="1")
    assert ServerSentEvent("x") != ServerSentEvent("y")
    assert ServerSentEvent("x") != "x"
    assert repr(ServerSentEvent("x", event="e", retry=5)) == (
        "ServerSentEvent(data='x', event='e', retry=5)"
    )
    with pytest.raises(TypeError):
        hash(ServerSentEvent("x"))


# --- the response -----------------------------------------------------------------------------


def scope(spec_version: str = "2.4") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "method": "GET",
        "path": "/events",
        "headers": [],
    }


class Client:
    """The server side of an event stream; the client can leave at a chosen point."""

    def __init__(
        self,
        *,
        leave_after: int | None = None,
        send_fails: bool = False,
        stuck_after: int | None = None,
    ) -> None:
        self.messages: list[Message] = []
        self.leave_after = leave_after
        self.send_fails = send_fails
        self.stuck_after = stuck_after  # then `send` never returns: a client that stops reading
        self.gone = anyio.Event()
        self.request_sent = False

    async def receive(self) -> Message:
        if not self.request_sent:
            self.request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.send_fails or self.stuck_after is not None:
            await anyio.sleep_forever()  # NOTE: this server only reports it through send
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone.is_set() and self.send_fails:
            raise OSError("connection reset by peer")
        if self.stuck_after is not None and len(self.chunks) >= self.stuck_after:
            await anyio.sleep_forever()
        self.messages.append(message)
        if self.leave_after is not None and len(self.chunks) >= self.leave_after:
            self.gone.set()

    @property
    def chunks(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body" and m["body"]]

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}


async def serve(response: EventSourceResponse, client: Client, spec_version: str = "2.4") -> None:
    with anyio.fail_after(10):
        await response(scope(spec_version), client.receive, client.send)


async def three() -> AsyncIterator[Any]:
    yield ServerSentEvent("one", id=1)
    yield {"data": "two", "event": "second", "id": 2}
    yield "three"


@pytest.mark.anyio
async def test_stream_headers_and_events() -> None:
    client = Client()
    await serve(EventSourceResponse(three()), client)
    assert client.messages[0]["status"] == 200
    assert client.headers == {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    assert client.chunks == [
        b"id: 1\ndata: one\n\n",
        b"id: 2\nevent: second\ndata: two\n\n",
        b"data: three\n\n",
    ]
    assert client.messages[-1] == {"type": "http.response.body", "body": b""}


@pytest.mark.anyio
async def test_given_headers_status_and_separator() -> None:
    client = Client()
    response = EventSourceResponse(
        three(), headers={"cache-control": "no-store", "x-a": "1"}, status_code=201, sep="\r\n"
    )
    await serve(response, client)
    assert client.messages[0]["status"] == 201
    assert client.headers["cache-control"] == "no-store"
    assert client.headers["x-a"] == "1"
    assert client.chunks[0] == b"id: 1\r\ndata: one\r\n\r\n"


def test_options_are_keywords_and_event_fields_positional() -> None:
    with pytest.raises(TypeError):
        EventSourceResponse([], 200)  # type: ignore[misc]
    assert ServerSentEvent("d", "e", 1, 5, "c") == ServerSentEvent(
        data="d", event="e", id=1, retry=5, comment="c"
    )


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="separator"):
        EventSourceResponse([], sep="\n\n")
    for ping in [-1, True]:
        with pytest.raises(ValueError, match="ping"):
            EventSourceResponse([], ping=ping)
    for send_timeout in [0, -1, True]:
        with pytest.raises(ValueError, match="send_timeout"):
            EventSourceResponse([], send_timeout=send_timeout)


@pytest.mark.anyio
async def test_a_sync_iterable_is_iterated_in_a_worker_thread() -> None:
    threads: list[int] = []

    def events() -> Iterator[str]:
        for n in range(3):
            threads.append(threading.get_ident())
            yield str(n)

    client = Client()
    await serve(EventSourceResponse(events()), client)
    assert client.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert threading.get_ident() not in threads
    list_client = Client()
    await serve(EventSourceResponse(["a", ServerSentEvent("b")]), list_client)
    assert list_client.text == "data: a\n\ndata: b\n\n"


@pytest.mark.anyio
@pytest.mark.parametrize("ping", [None, 0.05])
async def test_a_bad_item_raises_type_error(ping: float | None) -> None:
    async def events() -> AsyncIterator[Any]:
        yield 42

    with pytest.raises(TypeError, match="yields ServerSentEvent, dict, str or bytes, not int"):
        await serve(EventSourceResponse(events(), ping=ping), Client())


@pytest.mark.anyio
async def test_no_send_timeout_waits_as_the_server_does() -> None:
    client = Client()
    await serve(EventSourceResponse(["a"], ping=None, send_timeout=None), client)
    assert client.text == "data: a\n\n"


@pytest.mark.anyio
async def test_bytes_are_utf8_data() -> None:
    """Bytes (a Broadcast payload, say) are the text they encode, never their repr."""
    client = Client()
    events = ["é".encode(), ServerSentEvent(bytearray(b"a\nb")), ServerSentEvent(memoryview(b"c"))]
    await serve(EventSourceResponse(events, ping=None), client)
    assert client.text == "data: é\n\ndata: a\ndata: b\n\ndata: c\n\n"
    with pytest.raises(ValueError, match="SSE data is UTF-8 text"):
        ServerSentEvent(b"\xff")


@pytest.mark.anyio
@pytest.mark.parametrize("ping", [None, 0.05])
async def test_iterator_errors_propagate_unwrapped(ping: float | None) -> None:
    async def events() -> AsyncIterator[str]:
        yield "first"
        raise LookupError("broken feed")

    client = Client()
    with pytest.raises(LookupError, match="broken feed"):
        await serve(EventSourceResponse(events(), ping=ping), client)
    assert client.chunks == [b"data: first\n\n"]


# --- keep-alive pings ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pings_are_sent_while_the_iterator_is_idle() -> None:
    async def slow() -> AsyncIterator[str]:
        yield "first"
        await anyio.sleep(0.35)
        yield "second"

    client = Client()
    await serve(EventSourceResponse(slow(), ping=0.1), client)
    assert client.chunks[0] == b"data: first\n\n"
    assert client.chunks[-1] == b"data: second\n\n"
    pings = client.chunks[1:-1]
    assert 2 <= len(pings) <= 4
    assert set(pings) == {b": ping\n\n"}


@pytest.mark.anyio
async def test_pings_use_the_separator() -> None:
    async def slow() -> AsyncIterator[str]:
        await anyio.sleep(0.15)
        yield "x"

    client = Client()
    await serve(EventSourceResponse(slow(), ping=0.05, sep="\r\n"), client)
    assert b": ping\r\n\r\n" in client.chunks


@pytest.mark.anyio
async def test_no_ping_while_events_flow() -> None:
    async def busy() -> AsyncIterator[str]:
        for n in range(15):
            yield str(n)
            await anyio.sleep(0.02)

    client = Client()
    await serve(EventSourceResponse(busy(), ping=0.15), client)
    assert b": ping\n\n" not in client.chunks
    assert len(client.chunks) == 15


@pytest.mark.anyio
@pytest.mark.parametrize("ping", [None, 0])
async def test_pings_can_be_disabled(ping: float | None) -> None:
    async def slow() -> AsyncIterator[str]:
        await anyio.sleep(0.1)
        yield "x"

    client = Client()
    response = EventSourceResponse(slow(), ping=ping)
    assert response.ping_interval is None
    await serve(response, client)
    assert client.chunks == [b"data: x\n\n"]


# --- the client going away -----------------------------------------------------------------------


class Feed:
    """An endless event source that records whether it was closed."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = anyio.Event()

    async def events(self, idle: bool = False) -> AsyncIterator[ServerSentEvent]:
        try:
            while True:
                self.produced += 1
                yield ServerSentEvent(str(self.produced), id=self.produced)
                if idle:
                    await anyio.sleep_forever()
                await anyio.sleep(0.001)
        finally:
            self.closed.set()


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.0", "2.3", "2.4"])
@pytest.mark.parametrize("ping", [None, 15])
async def test_disconnect_closes_the_iterator(spec_version: str, ping: float | None) -> None:
    feed = Feed()
    ran: list[str] = []
    response = EventSourceResponse(
        feed.events(), ping=ping, background=BackgroundTask(ran.append, "task")
    )
    await serve(response, Client(leave_after=3), spec_version)
    assert feed.closed.is_set()
    assert 3 <= feed.produced <= 6
    assert ran == []


@pytest.mark.anyio
@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_disconnect_while_the_iterator_idles_without_pings(spec_version: str) -> None:
    # No event and no ping will ever be sent again: only `receive` can tell the client left.
    feed = Feed()
    await serve(EventSourceResponse(feed.events(idle=True), ping=None), Client(leave_after=1))
    assert feed.closed.is_set()
    assert feed.produced == 1


@pytest.mark.anyio
async def test_a_failed_ping_stops_the_stream() -> None:
    # A server that reports the disconnect only by failing `send` (ASGI 2.4).
    feed = Feed()
    client = Client(leave_after=1, send_fails=True)
    ran: list[str] = []
    response = EventSourceResponse(
        feed.events(idle=True), ping=0.05, background=BackgroundTask(ran.append, "task")
    )
    await serve(response, client)
    assert feed.closed.is_set()
    assert ran == []


@pytest.mark.anyio
async def test_a_failed_event_send_stops_the_stream() -> None:
    feed = Feed()
    client = Client(leave_after=2, send_fails=True)
    await serve(EventSourceResponse(feed.events(), ping=None), client)
    assert feed.closed.is_set()
    assert len(client.chunks) == 2


@pytest.mark.anyio
async def test_a_failed_start_still_closes_the_iterator() -> None:
    feed = Feed()
    client = Client(leave_after=0, send_fails=True)
    client.gone.set()
    await serve(EventSourceResponse(feed.events()), client)
    assert client.messages == []
    assert feed.produced == 0  # never started, so nothing to clean up


@pytest.mark.anyio
async def test_disconnect_closes_a_sync_generator() -> None:
    closed = threading.Event()

    def events() -> Iterator[str]:
        try:
            while True:
                yield "tick"
        finally:
            closed.set()

    await serve(EventSourceResponse(events(), ping=None), Client(leave_after=3), "2.0")
    assert closed.is_set()


@pytest.mark.anyio
async def test_a_sync_generator_blocked_in_next_is_closed_once_next_returns() -> None:
    blocked = threading.Event()
    released = threading.Event()
    closed = threading.Event()

    def events() -> Iterator[str]:
        try:
            yield "first"
            blocked.set()
            released.wait(5)  # a worker thread cannot be interrupted
            yield "second"
        finally:
            closed.set()

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, EventSourceResponse(events(), ping=None), client, "2.0")
        while not blocked.is_set():
            await anyio.sleep(0.01)
        client.gone.set()
        await anyio.sleep(0.05)
        assert not closed.is_set()
        released.set()
    assert closed.is_set()


@pytest.mark.anyio
@pytest.mark.parametrize("idle", [False, True])
async def test_cleanup_may_await_after_a_disconnect(idle: bool) -> None:
    cleaned = anyio.Event()

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
                if idle:
                    await anyio.sleep_forever()
        finally:
            # NOTE: an idle generator is cancelled, so its clean-up awaits under a shield,
            # as anyio asks of any clean-up in a cancelled task.
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)
            cleaned.set()

    await serve(EventSourceResponse(events(), ping=0.5), Client(leave_after=2))
    assert cleaned.is_set()


@pytest.mark.anyio
async def test_cleanup_at_a_yield_may_await_without_a_shield() -> None:
    # The client leaves while the generator is suspended at its `yield` (its event is being
    # sent): it is closed with GeneratorExit, and may await in its clean-up as it likes.
    cleaned = anyio.Event()
    client = Client(leave_after=1, send_fails=True)

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
        finally:
            await anyio.sleep(0.01)
            cleaned.set()

    await serve(EventSourceResponse(events(), ping=None), client)
    assert cleaned.is_set()


@pytest.mark.anyio
async def test_an_async_iterable_without_aclose() -> None:
    class Numbers:
        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Numbers:
            return self

        async def __anext__(self) -> str:
            self.n += 1
            if self.n > 2:
                raise StopAsyncIteration
            return str(self.n)

    client = Client()
    await serve(EventSourceResponse(Numbers()), client)
    assert client.text == "data: 1\n\ndata: 2\n\n"


@pytest.mark.anyio
async def test_background_runs_after_a_complete_stream() -> None:
    client = Client()
    order: list[str] = []

    async def task() -> None:
        order.append(f"task after {len(client.chunks)} events")

    await serve(EventSourceResponse(three(), background=BackgroundTask(task)), client)
    assert order == ["task after 3 events"]


@pytest.mark.anyio
async def test_a_websocket_scope_gets_a_denial_response() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        sent.append(message)

    ws_scope = {**scope(), "type": "websocket"}
    await EventSourceResponse(three(), ping=None)(ws_scope, receive, send)
    assert sent[0]["type"] == "websocket.http.response.start"


# --- through the App -----------------------------------------------------------------------------


def test_through_the_app_with_last_event_id(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        last = request.headers.get("last-event-id")
        start = int(last) + 1 if last is not None else 0

        async def numbers() -> AsyncIterator[ServerSentEvent]:
            for n in range(start, start + 3):
                yield ServerSentEvent(f"event {n}", id=n)

        return EventSourceResponse(numbers())

    with client_factory(app) as client:
        fresh = client.get("/events")
        resumed = client.get("/events", headers={"last-event-id": "41"})
        head = client.head("/events")
    assert fresh.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert fresh.text == "id: 0\ndata: event 0\n\nid: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n"
    assert [line for line in resumed.text.splitlines() if line.startswith("id:")] == [
        "id: 42",
        "id: 43",
        "id: 44",
    ]
    assert (head.status_code, head.content) == (200, b"")


def test_the_test_client_streams_an_endless_stream_and_closes_it(
    client_factory: ClientFactory,
) -> None:
    app = App()
    closed = threading.Event()

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        async def endless() -> AsyncIterator[str]:
            try:
                yield "first"
                await anyio.sleep(3600)
            finally:
                closed.set()

        return EventSourceResponse(endless())

    with client_factory(app) as client:
        with client.stream("GET", "/events") as response:
            assert next(response.iter_lines()) == "data: first"
        assert closed.wait(5)


# --- examples/sse_clock.py ---------------------------------------------------------------------


def test_the_clock_example(client_factory: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from examples import sse_clock

    monkeypatch.setattr(sse_clock, "TICK_SECONDS", 0)
    with client_factory(sse_clock.app) as client:
        page = client.get("/")
        fresh = client.get("/clock?ticks=2")
        resumed = client.get("/clock?ticks=3", headers={"last-event-id": "9"})
        garbage = client.get("/clock?ticks=1", headers={"last-event-id": "9" * 5000})
    assert 'new EventSource("clock")' in page.text
    assert fresh.headers["content-type"] == "text/event-stream; charset=utf-8"
    ids = [line for line in resumed.text.splitlines() if line.startswith("id: ")]
    assert ids == ["id: 10", "id: 11", "id: 12"]
    assert "event: tick" in fresh.text and "retry: 2000" in fresh.text
    assert [line for line in fresh.text.splitlines() if line.startswith("id: ")] == [
        "id: 0",
        "id: 1",
    ]
    assert "id: 0" in garbage.text


@pytest.mark.parametrize(
    ("header", "tick"), [(None, 0), ("41", 42), ("-7", 0), ("abc", 0), ("9" * 5000, 0)]
)
def test_the_clock_resumes_after_the_last_event_id(header: str | None, tick: int) -> None:
    from examples.sse_clock import next_tick

    assert next_tick(header) == tick


# --- HEAD ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_head_sends_the_headers_without_running_an_endless_stream() -> None:
    feed = Feed()
    ran: list[str] = []
    client = Client()
    response = EventSourceResponse(feed.events(), background=BackgroundTask(ran.append, "task"))
    with anyio.fail_after(2):
        await response({**scope(), "method": "HEAD"}, client.receive, client.send)
    assert client.messages[0]["status"] == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert client.messages[1:] == [{"type": "http.response.body", "body": b""}]
    assert feed.produced == 0
    assert ran == []


@pytest.mark.anyio
async def test_head_to_a_client_already_gone() -> None:
    feed = Feed()
    client = Client(send_fails=True)
    client.gone.set()
    with anyio.fail_after(2):
        await EventSourceResponse(feed.events())(
            {**scope(), "method": "HEAD"}, client.receive, client.send
        )
    assert client.messages == []


@pytest.mark.anyio
async def test_head_through_the_app_answers_an_endless_stream() -> None:
    feed = Feed()
    app = App()

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(feed.events())

    with anyio.fail_after(5):
        async with AsyncTestClient(app) as client:
            response = await client.head("/events")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["cache-control"] == "no-cache"
    assert feed.produced == 0


# --- a client that stops reading ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("ping", "idle", "stuck_after"),
    [
        (None, False, 0),  # stuck on the start message
        (None, False, 2),  # on an event
        (0.02, False, 2),  # on an event, with pings on
        (0.02, True, 1),  # on a ping
    ],
)
async def test_send_timeout_lets_go_of_a_client_that_stops_reading(
    ping: float | None, idle: bool, stuck_after: int
) -> None:
    # The connection stays open and `receive` says nothing: only the stuck send tells.
    feed = Feed()
    ran: list[str] = []
    client = Client(stuck_after=stuck_after)
    response = EventSourceResponse(
        feed.events(idle=idle),
        ping=ping,
        send_timeout=0.1,
        background=BackgroundTask(ran.append, "task"),
    )
    started = anyio.current_time()
    await serve(response, client)
    assert anyio.current_time() - started < 1
    assert len(client.chunks) == stuck_after
    assert feed.closed.is_set() or feed.produced == 0
    assert ran == []


@pytest.mark.anyio
async def test_send_timeout_spares_a_client_that_reads() -> None:
    client = Client()
    await serve(EventSourceResponse(three(), send_timeout=0.1), client)
    assert len(client.chunks) == 3
    assert client.messages[-1] == {"type": "http.response.body", "body": b""}


@pytest.mark.anyio
@pytest.mark.parametrize("ping", [None, 15])
async def test_a_stream_that_never_waits_stops_when_the_client_goes(ping: float | None) -> None:
    # ASGI 2.3: a send to a client that left returns at once, without yielding; the stream
    # must still give the disconnect watcher a turn.
    async def tight() -> AsyncIterator[str]:
        for _ in range(20_000):
            yield "x"

    client = Client(leave_after=5)
    await serve(EventSourceResponse(tight(), ping=ping), client, spec_version="2.3")
    assert 5 <= len(client.chunks) < 200
