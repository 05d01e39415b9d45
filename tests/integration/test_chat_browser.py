"""The chat page in a real browser: Debian's Chromium, headless, driven by Playwright.

Two pages join the same room, see each other in the member list and exchange messages
(one of them full of markup, which must show as text); a third page watches the room
read-only over server-sent events. Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import ServerProcess, require_module, serve, server_argv
from tests.support import RedisServer, free_port, require_executable

pytestmark = pytest.mark.integration

require_module("playwright")
require_module("websockets")
require_module("redis")

from playwright.sync_api import (  # noqa: E402
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)
from websockets.sync.client import connect  # noqa: E402

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
APP = "examples.chat.app:app"
MARKUP = "<img src=x onerror=\"document.title='pwned'\"> & <b>not bold</b>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (in CI a missing one fails, never skips)."""
    chromium = require_executable("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Pages:
    """Opens pages, one browser context each, and collects the errors they report."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []

    def open(self) -> Page:
        # NOTE: a context per page, as two browsers would be: separate localStorage.
        context = self.browser.new_context(viewport={"width": 1000, "height": 640})
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        # Script errors, console errors (CSP violations among them), and dialogs.
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)
        page.on("dialog", lambda dialog: self.problems.append(f"dialog: {dialog.message}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def close(self) -> None:
        contexts, self.contexts = self.contexts, []
        for context in contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def server(pages: Pages, tmp_path: Path) -> Iterator[ServerProcess]:
    """The chat on uvicorn with the memory backend, as `make demo` serves it."""
    port = free_port()
    argv = server_argv("uvicorn", APP, port)
    with serve(argv, tmp_path / "server.log", port=port, env={"REDIS_URL": ""}) as process:
        try:
            yield process
        finally:
            # NOTE: before the server stops: uvicorn waits for open event streams to end.
            pages.close()


def join(page: Page, base: str, nick: str, room: str, *, watch: bool = False) -> None:
    page.goto(base + "/")
    page.fill("#nick", nick)
    page.fill("#room", room)
    page.click("#watch" if watch else "#join")
    expect(page.locator("#status")).to_have_text("watching" if watch else "connected")


def test_two_pages_chat_in_one_room(pages: Pages, server: ServerProcess, tmp_path: Path) -> None:
    ada = pages.open()
    bob = pages.open()

    join(ada, server.url, "ada", "lobby")
    join(bob, server.url, "bob", "lobby")
    for page in (ada, bob):
        expect(page.locator("#members li .nick")).to_have_text(["ada", "bob"])
        expect(page.locator("#member-count")).to_have_text("(2)")
    expect(ada.locator("#room-name")).to_have_text("lobby")
    expect(ada.locator("#log li.join .nick")).to_have_text(["ada", "bob"])

    ada.fill("#text", MARKUP)
    ada.press("#text", "Enter")
    expect(bob.locator("#log li.message .text")).to_have_text([MARKUP])
    expect(ada.locator("#text")).to_have_value("")
    bob.fill("#text", "Hello ada, I see your <b> as text")
    bob.click("#send")
    expect(ada.locator("#log li.message .text")).to_have_text(
        [MARKUP, "Hello ada, I see your <b> as text"]
    )
    expect(ada.locator("#log li.message .nick")).to_have_text(["ada", "bob"])
    # The markup stayed text: no element was made from it, and its handler never ran.
    assert ada.locator("#log img, #log b").count() == 0
    assert bob.locator("#log img, #log b").count() == 0
    assert "pwned" not in ada.title() + bob.title()

    # A third page follows the room read-only, over server-sent events.
    watcher = pages.open()
    join(watcher, server.url, "", "lobby", watch=True)
    expect(watcher.locator("#log li.message .text")).to_have_text(
        [MARKUP, "Hello ada, I see your <b> as text"]
    )
    assert watcher.locator("#say-form").is_hidden()
    ada.fill("#text", "for the watcher too")
    ada.press("#text", "Enter")
    expect(watcher.locator("#log li.message .text").last).to_have_text("for the watcher too")

    ada.screenshot(path=tmp_path / "ada.png")
    bob.screenshot(path=tmp_path / "bob.png")
    watcher.screenshot(path=tmp_path / "watcher.png")
    assert (tmp_path / "ada.png").stat().st_size > 10_000

    bob.click("#leave")
    expect(bob.locator("#lobby")).to_be_visible()
    expect(ada.locator("#members li .nick")).to_have_text(["ada"])
    expect(ada.locator("#log li.leave .nick")).to_have_text(["bob"])

    assert pages.problems == []


def test_the_page_refuses_bad_input_with_the_server_s_reason(
    pages: Pages, server: ServerProcess, tmp_path: Path
) -> None:
    page = pages.open()
    page.goto(server.url + "/")
    page.fill("#nick", "-ada")
    page.click("#join")
    expect(page.locator("#join-error")).to_contain_text("Nickname")
    expect(page.locator("#chat")).to_be_hidden()

    # A message the page lets through but the server refuses: the page shows the reason.
    join(page, server.url, "ada", "lobby")
    page.evaluate("document.getElementById('text').value = 'ring \\u0007 ring'")
    page.click("#send")
    expect(page.locator("#join-error")).to_have_text("Message with control characters")
    expect(page.locator("#lobby")).to_be_visible()
    page.screenshot(path=tmp_path / "refused.png")
    assert pages.problems == []


def test_a_page_catches_up_after_its_server_restarts(
    pages: Pages, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two processes share Redis; ada's process restarts while bob, on the other, speaks."""
    env = {"REDIS_URL": redis_server.url}
    port = free_port()
    ada = pages.open()
    other = free_port()
    with serve(server_argv("uvicorn", APP, other), tmp_path / "two.log", port=other, env=env):
        with serve(server_argv("uvicorn", APP, port), tmp_path / "one.log", port=port, env=env):
            join(ada, f"http://127.0.0.1:{port}", "ada", "lobby")
            expect(ada.locator("#log li.join .nick")).to_have_text(["ada"])
        # Stopping, uvicorn closed the WebSocket (1012): the page says so and retries.
        expect(ada.locator("#status")).to_contain_text("Reconnecting")
        with connect(f"ws://127.0.0.1:{other}/ws/lobby?nick=bob") as bob:
            bob.send(json.dumps({"type": "message", "text": "while ada was away"}))
            deadline = time.monotonic() + 10
            while "while ada was away" not in bob.recv(timeout=deadline - time.monotonic()):
                pass
        with serve(server_argv("uvicorn", APP, port), tmp_path / "one2.log", port=port, env=env):
            expect(ada.locator("#status")).to_have_text("connected", timeout=15_000)
            # Resumed after the last event seen: what was missed, once, in order.
            expect(ada.locator("#log li .nick")).to_have_text(
                ["ada", "ada", "bob", "bob", "bob", "ada"]
            )
            expect(ada.locator("#log li")).to_have_class(
                ["join", "leave", "join", "message", "leave", "join"]
            )
            expect(ada.locator("#log li.message .text")).to_have_text(["while ada was away"])
            ada.screenshot(path=tmp_path / "resumed.png")
            pages.close()
    # While the server was down, each attempt to reconnect failed, as it should.
    refused = "failed: Error in connection establishment: net::ERR_CONNECTION_REFUSED"
    assert [p for p in pages.problems if not p.endswith(refused)] == []


def test_a_page_keeps_up_when_a_memory_server_restarts(pages: Pages, tmp_path: Path) -> None:
    """A restarted memory:// server counts ids from 1 again: the page still shows everything."""
    port = free_port()
    argv = server_argv("uvicorn", APP, port)
    page = pages.open()
    with serve(argv, tmp_path / "before.log", port=port, env={"REDIS_URL": ""}):
        join(page, f"http://127.0.0.1:{port}", "ada", "lobby")
        for n in range(3):
            page.fill("#text", f"before {n}")
            page.press("#text", "Enter")
        expect(page.locator("#log li.message")).to_have_count(3)
    expect(page.locator("#status")).to_contain_text("Reconnecting")
    with serve(argv, tmp_path / "after.log", port=port, env={"REDIS_URL": ""}):
        expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
        with connect(f"ws://127.0.0.1:{port}/ws/lobby?nick=bob") as bob:
            bob.send(json.dumps({"type": "message", "text": "after the restart"}))
            expect(page.locator("#log li.message .text")).to_have_text(
                ["before 0", "before 1", "before 2", "after the restart"]
            )
        pages.close()
    refused = "failed: Error in connection establishment: net::ERR_CONNECTION_REFUSED"
    assert [p for p in pages.problems if not p.endswith(refused)] == []
