from __future__ import annotations

import math
import re
import uuid
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microasgi.exceptions import RouteTemplateError
from microasgi.routing import converters
from microasgi.routing.converters import (
    FLOAT,
    INT,
    NO_MATCH,
    PATH,
    STR,
    UUID,
    Converter,
    get_converter,
    quote_path,
    quote_segment,
    register_converter,
)
from microasgi.routing.tree import parse_template

SAMPLE_UUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def test_builtins_are_registered_under_their_names() -> None:
    assert [get_converter(name) for name in ("str", "int", "float", "uuid", "path")] == [
        STR,
        INT,
        FLOAT,
        UUID,
        PATH,
    ]
    assert isinstance(INT, Converter)
    assert repr(INT) == "<Converter 'int' '[0-9]+'>"
    assert repr(NO_MATCH) == "NO_MATCH"


def test_priority_order_int_float_uuid_custom_str_path() -> None:
    first = register_converter("test_prio_first", "[a-z]+", str, str)
    second = register_converter("test_prio_second", "[a-z]+", str, str)
    order = [INT, FLOAT, UUID, first, second, STR, PATH]
    assert sorted(order, key=lambda c: c.priority) == order


def test_get_converter_unknown_names_the_converter() -> None:
    with pytest.raises(RouteTemplateError, match=r"Unknown converter 'nope'.*register_converter"):
        get_converter("nope")


# --- str -------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", ["a", "x y", "1", "é", "%2F", "{}"])
def test_str_matches_any_non_empty_segment(segment: str) -> None:
    assert STR.match(segment) == segment


@pytest.mark.parametrize("segment", ["", "a/b", "/"])
def test_str_rejects_empty_and_slash(segment: str) -> None:
    assert STR.match(segment) is NO_MATCH


def test_str_to_string() -> None:
    assert STR.to_string("alice") == "alice"
    assert STR.to_string(5) == "5"
    assert STR.to_string("a?b#c d%") == "a%3Fb%23c%20d%25"
    assert STR.to_string("..") == "%2E%2E"
    with pytest.raises(ValueError, match="must not be empty"):
        STR.to_string("")
    with pytest.raises(ValueError, match="must not contain '/'"):
        STR.to_string("a/b")


# --- int -------------------------------------------------------------------------------


@pytest.mark.parametrize(("segment", "value"), [("0", 0), ("42", 42), ("007", 7)])
def test_int_matches_ascii_digits(segment: str, value: int) -> None:
    result = INT.match(segment)
    assert result == value
    assert type(result) is int


@pytest.mark.parametrize(
    "segment",
    ["", "²", "-1", "+1", "1.5", " 1", "1 ", "1_000", "\u0664\u0662", "\uff11", "0x1", "1e3", "a"],
)
def test_int_rejects(segment: str) -> None:
    assert INT.match(segment) is NO_MATCH


def test_int_rejects_more_digits_than_python_converts() -> None:
    assert INT.match("9" * 10_000) is NO_MATCH


def test_int_to_string() -> None:
    assert INT.to_string(3) == "3"
    assert INT.to_string(0) == "0"
    assert INT.to_string(2.0) == "2"
    assert INT.to_string("7") == "7"
    with pytest.raises(ValueError, match="must not be negative"):
        INT.to_string(-1)
    with pytest.raises(ValueError, match=r"cannot be 2\.5"):
        INT.to_string(2.5)
    with pytest.raises(ValueError):
        INT.to_string("x")


@given(st.integers(min_value=0, max_value=10**100))
def test_int_round_trip(number: int) -> None:
    assert INT.match(INT.to_string(number)) == number


# --- float -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "value"), [("1", 1.0), ("1.5", 1.5), ("0.25", 0.25), ("007.50", 7.5)]
)
def test_float_matches(segment: str, value: float) -> None:
    result = FLOAT.match(segment)
    assert result == value
    assert type(result) is float


@pytest.mark.parametrize(
    "segment",
    ["", "1.", ".5", "1e5", "-1.0", "+1", "nan", "inf", "1.2.3", "\uff11.5", "1.²", "1,5", " 1"],
)
def test_float_rejects(segment: str) -> None:
    assert FLOAT.match(segment) is NO_MATCH


