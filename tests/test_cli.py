from __future__ import annotations

import importlib.machinery
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from microasgi.cli import _findable, _parser, build_command, main
from tests.support import free_port


def command_for(*argv: str) -> list[str]:
    return build_command(_parser().parse_args(["run", *argv]))


def test_uvicorn_command() -> None:
    command = command_for("main:app", "--port", "9000", "--reload")
    assert command[1:] == [
        "-m",
        "uvicorn",
        "main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        "--workers",
        "1",
        "--reload",
    ]


def test_granian_and_hypercorn_commands() -> None:
    granian = command_for("main:app", "--server", "granian", "--workers", "2")
    assert granian[1:] == [
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        "8000",
        "--workers",
        "2",
        "main:app",
    ]
    assert "--reload" in command_for("m:a", "--server", "granian", "--reload")
    hypercorn = command_for("main:app", "--server", "hypercorn", "--host", "::1", "--reload")
    assert hypercorn[1:] == [
        "-m",
        "hypercorn",
        "main:app",
        "--bind",
        "[::1]:8000",
        "--workers",
        "1",
        "--reload",
    ]


def test_factory_commands() -> None:
    assert "--factory" in command_for("main:create_app", "--factory")
    assert "--factory" not in command_for("main:app")
    granian = command_for("main:create_app", "--factory", "--server", "granian")
    assert granian[-2:] == ["--factory", "main:create_app"]
    hypercorn = command_for("main:create_app", "--factory", "--server", "hypercorn")
    assert hypercorn[3] == "main:create_app()"
    assert "--factory" not in hypercorn


@pytest.mark.parametrize(
    ("server", "option"),
    [
        ("uvicorn", "--timeout-graceful-shutdown"),
        ("granian", "--workers-kill-timeout"),
        ("hypercorn", "--graceful-timeout"),
    ],
)
def test_graceful_timeout(server: str, option: str) -> None:
    command = command_for("m:app", "--server", server, "--graceful-timeout", "5")
    assert command[command.index(option) + 1] == "5"
    assert "m:app" in command
    assert option not in command_for("m:app", "--server", server)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nocolon"], "module:attribute"),
        (["main:"], "module:attribute"),
        ([":app"], "module:attribute"),
        (["m:a", "--workers", "0"], "at least 1"),
        (["m:a", "--workers", "2", "--reload"], "cannot be combined"),
        (["m:a", "--graceful-timeout", "-1"], "must not be negative"),
    ],
)
def test_invalid_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        command_for(*argv)


@pytest.mark.parametrize("port", ["99999", "65536", "-5", "abc"])
def test_port_out_of_range_is_refused(capsys: pytest.CaptureFixture[str], port: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["run", "m:a", "--port", port])
    assert exit_info.value.code == 2
    assert "--port: must be between 0 and 65535" in capsys.readouterr().err


def test_missing_server_is_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert main(["run", "m:a"]) == 2
    assert "uvicorn is not installed" in capsys.readouterr().err
    assert main(["run", "m:a", "--server", "granian"]) == 2
    assert "pip install granian" in capsys.readouterr().err


@pytest.mark.parametrize("app", ["no_such_module_here:app", "no_such_package_here.sub:app"])
def test_a_module_that_cannot_be_found_is_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, app: str
) -> None:
    # hypercorn would start, fail to import it and exit with status 0.
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    assert main(["run", app, "--server", "hypercorn"]) == 2
    assert "no module named" in capsys.readouterr().err


class _HookFinder:
    """A finder on sys.meta_path, as an editable install's .pth file puts there."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        return importlib.machinery.ModuleSpec(name, None) if name == "hooked_only" else None


def test_modules_are_found_on_the_path_or_by_an_import_hook(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "on_the_path.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, _HookFinder])
    assert _findable("on_the_path")
    assert _findable("hooked_only")
    assert not _findable("neither_here_nor_hooked")


def _serve_until_answered(
    argv: list[str], cwd: Path, pythonpath: tuple[Path, ...] = ()
) -> httpx.Response:
    """Run ``python -m microasgi run ...`` in ``cwd``, return its answer to GET /, stop it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "microasgi", "run", *argv, "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.getcwd()])},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.integration
@pytest.mark.parametrize("server", ["uvicorn", "granian", "hypercorn"])
def test_a_factory_is_served_by_every_server(tmp_path: Path, server: str) -> None:
    (tmp_path / "factory.py").write_text(
        "from microasgi import App\n"
        "def create_app():\n"
        "    app = App()\n"
        "    @app.get('/')\n"
        "    async def home(request):\n"
        "        return {'made': True}\n"
        "    return app\n"
    )
    response = _serve_until_answered(
        ["factory:create_app", "--factory", "--server", server], tmp_path
    )
    assert response.json() == {"made": True}


@pytest.mark.integration
def test_python_m_microasgi_serves_an_app(tmp_path: Path) -> None:
    (tmp_path / "served.py").write_text(
        "from microasgi import App\n"
        "app = App()\n"
        "@app.get('/')\n"
        "async def home(request):\n"
        "    return {'served': True}\n"
    )
    response = _serve_until_answered(["served:app"], tmp_path)
    assert response.json() == {"served": True}


@pytest.mark.integration
def test_an_app_found_by_an_import_hook_is_served(tmp_path: Path) -> None:
    # An editable install with a package_dir mapping (setuptools) is found by a finder on
    # sys.meta_path, which a .pth file installs at startup; sitecustomize stands in for it.
    (tmp_path / "lib").mkdir()
    init = tmp_path / "lib" / "__init__.py"
    init.write_text(
        "from microasgi import App\n"
        "app = App()\n"
        "@app.get('/')\n"
        "async def home(request):\n"
        "    return {'hooked': True}\n"
    )
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "class EditableFinder:\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        if name != 'shopapp':\n"
        "            return None\n"
        f"        return importlib.util.spec_from_file_location(name, {str(init)!r})\n"
        "sys.meta_path.append(EditableFinder)\n"
    )
    response = _serve_until_answered(["shopapp:app"], tmp_path, pythonpath=(hooks,))
    assert response.json() == {"hooked": True}
