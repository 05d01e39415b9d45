"""Optional codec modules (brotli, zstandard, compression.zstd), imported once on first use."""

from __future__ import annotations

import functools
import importlib
from typing import Any


@functools.cache
def load_optional(name: str) -> Any:
    """Import ``name`` once; None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
