from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import pytest

from microasgi.testing import TestClient
from tests.support import RedisServer, free_port, require_executable


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on both backends."""
    return str(request.param)


@pytest.fixture
def client_factory(anyio_backend: str) -> Callable[..., TestClient]:
    """Build a TestClient whose app runs on the backend under test."""
    return functools.partial(TestClient, backend=anyio_backend)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test (in CI a missing one fails, never skips)."""
    server = RedisServer(require_executable("redis-server"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
