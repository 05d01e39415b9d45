from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microasgi.exceptions import RouteTemplateError
from microasgi.routing.converters import (
    FLOAT,
    INT,
    PATH,
    STR,
    UUID,
    Converter,
    register_converter,
)
from microasgi.routing.tree import Leaf, RouteTree, Segment, Template, parse_template

SAMPLE_UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

# Registered in this order: hex2 before lowerhex, so hex2 is tried first at a segment.
HEX2 = register_converter("tree_hex2", "[0-9a-f]{2}", lambda s: int(s, 16), lambda v: f"{v:02x}")
LOWERHEX = register_converter("tree_lowerhex", "[0-9a-f-]+", str.upper, str.lower)


def tree_of(*templates: str, methods: Iterable[str] = ("GET",)) -> RouteTree:
    """A tree whose leaves answer ``methods`` with the template text."""
    tree = RouteTree()
    for text in templates:
        leaf = tree.insert(parse_template(text))
        for method in methods:
            leaf.handlers.setdefault(method, text)
    return tree


def winner(tree: RouteTree, path: str, method: str = "GET") -> tuple[Any, list[Any]] | None:
    found = tree.match(path, method)
    if found is None:
        return None
    leaf, handler, values, end = found
    assert end == len(path) or leaf.is_prefix
    return handler, values


# --- parse_template --------------------------------------------------------------------


def test_parse_static_template() -> None:
    template = parse_template("/users/me")
    assert template.template == "/users/me"
    assert template.segments == (Segment("users"), Segment("me"))
    assert template.param_names == ()
    assert dict(template.converters) == {}
    assert template.key == ("users", "me")
    assert template.is_static
    assert repr(template) == "Template('/users/me')"


def test_parse_params() -> None:
    template = parse_template("/users/{user_id:int}/files/{rest:path}")
    assert template.segments == (
        Segment("users"),
        Segment("{user_id:int}", "user_id", INT),
        Segment("files"),
        Segment("{rest:path}", "rest", PATH),
    )
    assert template.param_names == ("user_id", "rest")
    assert dict(template.converters) == {"user_id": INT, "rest": PATH}
    assert template.key == ("users", INT, "files", PATH)
    assert not template.is_static


def test_plain_param_is_str_and_custom_converters_resolve() -> None:
    template = parse_template("/{name}/{h:tree_hex2}")
    assert dict(template.converters) == {"name": STR, "h": HEX2}


def test_key_erases_names_but_not_converters() -> None:
    assert parse_template("/a/{x:int}").key == parse_template("/a/{y:int}").key
    assert parse_template("/a/{x:int}").key != parse_template("/a/{x}").key
    assert parse_template("/a/{x}").key != parse_template("/a/x").key
    assert parse_template("/a/{x}").key != parse_template("/a/{x}/").key


def test_root_and_trailing_slashes() -> None:
    assert parse_template("/").segments == (Segment(""),)
    assert parse_template("/a/").key == ("a", "")
    assert parse_template("/a").key == ("a",)
    assert parse_template("//a").key == ("", "a")
    assert parse_template("/{x}/").param_names == ("x",)


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("users", "must start with '/'"),
        ("", "must start with '/'"),
        ("{x}", "must start with '/'"),
        ("/a-{x}", "parameters must fill a whole segment"),
        ("/{x}.json", "parameters must fill a whole segment"),
        ("/{a}{b}", "parameters must fill a whole segment"),
        ("/a/{x}b/c", "parameters must fill a whole segment"),
        ("/{x", "unbalanced braces"),
        ("/x}", "unbalanced braces"),
        ("/{x}}", "unbalanced braces"),
        ("/{{x}}", "unbalanced braces"),
        ("/{x:foo/bar}", "unbalanced braces"),
        ("/}{", "unbalanced braces"),
        ("/{}", "is not a valid Python identifier"),
        ("/{1x}", "is not a valid Python identifier"),
        ("/{x-y}", "is not a valid Python identifier"),
        ("/{ x }", "is not a valid Python identifier"),
        ("/{:int}", "is not a valid Python identifier"),
        ("/{x:nope}", "Unknown converter 'nope'"),
        ("/{x:}", "Unknown converter ''"),
        ("/{x:int:2}", "Unknown converter 'int:2'"),
        ("/{x}/{x:int}", "uses the parameter name 'x' twice"),
        ("/{p:path}/a", "must be the last segment"),
        ("/{p:path}/", "must be the last segment"),
    ],
)
def test_template_errors_name_the_template_and_the_rule(template: str, rule: str) -> None:
    with pytest.raises(RouteTemplateError) as caught:
        parse_template(template)
    message = str(caught.value)
    assert repr(template) in message
    assert rule in message


