"""RequestDecompressionMiddleware: round trips, bombs, refusals, limits, a real server."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import brotli
import httpx
import pytest
import zstandard

from microasgi.app import App
from microasgi.exceptions import HTTPException
from microasgi.limits import Limits
from microasgi.middleware import Middleware, RequestDecompressionMiddleware
from microasgi.middleware._optional import load_optional
from microasgi.middleware.decompression import available_decodings
from microasgi.requests import Request
from microasgi.responses import JSONResponse, StreamingResponse
from microasgi.routing import Router
from microasgi.sse import EventSourceResponse
from microasgi.testing import TestClient
from microasgi.types import Message, Receive, Scope, Send
from tests.integration.servers import require_module, serve, server_argv
from tests.support import free_port

from . import Server, http_scope

ClientFactory = Callable[..., TestClient]

KiB = 1024
MiB = 1024 * KiB

# NOTE: text that compresses about 4:1, so a body spans several messages both ways.
DATA = b"".join(
    b"%d:%s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest()[: i % 48].encode()) for i in range(12000)
)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw-deflate": raw_deflate,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


def encode(coding: str, data: bytes) -> tuple[str, bytes]:
    """The Content-Encoding header for ``coding`` and ``data`` compressed with it."""
    return ("deflate" if coding == "raw-deflate" else coding), COMPRESS[coding](data)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_app(limits: Limits | None = None, **options: Any) -> App:
    app = App(
        middleware=[Middleware(RequestDecompressionMiddleware, **options)],
        limits=limits,
    )

    @app.post("/body")
    async def body(request: Request) -> dict[str, Any]:
        data = await request.body()
        return {
            "size": len(data),
            "sha": digest(data),
            "encoding": request.headers.get("content-encoding"),
            "length": request.headers.get("content-length"),
        }

    @app.post("/json")
    async def parse_json(request: Request) -> Any:
        return await request.json()

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        async with request.form() as form:
            return {
                key: (value if isinstance(value, str) else digest(await value.read()))
                for key, value in form.multi_items()
            }

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, Any]:
        hasher = hashlib.sha256()
        sizes = []
        async for chunk in request.stream():
            hasher.update(chunk)
            sizes.append(len(chunk))
        return {"size": sum(sizes), "sha": hasher.hexdigest(), "largest": max(sizes, default=0)}

    @app.post("/tight", limits=Limits(max_decompressed_size=1000))
    async def tight(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_body_and_stream_round_trip(client_factory: ClientFactory, coding: str) -> None:
    header, compressed = encode(coding, DATA)
    assert len(compressed) > 64 * KiB  # several messages in, several out
    with client_factory(make_app()) as client:
        response = client.post("/body", content=compressed, headers={"content-encoding": header})
        assert response.json() == {
            "size": len(DATA),
            "sha": digest(DATA),
            "encoding": None,
            "length": None,
        }
        response = client.post("/stream", content=compressed, headers={"content-encoding": header})
        result = response.json()
        assert (result["size"], result["sha"]) == (len(DATA), digest(DATA))
        assert result["largest"] <= 2 * MiB


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_json_and_forms_round_trip(client_factory: ClientFactory, coding: str) -> None:
    document = {"name": "microasgi", "items": list(range(2000))}
    header, compressed = encode(coding, JSONResponse(document).body)
    urlencoded = encode(coding, b"a=1&b=two+words&a=3")[1]
    photo = os.urandom(100 * KiB)
    multipart = httpx.Request(
        "POST", "http://x/", data={"title": "hello"}, files={"photo": ("p.bin", photo)}
    )
    multipart_body = encode(coding, multipart.read())[1]
    with client_factory(make_app()) as client:
        response = client.post(
            "/json",
            content=compressed,
            headers={"content-encoding": header, "content-type": "application/json"},
        )
        assert response.json() == document
        response = client.post(
            "/form",
            content=urlencoded,
            headers={
                "content-encoding": header,
                "content-type": "application/x-www-form-urlencoded",
            },
        )
        assert response.json() == {"a": "3", "b": "two words"}
        response = client.post(
            "/form",
            content=multipart_body,
            headers={
                "content-encoding": header,
                "content-type": multipart.headers["content-type"],
            },
        )
        assert response.json() == {"title": "hello", "photo": digest(photo)}


@pytest.mark.anyio
@pytest.mark.parametrize("coding", list(COMPRESS))
@pytest.mark.parametrize("piece", [1, 7, 5000])
async def test_any_message_split(anyio_backend: str, coding: str, piece: int) -> None:
    """The compressed body cut anywhere, down to one byte per message, inflates the same."""
    data = DATA[: 20 * KiB]
    header, compressed = encode(coding, data)
    chunks = [compressed[i : i + piece] for i in range(0, len(compressed), piece)]
    server = Server(chunks)
    scope = http_scope("/stream", "POST", [("content-encoding", header)])
    await make_app()(scope, server.receive, server.send)
    assert server.status == 200
    result = json.loads(server.body)
    assert (result["size"], result["sha"]) == (len(data), digest(data))


@pytest.mark.parametrize(
    ("header", "layers"),
    [
        ("gzip, br", ["gzip", "br"]),
        ("deflate,gzip , zstd", ["deflate", "gzip", "zstd"]),
        ("identity, gzip", ["gzip"]),
        ("GZIP, identity", ["gzip"]),
        ("gzip, gzip, gzip, gzip", ["gzip"] * 4),
    ],
)
def test_stacked_codings_decode_in_reverse(
    client_factory: ClientFactory, header: str, layers: list[str]
) -> None:
    body = DATA
    for layer in layers:
        body = COMPRESS[layer](body)
    with client_factory(make_app()) as client:
        response = client.post("/body", content=body, headers={"content-encoding": header})
        assert (response.json()["size"], response.json()["sha"]) == (len(DATA), digest(DATA))


def test_several_content_encoding_headers_stack(client_factory: ClientFactory) -> None:
    body = brotli.compress(gzip.compress(DATA))
    with client_factory(make_app()) as client:
        response = client.post(
            "/body",
            content=body,
            headers=[("content-encoding", "gzip"), ("content-encoding", "br")],
        )
        assert response.json()["sha"] == digest(DATA)


def test_gzip_members_and_zstd_frames_concatenate(client_factory: ClientFactory) -> None:
    half = len(DATA) // 2
    members = gzip.compress(DATA[:half]) + gzip.compress(DATA[half:])
    frames = COMPRESS["zstd"](DATA[:half]) + COMPRESS["zstd"](DATA[half:])
    with client_factory(make_app()) as client:
        for coding, body in (("gzip", members), ("zstd", frames)):
            response = client.post("/body", content=body, headers={"content-encoding": coding})
            assert response.json()["sha"] == digest(DATA), coding


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_an_empty_body_stays_empty(client_factory: ClientFactory, coding: str) -> None:
    with client_factory(make_app()) as client:
        response = client.post("/body", content=b"", headers={"content-encoding": coding})
        assert response.json()["size"] == 0


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_an_empty_compressed_stream(client_factory: ClientFactory, coding: str) -> None:
    with client_factory(make_app()) as client:
        body = COMPRESS[coding](b"")
        response = client.post("/body", content=body, headers={"content-encoding": coding})
        assert (response.status_code, response.json()["size"]) == (200, 0)


# -- what passes untouched ----------------------------------------------------------------


@pytest.mark.anyio
async def test_no_content_encoding_passes_the_same_scope(anyio_backend: str) -> None:
    seen: list[tuple[Scope, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, receive, send))

    middleware = RequestDecompressionMiddleware(app)
    server = Server()
    for scope in (
        http_scope("/", "POST", [("content-length", "3")]),
        http_scope("/", "POST", [("content-encoding", "identity"), ("content-length", "3")]),
        http_scope("/", "POST", [("content-encoding", " , identity")]),
        http_scope("/", scope_type="websocket", headers=[("content-encoding", "gzip")]),
        {"type": "lifespan"},
    ):
        await middleware(scope, server.receive, server.send)
        assert seen.pop() == (scope, server.receive, server.send)


@pytest.mark.anyio
async def test_the_servers_scope_is_not_changed(anyio_backend: str) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        message = await receive()
        assert message == {"type": "http.request", "body": b"hello", "more_body": False}

    scope = http_scope(
        "/",
        "POST",
        [("Content-Type", "text/plain"), ("Content-Encoding", "gzip"), ("Content-Length", "9")],
    )
    original = [*scope["headers"]]
    scope["microasgi.body"] = b"compressed, cached further out"
    scope["microasgi.form"] = object()
    server = Server(gzip.compress(b"hello"))
    await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert scope["headers"] == original
    assert seen[0] is not scope
    assert seen[0]["headers"] == [(b"content-type", b"text/plain")]
    assert "microasgi.body" not in seen[0]
    assert "microasgi.form" not in seen[0]


def test_decoding_after_an_http_middleware_that_read_the_body(
    client_factory: ClientFactory,
) -> None:
    """Added in the wrong order: the outer function sees the compressed body, the handler
    the inflated one (the replayed body goes through the decoder)."""
    app = App()

    @app.middleware("http")
    async def peek(request: Request, call_next: Callable[[Request], Any]) -> Any:
        compressed = await request.body()
        response = await call_next(request)
        response.headers["x-outer-size"] = str(len(compressed))
        return response

    app.add_middleware(RequestDecompressionMiddleware)

    @app.post("/")
    async def handler(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    body = gzip.compress(DATA)
    with client_factory(app) as client:
        response = client.post("/", content=body, headers={"content-encoding": "gzip"})
        assert response.json() == {"size": len(DATA)}
        assert response.headers["x-outer-size"] == str(len(body))


# -- bombs --------------------------------------------------------------------------------


def _zero_segments(wbits: int, mib: int) -> Iterator[bytes]:
    """A valid deflate/zlib/gzip stream of ``mib`` MiB of zeros, about 1 KiB per MiB.

    A full flush makes each MiB's compressed segment independent of the previous ones, so
    one segment is repeated rather than compressing the whole (seconds for 1 GiB).
    """
    block = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)
    if wbits == 31:
        yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    elif wbits == 15:
        yield b"\x78\xda"
    check = zlib.crc32(b"") if wbits == 31 else zlib.adler32(b"")
    for _ in range(mib):
        yield segment
        check = zlib.crc32(block, check) if wbits == 31 else zlib.adler32(block, check)
    yield end
    if wbits == 31:
        yield struct.pack("<II", check, (mib * MiB) & 0xFFFFFFFF)
    elif wbits == 15:
        yield struct.pack(">I", check)


def zero_bomb(coding: str, mib: int) -> bytes:
    """``mib`` MiB of zeros compressed with ``coding``, built a MiB at a time."""
    if coding in ("gzip", "deflate", "raw-deflate"):
        wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
        return b"".join(_zero_segments(wbits, mib))
    block = bytes(MiB)
    if coding == "br":
        compressor = brotli.Compressor(quality=1)
        return b"".join([*(compressor.process(block) for _ in range(mib)), compressor.finish()])
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    return b"".join([*(stream.compress(block) for _ in range(mib)), stream.flush()])


@pytest.fixture(scope="module")
def gigabyte_bombs() -> dict[str, bytes]:
    """1 GiB of zeros in every coding (gzip: about 1 MiB on the wire)."""
    return {coding: zero_bomb(coding, 1024) for coding in ("gzip", "deflate", "br", "zstd")}


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_the_bomb_builder_makes_valid_streams(coding: str) -> None:
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
    assert zlib.decompress(zero_bomb(coding, 3), wbits) == bytes(3 * MiB)


@pytest.mark.anyio
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("route", ["/body", "/stream"])
@pytest.mark.parametrize("piece", [64 * KiB, None])
async def test_a_gigabyte_bomb_is_a_413_in_bounded_memory(
    anyio_backend: str,
    gigabyte_bombs: dict[str, bytes],
    coding: str,
    route: str,
    piece: int | None,
) -> None:
    """1 GiB of zeros, sent in 64 KiB messages or in a single one, against a 1 MiB limit:
    413 with the reason, and the traced peak stays near the limit (body) or far under it
    (stream); the bomb itself is allocated before tracing starts."""
    bomb = gigabyte_bombs[coding]
    chunks = [bomb] if piece is None else [bomb[i : i + piece] for i in range(0, len(bomb), piece)]
    app = make_app(Limits(max_decompressed_size=MiB, max_body_size=None))
    server = Server(chunks)
    scope = http_scope(route, "POST", [("content-encoding", coding)])
    tracemalloc.start()
    try:
        await app(scope, server.receive, server.send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.status == 413
    assert b"inflates past the limit of 1048576 bytes (max_decompressed_size)" in server.body
    assert peak < (MiB + 3 * MiB if route == "/body" else 3 * MiB), peak


def test_a_bomb_through_the_test_client(
    client_factory: ClientFactory, gigabyte_bombs: dict[str, bytes]
) -> None:
    with client_factory(make_app()) as client:
        response = client.post(
            "/body", content=gigabyte_bombs["gzip"], headers={"content-encoding": "gzip"}
        )
        assert response.status_code == 413
        assert response.json() == {
            "detail": "Request body inflates past the limit of 10485760 bytes "
            "(max_decompressed_size)"
        }


def test_every_stage_of_a_stack_is_bounded(client_factory: ClientFactory) -> None:
    """2 MiB of empty gzip blocks, which inflate to nothing, in br: the middle is refused."""
    inner = gzip_of_nothing(2 * MiB)
    assert zlib.decompress(inner, 31) == b""
    body = brotli.compress(inner, quality=5)
    app = make_app(Limits(max_decompressed_size=MiB, max_body_size=None))
    with client_factory(app) as client:
        response = client.post("/stream", content=body, headers={"content-encoding": "gzip, br"})
        assert response.status_code == 413


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("length", "status"), [("9" * 5000, 413), ("0" * 5000 + "5", 200), ("\u00b2", 200)]
)
async def test_an_announced_length_is_read_as_ascii_digits(
    anyio_backend: str, length: str, status: int
) -> None:
    """A Content-Length past int()'s 4300 digits is a 413, not a 500; a non-number is ignored."""
    app = make_app(Limits(max_body_size=MiB))
    server = Server([gzip.compress(b"hello")])
    headers = [("content-encoding", "gzip"), ("content-length", length)]
    await app(http_scope("/body", "POST", headers), server.receive, server.send)
    assert server.status == status


