"""Every example imports, starts, and answers what its page promises."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from microasgi import App
from microasgi.testing import TestClient

ClientFactory = Callable[..., TestClient]
EXAMPLES = sorted(
    p.stem for p in (Path(__file__).parent.parent / "examples").glob("*.py") if p.stem != "__init__"
)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_starts_and_serves_its_page(client_factory: ClientFactory, name: str) -> None:
    module = importlib.import_module(f"examples.{name}")
    app = module.app
    assert isinstance(app, App)
    with client_factory(app) as client:
        response = client.get("/")
        assert response.status_code == 200, name
        if response.headers["content-type"].startswith("text/html"):
            for link in re.findall(r'href="(/[^"]*)"', response.text):
                target = link.replace("&amp;", "&")
                if "stream" in target or "events" in target or "sse" in target:
                    continue  # endless or long-running endpoints are tested below
                linked = client.get(target)
                assert linked.status_code in (200, 404), (name, target, linked.status_code)


def test_hello_endpoints(client_factory: ClientFactory) -> None:
    from examples.hello import app

    with client_factory(app) as client:
        assert client.get("/hello/world").json() == {"message": "Hello, world!"}
        item = client.get("/items/1?q=shiny&tag=new&tag=sale").json()
        assert item == {"id": 1, "name": "keyboard", "q": "shiny", "tags": ["new", "sale"]}
        assert client.get("/items/42").json() == {"detail": "There is no item 42"}
        assert client.get("/stream").text == "".join(f"{n}\n" for n in range(1, 11))
        assert "utc" in client.get("/time").json()
        assert client.post("/echo", json={"hi": 1}).json() == {"hi": 1}
        assert client.post("/echo", content=b"{}").status_code == 415