def test_keyword_names_are_identifiers() -> None:
    assert parse_template("/{from}/{to}").param_names == ("from", "to")


# --- Template.format -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "params", "path"),
    [
        ("/", {}, "/"),
        ("/a/", {}, "/a/"),
        ("/users/{user_id:int}", {"user_id": 3}, "/users/3"),
        ("/p/{x:float}", {"x": 1.5}, "/p/1.5"),
        ("/o/{u:uuid}", {"u": uuid.UUID(SAMPLE_UUID)}, f"/o/{SAMPLE_UUID}"),
        ("/f/{rest:path}", {"rest": "a/b/c.txt"}, "/f/a/b/c.txt"),
        ("/f/{rest:path}", {"rest": ""}, "/f/"),
        ("/a/{x}/", {"x": "b", "extra": 1}, "/a/b/"),
        ("/h/{h:tree_hex2}", {"h": 10}, "/h/0a"),
        ("/a/{x}", {"x": "b c?d#e%"}, "/a/b%20c%3Fd%23e%25"),
        ("/a/{x}", {"x": ".."}, "/a/%2E%2E"),
        ("/{rest:path}", {"rest": "/evil.com"}, "/%2Fevil.com"),
        ("/{rest:path}", {"rest": "\\evil.com"}, "/%5Cevil.com"),
        ("/café/{x}", {"x": "é"}, "/caf%C3%A9/%C3%A9"),
        ("/50%/a b/", {}, "/50%25/a%20b/"),
        ("/", {}, "/"),
    ],
)
def test_format(template: str, params: dict[str, Any], path: str) -> None:
    assert parse_template(template).format(params) == path


def test_format_missing_param_is_key_error() -> None:
    with pytest.raises(KeyError, match="needs the parameter 'b'"):
        parse_template("/{a}/{b}").format({"a": 1})


