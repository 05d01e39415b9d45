"""HTTPMiddleware: request/response middleware functions, run in the request's own task.

``@app.middleware("http")`` wraps a function ``async def mw(request, call_next)``.
``call_next(request)`` runs the app below until it sends ``http.response.start`` and
returns a response holding that status and those headers. Its body is not buffered: the
app below produces each chunk when the chunk is sent (or read), so the first chunk reaches
the client before a streaming handler has finished.

No task, stream or queue is involved. The app below is a coroutine that the middleware
steps itself, in the request's task: whatever the coroutine yields to the event loop is
passed on to the loop, and only the ``send`` handed to the app below stops it, by yielding
a private marker that the stepping loop keeps to itself. Both sides run in one task and one
context, so context variables set on either side are seen by the other, background tasks
run after the response has been sent, and a cancellation or a client disconnect reaches the
app below at the ``send`` it is waiting on, as it would without the middleware.

One rule follows from sharing the task: a cancel scope (``anyio.fail_after``,
``move_on_after``, a task group) must not stay open in the middleware function across
``await call_next()`` or across reading the body, since the app below may hold scopes of
its own across its sends. Use ``TimeoutMiddleware`` (a pure ASGI layer) for deadlines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from types import CoroutineType, coroutine
from typing import Any

import anyio

from microasgi._errors import ResponseFailed
from microasgi._utils import callable_name
from microasgi.background import BackgroundTask
from microasgi.exceptions import ClientDisconnect
from microasgi.requests import BODY_KEY, FORM_KEY, Request
from microasgi.responses import (
    DISCONNECT_WATCH,
    DisconnectWatch,
    Response,
    StreamingResponse,
    without_length,
)
from microasgi.types import ASGIApp, Message, RawHeaders, Receive, Scope, Send

__all__ = ["CallNext", "DispatchFunction", "HTTPMiddleware"]

CallNext = Callable[[Request], Awaitable[StreamingResponse]]
"""``call_next(request)``: run the app below; its response streams when sent."""

DispatchFunction = Callable[[Request, CallNext], Awaitable[Response]]
"""``async def mw(request, call_next) -> Response``."""

_Steppable = Coroutine[Any, Any, None] | Generator[Any, Any, None]

_FILE_CHUNK = 64 * 1024


class HTTPMiddleware:
    """Run ``dispatch(request, call_next)`` around the app for every HTTP request.

    ``dispatch`` is an ``async def mw(request, call_next) -> Response``; without it, a
    subclass overrides the ``dispatch`` method. WebSocket and lifespan scopes pass through
    untouched.
    """

    def __init__(self, app: ASGIApp, dispatch: DispatchFunction | None = None) -> None:
        self.app = app
        if dispatch is not None:
            self.dispatch = dispatch  # type: ignore[method-assign,assignment]

    async def dispatch(self, request: Request, call_next: CallNext) -> Response:
        """Return the response for ``request``; subclasses override this."""
        raise NotImplementedError(
            f"{type(self).__name__} needs a dispatch function: pass dispatch=... or override "
            "the dispatch() method"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if DISCONNECT_WATCH not in scope:
            scope[DISCONNECT_WATCH] = DisconnectWatch()
        try:
            below = _Below(self.app, receive)
            try:
                response = await self.dispatch(
                    Request(scope, below.receive_above, send), below.call_next
                )
            except GeneratorExit:
                below.close()
                raise
            except BaseException as exc:
                if await below.absorbs(exc):
                    return
                raise
            if response is below and below._forward is None and below._iterator is None:
                # PERF: the common case, call_next()'s response returned, is sent right here
                # rather than through one more coroutine; _Below.pass_on() does the same.
                start = below._start
                if below._raw is not None or below.status_code != start["status"]:
                    start, send = below.changed_start(send)
                below._forward = send
                try:
                    await send(start)
                except GeneratorExit:
                    below.close()
                    raise
                except BaseException as exc:
                    await below.step(exc)
                else:
                    await _resume(below._coro)
                if below.background is not None:
                    await below.background()
                return
            await self._send_other(below, response, scope, receive, send)
        finally:
            # NOTE: a form the middleware parsed is closed once the response is done, also
            # when no route ran (a route's endpoint closes only the forms it saw parsed).
            if FORM_KEY in scope:
                await Request(scope).close()

    async def _send_other(
        self, below: _Below, response: Any, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Send a response other than call_next()'s as it is, then settle the app below."""
        if not callable(response):
            await below.discard()
            raise TypeError(
                f"The http middleware {callable_name(self.dispatch)} returned {response!r}; "
                "return the response of call_next() or a Response"
            )
        try:
            await response(scope, receive, send)
        except GeneratorExit:
            below.close()
            raise
        except BaseException as exc:
            if await below.absorbs(exc):
                return
            raise
        await below.finish()


