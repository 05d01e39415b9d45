"""A real-time chat on WebSockets, server-sent events and Broadcast: see ``app.py``."""

from __future__ import annotations