@pytest.mark.parametrize(
    ("template", "value", "why"),
    [
        ("/{x}", "a/b", "must not contain '/'"),
        ("/{x}", "", "must not be empty"),
        ("/{x:int}", -1, "must not be negative"),
        ("/{x:int}", None, "cannot be None"),
        ("/{x:float}", float("nan"), "finite"),
        ("/{x:uuid}", "nope", "cannot be 'nope'"),
        ("/{x:tree_hex2}", 300, "does not match its pattern"),
    ],
)
def test_format_bad_value_is_value_error(template: str, value: Any, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as caught:
        parse_template(template).format({"x": value})
    assert "'x'" in str(caught.value)
    assert repr(template) in str(caught.value)


VALUES: dict[Converter, st.SearchStrategy[Any]] = {
    STR: st.text(st.characters(blacklist_characters="/", codec="utf-8"), min_size=1),
    INT: st.integers(min_value=0),
    FLOAT: st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    UUID: st.uuids(),
    PATH: st.text(st.characters(codec="utf-8")),
}


@given(st.data())
def test_format_then_match_round_trips(data: st.DataObject) -> None:
    kinds = data.draw(st.lists(st.sampled_from([STR, INT, FLOAT, UUID]), max_size=4))
    names = [f"p{i}" for i in range(len(kinds))]
    segments = [f"{{{name}:{kind.name}}}" for name, kind in zip(names, kinds)]
    if data.draw(st.booleans()):
        kinds.append(PATH)
        names.append("rest")
        segments.append("{rest:path}")
    template = parse_template("/s/" + "/".join(segments))
    params = {name: data.draw(VALUES[kind]) for name, kind in zip(names, kinds)}
    path = template.format(params)
    tree = RouteTree()
    tree.insert(template).handlers["GET"] = "route"
    # NOTE: the path is percent-encoded; a server decodes it before routing.
    found = tree.match(unquote(path), "GET")
    assert found is not None
    assert found[2] == [params[name] for name in names]


# --- RouteTree.insert ------------------------------------------------------------------


def test_insert_shares_a_leaf_between_equivalent_templates() -> None:
    tree = RouteTree()
    get = parse_template("/a/{x:int}")
    post = parse_template("/a/{y:int}")
    leaf = tree.insert(get)
    assert tree.insert(post) is leaf
    assert leaf.template is get
    assert leaf.template_key == get.key
    assert not leaf.is_prefix
    assert leaf.handlers == {}
    assert tree.insert(parse_template("/a/{x}")) is not leaf
    assert tree.insert(parse_template("/a/{x:int}/")) is not leaf
    assert tree.insert(parse_template("/f/{p:path}")) is tree.insert(parse_template("/f/{q:path}"))
    assert len(tree) == 4
    assert next(iter(tree)) is leaf
    assert repr(leaf) == "<Leaf '/a/{x:int}' []>"


def test_static_templates_are_in_the_flat_dict() -> None:
    tree = tree_of("/", "/a", "/a/", "/a/{x}", "/f/{p:path}")
    assert sorted(tree.static_routes) == ["/", "/a", "/a/"]
    assert all(isinstance(leaf, Leaf) for leaf in tree.static_routes.values())


def test_shared_leaf_binds_different_names_positionally() -> None:
    tree = RouteTree()
    get = parse_template("/a/{x:int}")
    post = parse_template("/a/{y:int}")
    tree.insert(get).handlers["GET"] = get
    tree.insert(post).handlers["POST"] = post
    for method, template in (("GET", get), ("POST", post)):
        found = tree.match("/a/5", method)
        assert found is not None
        _leaf, handler, values, end = found
        assert handler is template
        assert dict(zip(handler.param_names, values)) == {template.param_names[0]: 5}
        assert end == len("/a/5")


# --- RouteTree.match -------------------------------------------------------------------


def test_match_static_and_params() -> None:
    tree = tree_of(
        "/",
        "/users/{user_id:int}",
        "/users/{user_id:int}/posts/{slug}",
        "/prices/{amount:float}",
        "/orders/{order:uuid}",
        "/files/{rest:path}",
        "/plain",
    )
    assert winner(tree, "/") == ("/", [])
    assert winner(tree, "/plain") == ("/plain", [])
    assert winner(tree, "/users/42") == ("/users/{user_id:int}", [42])
    assert winner(tree, "/users/42/posts/hello") == (
        "/users/{user_id:int}/posts/{slug}",
        [42, "hello"],
    )
    assert winner(tree, "/prices/1.25") == ("/prices/{amount:float}", [1.25])
    assert winner(tree, f"/orders/{SAMPLE_UUID.upper()}") == (
        "/orders/{order:uuid}",
        [uuid.UUID(SAMPLE_UUID)],
    )
    assert winner(tree, "/files/a/b/c.txt") == ("/files/{rest:path}", ["a/b/c.txt"])
    assert winner(tree, "/files/") == ("/files/{rest:path}", [""])
    assert winner(tree, "/files") is None
    assert winner(tree, "/users/x") is None
    assert winner(tree, "/users/-1") is None
    assert winner(tree, "/users/42/posts/") is None
    assert winner(tree, "/nope") is None


def test_match_path_that_does_not_start_with_a_slash() -> None:
    tree = tree_of("/", "/{x}", "/{p:path}")
    tree.insert_prefix(parse_template("/")).handlers["*"] = "mount"
    assert tree.match("", "GET") is None
    assert tree.match("users", "GET") is None
    assert tree.match("users/1", "GET") is None


def test_root() -> None:
    tree = tree_of("/", "/{x}")
    assert winner(tree, "/") == ("/", [])
    assert winner(tree, "/a") == ("/{x}", ["a"])
    assert winner(tree_of("/{x}"), "/") is None
    assert winner(tree_of("/a"), "/") is None


def test_trailing_slash_is_significant() -> None:
    tree = tree_of("/a", "/b/", "/c/{x}", "/d/{x}/")
    assert winner(tree, "/a") == ("/a", [])
    assert winner(tree, "/a/") is None
    assert winner(tree, "/b/") == ("/b/", [])
    assert winner(tree, "/b") is None
    assert winner(tree, "/c/1") == ("/c/{x}", ["1"])
    assert winner(tree, "/c/1/") is None
    assert winner(tree, "/c/") is None
    assert winner(tree, "/d/1/") == ("/d/{x}/", ["1"])
    assert winner(tree, "/d/1") is None


def test_empty_segments() -> None:
    tree = tree_of("/a", "/{x}/a", "/b/{x:int}/c")
    assert winner(tree, "//a") is None
    assert winner(tree, "/a//") is None
    assert winner(tree, "/b//c") is None
    assert winner(tree_of("//a"), "//a") == ("//a", [])
    assert winner(tree_of("/{p:path}"), "//a") == ("/{p:path}", ["/a"])
    assert winner(tree_of("/a/{p:path}"), "/a//") == ("/a/{p:path}", ["/"])
    empty = register_converter("tree_empty_ok", "[a-z]*", str, str)
    assert winner(tree_of(f"/x/{{e:{empty.name}}}/y"), "/x//y") == ("/x/{e:tree_empty_ok}/y", [""])


def test_values_are_converted_in_segment_order() -> None:
    tree = tree_of("/{a:int}/{b}/{c:float}/{d:uuid}/{e:tree_hex2}/{f:path}")
    found = winner(tree, f"/1/two/3.5/{SAMPLE_UUID}/ff/g/h")
    assert found is not None
    assert found[1] == [1, "two", 3.5, uuid.UUID(SAMPLE_UUID), 255, "g/h"]


# --- precedence ------------------------------------------------------------------------

CHAIN_NUMBER = [
    "/x/10",
    "/x/{v:int}",
    "/x/{v:float}",
    "/x/{v:tree_hex2}",
    "/x/{v:tree_lowerhex}",
    "/x/{v}",
    "/x/{v:path}",
    "prefix:/x",
]
CHAIN_UUID = [
    f"/x/{SAMPLE_UUID}",
    "/x/{v:uuid}",
    "/x/{v:tree_lowerhex}",
    "/x/{v}",
    "/x/{v:path}",
    "prefix:/x",
]


def build(entries: Sequence[str], seed: int) -> RouteTree:
    """Insert ``entries`` in a shuffled order; ``prefix:`` marks a mount prefix."""
    shuffled = list(entries)
    random.Random(seed).shuffle(shuffled)
    tree = RouteTree()
    for entry in shuffled:
        if entry.startswith("prefix:"):
            leaf = tree.insert_prefix(parse_template(entry.removeprefix("prefix:")))
            leaf.handlers["*"] = entry
        else:
            tree.insert(parse_template(entry)).handlers["GET"] = entry
    return tree


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("chain", "segment"), [(CHAIN_NUMBER, "10"), (CHAIN_UUID, SAMPLE_UUID)])
def test_precedence_static_typed_custom_str_path_prefix(
    chain: list[str], segment: str, seed: int
) -> None:
    for start in range(len(chain)):
        tree = build(chain[start:], seed)
        found = tree.match(f"/x/{segment}", "GET")
        assert found is not None
        assert found[1] == chain[start], chain[start:]


