"""Routing: path templates, converters, the route tree and the router."""

from __future__ import annotations

from .converters import register_converter
from .router import Router
from .routes import BaseRoute, Host, Mount, Route, WebSocketRoute

__all__ = ["BaseRoute", "Host", "Mount", "Route", "Router", "WebSocketRoute", "register_converter"]
