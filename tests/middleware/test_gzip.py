from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import brotli
import pytest
import zstandard

from microasgi.app import App
from microasgi.middleware import (
    CompressionMiddleware,
    GZipMiddleware,
    Middleware,
    TimeoutMiddleware,
)
from microasgi.middleware._optional import load_optional
from microasgi.middleware.gzip import available_encodings, parse_accept_encoding
from microasgi.requests import Request
from microasgi.responses import PlainTextResponse, Response, StreamingResponse
from microasgi.testing import TestClient
from microasgi.types import Message, Receive, Scope, Send

from . import Server, http_scope

ClientFactory = Callable[..., TestClient]

TEXT = "microasgi compresses this text. " * 100


def make_app(middleware: Middleware) -> App:
    app = App(middleware=[middleware])

    @app.get("/text")
    async def text(request: Request) -> str:
        return TEXT

    @app.get("/small")
    async def small(request: Request) -> str:
        return "tiny"

    @app.get("/headers")
    async def headers(request: Request) -> Response:
        return PlainTextResponse(
            TEXT, headers={"etag": '"v1"', "accept-ranges": "bytes", "vary": "Cookie"}
        )

    @app.get("/weak")
    async def weak(request: Request) -> Response:
        return PlainTextResponse(TEXT, headers={"etag": 'W/"v1"'})

    @app.get("/encoded")
    async def encoded(request: Request) -> Response:
        return Response(gzip.compress(TEXT.encode()), headers={"content-encoding": "gzip"})

    @app.get("/events")
    async def events(request: Request) -> Response:
        return Response(TEXT, media_type="text/event-stream")

    @app.get("/partial")
    async def partial(request: Request) -> Response:
        return PlainTextResponse(TEXT, status_code=206)

    @app.get("/empty")
    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(iter([TEXT[:10], "", TEXT[10:]]), media_type="text/plain")

    return app


def gzip_app(**options: Any) -> App:
    return make_app(Middleware(GZipMiddleware, **options))


def test_gzip(client_factory: ClientFactory) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get("/text", headers={"accept-encoding": "gzip"})
        assert response.text == TEXT
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        assert int(response.headers["content-length"]) < len(TEXT)
        assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_gzip_levels(client_factory: ClientFactory) -> None:
    sizes = []
    for level in (1, 9):
        with client_factory(gzip_app(compresslevel=level)) as client:
            response = client.get("/text", headers={"accept-encoding": "gzip"})
            sizes.append(int(response.headers["content-length"]))
    assert sizes[1] <= sizes[0]


@pytest.mark.parametrize(
    "accept", ["", "identity", "br", "gzip;q=0", "gzip; q=0.0", "*;q=0", "gzip;q=abc"]
)
def test_clients_that_do_not_accept_gzip(client_factory: ClientFactory, accept: str) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get("/text", headers={"accept-encoding": accept})
        assert "content-encoding" not in response.headers
        assert response.text == TEXT
        # NOTE: another client would get it compressed: caches must key on the header.
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["content-length"] == str(len(TEXT))


@pytest.mark.anyio
async def test_a_request_without_accept_encoding_gets_vary() -> None:
    app = gzip_app()
    server = Server()
    await app(http_scope("/text"), server.receive, server.send)
    assert server.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in server.headers
    assert server.body == TEXT.encode()


def test_vary_is_merged_when_not_compressing(client_factory: ClientFactory) -> None:
    app = gzip_app()

    @app.get("/listed")
    async def listed(request: Request) -> Response:
        return PlainTextResponse(TEXT, headers={"vary": "cookie, accept-encoding"})

    with client_factory(app) as client:
        response = client.get("/headers", headers={"accept-encoding": "identity"})
        assert response.headers["vary"] == "Cookie, Accept-Encoding"
        assert response.headers["etag"] == '"v1"'
        assert response.headers["accept-ranges"] == "bytes"
        response = client.get("/listed", headers={"accept-encoding": "identity"})
        assert response.headers.get_list("vary") == ["cookie, accept-encoding"]
        response = client.get("/listed", headers={"accept-encoding": "gzip"})
        assert response.headers.get_list("vary") == ["cookie, accept-encoding"]