def test_custom_converters_follow_registration_order_not_insertion_order() -> None:
    for order in (
        ["/x/{v:tree_hex2}", "/x/{v:tree_lowerhex}"],
        ["/x/{v:tree_lowerhex}", "/x/{v:tree_hex2}"],
    ):
        assert winner(tree_of(*order), "/x/ab") == ("/x/{v:tree_hex2}", [0xAB])
        assert winner(tree_of(*order), "/x/abc") == ("/x/{v:tree_lowerhex}", ["ABC"])


def test_int_before_float_before_str() -> None:
    tree = tree_of("/n/{v}", "/n/{v:float}", "/n/{v:int}")
    assert winner(tree, "/n/7") == ("/n/{v:int}", [7])
    assert winner(tree, "/n/7.5") == ("/n/{v:float}", [7.5])
    assert winner(tree, "/n/seven") == ("/n/{v}", ["seven"])


def test_backtracking_from_static_to_param() -> None:
    tree = tree_of("/users/me/settings", "/users/{id}/profile")
    assert winner(tree, "/users/me/profile") == ("/users/{id}/profile", ["me"])
    assert winner(tree, "/users/me/settings") == ("/users/me/settings", [])
    assert winner(tree, "/users/you/settings") is None


def test_backtracking_through_typed_str_and_path() -> None:
    tree = tree_of("/a/{x:int}/b", "/a/{x:float}/c", "/a/{y}/d", "/a/{rest:path}")
    assert winner(tree, "/a/1/b") == ("/a/{x:int}/b", [1])
    assert winner(tree, "/a/1/c") == ("/a/{x:float}/c", [1.0])
    assert winner(tree, "/a/1/d") == ("/a/{y}/d", ["1"])
    assert winner(tree, "/a/1/e") == ("/a/{rest:path}", ["1/e"])
    assert winner(tree, "/a/1/b/more") == ("/a/{rest:path}", ["1/b/more"])


