from __future__ import annotations

import io
import tempfile
import threading
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microasgi.datastructures import (
    URL,
    Address,
    FormData,
    Headers,
    ImmutableMultiDict,
    MultiDict,
    MutableHeaders,
    QueryParams,
    State,
    UploadFile,
    encode_header,
    first_value,
    parse_cookie,
    scope_headers,
)
from microasgi.types import Scope


def http_scope(
    path: str = "/",
    host: str | None = "example.com",
    query_string: bytes = b"",
    **extra: Any,
) -> Scope:
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    scope: Scope = {
        "type": "http",
        "scheme": "http",
        "path": path,
        "query_string": query_string,
        "headers": headers,
        "server": ("10.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


# --- URL from a string or components ------------------------------------------------------------


def test_url_components() -> None:
    url = URL("https://user:secret@Example.com:8443/a/b?x=1&y=2#frag")
    assert url.scheme == "https"
    assert url.netloc == "user:secret@Example.com:8443"
    assert url.hostname == "example.com"
    assert url.port == 8443
    assert url.path == "/a/b"
    assert url.query == "x=1&y=2"
    assert url.fragment == "frag"
    assert url.username == "user"
    assert url.password == "secret"
    assert url.is_secure
    assert url.components.netloc == url.netloc
    assert str(url) == "https://user:secret@Example.com:8443/a/b?x=1&y=2#frag"


def test_url_hostname_is_lower_case_with_percent_escapes() -> None:
    assert URL("http://%0A.Example.com/").hostname == "%0a.example.com"
    assert URL("http://[fe80::1%25Eth0]:8000/").hostname == "fe80::1%25Eth0"


def test_url_is_kept_as_given() -> None:
    assert str(URL("http://example.com?")) == "http://example.com?"
    assert str(URL()) == ""
    assert not URL("http://example.com").is_secure
    assert URL("wss://example.com").is_secure


def test_url_from_components() -> None:
    url = URL(scheme="https", netloc="example.com", path="/p", query="a=1")
    assert str(url) == "https://example.com/p?a=1"
    assert url.path == "/p"
    assert url.query == "a=1"


def test_url_rejects_mixed_arguments() -> None:
    with pytest.raises(TypeError):
        URL("http://a", scope=http_scope())
    with pytest.raises(TypeError):
        URL(scope=http_scope(), path="/")
    with pytest.raises(TypeError):
        URL("http://a", path="/")


def test_url_replace() -> None:
    url = URL("http://user:pw@example.com:8000/a?x=1")
    assert str(url.replace(scheme="https", path="/b")) == "https://user:pw@example.com:8000/b?x=1"
    assert str(url.replace(port=9000)) == "http://user:pw@example.com:9000/a?x=1"
    assert str(url.replace(port=None)) == "http://user:pw@example.com/a?x=1"
    assert str(url.replace(hostname="other.org")) == "http://user:pw@other.org:8000/a?x=1"
    assert str(url.replace(username="bob", password=None)) == "http://bob@example.com:8000/a?x=1"
    assert str(url.replace(hostname="::1")) == "http://user:pw@[::1]:8000/a?x=1"
    assert str(url.replace(hostname="[::2]")) == "http://user:pw@[::2]:8000/a?x=1"


def test_url_replace_port_of_ipv6_host() -> None:
    assert str(URL("http://[::1]/a").replace(port=81)) == "http://[::1]:81/a"
    assert str(URL("http://[::1]:80/a").replace(port=81)) == "http://[::1]:81/a"
    assert str(URL("/relative").replace(port=81)) == "//:81/relative"


def test_url_query_param_helpers() -> None:
    url = URL("http://example.com/p?a=1&a=2&b=3")
    assert str(url.include_query_params(a="9", c=4)) == "http://example.com/p?b=3&a=9&c=4"
    assert str(url.replace_query_params(z="1")) == "http://example.com/p?z=1"
    assert str(url.remove_query_params("a")) == "http://example.com/p?b=3"
    assert str(url.remove_query_params(["a", "b", "missing"])) == "http://example.com/p"


def test_url_query_helpers_keep_semicolons_as_data() -> None:
    url = URL("http://example.com/?role=user&x=;role=admin")
    assert (
        str(url.include_query_params(y=1)) == "http://example.com/?role=user&x=%3Brole%3Dadmin&y=1"
    )


def test_url_equality_and_hash() -> None:
    url = URL("http://example.com/a")
    assert url == "http://example.com/a"
    assert url == URL("http://example.com/a")
    assert url != URL("http://example.com/b")
    assert url != 1
    assert hash(url) == hash("http://example.com/a")
    assert {url: 1}[URL("http://example.com/a")] == 1


def test_url_repr_hides_the_password() -> None:
    assert repr(URL("http://u:secret@example.com/")) == "URL('http://u:********@example.com/')"
    assert repr(URL("http://example.com/")) == "URL('http://example.com/')"


# --- URL from a scope ---------------------------------------------------------------------------


def test_url_from_scope() -> None:
    url = URL(scope=http_scope("/a b/ü", host="example.com:8000", query_string=b"x=1&y=%20"))
    assert url.scheme == "http"
    assert url.netloc == "example.com:8000"
    assert url.hostname == "example.com"
    assert url.port == 8000
    assert url.path == "/a b/ü"
    assert url.query == "x=1&y=%20"
    assert url.fragment == ""
    assert str(url) == "http://example.com:8000/a%20b/%C3%BC?x=1&y=%20"


def test_url_from_scope_encodes_the_decoded_path_for_the_string_form() -> None:
    path = "/100%/a?b#c\\d/x:y@z;p=1,+$&'()*!~"
    url = URL(scope=http_scope(path))
    assert url.path == path
    assert str(url) == "http://example.com/100%25/a%3Fb%23c%5Cd/x:y@z;p=1,+$&'()*!~"
    assert unquote(URL(str(url)).path) == path


def test_url_from_scope_keeps_the_query_in_the_string_form() -> None:
    url = URL(scope=http_scope("/", query_string=b"a=1#b"))
    assert url.query == "a=1#b"
    assert str(url) == "http://example.com/?a=1%23b"
    assert URL(str(url)).fragment == ""


def test_url_from_scope_with_a_raw_utf8_query() -> None:
    url = URL(scope=http_scope("/", query_string="q=é&r=%C3%A9#x".encode()))
    assert url.query == "q=é&r=%C3%A9#x"
    assert str(url) == "http://example.com/?q=%C3%A9&r=%C3%A9%23x"
    assert QueryParams("q=é".encode()).multi_items() == [("q", "é")]
    # Bytes that are not UTF-8 fall back to latin-1, and the string form keeps the bytes.
    latin = URL(scope=http_scope("/", query_string=b"q=\xff"))
    assert latin.query == "q=\xff"
    assert str(latin) == "http://example.com/?q=%FF"
    assert QueryParams(b"q=\xff")["q"] == "\xff"


def test_url_from_scope_is_lazy() -> None:
    scope = http_scope("/lazy")
    url = URL(scope=scope)
    scope["headers"] = None  # would fail if the host were parsed now
    assert url.path == "/lazy"
    assert url.query == ""


def test_url_from_scope_with_leading_double_slash_keeps_its_host() -> None:
    url = URL(scope=http_scope("//evil.com/x"))
    assert url.netloc == "example.com"
    assert url.path == "//evil.com/x"
    assert URL(str(url)).netloc == "example.com"


@pytest.mark.parametrize(
    "host",
    [
        "example.com/?",
        "a/../b",
        "evil#",
        "example.com:abc",
        "example.com:",
        "example.com:99999",
        "example.com:123456",
        "user@evil.com",
        "evil.com\\@good.com",
        "exa mple.com",
        "example.com\r\nx: y",
        "",
        "[::1",
        "[not-ipv6]",
        "[::g]",
        "[1:2:3:4:5:6:7:8:9]",
        "%zz",
    ],
)
def test_invalid_host_header_falls_back_to_the_server(host: str) -> None:
    url = URL(scope=http_scope("/routed", host=host))
    assert url.netloc == "10.0.0.1:8000"
    assert url.path == "/routed"
    assert str(url) == "http://10.0.0.1:8000/routed"


@pytest.mark.parametrize(
    ("host", "hostname", "port"),
    [
        ("[::1]:8000", "::1", 8000),
        ("[::1]", "::1", None),
        ("[::ffff:1.2.3.4]", "::ffff:1.2.3.4", None),
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("Example.COM", "example.com", None),
        ("example.com.", "example.com.", None),
        ("xn--bcher-kva.example:65535", "xn--bcher-kva.example", 65535),
        ("a%41b.example", "a%41b.example", None),
        ("my_host-1~", "my_host-1~", None),
    ],
)
def test_valid_host_header_is_used(host: str, hostname: str, port: int | None) -> None:
    url = URL(scope=http_scope("/p", host=host))
    assert url.netloc == host
    assert url.hostname == hostname
    assert url.port == port
    assert url.path == "/p"


def test_first_host_header_wins() -> None:
    scope = http_scope("/", host="first.com")
    scope["headers"].insert(0, (b"accept", b"*/*"))
    scope["headers"].append((b"host", b"second.com"))
    assert URL(scope=scope).netloc == "first.com"


@pytest.mark.parametrize(
    ("scheme", "server", "netloc"),
    [
        ("http", ("10.0.0.1", 80), "10.0.0.1"),
        ("http", ("10.0.0.1", 443), "10.0.0.1:443"),
        ("https", ("10.0.0.1", 443), "10.0.0.1"),
        ("http", ("::1", 8000), "[::1]:8000"),
        ("http", ("[::1]", 80), "[::1]"),
        ("http", ("/tmp/app.sock", None), "localhost"),
        ("http", ("bad/host", 80), "localhost"),
        ("http", None, "localhost"),
    ],
)
def test_url_without_host_header_uses_the_server(
    scheme: str, server: tuple[str, int | None] | None, netloc: str
) -> None:
    url = URL(scope=http_scope("/p", host=None, scheme=scheme, server=server))
    assert url.netloc == netloc
    assert str(url) == f"{scheme}://{netloc}/p"


def test_url_from_minimal_scope() -> None:
    url = URL(scope={"type": "http", "path": "/"})
    assert str(url) == "http://localhost/"


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [("ws", "ws"), ("wss", "wss"), ("http", "ws"), ("https", "wss"), (None, "ws")],
)
def test_websocket_scope_uses_websocket_schemes(scheme: str | None, expected: str) -> None:
    scope = http_scope("/ws", type="websocket", scheme=scheme)
    if scheme is None:
        del scope["scheme"]
    url = URL(scope=scope)
    assert url.scheme == expected
    assert url.is_secure == (expected == "wss")


@given(path=st.text(min_size=0, max_size=30).map(lambda text: "/" + text))
def test_scope_path_round_trips(path: str) -> None:
    url = URL(scope=http_scope(path))
    assert url.path == path
    reparsed = URL(str(url))
    assert reparsed.netloc == "example.com"
    assert unquote(reparsed.path) == path
    assert reparsed.query == ""
    assert reparsed.fragment == ""


@given(host=st.text(alphabet=st.characters(max_codepoint=255), max_size=30))
def test_no_host_header_can_change_the_path_or_authority(host: str) -> None:
    url = URL(scope=http_scope("/routed", host=host))
    reparsed = URL(str(url))
    assert url.path == "/routed"
    assert reparsed.path == "/routed"
    assert reparsed.query == ""
    assert reparsed.fragment == ""
    assert reparsed.username is None
    assert reparsed.netloc == url.netloc


def test_replace_keeps_the_decoded_path_and_query_of_a_scope_url() -> None:
    url = URL(scope=http_scope("/café docs/a?b", query_string="q=é".encode()))
    for copy in (
        url.replace(scheme="https"),
        url.replace(hostname="other.example", port=8443),
        url.replace(fragment="top").replace(netloc="x.example"),
    ):
        assert copy.path == "/café docs/a?b"
        assert copy.query == "q=é"
        assert copy.fragment == "" or copy.fragment == "top"
    secure = url.replace(scheme="https")
    # The string form stays percent-encoded: nothing in the path can move the query.
    assert str(secure) == "https://example.com/caf%C3%A9%20docs/a%3Fb?q=%C3%A9"
    assert URL(str(secure)).query == "q=%C3%A9"
    # What is replaced is taken as given, as for a URL built from a string.
    assert url.replace(path="/a%20b").path == "/a%20b"
    assert url.replace(query="x=%C3%A9").query == "x=%C3%A9"
    assert url.replace(query="x=1").path == "/café docs/a?b"
    assert url.include_query_params(page=2).query == "q=%C3%A9&page=2"
    assert url.include_query_params(page=2).path == "/café docs/a?b"
    # A URL built from a string keeps what the string says through replace().
    plain = URL("http://example.com/caf%C3%A9?q=%C3%A9")
    assert plain.replace(scheme="https").path == "/caf%C3%A9"
    assert plain.replace(scheme="https").query == "q=%C3%A9"


def test_urls_compare_in_their_percent_encoded_form() -> None:
    url = URL(scope=http_scope("/café docs", query_string="q=é".encode()))
    assert url == "http://example.com/café docs?q=é"
    assert url == "http://example.com/caf%C3%A9%20docs?q=%C3%A9"
    assert url == URL("http://example.com/café docs?q=é")
    assert hash(url) == hash(URL("http://example.com/café docs?q=é"))
    assert hash(url) == hash("http://example.com/caf%C3%A9%20docs?q=%C3%A9")
    # Escapes are compared as sent: an encoded slash is not a slash, nor %25 a percent sign.
    assert URL("http://example.com/a%2Fb") != "http://example.com/a/b"
    assert URL(scope=http_scope("/100%")) != "http://example.com/100%"
    assert URL(scope=http_scope("/100%")) == "http://example.com/100%25"
    assert url != "http://example.com/caf%C3%A9%20docs?q=%C3%A8"
    assert url != 1


# --- ImmutableMultiDict / MultiDict -------------------------------------------------------------


def test_immutable_multidict() -> None:
    data = ImmutableMultiDict([("a", "1"), ("b", "2"), ("a", "3")])
    assert data["a"] == "3"
    assert data.get("missing") is None
    assert data.getlist("a") == ["1", "3"]
    assert data.getlist("missing") == []
    assert list(data.keys()) == ["a", "b"]
    assert list(data.values()) == ["3", "2"]
    assert list(data.items()) == [("a", "3"), ("b", "2")]
    assert data.multi_items() == [("a", "1"), ("b", "2"), ("a", "3")]
    assert list(data) == ["a", "b"]
    assert len(data) == 2
    assert "a" in data
    assert "z" not in data
    assert repr(data) == "ImmutableMultiDict([('a', '1'), ('b', '2'), ('a', '3')])"


def test_immutable_multidict_constructors() -> None:
    assert ImmutableMultiDict().multi_items() == []
    assert ImmutableMultiDict({"a": 1}).multi_items() == [("a", 1)]
    source = ImmutableMultiDict([("a", 1), ("a", 2)])
    assert ImmutableMultiDict(source).multi_items() == [("a", 1), ("a", 2)]
    assert ImmutableMultiDict([("a", 1)], b=2).multi_items() == [("a", 1), ("b", 2)]
    with pytest.raises(TypeError):
        ImmutableMultiDict([], [])


def test_immutable_multidict_equality_ignores_order_between_keys() -> None:
    one = ImmutableMultiDict([("a", 1), ("b", 2)])
    assert one == ImmutableMultiDict([("b", 2), ("a", 1)])
    assert one != ImmutableMultiDict([("a", 1)])
    assert one != {"a": 1, "b": 2}
    with pytest.raises(TypeError):
        hash(one)


def test_multidict_mutation() -> None:
    data = MultiDict([("a", 1), ("b", 2), ("a", 3)])
    data["a"] = 4
    assert data.multi_items() == [("b", 2), ("a", 4)]
    data.append("a", 5)
    assert data.getlist("a") == [4, 5]
    assert data["a"] == 5
    assert data.setdefault("a", 0) == 5
    assert data.setdefault("c", 6) == 6
    assert data.poplist("a") == [4, 5]
    assert "a" not in data
    assert data.pop("missing", "default") == "default"
    del data["b"]
    assert data.multi_items() == [("c", 6)]
    assert data.popitem() == ("c", 6)
    assert len(data) == 0


def test_multidict_setlist_update_and_clear() -> None:
    data = MultiDict([("a", 1), ("b", 2)])
    data.setlist("a", [7, 8])
    assert data.multi_items() == [("b", 2), ("a", 7), ("a", 8)]
    data.setlist("a", [])
    assert data.multi_items() == [("b", 2)]
    data.update([("b", 3), ("b", 4)], c=5)
    assert data.multi_items() == [("b", 3), ("b", 4), ("c", 5)]
    assert data["b"] == 4
    data.clear()
    assert data.multi_items() == []
    assert dict(data) == {}


# --- QueryParams --------------------------------------------------------------------------------


def test_query_params_from_string() -> None:
    params = QueryParams("a=1&b=2&a=3&empty=&plus=a+b&pct=%C3%BC")
    assert params["a"] == "3"
    assert params.get("a") == "3"
    assert params.getlist("a") == ["1", "3"]
    assert params["empty"] == ""
    assert params["plus"] == "a b"
    assert params["pct"] == "ü"
    assert params.multi_items()[:3] == [("a", "1"), ("b", "2"), ("a", "3")]
    assert list(params.keys()) == ["a", "b", "empty", "plus", "pct"]
    assert "b" in params
    assert len(params) == 5
    assert str(params) == "a=1&b=2&a=3&empty=&plus=a+b&pct=%C3%BC"
    assert repr(QueryParams("a=1")) == "QueryParams('a=1')"


def test_semicolon_is_data_not_a_separator() -> None:
    params = QueryParams("role=user&x=;role=admin")
    assert params["role"] == "user"
    assert params["x"] == ";role=admin"
    assert params.getlist("role") == ["user"]
    assert QueryParams("a;a;a")["a;a;a"] == ""


def test_query_params_from_other_sources() -> None:
    assert QueryParams(b"a=1&a=%FF").getlist("a") == ["1", "\ufffd"]
    assert QueryParams({"a": 1, "b": "x"}).multi_items() == [("a", "1"), ("b", "x")]
    assert QueryParams([("a", "1"), ("a", "2")]).getlist("a") == ["1", "2"]
    assert QueryParams(QueryParams("a=1")) == QueryParams("a=1")
    assert QueryParams(None).multi_items() == []
    assert QueryParams().multi_items() == []
    assert QueryParams("a=1", b="2").multi_items() == [("a", "1"), ("b", "2")]
    assert QueryParams("a=1", b=2, c=None).multi_items() == [("a", "1"), ("b", "2"), ("c", "None")]
    assert QueryParams(b"a=1", b=2)["b"] == "2"
    assert QueryParams("a=1") != QueryParams("a=2")


def test_query_params_parse_many_separators_linearly() -> None:
    params = QueryParams("a;" * 200_000 + "&b=1")
    assert params["b"] == "1"
    assert len(params) == 2


# --- Headers ------------------------------------------------------------------------------------


def test_headers_from_raw() -> None:
    raw = [(b"content-type", b"text/plain"), (b"x-many", b"1"), (b"x-many", b"2")]
    headers = Headers(raw=raw)
    assert headers["Content-Type"] == "text/plain"
    assert headers["x-many"] == "1"
    assert headers.get("X-MANY") == "1"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert headers.getlist("x-many") == ["1", "2"]
    assert headers.getlist("missing") == []
    assert headers.keys() == ["content-type", "x-many", "x-many"]
    assert headers.values() == ["text/plain", "1", "2"]
    assert headers.items() == [("content-type", "text/plain"), ("x-many", "1"), ("x-many", "2")]
    assert list(headers) == ["content-type", "x-many", "x-many"]
    assert len(headers) == 3
    assert "X-Many" in headers
    assert "missing" not in headers
    assert 1 not in headers  # type: ignore[comparison-overlap]
    assert headers.raw == raw
    assert headers.raw is not raw
    with pytest.raises(KeyError):
        headers["missing"]


def test_headers_decode_latin1() -> None:
    headers = Headers(raw=[(b"x-name", "café".encode("latin-1"))])
    assert headers["x-name"] == "café"


def test_headers_from_mapping_and_scope() -> None:
    assert Headers({"X-A": "1"}).raw == [(b"x-a", b"1")]
    assert Headers().raw == []
    scope: Scope = {"headers": [(b"a", b"1")]}
    headers = Headers(scope=scope)
    assert headers.raw == [(b"a", b"1")]
    assert headers._list is scope["headers"]


def test_headers_from_scope_copies_a_tuple_into_the_scope() -> None:
    scope: Scope = {"headers": ((b"a", b"1"),)}
    headers = Headers(scope=scope)
    assert scope["headers"] == [(b"a", b"1")]
    assert headers._list is scope["headers"]
    assert Headers(scope={}).raw == []


def test_first_value_reads_a_raw_list_as_headers_get_does() -> None:
    raw = [(b"accept", b"a"), (b"x-name", b"caf\xe9"), (b"x-name", b"second")]
    assert first_value(raw, b"x-name") == Headers(raw=raw).get("x-name") == "caf\xe9"
    assert first_value(raw, b"missing") is None


def test_scope_headers_keeps_the_servers_list_and_lists_other_iterables() -> None:
    listed = [(b"a", b"1")]
    assert scope_headers({"headers": listed}) is listed
    scope: Scope = {"headers": iter([(b"b", b"2")])}
    assert scope_headers(scope) == [(b"b", b"2")] == scope["headers"]
    assert scope_headers({}) == []


def test_headers_reject_mixed_arguments() -> None:
    with pytest.raises(TypeError):
        Headers({"a": "1"}, raw=[])
    with pytest.raises(TypeError):
        Headers({"a": "1"}, scope={"headers": []})
    with pytest.raises(TypeError):
        Headers(raw=[], scope={"headers": []})


def test_headers_equality_and_repr() -> None:
    one = Headers(raw=[(b"a", b"1"), (b"b", b"2")])
    assert one == Headers(raw=[(b"b", b"2"), (b"a", b"1")])
    assert one == MutableHeaders(raw=[(b"a", b"1"), (b"b", b"2")])
    assert one != Headers(raw=[(b"a", b"1")])
    assert one != {"a": "1", "b": "2"}
    assert repr(one) == "Headers({'a': '1', 'b': '2'})"
    repeated = Headers(raw=[(b"a", b"1"), (b"a", b"2")])
    assert repr(repeated) == "Headers(raw=[(b'a', b'1'), (b'a', b'2')])"


def test_mutablecopy_is_independent() -> None:
    headers = Headers(raw=[(b"a", b"1")])
    copy = headers.mutablecopy()
    copy["a"] = "2"
    assert headers["a"] == "1"
    assert copy["a"] == "2"


# --- MutableHeaders -----------------------------------------------------------------------------


def test_mutable_headers_change_the_given_list_in_place() -> None:
    raw = [(b"a", b"1"), (b"x", b"1"), (b"a", b"2"), (b"a", b"3")]
    headers = MutableHeaders(raw=raw)
    headers["A"] = "new"
    assert raw == [(b"a", b"new"), (b"x", b"1")]
    assert headers.raw is raw
    headers["b"] = "2"
    assert raw[-1] == (b"b", b"2")
    headers.append("b", "3")
    assert headers.getlist("b") == ["2", "3"]
    del headers["B"]
    assert raw == [(b"a", b"new"), (b"x", b"1")]
    del headers["missing"]
    assert len(raw) == 2


def test_mutable_headers_setdefault_update_and_or() -> None:
    headers = MutableHeaders({"a": "1"})
    assert headers.setdefault("a", "2") == "1"
    assert headers.setdefault("b", "2") == "2"
    headers.update({"a": "3", "c": "4"})
    assert headers.items() == [("a", "3"), ("b", "2"), ("c", "4")]
    merged = headers | {"d": "5"}
    assert "d" in merged
    assert "d" not in headers
    headers |= {"e": "6"}
    assert headers["e"] == "6"
    with pytest.raises(TypeError):
        headers | [("x", "y")]  # type: ignore[operator]
    with pytest.raises(TypeError):
        headers |= [("x", "y")]  # type: ignore[arg-type]


def test_mutable_headers_from_scope_change_the_scope() -> None:
    scope: Scope = {"headers": [(b"a", b"1")]}
    MutableHeaders(scope=scope)["b"] = "2"
    assert scope["headers"] == [(b"a", b"1"), (b"b", b"2")]


def test_add_vary_header() -> None:
    headers = MutableHeaders()
    headers.add_vary_header("Origin")
    assert headers["vary"] == "Origin"
    headers.add_vary_header("Accept-Encoding")
    assert headers["vary"] == "Origin, Accept-Encoding"
    headers.add_vary_header("origin")
    assert headers["vary"] == "Origin, Accept-Encoding"
    headers.append("vary", "Cookie")
    headers.add_vary_header("Accept")
    assert headers.getlist("vary") == ["Origin, Accept-Encoding, Cookie, Accept"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x", "a\r\nSet-Cookie: s=1"),
        ("x", "a\nb"),
        ("x", "a\rb"),
        ("x", "a\x00b"),
        ("x\r\ny", "v"),
        ("bad name", "v"),
        ("x:y", "v"),
        ("", "v"),
        ("é", "v"),
        ("x", "€"),
    ],
)
def test_header_injection_raises_value_error(name: str, value: str) -> None:
    headers = MutableHeaders()
    with pytest.raises(ValueError):
        headers[name] = value
    with pytest.raises(ValueError):
        headers.append(name, value)
    with pytest.raises(ValueError):
        headers.setdefault(name, value)
    with pytest.raises(ValueError):
        headers.update({name: value})
    with pytest.raises(ValueError):
        Headers({name: value})
    assert headers.raw == []