class _ResponseDiscarded(BaseException):
    """Raised at the pending ``send`` of the app below when its response is not wanted.

    A BaseException, like GeneratorExit, so that the error handlers below let it through.
    """


def _is_discarded(exc: BaseException) -> bool:
    if isinstance(exc, _ResponseDiscarded):
        return True
    # NOTE: a task group below wraps it in an exception group (builtin since 3.11, the
    # `exceptiongroup` backport before); both have split().
    split = getattr(exc, "split", None)
    return split is not None and split(_ResponseDiscarded)[1] is None


_PAUSE = object()
"""Yielded by the send of the app below; only the stepping loop ever sees it."""


_PAUSE_ONCE = (_PAUSE,)


class _Paused:
    """Awaited by the send of the app below: suspends it, back to the stepping loop."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        # PERF: an iterator over a one-item tuple yields the marker in C; a generator
        # function here would cost a Python frame per message.
        return iter(_PAUSE_ONCE)  # type: ignore[return-value]


_PAUSED = _Paused()


@coroutine
def _resume(coro: _Steppable | None) -> Generator[Any, Any, None]:
    """Run the rest of the app below with the event loop talking to it directly."""
    # NOTE: `yield from` delegates in C: every later yield, value and exception passes
    # between the loop and the app with no Python code of ours in between.
    yield from coro  # type: ignore[misc]


class _Below(StreamingResponse):
    """The app below one middleware call, and then the response ``call_next()`` returns.

    ``call_next()`` runs the app until it sends ``http.response.start``; this object then
    stands for that response: ``status_code`` and ``headers`` may be changed. Sent as it
    is, its body goes from the app below to the server message by message;
    ``body_iterator`` gives the same chunks to a middleware that reads or transforms them.
    """

    # PERF: the defaults live on the class, so building one for a request stores two
    # attributes; and being the response too saves a second object per request.
    _coro: _Steppable | None = None
    _start: Message = None  # type: ignore[assignment]  # set by call_next()
    _done = False  # the app below has returned (or raised)
    _ended = False  # the app below sent its last body message
    _stepping = False  # the app below runs inside step(); its sends stop it
    _touched = False  # the middleware's request called receive()
    _message: Message | None = None
    _queued: list[Message] | None = None  # sent from another task while the body is read
    _forward: Send | None = None  # where the app below sends once the response is passed on
    _iterator: _BodyIterator | None = None
    _sent = False  # sent as a stream, after the middleware read part of the body
    _raw: RawHeaders | None = None
    background: BackgroundTask | None = None

    def __init__(self, app: ASGIApp, receive: Receive) -> None:
        self._app = app
        self._receive = receive

    # -- the app below ------------------------------------------------------------------

    @property
    def suspended(self) -> bool:
        """The app below started and is stopped at one of its sends."""
        return self._coro is not None and not self._done

    def receive_above(self) -> Awaitable[Message]:
        """The ``receive`` of the middleware's request: notes that the body was read."""
        self._touched = True
        return self._receive()

    @coroutine
    def call_next(self, request: Request) -> Generator[Any, Any, StreamingResponse]:
        """Run the app below until it starts its response; return that response."""
        if self._coro is not None:
            raise RuntimeError("call_next() was already called for this request; call it once")
        receive = _receive_below(request, self._receive) if self._touched else self._receive
        awaitable = self._app(request.scope, receive, self.send)
        # PERF: a coroutine is stepped as it is; any other awaitable through its iterator.
        coro: _Steppable = awaitable if type(awaitable) is CoroutineType else awaitable.__await__()
        self._coro = coro
        # PERF: the first run is inlined: the app usually reaches its first send without
        # waiting on the event loop, and then the stepping loop is not needed at all.
        self._stepping = True
        try:
            yielded = coro.send(None)
        except StopIteration:
            self._done = True
            yielded = None
        except BaseException:
            self._done = True
            raise
        finally:
            self._stepping = False
        if yielded is _PAUSE:
            message = self._message
        elif self._done:
            message = None
        else:
            message = yield from self.step(first=yielded)
        if message is None and request.scope[DISCONNECT_WATCH].gone:
            # NOTE: the app below met the disconnect (reading the body, say) and its error
            # layer ended it quietly, as a request ends once its client has gone: so does
            # this one.
            raise ClientDisconnect
        if message is None or message["type"] != "http.response.start":
            raise RuntimeError(
                'Expected the app below the http middleware to send "http.response.start", '
                f"but it {'returned' if message is None else 'sent ' + repr(message['type'])}"
            )
        self._start = message
        self.status_code = message["status"]
        return self

    def send(self, message: Message) -> Awaitable[None]:
        """The ``send`` of the app below."""
        forward = self._forward
        if forward is not None:
            # NOTE: the response passes through unchanged from here on: the app below
            # sends to the server itself, and meets the server's errors itself.
            return forward(message)
        if self._stepping and message["type"] == "http.response.start":
            # PERF: the start message, on every request, is handed over without a
            # coroutine: it can only come from the task being stepped, awaiting it now.
            self._message = message
            return _PAUSED
        return self._hand_over(message)

    async def _hand_over(self, message: Message) -> None:
        # NOTE: decided when awaited, not when called: a send may be called in one task
        # and awaited in another (`task_group.start_soon(send, message)`).
        if self._stepping:
            self._message = message
            await _PAUSED
            return
        # NOTE: another task (or a worker thread through a portal) is sending while the
        # middleware holds the response. A body message (an event stream's ping, say)
        # waits for the reader's next chunk; the start message has no one to go to, since
        # call_next() is waiting on the task that runs the app.
        if self._start is None:
            raise RuntimeError(
                "The app below an http middleware sent http.response.start from another "
                "task; send it from the task that runs the app"
            )
        if self._queued is None:
            self._queued = []
        self._queued.append(message)

    @coroutine
    def step(
        self, error: BaseException | None = None, first: Any = _PAUSE
    ) -> Generator[Any, Any, Message | None]:
        """Resume the app below (raising ``error`` at its send) until its next message.

        Return the message, or None once the app has returned. Whatever else the app
        yields goes on to the event loop, and what the loop answers goes back to it;
        ``first`` is a value the app already yielded, to pass on before resuming it.
        """
        coro = self._coro
        assert coro is not None
        value: Any = None
        yielded = first
        while True:
            if yielded is not _PAUSE:
                try:
                    value = yield yielded
                    error = None
                except GeneratorExit:
                    self.close()
                    raise
                except BaseException as exc:
                    value = None
                    error = exc
            self._stepping = True
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration:
                self._done = True
                return None
            except BaseException:
                self._done = True
                raise
            finally:
                self._stepping = False
            if yielded is _PAUSE:
                message = self._message
                self._message = None
                return message

    def close(self) -> None:
        """Close the app below without running it further (the caller is being closed)."""
        if self._coro is not None and not self._done:
            self._done = True
            self._coro.close()

    async def absorbs(self, exc: BaseException) -> bool:
        """Settle the app below after ``exc`` stopped the middleware; True if it took ``exc``.

        A cancellation is raised in the app below, at the send it is waiting on: it may
        belong to one of the app's own cancel scopes, still open across that send, and the
        app decides, as it would have had the cancellation reached it there. Anything else
        discards the app's response.
        """
        if not self.suspended:
            return False
        if not isinstance(exc, anyio.get_cancelled_exc_class()):
            await self.discard()
            return False
        if await self.step(exc) is not None:
            await self.discard()
        return True

    async def discard(self) -> None:
        """Stop the app below at its pending send, and let it clean up."""
        if not self.suspended:
            return
        try:
            while await self.step(_ResponseDiscarded()) is not None:
                pass
        except BaseException as exc:
            if not _is_discarded(exc):
                raise

    async def finish(self) -> None:
        """Once the middleware's response was sent: complete or discard the app below."""
        if not self.suspended:
            return
        if not self._ended:
            await self.discard()
            return
        # NOTE: the last body was taken; what the app does next (its background tasks)
        # runs now, after the response. Anything it still sends has no one to go to, and
        # a second response (an error answer to a failed background task) is refused, as
        # a server refuses it.
        while (message := await self.step()) is not None:
            if message["type"] == "http.response.start":
                await self._refuse(message)
                return

    async def _refuse(self, message: Message) -> None:
        """Fail the send of ``message`` in the app below, and any it makes after it."""
        self._ended = True
        refused: Message | None = message
        while refused is not None:
            error = RuntimeError(
                f'Unexpected ASGI message "{refused["type"]}": the response of the app below '
                "has started (or ended) already"
            )
            refused = await self.step(error)

    async def next_chunk(self) -> bytes | Message | None:
        """The next body chunk of the app below (or its pathsend message), None at the end."""
        while True:
            queued = self._queued
            message: Message | None
            if queued:
                message = queued.pop(0)
            elif self._ended:
                return None
            else:
                message = await self.step()
                if message is None:
                    self._ended = True
                    continue
                if self._queued:
                    # NOTE: another task sent meanwhile, so before this message.
                    self._queued.append(message)
                    continue
            kind = message["type"]
            if kind == "http.response.body":
                if not message.get("more_body", False):
                    self._ended = True
                    self._queued = None
                return bytes(message.get("body", b""))
            if kind == "http.response.pathsend":
                self._ended = True
                return message
            if kind == "http.response.start":
                await self._refuse(message)
                # NOTE: the app below failed after its response started, and its error
                # layer reported it: the body it gave is incomplete, and must not be passed
                # off as whole.
                raise ResponseFailed(
                    "The response of the app below failed after it started; see the error "
                    "logged before"
                )

    # -- the response -------------------------------------------------------------------

    @property
    def raw_headers(self) -> RawHeaders:
        # PERF: copied on first use only, so a pass-through middleware forwards the start
        # message as it is; the copy leaves a shared Response's own list untouched.
        if self._raw is None:
            self._raw = [(name, value) for name, value in self._start.get("headers") or ()]
        return self._raw

    @raw_headers.setter
    def raw_headers(self, value: RawHeaders) -> None:
        self._raw = value

    @property  # type: ignore[override]
    def body_iterator(self) -> AsyncIterator[bytes]:
        if self._iterator is None:
            self._iterator = _BodyIterator(self)
        return self._iterator

    @body_iterator.setter
    def body_iterator(self, value: Any) -> None:
        raise AttributeError(
            "The body of call_next()'s response comes from the app below; to send another "
            "body, return a new StreamingResponse(...)"
        )

    def changed_start(self, send: Send) -> tuple[Message, Send]:
        """The start message with the middleware's status and headers, and the body's ``send``.

        A status made bodiless (a 304 for a matching ETag) sends the body of the app below
        empty and no Content-Length, which would otherwise be read as the start of the next
        response on the connection.
        """
        status = self.status_code
        start = {**self._start, "status": status, "headers": self.raw_headers}
        if status < 200 or status == 204 or status == 304:
            start["headers"] = without_length(start["headers"])
            send = _bodiless(send)
        return start, send

    async def pass_on(self, send: Send) -> None:
        """Send the start message; the app below then sends the rest to ``send`` itself."""
        start = self._start
        if self._raw is not None or self.status_code != start["status"]:
            start, send = self.changed_start(send)
        self._forward = send
        try:
            await send(start)
        except GeneratorExit:
            self.close()
            raise
        except BaseException as exc:
            # NOTE: the app below is waiting on this very send: the failure is its own.
            await self.step(exc)
        else:
            try:
                await _resume(self._coro)
            finally:
                self._done = True
        if self.background is not None:
            await self.background()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._sent or self._forward is not None or self._coro is None:
            raise RuntimeError("The response of call_next() can be sent only once")
        if self._iterator is None:
            await self.pass_on(send)
            return
        # NOTE: the middleware read part of the body: the rest goes out as a stream.
        self._sent = True
        await super().__call__(scope, receive, send)


