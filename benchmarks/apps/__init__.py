"""One module per framework, each exposing the same workload (see ``benchmarks.workload``).

Every module defines:

- ``NAME``: the display name; ``DISTRIBUTION``: the package whose version is reported
  (``None`` for the raw app);
- ``make_app()``: the main app (plaintext, json, users after 100 routes, echo, ws);
- ``make_routing_app(n)``: ``n`` parameterised routes ``/r{i}/{a}/items/{b}``, the target
  being the last one registered;
- ``make_io_app()``: ``GET /io`` awaits ``IO_DELAY`` then answers plaintext (end to end).

Modules that take part in the middleware comparison also define
``make_middleware_app(kind)`` with ``kind`` one of ``MIDDLEWARE_KINDS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# key -> module, in the order the tables list them (raw first: every ratio is to it).
FRAMEWORKS: dict[str, str] = {
    "raw": "benchmarks.apps.raw_asgi",
    "microasgi": "benchmarks.apps.microasgi_app",
    "blacksheep": "benchmarks.apps.blacksheep_app",
    "falcon": "benchmarks.apps.falcon_app",
    "starlette": "benchmarks.apps.starlette_app",
    "litestar": "benchmarks.apps.litestar_app",
    "fastapi": "benchmarks.apps.fastapi_app",
}

# bare: no middleware; http: one request/response pass-through (``@app.middleware("http")``
# or ``BaseHTTPMiddleware``); asgi: one pure ASGI pass-through class.
MIDDLEWARE_KINDS = ("bare", "http", "asgi")
# Display names, known even when a framework does not import.
NAMES: dict[str, str] = {
    "raw": "raw ASGI",
    "microasgi": "microasgi",
    "blacksheep": "BlackSheep",
    "falcon": "Falcon",
    "starlette": "Starlette",
    "litestar": "Litestar",
    "fastapi": "FastAPI",
}
MIDDLEWARE_FRAMEWORKS = ("microasgi", "starlette")


def load(key: str) -> ModuleType:
    """Import the app module of a framework (raises whatever the import raises)."""
    return importlib.import_module(FRAMEWORKS[key])