def test_the_limit_is_inclusive(client_factory: ClientFactory) -> None:
    app = make_app(Limits(max_decompressed_size=len(DATA)))
    with client_factory(app) as client:
        body = gzip.compress(DATA)
        headers = {"content-encoding": "gzip"}
        assert client.post("/body", content=body, headers=headers).status_code == 200
        body = gzip.compress(DATA + b"!")
        assert client.post("/body", content=body, headers=headers).status_code == 413


def test_route_limits_apply(client_factory: ClientFactory) -> None:
    body = gzip.compress(bytes(1001))
    with client_factory(make_app()) as client:
        response = client.post("/tight", content=body, headers={"content-encoding": "gzip"})
        assert response.status_code == 413
        assert "limit of 1000 bytes" in response.json()["detail"]
        response = client.post("/body", content=body, headers={"content-encoding": "gzip"})
        assert response.json()["size"] == 1001


def mounted_apps() -> dict[str, Any]:
    """What a decompressing app can serve a route through: each is mounted at /m."""
    tight = Limits(max_decompressed_size=1000)
    loose = Limits(max_decompressed_size=None, max_body_size=None)
    sub = App()
    router = Router(limits=tight)
    wide = Router(limits=loose)

    @sub.post("/tight", limits=tight)
    @sub.post("/loose", limits=loose)
    @router.post("/tight")
    @wide.post("/loose")
    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return {"app": sub, "router": router, "wide": wide}


