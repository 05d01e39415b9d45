from __future__ import annotations

import importlib

import pytest

import microasgi

MODULES = [
    "microasgi",
    "microasgi.routing",
    "microasgi.middleware",
    "microasgi.exceptions",
    "microasgi.limits",
    "microasgi.sse",
    "microasgi.staticfiles",
    "microasgi.broadcast",
    "microasgi.testing",
]


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported)
    assert exported == sorted(exported, key=_isort_key)
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.{attribute} is in __all__ but missing"


def test_public_names_of_the_contract() -> None:
    for name in (
        "App",
        "Router",
        "Request",
        "WebSocket",
        "Response",
        "PlainTextResponse",
        "HTMLResponse",
        "JSONResponse",
        "RedirectResponse",
        "StreamingResponse",
        "HTTPException",
        "WebSocketException",
        "WebSocketDisconnect",
        "BackgroundTask",
        "BackgroundTasks",
        "Limits",
        "Middleware",
        "RouteConflictError",
        "UploadFile",
        "FormData",
        "Headers",
        "QueryParams",
        "URL",
    ):
        assert name in microasgi.__all__, name
    assert microasgi.routing.register_converter is not None


def test_version_matches_the_changelog() -> None:
    from pathlib import Path

    changelog = (Path(__file__).parent.parent / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    released = [line for line in changelog.splitlines() if line.startswith("## [0")]
    if released:
        assert released[0].startswith(f"## [{microasgi.__version__}]")


@pytest.mark.parametrize("name", ["microasgi", "microasgi.middleware"])
def test_unknown_names_are_attribute_errors(name: str) -> None:
    module = importlib.import_module(name)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        module.Nope  # noqa: B018


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, microasgi; print(','.join(m for m in (sys.argv[1:]) if m in sys.modules))"
    # What only forms, files, cookies, the debug page or the watchdog need loads on first
    # use; the server has loaded asyncio by the time a loop runs.
    heavy = (
        "asyncio",
        "python_multipart",
        "hmac",
        "gzip",
        "mimetypes",
        "email.utils",
        "http.cookies",
        "tempfile",
        "html",
        "decimal",
        "anyio.abc",
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, *heavy], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
