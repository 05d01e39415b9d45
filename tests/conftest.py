from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from microasgi.testing import TestClient


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on both backends."""
    return str(request.param)


@pytest.fixture
def client_factory(anyio_backend: str) -> Callable[..., TestClient]:
    """Build a TestClient whose app runs on the backend under test."""
    return functools.partial(TestClient, backend=anyio_backend)