def test_float_rejects_what_overflows_to_infinity() -> None:
    assert FLOAT.match("9" * 400) is NO_MATCH
    assert FLOAT.match("9" * 300) == float("9" * 300)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5"),
        (1.0, "1.0"),
        (0.0, "0.0"),
        (-0.0, "0.0"),
        (3, "3.0"),
        (0.1, "0.1"),
        (1e22, "10000000000000000000000.0"),
        (1e-7, "0.0000001"),
    ],
)
def test_float_to_string_has_no_exponent_and_keeps_a_point(value: float, text: str) -> None:
    assert FLOAT.to_string(value) == text
    assert re.fullmatch(FLOAT.regex, text)
    # a point, so that an int route at the same place does not take it
    assert INT.match(text) is NO_MATCH


@pytest.mark.parametrize("value", [-1.0, -1e-300, math.nan, math.inf, -math.inf])
def test_float_to_string_rejects(value: float) -> None:
    with pytest.raises(ValueError, match="finite and not negative"):
        FLOAT.to_string(value)


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_float_round_trip(number: float) -> None:
    text = FLOAT.to_string(number)
    assert re.fullmatch(FLOAT.regex, text)
    assert FLOAT.match(text) == number


# --- uuid ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "segment", [SAMPLE_UUID, SAMPLE_UUID.upper(), "3F2504e0-4f89-11D3-9a0c-0305E82c3301"]
)
def test_uuid_matches_any_case(segment: str) -> None:
    assert UUID.match(segment) == uuid.UUID(SAMPLE_UUID)


@pytest.mark.parametrize(
    "segment",
    [
        "",
        SAMPLE_UUID.replace("-", ""),
        "{" + SAMPLE_UUID + "}",
        "urn:uuid:" + SAMPLE_UUID,
        SAMPLE_UUID[:-1] + "g",
        "3f2504e04-f89-11d3-9a0c-0305e82c3301",
        SAMPLE_UUID + "0",
        SAMPLE_UUID[:-1],
        "3f2504e0-4f89-11d3-9a0c-0305e82c330\u0661",
    ],
)
def test_uuid_rejects_other_forms(segment: str) -> None:
    assert UUID.match(segment) is NO_MATCH


def test_uuid_to_string_is_canonical_lower_case() -> None:
    assert UUID.to_string(uuid.UUID(SAMPLE_UUID)) == SAMPLE_UUID
    assert UUID.to_string(SAMPLE_UUID.upper()) == SAMPLE_UUID
    with pytest.raises(ValueError):
        UUID.to_string("not-a-uuid")


@given(st.uuids())
def test_uuid_round_trip(value: uuid.UUID) -> None:
    assert UUID.match(UUID.to_string(value)) == value


# --- path ------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", ["", "a", "a/b/c", "/", "x y/"])
def test_path_matches_anything(segment: str) -> None:
    assert PATH.match(segment) == segment


def test_path_to_string() -> None:
    assert PATH.to_string("a/b") == "a/b"
    assert PATH.to_string(3) == "3"
    assert PATH.to_string("/evil.com") == "%2Fevil.com"
    assert PATH.to_string("a b/c?d") == "a%20b/c%3Fd"


# --- percent-encoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("alice", "alice"),
        ("a-b_c.d~e", "a-b_c.d~e"),
        (":@!$&'()*+,;=", ":@!$&'()*+,;="),
        ("a?admin=1#frag", "a%3Fadmin=1%23frag"),
        ("50% off", "50%25%20off"),
        ("\\evil.com", "%5Cevil.com"),
        ("a/b", "a%2Fb"),
        ("café", "caf%C3%A9"),
        ("\x00\r\n", "%00%0D%0A"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("...", "..."),
        ("..a", "..a"),
        ("", ""),
    ],
)
def test_quote_segment(text: str, encoded: str) -> None:
    assert quote_segment(text) == encoded
    assert unquote(encoded) == text


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("a/b/c.txt", "a/b/c.txt"),
        ("a//b/", "a//b/"),
        ("/evil.com", "%2Fevil.com"),
        ("//evil.com", "%2F/evil.com"),
        ("\\evil.com", "%5Cevil.com"),
        ("a/../b", "a/%2E%2E/b"),
        ("./a", "%2E/a"),
        ("a/.", "a/%2E"),
        ("..", "%2E%2E"),
        ("a.b/c..d/...", "a.b/c..d/..."),
        ("x y/é?#", "x%20y/%C3%A9%3F%23"),
    ],
)
def test_quote_path(text: str, encoded: str) -> None:
    assert quote_path(text) == encoded
    assert unquote(encoded) == text
    assert not encoded.startswith("/")