def test_a_streaming_response_not_compressed_gets_vary(client_factory: ClientFactory) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get("/stream", headers={"accept-encoding": "identity"})
        assert response.text == TEXT
        assert "content-encoding" not in response.headers
        assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("path", "status"),
    [("/small", 200), ("/encoded", 200), ("/events", 200), ("/partial", 206), ("/empty", 204)],
)
def test_no_vary_on_responses_never_compressed(
    client_factory: ClientFactory, path: str, status: int
) -> None:
    # NOTE: whatever the Accept-Encoding, these are sent as they are; a response under
    # minimum_size included (as Starlette does).
    with client_factory(gzip_app()) as client:
        for accept in ("identity", "gzip"):
            response = client.get(path, headers={"accept-encoding": accept})
            assert response.status_code == status
            assert "vary" not in response.headers
        response = client.head("/text", headers={"accept-encoding": "identity"})
        assert "vary" not in response.headers


@pytest.mark.parametrize(
    "accept", ["gzip", "GZIP", "*", "x-gzip", "br, gzip;q=0.5", "deflate, gzip"]
)
def test_clients_that_accept_gzip(client_factory: ClientFactory, accept: str) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get("/text", headers={"accept-encoding": accept})
        assert response.headers["content-encoding"] == "gzip"
        assert response.text == TEXT


@pytest.mark.parametrize(
    ("path", "status"),
    [("/small", 200), ("/encoded", 200), ("/events", 200), ("/partial", 206), ("/empty", 204)],
)
def test_responses_never_compressed(client_factory: ClientFactory, path: str, status: int) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get(path, headers={"accept-encoding": "gzip"})
        assert response.status_code == status
        assert response.headers.get("content-encoding") in (None, "gzip")
        if path == "/encoded":
            assert response.headers["content-encoding"] == "gzip"
            assert response.text == TEXT
        else:
            assert "content-encoding" not in response.headers


