"""Path templates, and the segment tree that matches request paths against them.

A template such as ``/users/{user_id:int}/posts`` is parsed once into segments. The tree has
one node per distinct prefix of segments, so a lookup walks the path one segment at a time
with dict lookups, whatever the number of routes. At each segment the precedence is:
static text, typed parameters (by converter priority), ``str``, ``path``, then a mount
prefix. When the best branch leads nowhere, the next one is tried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from microasgi.exceptions import RouteTemplateError
from microasgi.routing.converters import (
    NO_MATCH,
    PATH,
    STR,
    Converter,
    get_converter,
    quote_segment,
)

__all__ = ["Leaf", "MatchResult", "RouteTree", "Segment", "Template", "parse_template"]

TemplateKey = tuple["str | Converter", ...]
"""Static text for a static segment, the converter for a parameter: names are erased."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One ``/``-separated part of a template: static text, or a parameter.

    ``text`` is the segment as written (``users`` or ``{id:int}``); ``name`` and
    ``converter`` are set for a parameter only.
    """

    text: str
    name: str | None = None
    converter: Converter | None = None


class Template:
    """A parsed path template such as ``/users/{user_id:int}``; see ``parse_template``.

    ``segments`` are the parts between slashes (a trailing slash gives an empty last
    segment), ``param_names`` the parameters in order and ``converters`` maps each to its
    converter. Two templates with equal ``key`` match exactly the same paths.
    """

    __slots__ = (
        "_plan",
        "_static_path",
        "converters",
        "is_static",
        "key",
        "param_names",
        "param_set",
        "segments",
        "template",
    )

    def __init__(self, template: str, segments: tuple[Segment, ...]) -> None:
        self.template = template
        self.segments = segments
        params = [s for s in segments if s.converter is not None]
        self.param_names: tuple[str, ...] = tuple(str(s.name) for s in params)
        self.param_set = frozenset(self.param_names)
        self.converters: Mapping[str, Converter] = MappingProxyType(
            {str(s.name): s.converter for s in params if s.converter is not None}
        )
        self.key: TemplateKey = tuple(
            s.text if s.converter is None else s.converter for s in segments
        )
        self.is_static = not params
        # PERF: URL building runs per request in some apps; the static text is encoded here,
        # once, and each parameter keeps its converter's bound to_string.
        self._plan: tuple[tuple[str, Callable[[Any], str] | None], ...] = tuple(
            (quote_segment(s.text), None)
            if s.converter is None
            else (str(s.name), s.converter.to_string)
            for s in segments
        )
        self._static_path = "/" + "/".join(text for text, _ in self._plan) if not params else None

    def format(self, params: Mapping[str, Any]) -> str:
        """Return the percent-encoded path for ``params`` (keys it does not use are ignored).

        The path routes back to this template with the same values. ``KeyError`` when a
        parameter is missing, ``ValueError`` when its converter cannot write the value (a
        ``str`` parameter that is empty or contains ``/``, a negative int).
        """
        path = self._static_path
        if path is not None:
            return path
        parts: list[str] = []
        for text, to_string in self._plan:
            if to_string is None:
                parts.append(text)
                continue
            if text not in params:
                raise KeyError(f"Route template {self.template!r} needs the parameter {text!r}")
            value = params[text]
            try:
                parts.append(to_string(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"Parameter {text!r} of route template {self.template!r} "
                    f"cannot be {value!r}: {exc}"
                ) from exc
        return "/" + "/".join(parts)

    def __repr__(self) -> str:
        return f"Template({self.template!r})"


def parse_template(template: str) -> Template:
    """Parse a path template; ``RouteTemplateError`` names the template and the broken rule.

    Parameters are ``{name}`` (one non-empty segment, ``str``) or ``{name:converter}`` and
    fill a whole segment; ``{name:path}`` takes the rest of the path and comes last.
    """
    if not template.startswith("/"):
        raise RouteTemplateError(f"Route template {template!r} must start with '/'")
    texts = template[1:].split("/")
    segments: list[Segment] = []
    for text in texts:
        segment = _parse_segment(template, text)
        if segment.converter is not None:
            if segment.name in {s.name for s in segments}:
                raise RouteTemplateError(
                    f"Route template {template!r} uses the parameter name {segment.name!r} "
                    "twice; each parameter needs its own name"
                )
            if segment.converter is PATH and len(segments) != len(texts) - 1:
                raise RouteTemplateError(
                    f"Route template {template!r}: {segment.text!r} takes the rest of the path, "
                    "so it must be the last segment"
                )
        segments.append(segment)
    return Template(template, tuple(segments))


def _parse_segment(template: str, text: str) -> Segment:
    if "{" not in text and "}" not in text:
        return Segment(text)
    if not _braces_balanced(text):
        raise RouteTemplateError(
            f"Route template {template!r} has unbalanced braces in {text!r}; "
            "write a parameter as {name} or {name:converter}"
        )
    if not (text.startswith("{") and text.endswith("}") and text.count("{") == 1):
        raise RouteTemplateError(
            f"Route template {template!r}: parameters must fill a whole segment, "
            f"but {text!r} mixes a parameter with other text (use '/a/{{x}}', not '/a-{{x}}')"
        )
    name, colon, converter_name = text[1:-1].partition(":")
    if not name.isidentifier():
        raise RouteTemplateError(
            f"Route template {template!r}: the parameter name {name!r} in {text!r} "
            "is not a valid Python identifier"
        )
    try:
        converter = get_converter(converter_name if colon else STR.name)
    except RouteTemplateError as exc:
        raise RouteTemplateError(f"Route template {template!r}: {exc}") from None
    return Segment(text, name, converter)


def _braces_balanced(text: str) -> bool:
    """Whether every ``{`` is closed by a ``}`` before the next ``{`` (no nesting)."""
    open_brace = False
    for char in text:
        if char == "{":
            if open_brace:
                return False
            open_brace = True
        elif char == "}":
            if not open_brace:
                return False
            open_brace = False
    return not open_brace


class Leaf:
    """Where a pattern ends in the tree; the router keeps its routes in ``handlers``.

    ``handlers`` maps a method (or ``"*"``, any method) to what the router stores for it.
    ``template_key`` is the pattern's shape, ``template`` the first template inserted for it,
    and ``is_prefix`` tells a mount prefix from an exact pattern.
    """

    __slots__ = ("handlers", "is_prefix", "template", "template_key")

    def __init__(self, template: Template, template_key: TemplateKey, is_prefix: bool) -> None:
        # Any: the router decides what a handler is (a route record, an ASGI app...).
        self.handlers: dict[str, Any] = {}
        self.template = template
        self.template_key = template_key
        self.is_prefix = is_prefix

    def handler_for(self, method: str) -> Any:
        """The handler for ``method``, else the any-method one (``"*"``), else None."""
        handler = self.handlers.get(method)
        return handler if handler is not None else self.handlers.get("*")

    def __repr__(self) -> str:
        kind = "prefix " if self.is_prefix else ""
        return f"<Leaf {kind}{self.template.template!r} {sorted(self.handlers)}>"


MatchResult = tuple[Leaf, Any, list[Any], int]
"""``(leaf, handler, values, end)`` as returned by ``RouteTree.match``."""


class _Node:
    """The place reached after ``depth`` parts of ``path.split("/")``."""

    __slots__ = (
        "depth",
        "leaf",
        "params",
        "path_leaf",
        "prefix_leaf",
        "static",
        "str_child",
        "typed",
    )

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.static: dict[str, _Node] = {}
        self.params: dict[Converter, _Node] = {}
        # PERF: (bound match method, child) in priority order, rebuilt at insertion, so a
        # lookup neither sorts nor looks up attributes; the built-in str is kept apart
        # because a non-empty segment is all it checks.
        self.typed: tuple[tuple[Callable[[str], Any], _Node], ...] = ()
        self.str_child: _Node | None = None
        self.path_leaf: Leaf | None = None
        self.leaf: Leaf | None = None
        self.prefix_leaf: Leaf | None = None

    def child(self, segment: Segment) -> _Node:
        """Return the child for ``segment``, creating it if needed (not for ``path``)."""
        converter = segment.converter
        if converter is None:
            node = self.static.get(segment.text)
            if node is None:
                node = self.static[segment.text] = _Node(self.depth + 1)
            return node
        node = self.params.get(converter)
        if node is None:
            node = self.params[converter] = _Node(self.depth + 1)
            if converter is STR:
                self.str_child = node
            else:
                ordered = sorted(self.params.items(), key=lambda item: item[0].priority)
                self.typed = tuple((c.match, n) for c, n in ordered if c is not STR)
        return node


class RouteTree:
    """Route patterns in a segment tree; a lookup costs the same for 10 or 1000 routes.

    ``insert`` and ``insert_prefix`` give the ``Leaf`` of a pattern, in which the router
    stores its handlers per method; ``match`` finds the leaf for a request. Fully static
    patterns are also kept in ``static_routes``, a dict from path to leaf.
    """

    __slots__ = ("_leaves", "_root", "_top", "static_routes")

    def __init__(self) -> None:
        self.static_routes: dict[str, Leaf] = {}
        # NOTE: path.split("/") starts with "" for every path that starts with "/"; the
        # top node takes that part, so the lookup loop needs no index or slice.
        self._top = _Node(0)
        self._root = self._top.static[""] = _Node(1)
        self._leaves: list[Leaf] = []

    def insert(self, template: Template) -> Leaf:
        """Return the leaf for ``template``'s pattern, creating it if it is new."""
        node = self._root
        for segment in template.segments:
            if segment.converter is PATH:
                if node.path_leaf is None:
                    node.path_leaf = self._new_leaf(template, template.key, is_prefix=False)
                return node.path_leaf
            node = node.child(segment)
        if node.leaf is None:
            node.leaf = self._new_leaf(template, template.key, is_prefix=False)
            if template.is_static:
                self.static_routes[template.template] = node.leaf
        return node.leaf

    def insert_prefix(self, template: Template) -> Leaf:
        """Return the prefix leaf (for a mount) of ``template``, creating it if it is new.

        It matches the template's path and every longer path that continues with ``/``;
        trailing slashes of the template are ignored, so ``/`` is a prefix of every path.
        At its node it comes after every other pattern.
        """
        if any(segment.converter is PATH for segment in template.segments):
            raise RouteTemplateError(
                f"Mount prefix {template.template!r} cannot use the path converter: "
                "the mounted app receives the rest of the path"
            )
        segments = list(template.segments)
        while segments and segments[-1].text == "":
            segments.pop()
        node = self._root
        for segment in segments:
            node = node.child(segment)
        if node.prefix_leaf is None:
            key = template.key[: len(segments)]
            node.prefix_leaf = self._new_leaf(template, key, is_prefix=True)
        return node.prefix_leaf

    def _new_leaf(self, template: Template, key: TemplateKey, *, is_prefix: bool) -> Leaf:
        leaf = Leaf(template, key, is_prefix)
        self._leaves.append(leaf)
        return leaf

    def match(self, path: str, method: str) -> MatchResult | None:
        """Find the best leaf for ``path`` that has a handler for ``method`` (or ``"*"``).

        Returns ``(leaf, handler, values, end)``: ``values`` are the converted parameters
        in segment order, and ``path[:end]`` is the part of the path that was matched (all
        of it, except for a prefix leaf). When leaves match the path but none has the
        method, the best of them comes back with ``handler`` None (a 405). None: no leaf
        matches the path (a 404). Leaves without handlers are ignored.
        """
        values: list[Any] = []
        leaf = self.static_routes.get(path)
        if leaf is None:
            # PERF: one greedy descent along the best branch, inlined because it runs for
            # every request: no recursion, no stack, no allocation but the values list. It
            # is right unless a branch must be undone or the method is missing; then
            # _search starts over and tries every branch in order.
            parts = path.split("/")
            node = self._top
            for segment in parts:
                child = node.static.get(segment)
                if child is None:
                    for test, typed_child in node.typed:
                        value = test(segment)
                        if value is not NO_MATCH:
                            values.append(value)
                            child = typed_child
                            break
                    else:
                        child = node.str_child
                        if child is None or not segment:
                            leaf = node.path_leaf
                            if leaf is None:
                                return self._dead_end(node, parts, values, path, method)
                            values.append("/".join(parts[node.depth :]))
                            break
                        values.append(segment)
                node = child
            else:
                # NOTE: the path ends here; a prefix matching it exactly comes after (the
                # root's prefix is no match for "", which does not start with "/").
                leaf = node.leaf or (node.prefix_leaf if path else None)
        if leaf is not None:
            # PERF: Leaf.handler_for() inlined: this runs for every request.
            handlers = leaf.handlers
            handler = handlers.get(method)
            if handler is None:
                handler = handlers.get("*")
            if handler is not None:
                return leaf, handler, values, len(path)
        return self._search(path, method)

    def _dead_end(
        self, node: _Node, parts: list[str], values: list[Any], path: str, method: str
    ) -> MatchResult | None:
        """Finish a descent that found nothing at ``node`` for ``parts[node.depth]``.

        ``node``'s prefix leaf is then the best match left: the branches not taken at its
        ancestors all rank below everything under ``node``.
        """
        leaf = node.prefix_leaf
        if leaf is not None:
            handler = leaf.handler_for(method)
            if handler is not None:
                return leaf, handler, values, len("/".join(parts[: node.depth]))
        return self._search(path, method)

    def _search(self, path: str, method: str) -> MatchResult | None:
        """Try every leaf that matches ``path``, best first (see ``match``)."""
        first: MatchResult | None = None
        for leaf, values, end in self.candidates(path):
            handler = leaf.handler_for(method)
            if handler is not None:
                return leaf, handler, values, end
            if first is None:
                first = (leaf, None, values, end)
        return first

    def allowed_methods(self, path: str) -> set[str]:
        """Return every method (``"*"`` included) of the leaves that match ``path``."""
        methods: set[str] = set()
        for leaf, _values, _end in self.candidates(path):
            methods.update(leaf.handlers)
        return methods

    def candidates(self, path: str) -> Iterator[tuple[Leaf, list[Any], int]]:
        """Yield ``(leaf, values, end)`` for every leaf with handlers matching ``path``.

        Best first. Backtracking visits each node at most once, so an unlucky path costs
        at most one pass over the tree, never an exponential search.
        """
        if not path.startswith("/"):
            return
        parts = path.split("/")
        stack: list[tuple[_Node | Leaf, tuple[Any, ...], int]] = [(self._root, (), 0)]
        while stack:
            target, values, end = stack.pop()
            if isinstance(target, Leaf):
                if target.handlers:
                    yield target, list(values), end
            else:
                _expand(target, parts, len(path), values, stack)

    def __len__(self) -> int:
        return len(self._leaves)

    def __iter__(self) -> Iterator[Leaf]:
        return iter(self._leaves)


def _expand(
    node: _Node,
    parts: list[str],
    size: int,
    values: tuple[Any, ...],
    stack: list[tuple[_Node | Leaf, tuple[Any, ...], int]],
) -> None:
    """Push what may follow ``node`` on ``stack``, the best last (it is popped first)."""
    depth = node.depth
    if depth == len(parts):
        if node.prefix_leaf is not None:
            stack.append((node.prefix_leaf, values, size))
        if node.leaf is not None:
            stack.append((node.leaf, values, size))
        return
    segment = parts[depth]
    if node.prefix_leaf is not None:
        stack.append((node.prefix_leaf, values, len("/".join(parts[:depth]))))
    if node.path_leaf is not None:
        stack.append((node.path_leaf, (*values, "/".join(parts[depth:])), size))
    if segment and node.str_child is not None:
        stack.append((node.str_child, (*values, segment), 0))
    for test, child in reversed(node.typed):
        value = test(segment)
        if value is not NO_MATCH:
            stack.append((child, (*values, value), 0))
    static = node.static.get(segment)
    if static is not None:
        stack.append((static, values, 0))