def test_backtracking_several_levels() -> None:
    tree = tree_of("/{a}/{b}/{c}/z", "/{a}/x/{c}/y", "/w/x/v/{d}")
    assert winner(tree, "/w/x/v/u") == ("/w/x/v/{d}", ["u"])
    assert winner(tree, "/w/x/v/y") == ("/w/x/v/{d}", ["y"])
    assert winner(tree, "/w/x/q/y") == ("/{a}/x/{c}/y", ["w", "q"])
    assert winner(tree, "/w/x/q/z") == ("/{a}/{b}/{c}/z", ["w", "x", "q"])


# --- methods: the data for 405 ---------------------------------------------------------


def test_method_picks_the_best_leaf_that_has_it() -> None:
    tree = RouteTree()
    tree.insert(parse_template("/a/{x:int}")).handlers["GET"] = "get int"
    tree.insert(parse_template("/a/{y}")).handlers["POST"] = "post str"
    tree.insert(parse_template("/a/{rest:path}")).handlers["DELETE"] = "delete path"
    assert tree.match("/a/5", "GET") == (
        tree.insert(parse_template("/a/{x:int}")),
        "get int",
        [5],
        4,
    )
    found = tree.match("/a/5", "POST")
    assert found is not None
    assert found[1:] == ("post str", ["5"], 4)
    found = tree.match("/a/5", "DELETE")
    assert found is not None
    assert found[1:] == ("delete path", ["5"], 4)


def test_method_mismatch_returns_the_best_leaf_without_handler() -> None:
    tree = RouteTree()
    int_leaf = tree.insert(parse_template("/a/{x:int}"))
    int_leaf.handlers["GET"] = "get int"
    tree.insert(parse_template("/a/{y}")).handlers["POST"] = "post str"
    assert tree.match("/a/5", "PUT") == (int_leaf, None, [5], 4)
    assert tree.allowed_methods("/a/5") == {"GET", "POST"}
    found = tree.match("/a/x", "PUT")
    assert found is not None
    assert found[0].template.template == "/a/{y}"
    assert found[1] is None
    assert tree.allowed_methods("/a/x") == {"POST"}
    assert tree.match("/b", "PUT") is None
    assert tree.allowed_methods("/b") == set()


def test_method_mismatch_on_a_static_route_then_a_param_route_has_it() -> None:
    tree = RouteTree()
    static = tree.insert(parse_template("/users/me"))
    static.handlers["GET"] = "me"
    tree.insert(parse_template("/users/{name}")).handlers["POST"] = "post"
    found = tree.match("/users/me", "POST")
    assert found is not None
    assert found[1:] == ("post", ["me"], 9)
    assert tree.match("/users/me", "PUT") == (static, None, [], 9)
    assert tree.allowed_methods("/users/me") == {"GET", "POST"}


def test_any_method_key_on_an_exact_leaf() -> None:
    tree = RouteTree()
    tree.insert(parse_template("/a")).handlers["*"] = "any"
    tree.insert(parse_template("/b/{x}")).handlers["*"] = "any b"
    assert tree.match("/a", "PATCH") == (tree.insert(parse_template("/a")), "any", [], 2)
    found = tree.match("/b/1", "BREW")
    assert found is not None
    assert found[1:] == ("any b", ["1"], 4)


def test_leaves_without_handlers_are_ignored() -> None:
    tree = RouteTree()
    tree.insert(parse_template("/a"))
    tree.insert(parse_template("/b/{x}"))
    tree.insert(parse_template("/c/{p:path}"))
    tree.insert_prefix(parse_template("/d"))
    for path in ("/a", "/b/1", "/c/1", "/d", "/d/x"):
        assert tree.match(path, "GET") is None
        assert tree.allowed_methods(path) == set()
    tree.insert(parse_template("/{x}")).handlers["GET"] = "fallback"
    assert winner(tree, "/a") == ("fallback", ["a"])


# --- prefix leaves (mounts) ------------------------------------------------------------


def mounted(*prefixes: str, routes: Iterable[str] = ()) -> RouteTree:
    tree = tree_of(*routes)
    for prefix in prefixes:
        tree.insert_prefix(parse_template(prefix)).handlers["*"] = prefix
    return tree