def _bodiless(send: Send) -> Send:
    """``send`` for a response with no body: body messages go on empty."""

    async def send_bodiless(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            more_body = message.get("more_body", False)
            message = {"type": kind, "body": b"", "more_body": more_body}
        elif kind == "http.response.pathsend":
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return send_bodiless


def _receive_below(request: Request, receive: Receive) -> Receive:
    """The ``receive`` for the app below: replay what the middleware's request consumed."""
    # NOTE: Request keeps these in private slots; this module is their one reader outside.
    pending: list[Message] = request._buffered or []
    if request._stream_consumed:
        # NOTE: a body read with stream() (or form(), whose result is cached) is gone: the
        # app below gets it empty, as ASGI delivers a body once, rather than waiting for
        # one that will never come.
        body = request.scope.get(BODY_KEY) or b""
        pending = [{"type": "http.request", "body": body, "more_body": False}]
    elif not pending:
        return receive
    request._buffered = []
    messages = list(pending)

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


class _BodyIterator:
    """The body of the app below, chunk by chunk, each produced when it is asked for."""

    __slots__ = ("_below", "_file")

    def __init__(self, below: _Below) -> None:
        self._below = below
        self._file: anyio.AsyncFile[bytes] | None = None

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        if self._file is not None:
            return await self._read_file()
        while True:
            chunk = await self._below.next_chunk()
            if chunk is None:
                raise StopAsyncIteration
            if isinstance(chunk, bytes):
                if chunk:
                    return chunk
                continue
            # NOTE: `http.response.pathsend` (the server sends a file by its path): read it.
            self._file = await anyio.open_file(chunk["path"], "rb")
            return await self._read_file()

    async def _read_file(self) -> bytes:
        assert self._file is not None
        data = await self._file.read(_FILE_CHUNK)
        if data:
            return data
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with anyio.CancelScope(shield=True):
                await file.aclose()
