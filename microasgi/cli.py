"""The ``microasgi`` command: ``microasgi run module:app`` on uvicorn, granian or hypercorn."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["build_command", "main"]

SERVERS = ("uvicorn", "granian", "hypercorn")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microasgi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve an ASGI app")
    run.add_argument("app", help="the app to serve, as module:attribute (e.g. main:app)")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    run.add_argument(
        "--factory",
        action="store_true",
        help="the attribute is a function taking no arguments that returns the app",
    )
    run.add_argument("--reload", action="store_true", help="restart when the code changes")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--server", choices=SERVERS, default="uvicorn", help="default uvicorn")
    run.add_argument(
        "--graceful-timeout",
        type=int,
        metavar="SECONDS",
        help="at shutdown, close connections still open (WebSockets, event streams) after this",
    )
    return parser


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {value!r}")
    return port


def build_command(args: argparse.Namespace) -> list[str]:
    """Return the command line that serves ``args.app`` with the chosen server."""
    module, _, attribute = args.app.partition(":")
    if not module or not attribute:
        raise SystemExit(f"microasgi run: expected module:attribute, got {args.app!r}")
    if args.workers < 1:
        raise SystemExit("microasgi run: --workers must be at least 1")
    if args.reload and args.workers > 1:
        raise SystemExit("microasgi run: --reload and --workers > 1 cannot be combined")
    if args.graceful_timeout is not None and args.graceful_timeout < 0:
        raise SystemExit("microasgi run: --graceful-timeout must not be negative")
    bind = ["--host", args.host, "--port", str(args.port)]
    if args.server == "uvicorn":
        command = ["-m", "uvicorn", args.app, *bind, "--workers", str(args.workers)]
        command += ["--factory"] if args.factory else []
    elif args.server == "granian":
        command = ["-m", "granian", "--interface", "asgi", *bind, "--workers", str(args.workers)]
        command += ["--factory"] if args.factory else []
    else:
        # NOTE: hypercorn has no factory option; it calls an app given as `module:f()`.
        target = f"{args.app}()" if args.factory else args.app
        command = ["-m", "hypercorn", target, "--bind", _bind(args.host, args.port)]
        command += ["--workers", str(args.workers)]
    command += ["--reload"] if args.reload else []
    if args.graceful_timeout is not None:
        command += [_GRACEFUL_OPTION[args.server], str(args.graceful_timeout)]
    if args.server == "granian":
        command.append(args.app)  # NOTE: granian takes the app after its options
    return [sys.executable, *command]


_GRACEFUL_OPTION = {
    "uvicorn": "--timeout-graceful-shutdown",
    "granian": "--workers-kill-timeout",
    "hypercorn": "--graceful-timeout",
}


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and replace this process with the server."""
    args = _parser().parse_args(argv)
    module = args.server
    if importlib.util.find_spec(module) is None:
        hint = "pip install 'microasgi[server]'" if module == "uvicorn" else f"pip install {module}"
        print(f"microasgi run: {module} is not installed ({hint})", file=sys.stderr)
        return 2
    command = build_command(args)
    # NOTE: the current directory is importable, as it is for `uvicorn main:app`.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])
    )
    package = args.app.partition(":")[0].partition(".")[0]
    if not _findable(package):
        # NOTE: checked here because hypercorn exits with status 0 when it cannot import
        # the app; only the top-level name, which is found without running any of its code.
        print(f"microasgi run: no module named {package!r} to import", file=sys.stderr)
        return 2
    return _exec(command)


def _findable(name: str) -> bool:
    """Whether the server, run with this PYTHONPATH, would find the top-level module."""
    path = [*os.environ["PYTHONPATH"].split(os.pathsep), *sys.path]
    if importlib.machinery.PathFinder.find_spec(name, path) is not None:
        return True
    # NOTE: an editable install may be found by an import hook on sys.meta_path rather than
    # on a path (setuptools does so for a package_dir mapping); the server has the same hooks.
    return importlib.util.find_spec(name) is not None


def _exec(command: list[str]) -> NoReturn:
    """Replace this process with ``command`` (signals then reach the server directly)."""
    os.execv(shutil.which(command[0]) or command[0], command)