@pytest.mark.parametrize(
    ("path", "end"),
    [("/static", 7), ("/static/", 7), ("/static/x/y", 7), ("/static//", 7), ("/static/a.css", 7)],
)
def test_prefix_matches_itself_and_what_continues_with_a_slash(path: str, end: int) -> None:
    tree = mounted("/static", routes=["/other"])
    found = tree.match(path, "GET")
    assert found is not None
    leaf, handler, values, found_end = found
    assert leaf.is_prefix
    assert leaf.template_key == ("static",)
    assert handler == "/static"
    assert values == []
    assert found_end == end


@pytest.mark.parametrize("path", ["/staticx", "/stati", "/", "/other/static", "//static"])
def test_prefix_does_not_match_other_paths(path: str) -> None:
    assert mounted("/static").match(path, "GET") is None


def test_prefix_trailing_slash_is_ignored() -> None:
    tree = RouteTree()
    leaf = tree.insert_prefix(parse_template("/static/"))
    assert tree.insert_prefix(parse_template("/static")) is leaf
    assert leaf.template_key == ("static",)
    leaf.handlers["*"] = "static"
    found = tree.match("/static", "GET")
    assert found is not None
    assert found[3] == 7


@pytest.mark.parametrize(("path", "end"), [("/", 0), ("/x", 0), ("/a/b/", 0), ("//", 0)])
def test_root_prefix_matches_every_path(path: str, end: int) -> None:
    found = mounted("/").match(path, "GET")
    assert found is not None
    assert found[3] == end


def test_prefix_with_params() -> None:
    tree = mounted("/u/{uid:int}")
    found = tree.match("/u/5/files/x", "GET")
    assert found is not None
    assert found[2:] == ([5], 4)
    assert tree.match("/u/x/files", "GET") is None


def test_nested_prefixes_deepest_first() -> None:
    tree = mounted("/", "/api", "/api/v2")
    for path, prefix, end in [
        ("/api/v2/x", "/api/v2", 7),
        ("/api/v1/x", "/api", 4),
        ("/web", "/", 0),
        ("/api", "/api", 4),
    ]:
        found = tree.match(path, "GET")
        assert found is not None
        assert found[1:] == (prefix, [], end)


def test_prefix_comes_last_at_its_node() -> None:
    tree = mounted(
        "/static", routes=["/static", "/static/x", "/static/{n:int}", "/static/{p:path}"]
    )
    assert winner(tree, "/static") == ("/static", [])
    assert winner(tree, "/static/x") == ("/static/x", [])
    assert winner(tree, "/static/1") == ("/static/{n:int}", [1])
    assert winner(tree, "/static/y/z") == ("/static/{p:path}", ["y/z"])
    only_str = mounted("/static", routes=["/static/{name}"])
    assert winner(only_str, "/static/y") == ("/static/{name}", ["y"])
    assert winner(only_str, "/static/y/z") == ("/static", [])
    assert winner(only_str, "/static/") == ("/static", [])


def test_prefix_after_deeper_branches_fail() -> None:
    tree = mounted("/api", routes=["/api/users/{uid:int}/profile", "/{a}/{b}/{c}/{d}"])
    assert winner(tree, "/api/users/1/profile") == ("/api/users/{uid:int}/profile", [1])
    # the prefix is under the static "api", which ranks above {a} at the first segment
    assert winner(tree, "/api/users/1/posts") == ("/api", [])
    assert winner(tree, "/web/users/1/posts") == (
        "/{a}/{b}/{c}/{d}",
        ["web", "users", "1", "posts"],
    )
    assert winner(tree, "/api/users/x") == ("/api", [])
    deeper = mounted("/api", routes=["/api/{b}/{c}", "/api/x/{c:int}/d"])
    assert winner(deeper, "/api/x/y") == ("/api/{b}/{c}", ["x", "y"])
    assert winner(deeper, "/api/x/1/e") == ("/api", [])


def test_exact_route_without_the_method_falls_back_to_the_prefix() -> None:
    tree = mounted("/static", routes=["/static", "/static/{name}"])
    for path in ("/static", "/static/a"):
        found = tree.match(path, "POST")
        assert found is not None
        assert found[1] == "/static"
        assert found[3] == 7


def test_prefix_without_the_method_is_a_mismatch() -> None:
    tree = RouteTree()
    leaf = tree.insert_prefix(parse_template("/ws"))
    leaf.handlers["GET"] = "get only"
    assert tree.match("/ws/x", "POST") == (leaf, None, [], 3)
    assert tree.match("/ws", "POST") == (leaf, None, [], 3)
    assert tree.allowed_methods("/ws/x") == {"GET"}