@pytest.mark.parametrize("kind", ["app", "router"])
def test_route_limits_apply_under_a_mount(client_factory: ClientFactory, kind: str) -> None:
    app = make_app()
    app.mount("/m", mounted_apps()[kind])
    body = gzip.compress(bytes(1001))
    with client_factory(app) as client:
        response = client.post("/m/tight", content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 413
    assert response.json() == {
        "detail": "Request body inflates past the limit of 1000 bytes (max_decompressed_size)"
    }


@pytest.mark.parametrize("kind", ["app", "wide"])
def test_lifted_route_limits_apply_under_a_mount(client_factory: ClientFactory, kind: str) -> None:
    app = make_app(Limits(max_decompressed_size=MiB, max_body_size=MiB))
    app.mount("/m", mounted_apps()[kind])
    body = zero_bomb("gzip", 4)
    with client_factory(app) as client:
        response = client.post("/m/loose", content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200
    assert response.json() == {"size": 4 * MiB}


def test_no_decompressed_limit(client_factory: ClientFactory) -> None:
    app = make_app(Limits(max_decompressed_size=None, max_body_size=None))
    with client_factory(app) as client:
        body = zero_bomb("gzip", 64)
        response = client.post("/stream", content=body, headers={"content-encoding": "gzip"})
        assert response.json()["size"] == 64 * MiB


# -- max_body_size, as sent and as inflated -----------------------------------------------


def test_max_body_size_counts_inflated_bytes(client_factory: ClientFactory) -> None:
    app = make_app(Limits(max_body_size=1000, max_decompressed_size=None))
    with client_factory(app) as client:
        body = gzip.compress(bytes(5000))
        assert len(body) < 1000
        for route in ("/body", "/stream"):
            response = client.post(route, content=body, headers={"content-encoding": "gzip"})
            assert response.status_code == 413
            assert response.json() == {"detail": "Request body exceeds the limit of 1000 bytes"}


@pytest.mark.anyio
async def test_max_body_size_counts_inflated_bytes_for_any_app(anyio_backend: str) -> None:
    """Enforced by the middleware itself too, for an app that reads ``receive`` directly."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["microasgi.limits"] = Limits(max_body_size=1000, max_decompressed_size=None)
        while (await receive()).get("more_body"):
            pass

    server = Server(gzip.compress(bytes(5000)))
    scope = http_scope("/", "POST", [("content-encoding", "gzip")])
    await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert server.status == 413


def gzip_of_nothing(size: int) -> bytes:
    """A valid gzip stream of about ``size`` bytes that inflates to nothing."""
    nothing = b"\x00\x00\x00\xff\xff" * (size // 5)  # empty stored blocks
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + nothing + b"\x03\x00" + bytes(8)


def test_max_body_size_counts_compressed_bytes(client_factory: ClientFactory) -> None:
    """Empty stored blocks inflate to nothing: the bytes as sent are bounded too."""
    body = gzip_of_nothing(5000)
    assert zlib.decompress(body, 31) == b""
    app = make_app(Limits(max_body_size=1000))
    with client_factory(app) as client:
        # Announced by Content-Length: refused before reading.
        response = client.post("/body", content=body, headers={"content-encoding": "gzip"})
        assert response.status_code == 413
        # Chunked: refused as the count crosses the limit.
        response = client.post(
            "/body", content=iter([body[:600], body[600:]]), headers={"content-encoding": "gzip"}
        )
        assert response.status_code == 413
        assert response.json() == {"detail": "Request body exceeds the limit of 1000 bytes"}


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["compress", "gzip, foo", "x-bzip2", "gzip, identity, *"])
def test_an_unknown_coding_is_a_415(client_factory: ClientFactory, header: str) -> None:
    with client_factory(make_app()) as client:
        response = client.post("/body", content=b"x", headers={"content-encoding": header})
        assert response.status_code == 415
        assert response.headers["accept-encoding"] == ", ".join(available_decodings())
        detail = response.json()["detail"]
        assert detail.startswith("Unsupported Content-Encoding '")
        assert detail.endswith("may be encoded with gzip, deflate, br, zstd (or identity)")


def test_too_many_codings_is_a_415(client_factory: ClientFactory) -> None:
    with client_factory(make_app()) as client:
        response = client.post(
            "/body", content=b"x", headers={"content-encoding": "gzip, gzip, gzip, gzip, gzip"}
        )
        assert response.status_code == 415
        assert response.json() == {
            "detail": "Content-Encoding stacks 5 codings; at most 4 are decoded"
        }


def test_encodings_can_be_restricted(client_factory: ClientFactory) -> None:
    app = make_app(encodings=["GZIP"])
    with client_factory(app) as client:
        response = client.post(
            "/body", content=COMPRESS["br"](DATA), headers={"content-encoding": "br"}
        )
        assert response.status_code == 415
        assert response.headers["accept-encoding"] == "gzip"
        response = client.post(
            "/body", content=gzip.compress(DATA), headers={"content-encoding": "x-gzip"}
        )
        assert response.json()["size"] == len(DATA)
    with client_factory(make_app(encodings=["br"])) as client:
        response = client.post("/body", content=b"x", headers={"content-encoding": "x-gzip"})
        assert response.status_code == 415
    with client_factory(make_app(encodings=[])) as client:
        response = client.post("/body", content=b"x", headers={"content-encoding": "gzip"})
        assert response.json()["detail"].endswith("encoded with no coding (or identity)")


def test_an_unavailable_encoding_fails_at_start() -> None:
    with pytest.raises(ValueError, match="'lzma' request encoding cannot be decoded here"):
        RequestDecompressionMiddleware(make_app(), encodings=["lzma"])


def _truncated(coding: str) -> bytes:
    return COMPRESS[coding](DATA)[: -20 if coding != "raw-deflate" else 1000]


CORRUPT = {
    "gzip": [b"not gzip at all", gzip.compress(DATA) + b"trailing garbage"],
    "deflate": [b"\x78\x9c garbage", zlib.compress(DATA) + b"x", b"\xff\xff\xff"],
    "br": [b"\xff" * 20, brotli.compress(DATA) + b"x"],
    "zstd": [b"garbage, not zstd", COMPRESS["zstd"](DATA) + b"xyzw garbage"],
}


@pytest.mark.parametrize(
    ("coding", "body"),
    [(coding, body) for coding, bodies in CORRUPT.items() for body in bodies],
)
def test_corrupt_data_is_a_400(client_factory: ClientFactory, coding: str, body: bytes) -> None:
    with client_factory(make_app()) as client:
        for route in ("/body", "/stream"):
            response = client.post(route, content=body, headers={"content-encoding": coding})
            assert response.status_code == 400
            assert response.json()["detail"].startswith(f"Malformed {coding} request body: ")


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br", "zstd"])
def test_truncated_data_is_a_400(client_factory: ClientFactory, coding: str) -> None:
    header, _ = encode(coding, b"")
    with client_factory(make_app()) as client:
        response = client.post(
            "/body", content=_truncated(coding), headers={"content-encoding": header}
        )
        assert response.status_code == 400
        assert response.json() == {"detail": f"Truncated {header} request body: it ends mid-stream"}
        response = client.post("/body", content=b"\x1f", headers={"content-encoding": "gzip"})
        assert response.json() == {"detail": "Truncated gzip request body: it ends mid-stream"}


def test_a_zstd_window_over_8_mib_is_refused(client_factory: ClientFactory) -> None:
    params = zstandard.ZstdCompressionParameters(window_log=24, write_content_size=False)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = stream.compress(b"x" * 100) + stream.flush()
    with client_factory(make_app()) as client:
        response = client.post("/body", content=body, headers={"content-encoding": "zstd"})
        assert response.status_code == 400
        assert "too much memory" in response.json()["detail"]


# -- errors once the response has started, and other ASGI apps ----------------------------


class StrictServer(Server):
    """Refuses a second response start, as real servers do."""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self.messages:
            raise RuntimeError("the response has already started")
        await super().send(message)


@pytest.mark.anyio
async def test_a_started_response_is_cut_short(anyio_backend: str) -> None:
    app = make_app(Limits(max_decompressed_size=200 * KiB, max_body_size=None))

    @app.post("/echo")
    async def echo(request: Request) -> StreamingResponse:
        return StreamingResponse(request.stream())

    server = StrictServer([zero_bomb("gzip", 1)[i : i + 100] for i in range(0, 1100, 100)])
    await app(
        http_scope("/echo", "POST", [("content-encoding", "gzip")]), server.receive, server.send
    )
    assert server.status == 200
    assert 0 < len(server.body) <= 200 * KiB
    assert "complete" not in server.events


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"not gzip", [("content-encoding", "gzip")]),
        (b"x", [("content-encoding", "gzip"), ("content-length", "99999999999")]),
    ],
)
@pytest.mark.parametrize(("path", "spec_version"), [("/stream", "2.3"), ("/events", "2.4")])
async def test_a_refused_body_nobody_reads_cuts_a_stream_short_quietly(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: list[tuple[str, str]],
    path: str,
    spec_version: str,
) -> None:
    # NOTE: an event stream (and, before ASGI 2.4, any stream) listens on receive() for the
    # disconnect, and so meets the refusal of a body that the handler never reads.
    app = make_app()

    async def chunks() -> Any:
        yield "a"
        await anyio.sleep(5)
        yield "b"

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(chunks(), ping=None)

    server = StrictServer(body)
    scope = http_scope(path, "GET", headers, spec_version=spec_version)
    with anyio.fail_after(2):
        await app(scope, server.receive, server.send)
    assert server.status == 200
    assert len(server.events) == 2  # the start, then the first chunk alone
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def _read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


@pytest.mark.anyio
async def test_an_asgi_app_below_is_answered_for(anyio_backend: str) -> None:
    calls = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        scope["microasgi.limits"] = Limits(max_decompressed_size=1000)
        body = await _read_all(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    middleware = RequestDecompressionMiddleware(app)
    scope = http_scope("/", "POST", [("content-encoding", "gzip")])
    server = Server(gzip.compress(bytes(2000)))
    await middleware(scope, server.receive, server.send)
    assert server.status == 413
    assert server.body == (
        b'{"detail":"Request body inflates past the limit of 1000 bytes (max_decompressed_size)"}'
    )
    server = Server(b"not gzip")
    await middleware(scope, server.receive, server.send)
    assert server.status == 400
    server = Server(gzip.compress(b"fine"))
    await middleware(scope, server.receive, server.send)
    assert (server.status, server.body) == (200, b"fine")


@pytest.mark.anyio
async def test_an_asgi_app_below_that_started_is_cut_short(anyio_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["microasgi.limits"] = Limits(max_decompressed_size=1000)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await _read_all(receive)

    server = Server(gzip.compress(bytes(2000)))
    scope = http_scope("/", "POST", [("content-encoding", "gzip")])
    await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert server.events == ["http.response.start"]


@pytest.mark.anyio
async def test_other_errors_of_the_app_pass_through(anyio_backend: str) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise HTTPException(418)

    server = Server(gzip.compress(b"x"))
    scope = http_scope("/", "POST", [("content-encoding", "gzip")])
    with pytest.raises(HTTPException) as caught:
        await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert caught.value.status_code == 418


@pytest.mark.anyio
async def test_receive_after_an_error_raises_it_again(anyio_backend: str) -> None:
    errors: list[HTTPException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(2):
            try:
                await receive()
            except HTTPException as exc:
                errors.append(exc)

    server = Server(b"not gzip")
    scope = http_scope("/", "POST", [("content-encoding", "gzip")])
    await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert len(errors) == 2
    assert errors[0] is errors[1]
    assert errors[0].status_code == 400


@pytest.mark.anyio
async def test_receive_after_the_body_and_disconnects(anyio_backend: str) -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        messages.append(await receive())

    server = Server(gzip.compress(b"hello"))
    server.disconnected.set()
    scope = http_scope("/", "POST", [("content-encoding", "gzip")])
    await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert messages == [
        {"type": "http.request", "body": b"hello", "more_body": False},
        {"type": "http.disconnect"},
    ]
    # A client that leaves mid-body: the disconnect reaches the app.
    messages.clear()
    server = Server([gzip.compress(b"hello")[:5]])
    server._requests[0]["more_body"] = True
    server.disconnected.set()
    await RequestDecompressionMiddleware(app)(scope, server.receive, server.send)
    assert messages == [{"type": "http.disconnect"}, {"type": "http.disconnect"}]


@pytest.mark.anyio
async def test_a_poll_for_disconnect_keeps_the_body(anyio_backend: str) -> None:
    app = make_app()

    @app.post("/poll")
    async def poll(request: Request) -> dict[str, int]:
        assert not await request.is_disconnected()
        return {"size": len(await request.body())}

    server = Server([gzip.compress(DATA)])
    await app(
        http_scope("/poll", "POST", [("content-encoding", "gzip")]), server.receive, server.send
    )
    assert (server.status, json.loads(server.body)) == (200, {"size": len(DATA)})


# -- what this Python can decode ----------------------------------------------------------


@pytest.fixture
def fresh_imports() -> Iterator[None]:
    load_optional.cache_clear()
    yield
    load_optional.cache_clear()


def test_available_decodings(fresh_imports: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert available_decodings() == ("gzip", "deflate", "br", "zstd")
    assert RequestDecompressionMiddleware(make_app()).encodings == available_decodings()
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "brotli", None)
    load_optional.cache_clear()
    assert available_decodings() == ("gzip", "deflate")


def test_old_brotli_is_not_used(fresh_imports: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """brotli before 1.2 cannot bound the output of one call: br is not offered."""

    class Decompressor:
        def process(self, data: bytes) -> bytes:
            raise AssertionError("unbounded")

    old = type(sys)("brotli")
    old.Decompressor = Decompressor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "brotli", old)
    assert "br" not in available_decodings()


# -- a real server ------------------------------------------------------------------------


def served_app() -> App:
    """The app uvicorn serves in the test below (``--factory``)."""
    return make_app(Limits(max_decompressed_size=4 * MiB, max_body_size=8 * MiB))


@pytest.mark.integration
def test_uvicorn(tmp_path: Path) -> None:
    require_module("uvicorn")
    port = free_port()
    app = "tests.middleware.test_decompression:served_app"
    argv = [*server_argv("uvicorn", app, port), "--factory"]
    with (
        serve(argv, tmp_path / "server.log", port=port) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client,
    ):
        body = gzip.compress(DATA)
        response = client.post("/body", content=body, headers={"content-encoding": "gzip"})
        assert response.json() == {
            "size": len(DATA),
            "sha": digest(DATA),
            "encoding": None,
            "length": None,
        }
        # Chunked, in small pieces.
        pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
        response = client.post("/stream", content=pieces, headers={"content-encoding": "gzip"})
        assert response.json()["sha"] == digest(DATA)
        response = client.post(
            "/body", content=zero_bomb("gzip", 1024), headers={"content-encoding": "gzip"}
        )
        assert response.status_code == 413
        assert "max_decompressed_size" in response.json()["detail"]
        response = client.post("/body", content=b"x", headers={"content-encoding": "lz4"})
        assert response.status_code == 415
        # The connection survives all that.
        response = client.post(
            "/body", content=COMPRESS["zstd"](DATA), headers={"content-encoding": "zstd"}
        )
        assert response.json()["sha"] == digest(DATA)
