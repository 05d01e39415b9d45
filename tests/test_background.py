from __future__ import annotations

import functools
import threading

import pytest

from microasgi.background import BackgroundTask, BackgroundTasks

pytestmark = pytest.mark.anyio


async def test_async_task_runs_with_its_arguments() -> None:
    calls: list[tuple[int, str]] = []

    async def record(number: int, *, label: str) -> None:
        calls.append((number, label))

    task = BackgroundTask(record, 1, label="one")
    assert task.is_async
    await task()
    assert calls == [(1, "one")]


async def test_sync_task_runs_in_a_worker_thread() -> None:
    calls: list[tuple[int, int, int]] = []

    def record(extra: int, *, more: int) -> None:
        calls.append((threading.get_ident(), extra, more))

    task = BackgroundTask(record, 1, more=2)
    assert not task.is_async
    await task()
    [(thread, extra, more)] = calls
    assert (extra, more) == (1, 2)
    assert thread != threading.get_ident()


async def test_partials_and_async_callable_objects_are_awaited_on_the_loop() -> None:
    threads: list[int] = []

    async def record(value: int) -> None:
        threads.append(threading.get_ident())

    class Recorder:
        async def __call__(self) -> None:
            threads.append(threading.get_ident())

    partial_task = BackgroundTask(functools.partial(record, 1))
    object_task = BackgroundTask(Recorder())
    assert partial_task.is_async and object_task.is_async
    await partial_task()
    await object_task()
    assert threads == [threading.get_ident()] * 2


async def test_tasks_run_in_the_order_they_were_added() -> None:
    order: list[str] = []

    async def first() -> None:
        order.append("first")

    def second(name: str) -> None:
        order.append(name)

    tasks = BackgroundTasks([BackgroundTask(first)])
    tasks.add_task(second, "second")
    tasks.add_task(first)
    await tasks()
    assert order == ["first", "second", "first"]


async def test_no_tasks_is_a_no_op() -> None:
    tasks = BackgroundTasks()
    assert tasks.tasks == []
    await tasks()


async def test_errors_propagate_and_stop_later_tasks() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise LookupError("boom")

    tasks = BackgroundTasks()
    tasks.add_task(fail)
    tasks.add_task(ran.append, "later")
    with pytest.raises(LookupError, match="boom"):
        await tasks()
    assert ran == []


async def test_a_functools_wraps_decorator_around_an_async_task_runs_it() -> None:
    calls: list[str] = []

    async def send_email(to: str) -> None:
        calls.append(to)

    @functools.wraps(send_email)
    def logged(to: str) -> object:
        return send_email(to)

    await BackgroundTask(logged, "a@example.com")()
    assert calls == ["a@example.com"]