def test_prefix_cannot_use_the_path_converter() -> None:
    with pytest.raises(RouteTemplateError, match=r"'/files/\{p:path\}' cannot use the path"):
        RouteTree().insert_prefix(parse_template("/files/{p:path}"))


def test_root_path_can_be_computed_from_end() -> None:
    tree = mounted("/api/{version}")
    path = "/api/v1/users/1"
    found = tree.match(path, "GET")
    assert found is not None
    end = found[3]
    assert (path[:end], path[end:]) == ("/api/v1", "/users/1")


# --- no blow-up on long paths ----------------------------------------------------------


def big_tree() -> RouteTree:
    tree = tree_of(
        "/{a}",
        "/{a}/{b}",
        "/{a}/{b:int}/{c}",
        "/a/{b}/{c}/{d}/{e}",
        "/{a}/{b}/{c}/{d}/{e}/{f}",
        "/f/{rest:path}",
        "/{x:tree_lowerhex}/{y:float}/{z:uuid}",
    )
    tree.insert_prefix(parse_template("/m")).handlers["*"] = "/m"
    return tree


def test_a_10kb_segment() -> None:
    tree = big_tree()
    digits = "1" * 10_000
    assert winner(tree, "/" + digits) == ("/{a}", [digits])
    assert winner(tree, "/a/" + "9" * 4000 + "/x") == (
        "/{a}/{b:int}/{c}",
        ["a", int("9" * 4000), "x"],
    )
    # more digits than int() converts: not an int, and no other route has three segments
    assert tree.match("/a/" + digits + "/x", "GET") is None
    assert winner(tree, "/f/" + "x" * 10_000) == ("/f/{rest:path}", ["x" * 10_000])
    assert winner(tree, "/m/" + "x" * 10_000) == ("/m", [])
    assert tree.match("/" + "x" * 10_000 + "/", "GET") is None


def test_ten_thousand_segments() -> None:
    tree = big_tree()
    many = "/a" * 10_000
    assert tree.match(many, "GET") is None
    assert tree.allowed_methods(many) == set()
    assert winner(tree, "/f" + many) == ("/f/{rest:path}", [many[1:]])
    assert winner(tree, "/m" + many) == ("/m", [])
    assert tree.match("/" * 10_000, "GET") is None
    assert winner(tree, "/f" + "/" * 10_000) == ("/f/{rest:path}", ["/" * 9_999])


# --- property: the tree agrees with a brute-force matcher ------------------------------

REFERENCE_CONVERT: dict[Converter, Callable[[str], Any]] = {
    STR: str,
    INT: int,
    FLOAT: float,
    UUID: uuid.UUID,
    HEX2: lambda s: int(s, 16),
    LOWERHEX: str.upper,
}
REFERENCE_REGEX: dict[Converter, str] = {
    STR: "[^/]+",
    INT: "[0-9]+",
    FLOAT: r"[0-9]+(\.[0-9]+)?",
    UUID: "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    HEX2: "[0-9a-f]{2}",
    LOWERHEX: "[0-9a-f-]+",
}
EXAMPLES: dict[str, list[str]] = {
    "static": ["a", "b", "me", "10", ""],
    "str": ["a", "x y", "10", "me", "ff"],
    "int": ["1", "01", "10"],
    "float": ["1.5", "10", "0.25"],
    "uuid": [SAMPLE_UUID, SAMPLE_UUID.upper()],
    "tree_hex2": ["ff", "01", "a0", "10"],
    "tree_lowerhex": ["ff", "abc", SAMPLE_UUID],
    "path": ["", "a", "a/b", "10/", "/"],
}
KINDS = ["static", "str", "int", "float", "uuid", "tree_hex2", "tree_lowerhex"]


@dataclass
class Entry:
    template: Template
    prefix: bool
    handlers: dict[str, str] = field(default_factory=dict)

    @property
    def segments(self) -> tuple[Segment, ...]:
        segments = list(self.template.segments)
        while self.prefix and segments and segments[-1].text == "":
            segments.pop()
        return tuple(segments)