def test_encode_header_accepts_tokens_and_latin1() -> None:
    assert encode_header("X-Custom_1!#$%&'*+-.^`|~", "café\tok") == (
        b"x-custom_1!#$%&'*+-.^`|~",
        "café\tok".encode("latin-1"),
    )


# --- uploads and forms --------------------------------------------------------------------------

pytest_anyio = pytest.mark.anyio


@pytest_anyio
async def test_upload_file_in_memory() -> None:
    upload = UploadFile(
        io.BytesIO(), size=0, filename="a.txt", headers=Headers({"content-type": "text/plain"})
    )
    await upload.write(b"hello")
    assert upload.size == 5
    await upload.seek(0)
    assert await upload.read() == b"hello"
    await upload.seek(1)
    assert await upload.read(2) == b"el"
    assert upload.filename == "a.txt"
    assert upload.content_type == "text/plain"
    await upload.close()
    assert upload.file.closed
    assert repr(upload).startswith("UploadFile(filename='a.txt', size=5, headers=Headers(")


@pytest_anyio
async def test_upload_file_defaults() -> None:
    upload = UploadFile(io.BytesIO(b"x"))
    assert upload.size is None
    assert upload.filename is None
    assert upload.content_type is None
    assert upload.headers == Headers()
    await upload.write(b"y")
    assert upload.size is None


