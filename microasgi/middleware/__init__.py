"""Middleware: the ``Middleware`` spec (a class and its options) and the built-in layers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from microasgi._utils import lazy_attributes
from microasgi.types import ASGIApp

if TYPE_CHECKING:
    from .cors import CORSMiddleware
    from .csrf import CSRFMiddleware
    from .decompression import RequestDecompressionMiddleware
    from .gzip import CompressionMiddleware, GZipMiddleware
    from .http import HTTPMiddleware
    from .httpsredirect import HTTPSRedirectMiddleware
    from .proxyheaders import ProxyHeadersMiddleware
    from .requestid import RequestIDFilter, RequestIDMiddleware
    from .sessions import SessionMiddleware
    from .timeout import TimeoutMiddleware
    from .trustedhost import TrustedHostMiddleware

# PERF: the built-in layers load on first use, so `import microasgi` does not pay for
# hashing, compression and the rest in apps that never use them.
_BUILT_IN = {
    "CORSMiddleware": ".cors",
    "CSRFMiddleware": ".csrf",
    "CompressionMiddleware": ".gzip",
    "GZipMiddleware": ".gzip",
    "HTTPMiddleware": ".http",
    "HTTPSRedirectMiddleware": ".httpsredirect",
    "ProxyHeadersMiddleware": ".proxyheaders",
    "RequestDecompressionMiddleware": ".decompression",
    "RequestIDFilter": ".requestid",
    "RequestIDMiddleware": ".requestid",
    "SessionMiddleware": ".sessions",
    "TimeoutMiddleware": ".timeout",
    "TrustedHostMiddleware": ".trustedhost",
}


__getattr__ = lazy_attributes(__name__, _BUILT_IN)


__all__ = [
    "CORSMiddleware",
    "CSRFMiddleware",
    "CompressionMiddleware",
    "GZipMiddleware",
    "HTTPMiddleware",
    "HTTPSRedirectMiddleware",
    "Middleware",
    "ProxyHeadersMiddleware",
    "RequestDecompressionMiddleware",
    "RequestIDFilter",
    "RequestIDMiddleware",
    "SessionMiddleware",
    "TimeoutMiddleware",
    "TrustedHostMiddleware",
]


class Middleware:
    """A middleware class with the options to build it with, applied when the app starts.

    ``Middleware(CORSMiddleware, allow_origins=["https://example.com"])``; the class is
    called as ``cls(app, *args, **options)`` and must return an ASGI app.
    """

    __slots__ = ("args", "cls", "kwargs")

    def __init__(self, cls: Any, /, *args: Any, **kwargs: Any) -> None:
        if not callable(cls):
            raise TypeError(f"Middleware() needs a middleware class, got {cls!r}")
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Any]:
        return iter((self.cls, self.args, self.kwargs))

    def build(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` in this middleware."""
        return self.cls(app, *self.args, **self.kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        name = getattr(self.cls, "__name__", repr(self.cls))
        options = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Middleware({', '.join([name, *options])})"


def checked_middleware(middleware: Iterable[Middleware] | None) -> list[Middleware]:
    """Return ``middleware`` as a list; ``TypeError`` for an entry that is not a ``Middleware``.

    At registration, so that ``middleware=[CORSMiddleware]`` fails where it is written, not
    when the app starts.
    """
    # NOTE: typed as Any: the check is for callers that pass what the annotation forbids.
    specs: list[Any] = list(middleware or ())
    for spec in specs:
        if not isinstance(spec, Middleware):
            name = getattr(spec, "__name__", None) if callable(spec) else None
            hint = f"Middleware({name}, ...)" if name else "Middleware(cls, **options)"
            raise TypeError(
                f"middleware= takes Middleware(cls, **options) entries, got {spec!r}: write {hint}"
            )
    return specs


def build_stack(app: ASGIApp, middleware: list[Middleware] | tuple[Middleware, ...]) -> ASGIApp:
    """Wrap ``app`` so that the first middleware in the list is the outermost."""
    for spec in reversed(middleware):
        app = spec.build(app)
    return app