@given(st.text(st.characters(codec="utf-8")))
def test_quote_path_is_undone_by_unquote_and_never_starts_a_slash(text: str) -> None:
    encoded = quote_path(text)
    assert unquote(encoded) == text
    assert not encoded.startswith("/")
    assert "?" not in encoded and "#" not in encoded and "\\" not in encoded
    assert all(part not in (".", "..") for part in encoded.split("/"))


def test_quote_rejects_lone_surrogates() -> None:
    with pytest.raises(UnicodeEncodeError):
        quote_segment("\ud800")
    with pytest.raises(ValueError, match="cannot be"):
        parse_template("/{x}").format({"x": "\ud800"})


# --- custom converters -----------------------------------------------------------------


def _hex_to_string(value: Any) -> str:
    return format(value, "02x")


def test_custom_converter_matches_whole_segment_only() -> None:
    hex2 = register_converter("test_hex2", "[0-9a-f]{2}", lambda s: int(s, 16), _hex_to_string)
    assert get_converter("test_hex2") is hex2
    assert hex2.name == "test_hex2"
    assert hex2.regex == "[0-9a-f]{2}"
    assert hex2.match("ff") == 255
    assert hex2.match("0a") == 10
    for segment in ("fff", "f", "", "FF", "xx", "ffa"):
        assert hex2.match(segment) is NO_MATCH
    assert hex2.to_string(10) == "0a"
    with pytest.raises(ValueError, match="does not match its pattern"):
        hex2.to_string(4096)


def test_custom_to_python_value_error_is_no_match() -> None:
    def parse(segment: str) -> int:
        number = int(segment)
        if number > 12:
            raise ValueError("no such month")
        return number

    month = register_converter("test_month", "[0-9]{1,2}", parse, str)
    assert month.match("12") == 12
    assert month.match("13") is NO_MATCH


def test_custom_to_python_other_errors_propagate() -> None:
    def broken(segment: str) -> int:
        raise RuntimeError("bug")

    converter = register_converter("test_broken", "[a-z]+", broken, str)
    with pytest.raises(RuntimeError, match="bug"):
        converter.match("abc")


def test_custom_to_string_is_percent_encoded() -> None:
    spaced = register_converter("test_spaced", "[a-z ]+", str, str)
    assert spaced.match("a b") == "a b"
    assert spaced.to_string("a b") == "a%20b"


def test_custom_to_string_must_not_write_a_slash() -> None:
    loose = register_converter("test_loose", ".+", str, lambda value: f"{value}/x")
    assert loose.match("a") == "a"
    with pytest.raises(ValueError, match="does not match its pattern"):
        loose.to_string("a")


def test_registering_a_name_again_replaces_it_in_place() -> None:
    old = register_converter("test_again", "[a-z]+", str, str)
    new = register_converter("test_again", "[0-9]+", int, str)
    assert get_converter("test_again") is new
    assert new is not old
    assert new.priority == old.priority
    assert new.match("12") == 12
    assert new.match("ab") is NO_MATCH


def test_a_builtin_can_be_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    # NOTE: restore the built-in when the test ends; the registry is process-wide.
    monkeypatch.setitem(converters._converters, "int", INT)
    signed = register_converter("int", "-?[0-9]+", int, str)
    assert get_converter("int") is signed
    assert signed.priority == INT.priority
    assert signed.match("-3") == -3


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a b", "a:b", 3, None])
def test_register_rejects_invalid_names(name: Any) -> None:
    with pytest.raises(ValueError, match="must be a Python identifier"):
        register_converter(name, "[a-z]+", str, str)


def test_register_rejects_path() -> None:
    with pytest.raises(ValueError, match="'path' converter spans segments"):
        register_converter("path", ".*", str, str)


@pytest.mark.parametrize("regex", ["(", "[a-", "a{2,1}", "*"])
def test_register_rejects_invalid_regex(regex: str) -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        register_converter("test_bad_regex", regex, str, str)
    with pytest.raises(RouteTemplateError):
        get_converter("test_bad_regex")


def test_register_rejects_a_regex_that_is_not_a_string() -> None:
    with pytest.raises(ValueError, match="must be a str"):
        register_converter("test_not_str", re.compile("a"), str, str)  # type: ignore[arg-type]


def test_register_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        register_converter("test_not_callable", "a", "str", str)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        register_converter("test_not_callable", "a", str, None)  # type: ignore[arg-type]