def reference_match(entry: Entry, parts: list[str], path: str) -> tuple[Any, ...] | None:
    """Match one pattern with regexes; return (rank, values, end) or None."""
    segments = entry.segments
    rest = bool(segments) and segments[-1].converter is PATH
    fixed = segments[:-1] if rest else segments
    if len(parts) < len(fixed) or (not entry.prefix and not rest and len(parts) != len(fixed)):
        return None
    if rest and len(parts) == len(fixed):
        return None
    rank: list[tuple[int, int]] = []
    values: list[Any] = []
    for segment, part in zip(fixed, parts):
        if segment.converter is None:
            if segment.text != part:
                return None
            rank.append((0, 0))
        else:
            if not re.fullmatch(REFERENCE_REGEX[segment.converter], part):
                return None
            values.append(REFERENCE_CONVERT[segment.converter](part))
            rank.append((1, segment.converter.priority))
    if rest:
        values.append("/".join(parts[len(fixed) :]))
        return (*rank, (2, 0)), values, len(path)
    if entry.prefix:
        end = len("/" + "/".join(parts[: len(fixed)])) if fixed else 0
        return (*rank, (3, 0)), values, end
    return (*rank, (-1, 0)), values, len(path)


def reference(entries: list[Entry], path: str, method: str) -> tuple[Any, ...] | None:
    parts = path[1:].split("/")
    found = []
    for entry in entries:
        result = reference_match(entry, parts, path)
        if result is not None:
            found.append((result[0], entry, result[1], result[2]))
    found.sort(key=lambda item: item[0])
    for _rank, entry, values, end in found:
        handler = entry.handlers.get(method, entry.handlers.get("*"))
        if handler is not None:
            return entry.template.template, handler, values, end
    if found:
        _rank, entry, values, end = found[0]
        return entry.template.template, None, values, end
    return None


@st.composite
def templates(draw: st.DrawFn) -> str:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=4))
    segments = []
    for index, kind in enumerate(kinds):
        if kind == "static":
            segments.append(draw(st.sampled_from(EXAMPLES["static"])))
        else:
            segments.append(f"{{p{index}:{kind}}}")
    if draw(st.booleans()):
        segments.append("{rest:path}")
    return "/" + "/".join(segments)


@st.composite
def paths_for(draw: st.DrawFn, entries: list[Entry]) -> str:
    if draw(st.booleans()):
        parts = draw(st.lists(st.sampled_from(sorted({v for vs in EXAMPLES.values() for v in vs}))))
        return "/" + "/".join(parts)
    entry = draw(st.sampled_from(entries))
    parts = []
    for segment in entry.template.segments:
        kind = "static" if segment.converter is None else segment.converter.name
        parts.append(segment.text if kind == "static" else draw(st.sampled_from(EXAMPLES[kind])))
    path = "/" + "/".join(parts)
    if draw(st.booleans()):
        path += draw(st.sampled_from(["", "/", "/a", "/a/b", "x"]))
    return path


@st.composite
def route_sets(draw: st.DrawFn) -> list[Entry]:
    entries: list[Entry] = []
    seen = set()
    for text in draw(st.lists(templates(), min_size=1, max_size=10)):
        prefix = "{rest:path}" not in text and draw(st.integers(0, 5)) == 0
        entry = Entry(parse_template(text), prefix)
        key = (
            prefix,
            tuple(s.text if s.converter is None else s.converter for s in entry.segments),
        )
        if key in seen:
            continue
        seen.add(key)
        if prefix:
            methods = draw(st.sampled_from([["*"], ["GET"]]))
        else:
            methods = draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1, unique=True))
        entry.handlers = {method: f"{method} {text}" for method in methods}
        entries.append(entry)
    return entries


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_tree_agrees_with_brute_force(data: st.DataObject) -> None:
    entries = data.draw(route_sets())
    tree = RouteTree()
    for entry in data.draw(st.permutations(entries)):
        insert = tree.insert_prefix if entry.prefix else tree.insert
        leaf = insert(entry.template)
        assert leaf.handlers == {}
        leaf.handlers.update(entry.handlers)
    for _ in range(5):
        path = data.draw(paths_for(entries))
        method = data.draw(st.sampled_from(["GET", "POST", "PUT"]))
        expected = reference(entries, path, method)
        found = tree.match(path, method)
        got = None if found is None else (found[0].template.template, *found[1:])
        assert got == expected, (path, method)
        allowed = set().union(
            *(e.handlers for e in entries if reference_match(e, path[1:].split("/"), path))
        )
        assert tree.allowed_methods(path) == allowed