def test_head_requests_are_not_compressed(client_factory: ClientFactory) -> None:
    with client_factory(gzip_app()) as client:
        response = client.head("/text", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in response.headers
        assert response.headers["content-length"] == str(len(TEXT))


def test_compressed_headers(client_factory: ClientFactory) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get("/headers", headers={"accept-encoding": "gzip"})
        assert response.headers["etag"] == 'W/"v1"'
        assert "accept-ranges" not in response.headers
        assert response.headers["vary"] == "Cookie, Accept-Encoding"
        response = client.get("/weak", headers={"accept-encoding": "gzip"})
        assert response.headers["etag"] == 'W/"v1"'


def test_a_304_has_the_etag_and_vary_of_its_200(
    client_factory: ClientFactory, tmp_path: Any
) -> None:
    # NOTE: RFC 9110 §15.4.5. With the file's strong ETag on the 304, a cache would keep
    # compressed bytes under it, and a later If-Range could splice plain ranges into them.
    from microasgi.staticfiles import FileResponse

    path = tmp_path / "big.txt"
    path.write_text(TEXT)
    app = App(middleware=[Middleware(GZipMiddleware)])

    @app.get("/file")
    async def file(request: Request) -> Response:
        return FileResponse(path)

    with client_factory(app) as client:
        first = client.get("/file", headers={"accept-encoding": "gzip"})
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        assert first.headers["vary"] == "Accept-Encoding"
        again = client.get("/file", headers={"accept-encoding": "gzip", "if-none-match": etag})
        assert again.status_code == 304
        assert (again.headers["etag"], again.headers["vary"]) == (etag, "Accept-Encoding")
        plain = client.get("/file", headers={"accept-encoding": "identity"})
        strong = plain.headers["etag"]
        assert strong == etag[2:]
        again = client.get(
            "/file", headers={"accept-encoding": "identity", "if-none-match": strong}
        )
        assert again.status_code == 304
        assert (again.headers["etag"], again.headers["vary"]) == (strong, "Accept-Encoding")


def test_a_streaming_response(client_factory: ClientFactory) -> None:
    with client_factory(gzip_app()) as client:
        response = client.get("/stream", headers={"accept-encoding": "gzip"})
        assert response.text == TEXT
        assert response.headers["content-encoding"] == "gzip"
        assert "content-length" not in response.headers


@pytest.mark.anyio
async def test_each_chunk_is_flushed_as_it_passes() -> None:
    first_chunk_arrived = anyio.Event()
    decoder = zlib.decompressobj(wbits=31)
    decoded: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first chunk, small"
            # NOTE: set by the server side only once it could decode the first chunk.
            await first_chunk_arrived.wait()
            yield b"second"

        await StreamingResponse(chunks())(scope, receive, send)

    async def on_message(message: Message) -> None:
        if message["type"] == "http.response.body":
            decoded.append(decoder.decompress(message["body"]))
            if decoded[0] == b"first chunk, small":
                first_chunk_arrived.set()

    server = Server(on_message=on_message)
    scope = http_scope(headers=[("accept-encoding", "gzip")])
    with anyio.fail_after(3):
        await GZipMiddleware(app, minimum_size=1)(scope, server.receive, server.send)
    assert b"".join(decoded) == b"first chunk, smallsecond"
    assert decoder.eof


@pytest.mark.anyio
async def test_a_small_announced_length_and_other_messages() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]}
        )
        await send({"type": "http.response.body", "body": b"tiny"})

    server = Server()
    scope = http_scope(headers=[("accept-encoding", "gzip")])
    await GZipMiddleware(app, minimum_size=10)(scope, server.receive, server.send)
    assert server.body == b"tiny"

    async def unannounced(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tiny"})

    server = Server()
    await GZipMiddleware(unannounced, minimum_size=10)(scope, server.receive, server.send)
    assert (server.headers, server.body) == ({}, b"tiny")

    async def pathsend(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/dev/null"})

    server = Server()
    await GZipMiddleware(pathsend)(scope, server.receive, server.send)
    assert [m["type"] for m in server.messages] == [
        "http.response.start",
        "http.response.pathsend",
    ]

    async def trailers(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await send({"type": "http.response.trailers", "headers": []})

    server = Server()
    await GZipMiddleware(trailers)(scope, server.receive, server.send)
    assert server.messages[-1]["type"] == "http.response.trailers"
    assert gzip.decompress(server.body) == b"x" * 1000


def late_stream_app(*middleware: Middleware) -> App:
    app = App(middleware=[*middleware, Middleware(TimeoutMiddleware, timeout=0.05)])

    @app.get("/late")
    async def late(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            await anyio.sleep(5)
            yield TEXT

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


@pytest.mark.parametrize("compression", [GZipMiddleware, CompressionMiddleware, None])
def test_a_stream_cut_before_its_first_chunk(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, compression: Any
) -> None:
    # NOTE: compression outside the deadline, as docs/middleware.md orders them: the client
    # sees what it sees without compression, a response started then cut (which the test
    # client reports as an error), not an app that never answered.
    middleware = () if compression is None else (Middleware(compression),)
    headers = {"accept-encoding": "gzip"}
    with client_factory(late_stream_app(*middleware)) as client:
        with client.stream("GET", "/late", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            assert "content-encoding" not in response.headers
            assert response.headers.get("vary") == (
                None if compression is None else "Accept-Encoding"
            )
            with pytest.raises(RuntimeError, match="without completing the response"):
                response.read()
    with client_factory(late_stream_app(*middleware), raise_server_exceptions=False) as client:
        response = client.get("/late", headers=headers)
        assert (response.status_code, response.content) == (200, b"")
    assert "the stream was cut" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("accept", ["gzip", "identity"])
async def test_a_start_without_a_body_is_sent_when_the_app_returns(accept: str) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)

    server = Server()
    scope = http_scope(headers=[("accept-encoding", accept)])
    await GZipMiddleware(app, minimum_size=1)(scope, server.receive, server.send)
    # NOTE: as it is, uncompressed, and still incomplete: no body is made up.
    assert server.events == ["http.response.start"]
    assert server.status == 200
    assert server.headers == {"content-type": "text/plain", "vary": "Accept-Encoding"}

    async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    server = Server()
    await GZipMiddleware(nothing)(scope, server.receive, server.send)
    assert server.messages == []


@pytest.mark.anyio
async def test_a_held_start_is_not_sent_when_the_app_raises() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    server = Server()
    scope = http_scope(headers=[("accept-encoding", "gzip")])
    with pytest.raises(RuntimeError, match="boom"):
        await GZipMiddleware(app)(scope, server.receive, server.send)
    assert server.messages == []


def test_an_error_after_a_held_start_can_still_get_a_500(client_factory: ClientFactory) -> None:
    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    # NOTE: the app's error layer is outside the mounted GZipMiddleware: the start never
    # reached the server, so the error still gets its 500.
    app = App()
    app.mount("/fails", GZipMiddleware(fails))
    with client_factory(app, raise_server_exceptions=False) as client:
        response = client.get("/fails/", headers={"accept-encoding": "gzip"})
        assert response.status_code == 500
        assert response.text == "Internal Server Error"


def test_websockets_pass_through(client_factory: ClientFactory) -> None:
    app = gzip_app()

    @app.websocket("/ws")
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text(TEXT)
        await websocket.close()

    with client_factory(app) as client, client.websocket_connect("/ws") as session:
        assert session.receive_text() == TEXT


# --- CompressionMiddleware -----------------------------------------------------------------


def compression_app(**options: Any) -> App:
    return make_app(Middleware(CompressionMiddleware, **options))


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("gzip", "gzip"),
        ("zstd;q=0.5, br;q=0.8, gzip;q=0.9", "gzip"),
        ("zstd;q=0, *", "br"),
        ("*;q=0.5, gzip;q=0", "zstd"),
        ("identity", None),
    ],
)
def test_negotiation(client_factory: ClientFactory, accept: str, expected: str | None) -> None:
    with client_factory(compression_app()) as client:
        # NOTE: httpx decodes gzip, br and zstd itself, with the brotli and zstandard packages.
        response = client.get("/text", headers={"accept-encoding": accept})
        assert response.headers.get("content-encoding") == expected
        assert response.text == TEXT


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["zstd;q=0", "*"], "br"),
        (["gzip", "identity"], "gzip"),
        (["br;q=0, zstd;q=0", "gzip;q=0.5, *"], "gzip"),
    ],
)
def test_accept_encoding_on_several_lines(
    client_factory: ClientFactory, lines: list[str], expected: str
) -> None:
    with client_factory(compression_app()) as client:
        headers = [("accept-encoding", line) for line in lines]
        response = client.get("/text", headers=headers)
        assert response.headers["content-encoding"] == expected
        assert response.text == TEXT


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip"])
def test_each_encoding_round_trips(client_factory: ClientFactory, encoding: str) -> None:
    with client_factory(compression_app(encodings=[encoding])) as client:
        for path in ("/text", "/stream"):
            with client.stream("GET", path, headers={"accept-encoding": encoding}) as response:
                raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == encoding
            assert decode(encoding, raw) == TEXT.encode()


