from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from microasgi import App, ClientDisconnect, HTTPException, NoMatchFound, Request
from microasgi.limits import Limits
from microasgi.requests import APP_ROOT_KEY, HTTPConnection
from microasgi.testing import TestClient
from microasgi.types import Message

ClientFactory = Callable[..., TestClient]


def make_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/p",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "server": ("example.com", 80),
    }
    scope.update(overrides)
    return scope


def receiver(*messages: Message) -> Callable[[], Any]:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


def test_connection_attributes(client_factory: ClientFactory) -> None:
    app = App()

    @app.get("/items/{item_id:int}")
    async def item(request: Request, item_id: int) -> dict[str, Any]:
        return {
            "method": request.method,
            "url": str(request.url),
            "base_url": str(request.base_url),
            "path": request.url.path,
            "query": request.query_params.getlist("tag"),
            "header": request.headers["x-custom"],
            "headers": request.headers.getlist("x-multi"),
            "cookies": request.cookies,
            "client": list(request.client or ()),
            "params": request.path_params,
            "app": request.app is app,
            "mapping": request["path"],
            "keys": "type" in list(request),
            "len": len(request) > 3,
        }

    with client_factory(app, root_path="/root") as client:
        body = client.get(
            "/items/7?tag=a&tag=b",
            headers=[
                ("x-custom", "v"),
                ("x-multi", "1"),
                ("x-multi", "2"),
                ("cookie", "session=abc"),
            ],
        ).json()
    assert body == {
        "method": "GET",
        "url": "http://testserver/root/items/7?tag=a&tag=b",
        "base_url": "http://testserver/root/",
        "path": "/root/items/7",
        "query": ["a", "b"],
        "header": "v",
        "headers": ["1", "2"],
        "cookies": {"session": "abc"},
        "client": ["testclient", 50000],
        "params": {"item_id": 7},
        "app": True,
        "mapping": "/root/items/7",
        "keys": True,
        "len": True,
    }


def test_cookies_of_every_cookie_header() -> None:
    # NOTE: HTTP/2 clients may send one Cookie header per cookie (RFC 9113, 8.2.3).
    headers = [(b"cookie", b"a=1; b=2"), (b"x-other", b"c=3"), (b"cookie", b"c=4; a=5")]
    assert Request(make_scope(headers=headers)).cookies == {"a": "5", "b": "2", "c": "4"}
    assert Request(make_scope(headers=[])).cookies == {}


def test_json_keeps_big_integers_exact(client_factory: ClientFactory) -> None:
    app = App()

    @app.post("/")
    async def echo(request: Request) -> dict[str, Any]:
        data = await request.json()
        return {"type": type(data["n"]).__name__, "n": data["n"]}

    with client_factory(app) as client:
        response = client.post(
            "/",
            content=b'{"n": 123456789012345678901234567890}',
            headers={"content-type": "application/json"},
        )
    assert response.content == b'{"type":"int","n":123456789012345678901234567890}'


def test_lazy_attributes_are_cached() -> None:
    request = Request(make_scope(query_string=b"a=1", headers=[(b"cookie", b"a=b")]))
    assert request.url is request.url
    assert request.headers is request.headers
    assert request.query_params is request.query_params
    assert request.cookies is request.cookies
    assert request.client is None
    assert request.path_params == {}
    assert request.receive is not None
    assert request != Request(request.scope)
    assert request == request
    assert hash(request) == hash(request)


def test_state_is_created_when_the_server_has_none() -> None:
    request = Request(make_scope())
    request.state.x = 1
    assert request.scope["state"] == {"x": 1}
    assert Request(request.scope).state.x == 1


def test_session_requires_middleware() -> None:
    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        Request(make_scope()).session  # noqa: B018
    assert Request(make_scope(session={"a": 1})).session == {"a": 1}


def test_malformed_host_never_changes_the_path() -> None:
    for host in (b"example.com/?", b"a/../b", b"evil#", b"x@y", b"h\\x"):
        request = Request(make_scope(path="/real", headers=[(b"host", host)]))
        assert request.url.path == "/real"
        assert request.url.hostname == "example.com"


