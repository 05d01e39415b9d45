"""``python -m microasgi``: the same as the ``microasgi`` command."""

from __future__ import annotations

from microasgi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