def decode(encoding: str, body: bytes) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)  # type: ignore[no-any-return]
    if encoding == "br":
        return brotli.decompress(body)  # type: ignore[no-any-return]
    return gzip.decompress(body)


def test_server_preference_breaks_ties(client_factory: ClientFactory) -> None:
    app = compression_app(encodings=["gzip", "br"])
    with client_factory(app) as client:
        response = client.get("/text", headers={"accept-encoding": "br, gzip, zstd"})
        assert response.headers["content-encoding"] == "gzip"


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="'lz4' encoding is not available"):
        CompressionMiddleware(PlainTextResponse("x"), encodings=["lz4"])
    with pytest.raises(ValueError, match="at least one"):
        CompressionMiddleware(PlainTextResponse("x"), encodings=[])
    with pytest.raises(ValueError, match="zstd_level"):
        CompressionMiddleware(PlainTextResponse("x"), zstd_level=22)


def test_helpers() -> None:
    assert available_encodings() == ("zstd", "br", "gzip")
    assert load_optional("microasgi_no_such_module") is None
    assert parse_accept_encoding("gzip;q=0.5, , BR;Q=2, zstd;level=3") == {
        "gzip": 0.5,
        "br": 1.0,
        "zstd": 1.0,
    }
    middleware = CompressionMiddleware(PlainTextResponse("x"))
    for _ in range(300):
        middleware.choose(b"gzip, br;q=0.%d" % _)
    assert len(middleware._choices) == 256
    assert middleware.choose(b"gzip, br;q=0.299") == "gzip"
