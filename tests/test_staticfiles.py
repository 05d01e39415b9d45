from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microasgi.app import App
from microasgi.exceptions import HTTPException
from microasgi.limits import Limits
from microasgi.requests import Request
from microasgi.responses import JSONResponse
from microasgi.staticfiles import StaticFiles, _segments
from microasgi.testing import TestClient
from microasgi.types import Message, Scope

ClientFactory = Callable[..., TestClient]

SECRET = b"TOP-SECRET"
POSIX = os.name == "posix"


def make_tree(base: Path) -> Path:
    """A served directory `static`, with secrets beside it and symlinks pointing out."""
    static = base / "static"
    (static / "sub").mkdir(parents=True)
    (static / "empty-dir").mkdir()
    (static / "a.txt").write_bytes(b"file a")
    (static / "sub" / "b.txt").write_bytes(b"file b")
    (static / "café menu.txt").write_bytes(b"unicode name")
    (static / "%2e%2e").write_bytes(b"a file literally named %2e%2e")
    (base / "secret.txt").write_bytes(SECRET)
    (base / "static-secret").mkdir()
    (base / "static-secret" / "x.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "shared.txt").write_bytes(b"shared outside")
    if POSIX:
        (static / "link-in").symlink_to("a.txt")
        (static / "link-out").symlink_to("../secret.txt")
        (static / "link-sibling").symlink_to("../static-secret")
        (static / "link-abs").symlink_to(base / "outside" / "shared.txt")
        (static / "link-loop").symlink_to("link-loop")
    return static


@pytest.fixture
def static(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


def mounted(directory: Path, **options: Any) -> App:
    app = App()
    app.mount("/static", StaticFiles(directory=directory, **options))
    return app


def scope_for(path: str, method: str = "GET", root_path: str = "/static", **extra: Any) -> Scope:
    """An HTTP scope with an already decoded ``path``, as a server builds it."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "extensions": {},
    }
    scope.update(extra)
    return scope


async def call(app: Any, scope: Scope) -> tuple[int, dict[str, str], bytes]:
    """Run ``app`` on ``scope`` as a server would; return status, headers and body."""
    messages: list[Message] = []
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        messages.append(message)

    with anyio.fail_after(10):
        await app(scope, receive, send)
    start = messages[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in messages[1:])


# --- serving ---------------------------------------------------------------------------------


def test_serves_files(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(mounted(static)) as client:
        response = client.get("/static/a.txt")
        assert response.status_code == 200
        assert response.content == b"file a"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["content-length"] == "6"
        assert response.headers["accept-ranges"] == "bytes"
        assert "etag" in response.headers and "last-modified" in response.headers
        assert client.get("/static/sub/b.txt").content == b"file b"
        assert client.get("/static/caf%C3%A9%20menu.txt").content == b"unicode name"
        assert client.get("/static//sub//b.txt").content == b"file b"
        assert client.get("/static/./sub/./b.txt").content == b"file b"


def test_head(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(mounted(static)) as client:
        response = client.head("/static/a.txt")
        missing = client.head("/static/missing.txt")
    assert response.status_code == 200
    assert response.headers["content-length"] == "6"
    assert response.content == b""
    assert missing.status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"])
def test_other_methods_get_405_with_allow(
    client_factory: ClientFactory, static: Path, method: str
) -> None:
    with client_factory(mounted(static)) as client:
        response = client.request(method, "/static/a.txt")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json() == {"detail": "Method Not Allowed"}


def test_conditional_and_range_requests(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(mounted(static)) as client:
        first = client.get("/static/a.txt")
        cached = client.get("/static/a.txt", headers={"if-none-match": first.headers["etag"]})
        since = client.get(
            "/static/a.txt", headers={"if-modified-since": first.headers["last-modified"]}
        )
        part = client.get("/static/a.txt", headers={"range": "bytes=5-"})
        unsatisfiable = client.get("/static/a.txt", headers={"range": "bytes=50-"})
    assert (cached.status_code, cached.content) == (304, b"")
    assert since.status_code == 304
    assert (part.status_code, part.content) == (206, b"a")
    assert part.headers["content-range"] == "bytes 5-5/6"
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == "bytes */6"


def test_range_cap_follows_the_app_limits(client_factory: ClientFactory, static: Path) -> None:
    app = App(limits=Limits(max_ranges=1))
    app.mount("/static", StaticFiles(directory=static))
    with client_factory(app) as client:
        one = client.get("/static/a.txt", headers={"range": "bytes=0-0"})
        two = client.get("/static/a.txt", headers={"range": "bytes=0-0,2-2"})
    assert one.status_code == 206
    assert (two.status_code, two.content) == (200, b"file a")


def test_cache_control(client_factory: ClientFactory, static: Path) -> None:
    (static / "404.html").write_text("gone")
    app = mounted(static, html=True, cache_control="public, max-age=3600")
    with client_factory(app) as client:
        found = client.get("/static/a.txt")
        cached = client.get("/static/a.txt", headers={"if-none-match": found.headers["etag"]})
        missing = client.get("/static/missing")
    assert found.headers["cache-control"] == "public, max-age=3600"
    assert cached.headers["cache-control"] == "public, max-age=3600"
    assert missing.status_code == 404
    assert "cache-control" not in missing.headers
    with pytest.raises(ValueError, match="CR, LF"):
        StaticFiles(directory=static, cache_control="public\r\nSet-Cookie: a=b")


# --- refusals: the same 404 for everything -------------------------------------------------------

# What a client sends (percent-encoded); the server decodes it once into scope["path"].
ENCODED_PROBES = [
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/..%2Fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/static/sub/%2e%2e/%2e%2e/secret.txt",
    "/static/%2e%2e/static-secret/x.txt",
    "/static/..%2fstatic-secret%2fx.txt",
    "/static/..%5csecret.txt",
    "/static/%5c%5chost%5cshare%5csecret.txt",
    "/static/%5C..%5Csecret.txt",
    "/static/a.txt%00.png",
    "/static/%00",
    "/static/...",
    "/static/.%2e/secret.txt",
    "/static/..%20/secret.txt",
    "/static/%2e%2e%20/secret.txt",
    "/static/C:%5cWindows%5cwin.ini",
    "/static/C:secret.txt",
    "/static/" + "%2e%2e/" * 30 + "etc/passwd",
    "/static/" + "a" * 10_000,
    "/static/missing.txt",
    "/static/sub",
    "/static/sub/",
    "/static/empty-dir/",
    "/static/",
    "/static",
    "/static/a.txt/",
    "/static/a.txt/x",
]
# Already decoded: what a server could put in scope["path"] for other encodings.
DECODED_PROBES = [
    "/static/../secret.txt",
    "/static/../static-secret/x.txt",
    "/static/sub/../../secret.txt",
    "/static/sub/../a.txt",
    "/static/..\\secret.txt",
    "/static/\\..\\secret.txt",
    "/static/\\\\host\\share\\secret.txt",
    "/static/a.txt\x00.png",
    "/static//etc/passwd",
    "/static///etc/passwd",
    "/static/" + "../" * 30 + "etc/passwd",
    "/static/ ../secret.txt",
    "/static/.. /secret.txt",
    "/static/.../secret.txt",
    "/static/c:/secret.txt",
    "/static/\udcff",
    "/static/\u2025/secret.txt",
    "/static/\uff0e\uff0e/secret.txt",
]
SYMLINK_PROBES = [
    "/static/link-out",
    "/static/link-sibling/x.txt",
    "/static/link-abs",
    "/static/link-loop",
]


def not_found(client: TestClient) -> tuple[int, dict[str, str], bytes]:
    response = client.get("/static/missing.txt")
    return response.status_code, dict(response.headers), response.content


@pytest.mark.parametrize("path", ENCODED_PROBES)
def test_encoded_probes_get_the_same_404(
    client_factory: ClientFactory, static: Path, path: str
) -> None:
    with client_factory(mounted(static)) as client:
        reference = not_found(client)
        response = client.get(path, follow_redirects=False)
    assert (response.status_code, dict(response.headers), response.content) == reference
    assert SECRET not in response.content


@pytest.mark.anyio
@pytest.mark.parametrize("path", DECODED_PROBES + (SYMLINK_PROBES if POSIX else []))
async def test_decoded_probes_get_the_same_404(static: Path, path: str) -> None:
    app = mounted(static)
    reference = await call(app, scope_for("/static/missing.txt"))
    assert reference[0] == 404
    assert await call(app, scope_for(path)) == reference


@pytest.mark.anyio
async def test_probes_on_a_standalone_app_get_plain_404(static: Path) -> None:
    app = StaticFiles(directory=static)
    for path in ["/missing.txt", "/../secret.txt", "/sub", "/..%2fsecret.txt", "//etc/passwd"]:
        status, headers, body = await call(app, scope_for(path, root_path=""))
        assert (status, body) == (404, b"Not Found"), path
        assert headers["content-type"] == "text/plain; charset=utf-8"


def test_double_encoding_is_decoded_only_once(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(mounted(static)) as client:
        literal = client.get("/static/%252e%252e")  # a file named "%2e%2e"
        probe = client.get("/static/%252e%252e%252fsecret.txt")
    assert literal.content == b"a file literally named %2e%2e"
    assert probe.status_code == 404


def test_sibling_directory_sharing_the_prefix(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    static = make_tree(tmp_path)
    app = App()
    app.mount("/static", StaticFiles(directory=static))
    with client_factory(app) as client:
        assert client.get("/static-secret/x.txt").status_code == 404
        assert client.get("/static/../static-secret/x.txt").status_code == 404
        assert client.get("/static/%2e%2e/static-secret/x.txt").status_code == 404


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_symlinks_inside_the_root_are_served(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(mounted(static)) as client:
        assert client.get("/static/link-in").content == b"file a"


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_follow_symlinks_follows_links_out_but_never_dot_dot(
    client_factory: ClientFactory, static: Path
) -> None:
    with client_factory(mounted(static, follow_symlinks=True)) as client:
        assert client.get("/static/link-abs").content == b"shared outside"
        assert client.get("/static/link-sibling/x.txt").content == SECRET
        assert client.get("/static/%2e%2e/secret.txt").status_code == 404
        assert client.get("/static/%2e%2e/outside/shared.txt").status_code == 404
        assert client.get("/static/link-loop").status_code == 404


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_a_symlinked_root_is_resolved_on_each_request(
    client_factory: ClientFactory, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    (releases / "v1").mkdir(parents=True)
    (releases / "v2").mkdir()
    (releases / "v1" / "app.js").write_text("v1")
    (releases / "v2" / "app.js").write_text("v2")
    current = tmp_path / "current"
    current.symlink_to(releases / "v1")
    with client_factory(mounted(current)) as client:
        assert client.get("/static/app.js").text == "v1"
        current.unlink()
        current.symlink_to(releases / "v2")
        assert client.get("/static/app.js").text == "v2"
        assert client.get("/static/%2e%2e/v1/app.js").status_code == 404


@pytest.mark.skipif(not POSIX or not hasattr(os, "mkfifo"), reason="FIFOs")
def test_fifos_and_other_special_files_are_never_served(
    client_factory: ClientFactory, static: Path
) -> None:
    os.mkfifo(static / "pipe")
    with client_factory(mounted(static)) as client:
        assert client.get("/static/pipe").status_code == 404


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="root reads every file")
def test_unreadable_files_are_not_found(client_factory: ClientFactory, static: Path) -> None:
    (static / "a.txt").chmod(0)
    with client_factory(mounted(static)) as client:
        assert client.get("/static/a.txt").status_code == 404  # pragma: no cover


def test_the_apps_404_handler_answers_misses(client_factory: ClientFactory, static: Path) -> None:
    app = mounted(static)

    @app.exception_handler(404)
    async def custom(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"missing": request.url.path}, status_code=404)

    with client_factory(app) as client:
        response = client.get("/static/%2e%2e/secret.txt")
    assert response.status_code == 404
    assert response.json() == {"missing": "/static/../secret.txt"}


def test_segments() -> None:
    assert _segments("/a//b/./c/") == ["a", "b", "c"]
    assert _segments("/") == []
    for refused in ["/..", "/a/../b", "/...", "/. .", "/a\\b", "/a\x00", "/C:x", "/c:"]:
        if refused.startswith(("/C:", "/c:")) and os.name != "nt":
            continue  # NOTE: a drive only exists on Windows
        assert _segments(refused) is None, refused
    assert _segments("/a" * 2048) == ["a"] * 2048  # 4096 characters: PATH_MAX
    assert _segments("/a" * 2048 + "/") is None


# --- html mode -----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "docs").mkdir(parents=True)
    (site / "bare").mkdir()
    (site / "index.html").write_text("<h1>home</h1>")
    (site / "docs" / "index.html").write_text("<h1>docs</h1>")
    (site / "404.html").write_text("<h1>not here</h1>")
    return site


def test_html_mode_serves_index_and_404_pages(client_factory: ClientFactory, site: Path) -> None:
    with client_factory(mounted(site, html=True)) as client:
        home = client.get("/static/")
        docs = client.get("/static/docs/")
        missing = client.get("/static/nope.html")
        bare = client.get("/static/bare/")
        traversal = client.get("/static/%2e%2e/secret.txt")
    assert (home.status_code, home.text) == (200, "<h1>home</h1>")
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    assert docs.text == "<h1>docs</h1>"
    assert (missing.status_code, missing.text) == (404, "<h1>not here</h1>")
    assert (bare.status_code, bare.text) == (404, "<h1>not here</h1>")
    assert (traversal.status_code, traversal.text) == (404, "<h1>not here</h1>")


def test_html_mode_redirects_directories_to_their_slash(
    client_factory: ClientFactory, site: Path
) -> None:
    with client_factory(mounted(site, html=True)) as client:
        docs = client.get("/static/docs?page=2", follow_redirects=False)
        root = client.get("/static", follow_redirects=False)
        followed = client.get("/static/docs")
        head = client.head("/static/docs", follow_redirects=False)
    assert (docs.status_code, docs.headers["location"]) == (307, "/static/docs/?page=2")
    assert (root.status_code, root.headers["location"]) == (307, "/static/")
    assert followed.text == "<h1>docs</h1>"
    assert head.status_code == 307


@pytest.mark.anyio
async def test_html_redirect_location_is_always_same_origin(site: Path) -> None:
    (site / "evil.com").mkdir()
    (site / "evil.com" / "index.html").write_text("x")
    (site / "50%").mkdir()
    (site / "50%" / "index.html").write_text("x")
    app = StaticFiles(directory=site, html=True)
    for path, location in [
        ("//evil.com", "/evil.com/"),
        ("///evil.com", "/evil.com/"),
        ("/./evil.com", "/evil.com/"),
        ("/50%", "/50%25/"),
    ]:
        status, headers, _ = await call(app, scope_for(path, root_path=""))
        assert (status, headers["location"]) == (307, location), path


@pytest.mark.anyio
async def test_html_redirect_keeps_the_query_bytes_as_sent(site: Path) -> None:
    app = StaticFiles(directory=site, html=True)
    for query, location in [
        ("q=\u00e9".encode(), "/docs/?q=%C3%A9"),
        (b"q=%C3%A9&x=a+b", "/docs/?q=%C3%A9&x=a+b"),
        (b"q=\xff#frag", "/docs/?q=%FF%23frag"),
    ]:
        scope = scope_for("/docs", root_path="", query_string=query)
        status, headers, _ = await call(app, scope)
        assert (status, headers["location"]) == (307, location), query


def test_html_mode_without_404_page(client_factory: ClientFactory, site: Path) -> None:
    (site / "404.html").unlink()
    with client_factory(mounted(site, html=True)) as client:
        response = client.get("/static/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_without_html_mode_directories_are_not_found(
    client_factory: ClientFactory, site: Path
) -> None:
    with client_factory(mounted(site)) as client:
        assert client.get("/static/").status_code == 404
        assert client.get("/static/docs/").status_code == 404
        assert client.get("/static/docs", follow_redirects=False).status_code == 404
        assert client.get("/static/docs/index.html").text == "<h1>docs</h1>"


# --- construction, packages, other scopes ---------------------------------------------------------


def test_check_dir(tmp_path: Path, client_factory: ClientFactory) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        StaticFiles(directory=tmp_path / "missing")
    app = mounted(tmp_path / "missing", check_dir=False)
    with client_factory(app) as client:
        assert client.get("/static/a.txt").status_code == 404
        (tmp_path / "missing").mkdir()
        (tmp_path / "missing" / "a.txt").write_text("now")
        assert client.get("/static/a.txt").text == "now"


def test_needs_a_directory_or_packages() -> None:
    with pytest.raises(TypeError, match="directory= or packages="):
        StaticFiles()


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "microasgi_test_assets"
    root = tmp_path / "pkgs" / name
    (root / "statics").mkdir(parents=True)
    (root / "public").mkdir()
    (root / "__init__.py").write_text("")
    (root / "statics" / "lib.js").write_text("from statics")
    (root / "public" / "lib.js").write_text("from public")
    (root / "secret.py").write_text("SECRET = 1")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_packages(client_factory: ClientFactory, package: str, static: Path) -> None:
    app = App()
    app.mount("/pkg", StaticFiles(packages=[package]))
    app.mount("/public", StaticFiles(packages=[(package, "public")]))
    app.mount("/both", StaticFiles(directory=static, packages=[package]))
    with client_factory(app) as client:
        assert client.get("/pkg/lib.js").text == "from statics"
        assert client.get("/public/lib.js").text == "from public"
        assert client.get("/pkg/%2e%2e/secret.py").status_code == 404
        assert client.get("/both/a.txt").text == "file a"
        assert client.get("/both/lib.js").text == "from statics"


def test_missing_packages_raise(package: str) -> None:
    with pytest.raises(RuntimeError, match="could not be found"):
        StaticFiles(packages=["microasgi_no_such_package"])
    with pytest.raises(RuntimeError, match="has no 'assets' directory"):
        StaticFiles(packages=[(package, "assets")])


def test_standalone_app_answers_plain_text(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(StaticFiles(directory=static)) as client:
        found = client.get("/a.txt")
        missing = client.get("/nope")
        refused = client.post("/a.txt")
    assert found.content == b"file a"
    assert (missing.status_code, missing.text) == (404, "Not Found")
    assert (refused.status_code, refused.text) == (405, "Method Not Allowed")
    assert refused.headers["allow"] == "GET, HEAD"


def test_standalone_behind_a_root_path(client_factory: ClientFactory, static: Path) -> None:
    with client_factory(StaticFiles(directory=static), root_path="/assets") as client:
        assert client.get("/a.txt").content == b"file a"
        assert client.get("/%2e%2e/secret.txt").status_code == 404


def test_websocket_is_refused(client_factory: ClientFactory, static: Path) -> None:
    from microasgi.testing import WebSocketDenied

    with client_factory(mounted(static)) as client:
        with pytest.raises(WebSocketDenied) as denied:
            with client.websocket_connect("/static/a.txt"):
                pass  # pragma: no cover
    assert denied.value.status_code == 404


def test_lifespan_of_a_mounted_and_a_standalone_app(
    client_factory: ClientFactory, static: Path
) -> None:
    with client_factory(mounted(static)) as client:
        assert client.get("/static/a.txt").status_code == 200
    with client_factory(StaticFiles(directory=static)) as client:
        assert client.get("/a.txt").status_code == 200


def test_repr(static: Path, package: str) -> None:
    assert repr(StaticFiles(directory=static)) == f"StaticFiles({str(static)!r}, html=False)"
    assert repr(StaticFiles(packages=[package], html=True)).startswith("StaticFiles([")


# --- path resolution, property-tested -------------------------------------------------------------

_NAMES = [
    "..",
    ".",
    "",
    "...",
    ".. ",
    " ..",
    "a.txt",
    "sub",
    "b.txt",
    "link-in",
    "link-out",
    "link-sibling",
    "link-abs",
    "link-loop",
    "static",
    "static-secret",
    "x.txt",
    "secret.txt",
    "outside",
    "shared.txt",
    "etc",
    "passwd",
    "%2e%2e",
    "..%2f",
    "%00",
    "C:",
    "c:\\",
    "\\\\host\\share",
    "\x00",
    "~",
    "..\\..",
    "\udcff",
    "empty-dir",
]
_segment = st.one_of(st.sampled_from(_NAMES), st.text(max_size=6))
_request_path = st.one_of(
    st.lists(_segment, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.lists(_segment, max_size=8).map(lambda parts: "/" + "\\".join(parts)),
    st.text(max_size=40),
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree"))


@settings(
    max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(path=_request_path, follow=st.booleans())
def test_resolved_paths_stay_inside_the_root(tree: Path, path: str, follow: bool) -> None:
    app = StaticFiles(directory=tree, follow_symlinks=follow)
    root = os.path.realpath(tree)
    segments = _segments(path)
    if segments is None:
        return  # refused outright
    found = app.lookup_path(segments)
    if found is None:
        return  # refused, or not there
    full_path, _ = found
    lexical = os.path.abspath(full_path)
    assert lexical == root or lexical.startswith(root + os.sep)
    if not follow:
        real = os.path.realpath(full_path)
        assert real == root or real.startswith(root + os.sep)
        assert SECRET not in (Path(real).read_bytes() if os.path.isfile(real) else b"")


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(path=_request_path)
def test_the_app_answers_200_only_from_inside(tree: Path, path: str) -> None:
    app = StaticFiles(directory=tree, html=True)
    status, _, body = anyio.run(call, app, scope_for("/" + path.lstrip("/"), root_path=""))
    assert status in (200, 307, 404)
    assert SECRET not in body


@pytest.mark.anyio
async def test_other_scopes_and_lifespan_messages(static: Path) -> None:
    app = StaticFiles(directory=static)
    inbox = [
        {"type": "lifespan.startup"},
        {"type": "lifespan.unknown"},
        {"type": "lifespan.shutdown"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    await app({"type": "unknown.protocol"}, receive, send)  # not ours: nothing happens
    assert len(sent) == 2


def test_follow_symlink_is_starlettes_spelling(tmp_path: Path) -> None:
    assert StaticFiles(directory=tmp_path, follow_symlink=True).follow_symlinks is True
    assert StaticFiles(directory=tmp_path, follow_symlink=False).follow_symlinks is False
    with pytest.raises(TypeError, match="follow_symlinks=True and follow_symlink=False"):
        StaticFiles(directory=tmp_path, follow_symlinks=True, follow_symlink=False)