@pytest.mark.anyio
async def test_body_is_cached_in_the_scope() -> None:
    scope = make_scope()
    receive = receiver(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    )
    first = Request(scope, receive)
    assert await first.body() == b"abcd"
    assert await first.body() == b"abcd"
    second = Request(scope, receive)
    assert await second.body() == b"abcd"
    assert [chunk async for chunk in second.stream()] == [b"abcd"]


@pytest.mark.anyio
async def test_empty_body_streams_nothing() -> None:
    scope = make_scope()
    request = Request(scope, receiver({"type": "http.request", "body": b""}))
    assert await request.body() == b""
    assert [chunk async for chunk in Request(scope).stream()] == []


@pytest.mark.anyio
async def test_stream_twice_is_an_error() -> None:
    request = Request(make_scope(), receiver({"type": "http.request", "body": b"x"}))
    assert [chunk async for chunk in request.stream()] == [b"x"]
    with pytest.raises(RuntimeError, match="already streamed"):
        [chunk async for chunk in request.stream()]


@pytest.mark.anyio
async def test_a_second_request_cannot_wait_for_a_body_already_streamed() -> None:
    scope = make_scope()
    receive = receiver({"type": "http.request", "body": b"x"})
    assert [chunk async for chunk in Request(scope, receive).stream()] == [b"x"]
    with anyio.fail_after(1), pytest.raises(RuntimeError, match="another Request"):
        await Request(scope, receive).body()


@pytest.mark.anyio
async def test_a_second_request_cannot_wait_for_a_body_whose_read_failed() -> None:
    scope = make_scope(**{"microasgi.limits": Limits(max_body_size=3)})
    receive = receiver(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    )
    with pytest.raises(HTTPException) as caught:
        await Request(scope, receive).body()
    assert caught.value.status_code == 413
    with anyio.fail_after(1), pytest.raises(RuntimeError, match="another Request"):
        await Request(scope, receive).body()
    # A Request on another channel (the app below a middleware) still reads its own.
    assert await Request(scope, receiver({"type": "http.request", "body": b"e"})).body() == b"e"


def test_an_exception_handler_reading_a_streamed_body_gets_an_error_not_a_hang(
    client_factory: ClientFactory,
) -> None:
    app = App()

    @app.exception_handler(LookupError)
    async def on_lookup_error(request: Request, exc: LookupError) -> None:
        await request.body()

    @app.post("/")
    async def upload(request: Request) -> None:
        async for _ in request.stream():
            pass
        raise LookupError("no such item")

    with client_factory(app, timeout=2) as client, pytest.raises(RuntimeError, match="another"):
        client.post("/", content=b"data")


@pytest.mark.anyio
async def test_many_small_messages_are_joined_once() -> None:
    count = 100_000
    messages = [{"type": "http.request", "body": b"x", "more_body": True}] * count
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    request = Request(make_scope(), receiver(*messages))
    assert len(await request.body()) == count


@pytest.mark.anyio
async def test_disconnect_while_reading_raises_client_disconnect() -> None:
    request = Request(
        make_scope(),
        receiver(
            {"type": "http.request", "body": b"x", "more_body": True},
            {"type": "http.disconnect"},
        ),
    )
    with pytest.raises(ClientDisconnect):
        await request.body()
    assert await request.is_disconnected()


@pytest.mark.anyio
async def test_is_disconnected_polls_without_losing_body() -> None:
    scope = make_scope()
    request = Request(
        scope,
        receiver(
            {"type": "http.request", "body": b"he", "more_body": True},
            {"type": "http.request", "body": b"llo", "more_body": False},
        ),
    )
    assert not await request.is_disconnected()
    assert not await request.is_disconnected()
    assert not await request.is_disconnected()
    assert await request.body() == b"hello"

    idle = Request(make_scope(), receiver())
    assert not await idle.is_disconnected()

    gone = Request(make_scope(), receiver({"type": "http.disconnect"}))
    assert await gone.is_disconnected()