class ThreadRecordingFile:
    """A file object that is neither a BytesIO nor spooled: UploadFile must not block on it."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.threads: list[int] = []

    def write(self, data: bytes) -> int:
        self.threads.append(threading.get_ident())
        return self.buffer.write(data)

    def read(self, size: int = -1) -> bytes:
        self.threads.append(threading.get_ident())
        return self.buffer.read(size)

    def seek(self, offset: int) -> int:
        self.threads.append(threading.get_ident())
        return self.buffer.seek(offset)

    def close(self) -> None:
        self.threads.append(threading.get_ident())
        self.buffer.close()


@pytest_anyio
async def test_upload_file_on_disk_uses_worker_threads(tmp_path: Any) -> None:
    with open(tmp_path / "upload", "w+b") as file:
        upload = UploadFile(file, size=0)
        await upload.write(b"data")
        await upload.seek(0)
        assert await upload.read() == b"data"
        await upload.close()
        assert file.closed


@pytest_anyio
async def test_upload_file_not_in_memory_does_io_off_the_loop() -> None:
    file = ThreadRecordingFile()
    upload = UploadFile(file, size=0)  # type: ignore[arg-type]
    await upload.write(b"data")
    await upload.seek(0)
    assert await upload.read() == b"data"
    await upload.close()
    assert len(file.threads) == 4
    assert threading.get_ident() not in file.threads


@pytest_anyio
async def test_upload_file_spooled_rolls_in_a_worker_thread() -> None:
    with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
        upload = UploadFile(spooled, size=0)  # type: ignore[arg-type]
        assert upload._in_memory
        assert not upload._will_roll(10)
        await upload.write(b"12345")
        assert upload._in_memory
        assert upload._will_roll(6)
        await upload.write(b"6789012345")
        assert spooled._rolled  # type: ignore[attr-defined]
        assert upload._will_roll(1)
        assert upload.size == 15
        await upload.seek(0)
        assert await upload.read() == b"123456789012345"
        await upload.close()
        assert spooled.closed


@pytest_anyio
async def test_upload_file_spooled_without_limit_never_rolls() -> None:
    with tempfile.SpooledTemporaryFile() as spooled:
        upload = UploadFile(spooled, size=0)  # type: ignore[arg-type]
        await upload.write(b"x" * 100_000)
        assert upload._in_memory
        await upload.seek(0)
        assert len(await upload.read()) == 100_000


@pytest_anyio
async def test_form_data_close_closes_every_upload() -> None:
    first = UploadFile(io.BytesIO(b"1"), filename="1")
    second = UploadFile(io.BytesIO(b"2"), filename="2")
    form = FormData([("a", first), ("name", "value"), ("a", second)])
    assert form["a"] is second
    assert form.getlist("a") == [first, second]
    assert form["name"] == "value"
    await form.close()
    assert first.file.closed and second.file.closed


# --- State, Address -----------------------------------------------------------------------------


def test_state_attributes() -> None:
    state = State()
    state.user = "bob"
    assert state.user == "bob"
    assert state._state == {"user": "bob"}
    del state.user
    with pytest.raises(AttributeError, match="'State' object has no attribute 'user'"):
        state.user  # noqa: B018
    with pytest.raises(AttributeError, match="'user'"):
        del state.user


def test_state_wraps_a_given_dict() -> None:
    shared = {"db": "conn"}
    state = State(shared)
    assert state.db == "conn"
    state.cache = {}
    assert shared == {"db": "conn", "cache": {}}
    assert state["db"] == "conn"
    state["x"] = 1
    del state["cache"]
    assert list(state) == ["db", "x"]
    assert len(state) == 2


def test_state_without_backing_dict_has_no_attributes() -> None:
    state = State.__new__(State)
    with pytest.raises(AttributeError):
        state.anything  # noqa: B018


def test_address() -> None:
    address = Address("127.0.0.1", 8000)
    assert address.host == "127.0.0.1"
    assert address.port == 8000
    host, port = address
    assert (host, port) == ("127.0.0.1", 8000)


# --- parse_cookie -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ("a=1", {"a": "1"}),
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("  a = 1 ;b=2;  ", {"a": "1", "b": "2"}),
        ("a=1; a=2", {"a": "2"}),
        ("a=", {"a": ""}),
        ("a=b=c", {"a": "b=c"}),
        ('a="quoted value"', {"a": "quoted value"}),
        ('a="esc\\"aped\\\\\\073"', {"a": 'esc"aped\\;'}),
        ('a="', {"a": '"'}),
        ('a="x', {"a": '"x'}),
        (
            'keebler=E=mc2; L=\\"Loves\\"; fudge=\\012;',
            {"keebler": "E=mc2", "L": '\\"Loves\\"', "fudge": "\\012"},
        ),
        ("flag", {}),
        ("=x", {}),
        ("=", {}),
        (";;;", {}),
    ],
)
def test_parse_cookie(header: str, expected: dict[str, str]) -> None:
    assert parse_cookie(header) == expected


def test_nameless_cookie_cannot_shadow_a_host_prefixed_cookie() -> None:
    assert parse_cookie("=__Host-sid=x") == {}
    assert parse_cookie("__Host-sid=real; =__Host-sid=fake") == {"__Host-sid": "real"}
    assert parse_cookie("=__Host-sid=fake; __Host-sid=real") == {"__Host-sid": "real"}


def test_parse_cookie_with_thousands_of_malformed_pairs() -> None:
    malformed = "; ".join(["=x", "novalue", "=", '"', "=\\\\"] * 1000)
    header = f"{malformed}; sid=abc; {malformed}"
    assert parse_cookie(header) == {"sid": "abc"}


def test_parse_cookie_unquotes_long_escaped_values_in_linear_time() -> None:
    # NOTE: the quadratic unquote of older CPython patch releases would take minutes here.
    value = '"' + "\\" * 400_000 + '"'
    assert parse_cookie(f"a={value}") == {"a": "\\" * 200_000}
    octal = '"' + "\\101" * 100_000 + '"'
    assert parse_cookie(f"a={octal}") == {"a": "A" * 100_000}
