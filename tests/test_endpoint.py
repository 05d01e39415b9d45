from __future__ import annotations

import functools
from typing import Any

import pytest

from microasgi._endpoint import plan_call
from microasgi.routing.routes import Route


def test_plan_call_conventions() -> None:
    async def request_only(request: Any) -> None: ...
    async def request_and_id(request: Any, item_id: int) -> None: ...
    async def only_params(item_id: int) -> None: ...
    async def nothing() -> None: ...
    async def var_kw(request: Any, **params: Any) -> None: ...
    async def var_pos(*args: Any) -> None: ...
    async def keyword_only(request: Any, *, item_id: int) -> None: ...

    names = ("item_id", "other")
    assert plan_call(request_only, names)[:2] == (True, ())
    assert plan_call(request_and_id, names)[:2] == (True, ("item_id",))
    assert plan_call(only_params, names)[:2] == (False, ("item_id",))
    assert plan_call(nothing, names)[:2] == (False, ())
    assert plan_call(var_kw, names)[:2] == (True, ("item_id", "other"))
    assert plan_call(var_pos, names)[:2] == (True, ())
    assert plan_call(keyword_only, names)[:2] == (True, ("item_id",))
    assert plan_call(functools.partial(request_and_id), names)[:2] == (True, ("item_id",))
    assert plan_call(len, names)[:2] == (True, ())
    assert plan_call(dict, names)[:2] == (True, ())


@pytest.mark.anyio
async def test_an_unbuilt_route_says_so() -> None:
    async def handler(request: Any) -> str:
        return ""

    route = Route("/", handler)
    with pytest.raises(RuntimeError, match="prepared when the app starts"):
        await route.app({}, None, None)  # type: ignore[arg-type]