class ChannelReceive:
    """An ASGI receive shaped like a trio memory channel's (hypercorn's trio worker).

    It raises on a cancelled scope before it looks for a message, and takes a ready one
    without waiting.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = anyio.Event()

    def put(self, message: Message) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def __call__(self) -> Message:
        await anyio.lowlevel.checkpoint_if_cancelled()
        while not self.messages:
            self.arrived = anyio.Event()
            await self.arrived.wait()
        return self.messages.pop(0)


@pytest.mark.anyio
async def test_is_disconnected_with_a_receive_that_checks_for_cancellation_first() -> None:
    receive = ChannelReceive()
    request = Request(make_scope(), receive)
    with anyio.fail_after(5):
        assert not await request.is_disconnected()
        receive.put({"type": "http.request", "body": b"he", "more_body": True})
        assert not await request.is_disconnected()
        assert receive.messages == []
        receive.put({"type": "http.disconnect"})
        assert await request.is_disconnected()
        assert await request.is_disconnected()
    assert request._buffered == [{"type": "http.request", "body": b"he", "more_body": True}]


@pytest.mark.anyio
async def test_is_disconnected_passes_on_an_error_of_receive_as_it_is() -> None:
    async def broken() -> Message:
        raise RuntimeError("receive failed")

    with pytest.raises(RuntimeError, match="receive failed"):
        await Request(make_scope(), broken).is_disconnected()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_is_disconnected_on_a_trio_memory_channel(anyio_backend: str) -> None:
    # NOTE: hypercorn's trio worker hands the app a trio memory channel's receive, which
    # checks for cancellation before it looks at its queue.
    import trio

    to_app, from_server = trio.open_memory_channel[Message](10)
    request = Request(make_scope(), from_server.receive)
    assert not await request.is_disconnected()
    to_app.send_nowait({"type": "http.request", "body": b"x", "more_body": False})
    to_app.send_nowait({"type": "http.disconnect"})
    with anyio.fail_after(5):
        assert not await request.is_disconnected()  # the body comes first, kept for body()
        assert await request.is_disconnected()
    assert await request.body() == b"x"


@pytest.mark.anyio
async def test_leaving_a_body_stream_early_leaves_nothing_to_finalize(anyio_backend: str) -> None:
    hooks = sys.get_asyncgen_hooks()
    request = Request(
        make_scope(),
        receiver(
            {"type": "http.request", "body": b"a", "more_body": True},
            {"type": "http.request", "body": b"b", "more_body": False},
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async for chunk in request.stream():
            assert chunk == b"a"
            break
        gc.collect()
        await anyio.sleep(0)
    # NOTE: trio warned (ResourceWarning) about the body generator collected unfinished.
    assert [str(w.message) for w in caught] == []
    assert sys.get_asyncgen_hooks() == hooks
    with pytest.raises(RuntimeError, match="already streamed"):
        await request.body()

    unread = Request(make_scope(), receiver({"type": "http.request", "body": b"ab"}))
    unread.stream()  # not iterated: the body is still there to read
    assert await unread.body() == b"ab"


@pytest.mark.anyio
async def test_polling_while_streaming_loses_no_chunk() -> None:
    request = Request(
        make_scope(),
        receiver(
            {"type": "http.request", "body": b"a", "more_body": True},
            {"type": "http.request", "body": b"b", "more_body": True},
            {"type": "http.request", "body": b"c", "more_body": False},
        ),
    )
    chunks = []
    with anyio.fail_after(5):
        async for chunk in request.stream():
            chunks.append(chunk)
            assert not await request.is_disconnected()
    assert chunks == [b"a", b"b", b"c"]


@pytest.mark.anyio
async def test_polling_never_buffers_past_the_body_limit() -> None:
    scope = make_scope(app=App(max_body_size=3))
    request = Request(
        scope,
        receiver(
            {"type": "http.request", "body": b"12", "more_body": True},
            {"type": "http.request", "body": b"34", "more_body": True},
        ),
    )
    assert not await request.is_disconnected()
    with pytest.raises(HTTPException) as info:
        await request.is_disconnected()
    assert info.value.status_code == 413


class CountedBytes(bytes):
    """Bytes that count how often their length is taken."""

    lengths = 0

    def __len__(self) -> int:
        CountedBytes.lengths += 1
        return super().__len__()


@pytest.mark.anyio
async def test_polling_before_the_body_is_read_costs_linear_time() -> None:
    # Each poll once summed the size of every message buffered so far: n polls, n²/2 sums.
    polls = 300
    messages: list[Message] = [
        {"type": "http.request", "body": CountedBytes(b"x"), "more_body": True}
        for _ in range(polls)
    ]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    request = Request(make_scope(app=App(max_body_size=10 * polls)), receiver(*messages))
    CountedBytes.lengths = 0
    for _ in range(polls):
        assert not await request.is_disconnected()
    assert CountedBytes.lengths <= 2 * polls
    assert await request.body() == b"x" * polls


@pytest.mark.anyio
async def test_polls_between_reads_count_toward_the_body_limit_once() -> None:
    def chunk(body: bytes, more: bool = True) -> Message:
        return {"type": "http.request", "body": body, "more_body": more}

    request = Request(
        make_scope(app=App(max_body_size=6)),
        receiver(chunk(b"12"), chunk(b"34"), chunk(b"56"), chunk(b"", more=False)),
    )
    assert not await request.is_disconnected()
    chunks = []
    async for piece in request.stream():
        chunks.append(piece)
        assert not await request.is_disconnected()
    assert chunks == [b"12", b"34", b"56"]


@pytest.mark.anyio
async def test_body_limit_from_content_length_reads_nothing() -> None:
    received: list[int] = []

    async def receive() -> Message:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 100}

    scope = make_scope(app=App(max_body_size=10), headers=[(b"content-length", b"100")])
    with pytest.raises(HTTPException) as info:
        await Request(scope, receive).body()
    assert info.value.status_code == 413
    assert "10 bytes" in str(info.value.detail)
    assert received == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("length", "status"),
    [("\u00b2", None), ("9" * 5000, 413), ("0" * 5000 + "5", None), ("11", 413), ("10", None)],
)
async def test_content_length_needs_ascii_digits_and_may_be_huge(
    length: str, status: int | None
) -> None:
    scope = make_scope(
        app=App(max_body_size=10), headers=[(b"content-length", length.encode("latin-1"))]
    )
    request = Request(scope, receiver({"type": "http.request", "body": b"hello"}))
    if status is None:
        assert await request.body() == b"hello"
        return
    with pytest.raises(HTTPException) as info:
        await request.body()
    assert info.value.status_code == status


@pytest.mark.anyio
async def test_body_limit_while_streaming_without_content_length() -> None:
    chunks = [{"type": "http.request", "body": b"x" * 4, "more_body": True}] * 10
    scope = make_scope(app=App(max_body_size=10))
    request = Request(scope, receiver(*chunks))
    with pytest.raises(HTTPException) as info:
        await request.body()
    assert info.value.status_code == 413


def test_body_limits_over_http(client_factory: ClientFactory) -> None:
    app = App(max_body_size=8)

    @app.post("/echo")
    async def echo(request: Request) -> bytes:
        return await request.body()

    def chunked() -> Any:
        yield b"12345"
        yield b"67890"

    with client_factory(app) as client:
        assert client.post("/echo", content=b"12345678").content == b"12345678"
        response = client.post("/echo", content=b"123456789")
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]
        assert client.post("/echo", content=chunked()).status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
        "APPLICATION/JSON",
    ],
)
def test_json_accepts_json_media_types(client_factory: ClientFactory, content_type: str) -> None:
    app = App()

    @app.post("/")
    async def echo(request: Request) -> Any:
        first = await request.json()
        assert await request.json() is first
        return first

    with client_factory(app) as client:
        response = client.post("/", content=b'{"a": [1]}', headers={"content-type": content_type})
        assert response.json() == {"a": [1]}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "+json",
        "multipart/form-data; boundary=x",
    ],
)
def test_json_refuses_other_media_types(
    client_factory: ClientFactory, content_type: str | None
) -> None:
    app = App()
    parsed: list[Any] = []

    @app.post("/")
    async def echo(request: Request) -> Any:
        parsed.append(await request.json())
        return parsed[-1]

    headers = {"content-type": content_type} if content_type else {}
    with client_factory(app) as client:
        response = client.post("/", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert parsed == []


def test_json_content_type_check_can_be_relaxed(client_factory: ClientFactory) -> None:
    app = App(strict_content_type=False)

    @app.post("/")
    async def echo(request: Request) -> Any:
        return await request.json()

    with client_factory(app) as client:
        response = client.post("/", content=b"[1]", headers={"content-type": "text/plain"})
        assert response.json() == [1]


def test_malformed_json_is_a_400(client_factory: ClientFactory) -> None:
    app = App()

    @app.post("/")
    async def echo(request: Request) -> Any:
        return await request.json()

    with client_factory(app) as client:
        for body in (b"{", b"", b"\xff", b"[1,]"):
            response = client.post("/", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400
            assert response.json()["detail"].startswith("Malformed JSON body")


@pytest.mark.anyio
async def test_requests_without_channels_say_so() -> None:
    request = Request(make_scope())
    with pytest.raises(RuntimeError, match="without a receive channel"):
        await request.body()
    with pytest.raises(RuntimeError, match="without a send channel"):
        await request._send({})
    with pytest.raises(RuntimeError, match="without a receive channel"):
        await HTTPConnection(make_scope())._receive()


def test_stream_in_a_handler(client_factory: ClientFactory) -> None:
    app = App()

    @app.post("/count")
    async def count(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"total": total}

    def body() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    with client_factory(app) as client:
        assert client.post("/count", content=body()).json() == {"total": 10_000}


@pytest.mark.anyio
async def test_unknown_messages_while_reading_are_skipped() -> None:
    request = Request(
        make_scope(),
        receiver(
            {"type": "http.unknown"},
            {"type": "http.request", "body": b"ok", "more_body": False},
        ),
    )
    assert await request.body() == b"ok"


# --- base_url and url_for: the root the app is served at --------------------------------


class _Named:
    """An app with one route name, "page" at "/page" (and no other)."""

    def __init__(self, error: type[Exception] = NoMatchFound) -> None:
        self.error = error

    def url_path_for(self, name: str, /, **params: Any) -> str:
        if name == "page" and not params:
            return "/page"
        raise self.error(name, params)


def test_base_url_is_the_root_path_of_the_app_not_of_a_mount() -> None:
    app = _Named()
    # A Router mounted at /sub under an app served at /proxy: the mount recorded the app's root.
    scope = make_scope(
        path="/proxy/sub/x",
        root_path="/proxy/sub",
        app=app,
        **{APP_ROOT_KEY: (app, "/proxy", None)},
    )
    request = Request(scope)
    assert str(request.base_url) == "http://example.com/proxy/"
    assert str(request.url_for("page")) == "http://example.com/proxy/page"
    # Without the record, scope["app"] was entered at root_path (no mount since).
    request = Request(make_scope(path="/proxy/x", root_path="/proxy/", app=app))
    assert str(request.base_url) == "http://example.com/proxy/"
    assert str(request.url_for("page")) == "http://example.com/proxy/page"


def test_url_for_falls_back_to_the_apps_an_app_is_mounted_in() -> None:
    inner, middle, outermost = _Named(), object(), _Named()
    # inner is mounted at /a/b/c in middle (served at /a/b), itself mounted in outermost (/a).
    scope = make_scope(
        path="/a/b/c/x",
        root_path="/a/b/c",
        app=inner,
        **{APP_ROOT_KEY: (middle, "/a/b", (outermost, "/a", None))},
    )
    request = Request(scope)
    assert str(request.base_url) == "http://example.com/a/b/c/"
    assert str(request.url_for("page")) == "http://example.com/a/b/c/page"
    with pytest.raises(NoMatchFound, match='"other"'):
        request.url_for("other")
    # Not in inner: middle has no url_path_for, so outermost answers, under its root.
    request = Request({**scope, "app": _Named(), "path_params": {}})
    request.scope["app"].url_path_for = _no_match  # type: ignore[attr-defined]
    assert str(request.url_for("page")) == "http://example.com/a/page"
    # NOTE: only NoMatchFound moves the lookup outwards; other errors are the caller's.
    request = Request({**scope, "app": _Named(error=LookupError)})
    with pytest.raises(LookupError):
        request.url_for("other")


def _no_match(name: str, /, **params: Any) -> str:
    raise NoMatchFound(name, params)


def test_url_for_needs_an_app_with_url_path_for() -> None:
    for app in (None, object()):
        with pytest.raises(RuntimeError, match="needs an App"):
            Request(make_scope(app=app)).url_for("page")


def test_base_url_and_url_for_encode_the_root_path() -> None:
    app = _Named()
    request = Request(make_scope(path="/a b/%/x", root_path="/a b/%", app=app))
    assert str(request.base_url) == "http://example.com/a%20b/%25/"
    assert str(request.url_for("page")) == "http://example.com/a%20b/%25/page"
    assert request.url_for("page").path == "/a%20b/%25/page"


def test_url_for_scheme_follows_the_route_protocol() -> None:
    from microasgi.routing.routes import URLPath, _url_path

    class Protocols:
        def url_path_for(self, name: str, /, **params: Any) -> URLPath:
            return _url_path("/" + name, name)

    for scheme, secure in (("http", False), ("https", True), ("ws", False), ("wss", True)):
        kind = "websocket" if scheme.startswith("ws") else "http"
        request = HTTPConnection(make_scope(type=kind, scheme=scheme, app=Protocols()))
        http, ws = ("https", "wss") if secure else ("http", "ws")
        assert str(request.url_for("http")) == f"{http}://example.com/http"
        assert str(request.url_for("websocket")) == f"{ws}://example.com/websocket"
        # A path of unknown protocol (into a mounted app) keeps the connection's scheme.
        assert request.url_for("").scheme == scheme


def test_form_is_parsed_once_and_closed(client_factory: ClientFactory) -> None:
    app = App()

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        first = await request.form()
        again = await Request(request.scope, request.receive).form()
        async with request.form() as inside:
            assert inside is first
        await request.close()
        return {"same": first is again, "a": first.getlist("a")}

    with client_factory(app) as client:
        response = client.post("/form", data={"a": ["1", "2"]})
    assert response.json() == {"same": True, "a": ["1", "2"]}


@pytest.mark.anyio
async def test_stream_skips_empty_chunks_and_needs_no_limit() -> None:
    from microasgi.limits import Limits

    app = App(limits=Limits(max_body_size=None))
    scope = make_scope(app=app, headers=[(b"content-length", b"99")])
    receive = receiver(
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"ab", "more_body": False},
    )
    chunks = [chunk async for chunk in Request(scope, receive).stream()]
    assert chunks == [b"ab"]
    assert await Request(make_scope(), receiver()).close() is None


def test_limits_refuse_unknown_names_and_negative_values() -> None:
    with pytest.raises(TypeError, match="unknown limits: max_bodysize"):
        Limits(max_bodysize=1)
    with pytest.raises(ValueError, match="max_fields must be a non-negative number"):
        Limits(max_fields=-1)


def test_base_url_path_is_decoded_like_the_url_path() -> None:
    request = Request(make_scope(path="/my app/x", root_path="/my app"))
    assert request.url.path == "/my app/x"
    assert request.base_url.path == "/my app/"
    assert str(request.base_url) == "http://example.com/my%20app/"


def test_request_url_keeps_its_meaning_through_replace() -> None:
    scope = make_scope(path="/café docs", query_string="q=é".encode())
    url = Request(scope).url
    secure = url.replace(scheme="https")
    assert (url.path, url.query) == ("/café docs", "q=é")
    assert (secure.path, secure.query) == ("/café docs", "q=é")
    assert str(secure) == "https://example.com/caf%C3%A9%20docs?q=%C3%A9"
    assert url == "http://example.com/café docs?q=é"
    assert secure == "https://example.com/café docs?q=é"
