"""Request and response data structures: URL, headers, query params, forms, state."""

from __future__ import annotations

import io
import ipaddress
import re
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from operator import itemgetter
from typing import Any, BinaryIO, NamedTuple, TypeVar, cast
from urllib.parse import SplitResult, parse_qsl, quote, quote_from_bytes, urlencode, urlsplit

from microasgi.concurrency import run_in_threadpool
from microasgi.types import RawHeaders, Scope

__all__ = [
    "URL",
    "Address",
    "FormData",
    "Headers",
    "ImmutableMultiDict",
    "MultiDict",
    "MutableHeaders",
    "QueryParams",
    "State",
    "UploadFile",
    "parse_cookie",
]


class Address(NamedTuple):
    """A client or server socket address."""

    host: str
    port: int


# --- URL -------------------------------------------------------------------------------------

# SECURITY: a Host header is used only when it is a bare authority: a reg-name (which covers
# IPv4), or a bracketed IPv6 literal, then an optional numeric port. Anything that could move
# the URL's path, query, fragment or userinfo (`/ ? # @ \`, whitespace, controls) fails.
_HOST_RE = re.compile(
    r"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.ASCII,
)
# NOTE: scope["path"] is already percent-decoded, so `%` is a literal there and is encoded.
_PATH_SAFE = "/:@!$&'()*+,;="
# Every ASCII character but `#`, which would start a fragment.
_QUERY_SAFE = "".join(map(chr, range(128))).replace("#", "")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_WEBSOCKET_SCHEMES = {"http": "ws", "https": "wss"}


def _spooled_file_type() -> type[Any]:
    import tempfile  # PERF: imported on first use, to keep `import microasgi` light

    return tempfile.SpooledTemporaryFile


def _decode_query(query: bytes) -> str:
    """Decode a raw query string: UTF-8, as clients send it, else latin-1 (never an error)."""
    # NOTE: browsers percent-encode, but other clients may send raw UTF-8 bytes; a latin-1
    # decode would turn "é" into "Ã©". For ASCII, the usual case, both decodes are the same.
    try:
        return query.decode("utf-8")
    except UnicodeDecodeError:
        return query.decode("latin-1")


def _is_valid_host(host: str) -> bool:
    match = _HOST_RE.fullmatch(host)
    if match is None:
        return False
    port = match["port"]
    if port is not None and int(port) > 65535:
        return False
    ipv6 = match["ipv6"]
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            return False
    return True


def _scope_netloc(scope: Scope, scheme: str) -> str:
    host = first_value(scope.get("headers", ()), b"host")
    if host is not None and _is_valid_host(host):
        return host
    server = scope.get("server")
    if server is not None:
        host, port = server
        # NOTE: a Unix-socket server is reported as (path, None): it has no authority to use.
        if port is not None:
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            if _is_valid_host(host):
                return host if port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return "localhost"


def _scope_components(scope: Scope, path: str) -> SplitResult:
    scheme = scope.get("scheme") or "http"
    if scope.get("type") == "websocket":
        scheme = _WEBSOCKET_SCHEMES.get(scheme, scheme)
    raw_query: bytes = scope.get("query_string", b"")
    if raw_query.isascii():
        query = raw_query.decode("ascii")
        if "#" in query:
            query = query.replace("#", "%23")
    else:
        # NOTE: the string form is ASCII, as it is for the path: the raw bytes are
        # percent-encoded, so the URL leads back to exactly the bytes the client sent.
        query = quote_from_bytes(raw_query, safe=_QUERY_SAFE)
    # SECURITY: the components are assembled, never parsed out of a string built from client
    # input, so nothing in the Host header or the path can change where the URL points.
    return SplitResult(
        scheme, _scope_netloc(scope, scheme), quote(path, safe=_PATH_SAFE), query, ""
    )


_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


def _ascii_form(url: str) -> str:
    """``url`` with what a URL cannot hold raw (non-ASCII, spaces, ...) percent-encoded.

    Escapes already in ``url`` are kept as they are, so ``%2F`` never turns into ``/``.
    """
    if _URL_CHARS.fullmatch(url) is not None:
        return url
    parts = urlsplit(url)
    return parts._replace(
        path=quote(parts.path, safe=_PATH_SAFE + "%"),
        query=quote(parts.query, safe=_QUERY_SAFE),
        fragment=quote(parts.fragment, safe=_QUERY_SAFE),
    ).geturl()


class URL:
    """A URL, built from a string, from components, or lazily from an ASGI scope.

    From a scope, `.path` and `.query` are exactly the scope's `path` and `query_string`,
    as text (the path decoded), and stay so in a copy made by `replace()` that does not
    replace them; `str(url)` and `.components` give the percent-encoded form. From a
    string, `.path` and `.query` are as the string has them. Two URLs, or a URL and a
    string, are equal when their percent-encoded forms are.
    """

    __slots__ = ("_components", "_path", "_query", "_scope", "_url")

    _components: SplitResult | None
    _path: str | None
    _query: str | None
    _scope: Scope | None
    _url: str | None

    def __init__(self, url: str = "", scope: Scope | None = None, **components: Any) -> None:
        self._components = None
        self._path = None
        self._query = None
        self._scope = None
        self._url = None
        if scope is not None:
            if url or components:
                raise TypeError("URL() takes a url, a scope or components, not several of them")
            self._scope = scope
            self._path = scope["path"]
        elif components:
            if url:
                raise TypeError("URL() takes a url or components, not both")
            self._components = URL().replace(**components).components
        else:
            self._url = url

    @property
    def components(self) -> SplitResult:
        components = self._components
        if components is None:
            if self._scope is not None:
                components = _scope_components(self._scope, cast(str, self._path))
            else:
                components = urlsplit(cast(str, self._url))
            self._components = components
        return components

    @property
    def scheme(self) -> str:
        return self.components.scheme

    @property
    def netloc(self) -> str:
        return self.components.netloc

    @property
    def path(self) -> str:
        if self._path is not None:
            return self._path
        return self.components.path

    @property
    def query(self) -> str:
        if self._query is not None:
            return self._query
        if self._scope is not None:
            return _decode_query(self._scope.get("query_string", b""))
        return self.components.query

    @property
    def fragment(self) -> str:
        return self.components.fragment

    @property
    def username(self) -> str | None:
        return self.components.username

    @property
    def password(self) -> str | None:
        return self.components.password

    @property
    def hostname(self) -> str | None:
        hostname = self.components.hostname
        if hostname is not None and "%" in hostname and ":" not in hostname:
            # NOTE: urllib keeps what follows a "%" as an IPv6 zone, even in a name; a name's
            # percent-escapes are case-insensitive, so it is lower-cased whole, as hosts are.
            return hostname.lower()
        return hostname

    @property
    def port(self) -> int | None:
        return self.components.port

    @property
    def is_secure(self) -> bool:
        return self.scheme in ("https", "wss")

    def replace(self, **kwargs: Any) -> URL:
        """Return a copy with the given components (and hostname/port/username/password)."""
        if "username" in kwargs or "password" in kwargs or "hostname" in kwargs or "port" in kwargs:
            kwargs["netloc"] = self._replace_netloc(kwargs)
        url = URL(self.components._replace(**kwargs).geturl())
        # NOTE: what is not replaced keeps its meaning: a request URL's path stays the decoded
        # path, as it does in Starlette, whose URL keeps it decoded in the string itself.
        if "path" not in kwargs:
            url._path = self._path
        if "query" not in kwargs and (self._scope is not None or self._query is not None):
            url._query = self.query
        return url

    def _replace_netloc(self, kwargs: dict[str, Any]) -> str:
        hostname = kwargs.pop("hostname", None)
        port = kwargs.pop("port", self.port)
        username = kwargs.pop("username", self.username)
        password = kwargs.pop("password", self.password)
        if hostname is None:
            hostname = self.netloc.rpartition("@")[2]
            if hostname and hostname[-1] != "]":
                hostname = hostname.rsplit(":", 1)[0]
        elif ":" in hostname and not hostname.startswith("["):
            hostname = f"[{hostname}]"
        netloc: str = hostname
        if port is not None:
            netloc += f":{port}"
        if username is not None:
            userinfo = username if password is None else f"{username}:{password}"
            netloc = f"{userinfo}@{netloc}"
        return netloc

    def include_query_params(self, **kwargs: Any) -> URL:
        """Return a copy with these query params set, replacing any of the same names."""
        params = MultiDict(parse_qsl(self.query, keep_blank_values=True, separator="&"))
        params.update({str(key): str(value) for key, value in kwargs.items()})
        return self.replace(query=urlencode(params.multi_items()))

    def replace_query_params(self, **kwargs: Any) -> URL:
        """Return a copy whose query is exactly these params."""
        query = urlencode([(str(key), str(value)) for key, value in kwargs.items()])
        return self.replace(query=query)

    def remove_query_params(self, keys: str | Sequence[str]) -> URL:
        """Return a copy without the query params of these names."""
        if isinstance(keys, str):
            keys = [keys]
        params = MultiDict(parse_qsl(self.query, keep_blank_values=True, separator="&"))
        for key in keys:
            params.pop(key, None)
        return self.replace(query=urlencode(params.multi_items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (URL, str)):
            # NOTE: so that `request.url == "http://host/café"` holds, as in Starlette, though
            # str(request.url) is percent-encoded: both sides are compared encoded.
            return _ascii_form(str(self)) == _ascii_form(str(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_ascii_form(str(self)))

    def __str__(self) -> str:
        url = self._url
        if url is None:
            url = self._url = self.components.geturl()
        return url

    def __repr__(self) -> str:
        url = self
        if self.password:
            url = self.replace(password="********")
        return f"{type(self).__name__}({str(url)!r})"


# --- multi-valued mappings -------------------------------------------------------------------

_K = TypeVar("_K")
_V_co = TypeVar("_V_co", covariant=True)


class ImmutableMultiDict(Mapping[_K, _V_co]):
    """A read-only mapping that keeps every value of a repeated key; `[key]` is the last."""

    __slots__ = ("_dict", "_list")

    _dict: dict[_K, _V_co]
    _list: list[tuple[_K, _V_co]]

    def __init__(
        self,
        *args: ImmutableMultiDict[_K, _V_co] | Mapping[_K, _V_co] | Iterable[tuple[_K, _V_co]],
        **kwargs: Any,
    ) -> None:
        if len(args) > 1:
            raise TypeError(f"{type(self).__name__}() takes at most one positional argument")
        items = _as_items(args[0]) if args else []
        if kwargs:
            items += _as_items(kwargs)
        self._list = items
        self._dict = dict(items)

    def getlist(self, key: Any) -> list[_V_co]:
        """Return every value of `key`, in order; empty if absent."""
        return [item_value for item_key, item_value in self._list if item_key == key]

    def keys(self) -> KeysView[_K]:
        return self._dict.keys()

    def values(self) -> ValuesView[_V_co]:
        return self._dict.values()

    def items(self) -> ItemsView[_K, _V_co]:
        return self._dict.items()

    def multi_items(self) -> list[tuple[_K, _V_co]]:
        """Return every (key, value) pair, in order."""
        return list(self._list)

    def __getitem__(self, key: _K) -> _V_co:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[_K]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return False
        by_key = itemgetter(0)
        return sorted(self._list, key=by_key) == sorted(other._list, key=by_key)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.multi_items()!r})"


def _as_items(value: Any) -> list[tuple[Any, Any]]:
    if hasattr(value, "multi_items"):
        return list(value.multi_items())
    if hasattr(value, "items"):
        return list(value.items())
    return list(value)


class MultiDict(ImmutableMultiDict[Any, Any]):
    """A mutable multi-valued mapping."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        self.setlist(key, [value])

    def __delitem__(self, key: Any) -> None:
        del self._dict[key]
        self._list = [(k, v) for k, v in self._list if k != key]

    def pop(self, key: Any, default: Any = None) -> Any:
        self._list = [(k, v) for k, v in self._list if k != key]
        return self._dict.pop(key, default)

    def popitem(self) -> tuple[Any, Any]:
        key, value = self._dict.popitem()
        self._list = [(k, v) for k, v in self._list if k != key]
        return key, value

    def poplist(self, key: Any) -> list[Any]:
        values = self.getlist(key)
        self.pop(key)
        return values

    def clear(self) -> None:
        self._dict.clear()
        self._list.clear()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self._dict:
            self._dict[key] = default
            self._list.append((key, default))
        return self._dict[key]

    def setlist(self, key: Any, values: list[Any]) -> None:
        if not values:
            self.pop(key, None)
            return
        self._list = [(k, v) for k, v in self._list if k != key]
        self._list.extend((key, value) for value in values)
        self._dict[key] = values[-1]

    def append(self, key: Any, value: Any) -> None:
        self._list.append((key, value))
        self._dict[key] = value

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Replace the values of every key given (all of its values, in order)."""
        value = MultiDict(*args, **kwargs)
        self._list = [(k, v) for k, v in self._list if k not in value._dict]
        self._list.extend(value._list)
        self._dict.update(value._dict)


class QueryParams(ImmutableMultiDict[str, str]):
    """Read-only, multi-valued query parameters; `params[key]` is the last value."""

    __slots__ = ()

    def __init__(
        self,
        params: ImmutableMultiDict[Any, Any]
        | Mapping[Any, Any]
        | Iterable[tuple[Any, Any]]
        | str
        | bytes
        | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(params, bytes):
            params = _decode_query(params)
        if isinstance(params, str):
            # SECURITY: only `&` separates; `;` is data (`x=;role=admin` is one value).
            params = parse_qsl(params, keep_blank_values=True, separator="&")
            if not kwargs:
                # PERF: parse_qsl gives str pairs: nothing to convert.
                super().__init__(params)
                return
        super().__init__(params or [], **kwargs)
        if not all(type(k) is str and type(v) is str for k, v in self._list):
            self._list = [(str(k), str(v)) for k, v in self._list]
            self._dict = dict(self._list)

    def __str__(self) -> str:
        return urlencode(self._list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


# --- uploads and forms -----------------------------------------------------------------------


class UploadFile:
    """An uploaded file: `.file .filename .content_type .headers .size`.

    I/O on a file held in memory runs inline; on a file on disk it runs in a worker thread.
    """

    def __init__(
        self,
        file: BinaryIO,
        *,
        size: int | None = None,
        filename: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.file = file
        self.size = size
        self.filename = filename
        self.headers = Headers() if headers is None else headers

    @property
    def content_type(self) -> str | None:
        content_type: str | None = self.headers.get("content-type")
        return content_type

    @property
    def _in_memory(self) -> bool:
        # NOTE: `_rolled` and `_max_size` are SpooledTemporaryFile internals that typeshed
        # does not declare, hence the Any.
        file: Any = self.file
        if isinstance(file, _spooled_file_type()):
            return not file._rolled
        return isinstance(file, io.BytesIO)

    def _will_roll(self, size_to_add: int) -> bool:
        file: Any = self.file
        if isinstance(file, _spooled_file_type()) and not file._rolled:
            max_size: int = file._max_size
            # NOTE: 0 means "never roll", as in SpooledTemporaryFile itself.
            return bool(max_size) and file.tell() + size_to_add > max_size
        return not self._in_memory

    async def write(self, data: bytes) -> None:
        """Write `data` at the current position; `.size` grows by its length."""
        if self.size is not None:
            self.size += len(data)
        if self._will_roll(len(data)):
            await run_in_threadpool(self.file.write, data)
        else:
            self.file.write(data)

    async def read(self, size: int = -1) -> bytes:
        if self._in_memory:
            return self.file.read(size)
        return await run_in_threadpool(self.file.read, size)

    async def seek(self, offset: int) -> None:
        if self._in_memory:
            self.file.seek(offset)
        else:
            await run_in_threadpool(self.file.seek, offset)

    async def close(self) -> None:
        if self._in_memory:
            self.file.close()
        else:
            await run_in_threadpool(self.file.close)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(filename={self.filename!r}, size={self.size!r}, "
            f"headers={self.headers!r})"
        )


class FormData(ImmutableMultiDict[str, UploadFile | str]):
    """Read-only, multi-valued form fields: `str` values and `UploadFile`s."""

    __slots__ = ()

    async def close(self) -> None:
        """Close every uploaded file."""
        for _, value in self._list:
            if isinstance(value, UploadFile):
                await value.close()


# --- headers ---------------------------------------------------------------------------------

# RFC 9110 §5.6.2 token characters.
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII).fullmatch
# SECURITY: CR or LF would start a new header line (response splitting); NUL truncates.
_find_forbidden = re.compile(r"[\r\n\x00]").search


def encode_header(name: str, value: str) -> tuple[bytes, bytes]:
    """Validate and encode one header: lowercase name, latin-1 value.

    Raise `ValueError` for a name that is not an RFC 9110 token, or a value holding CR, LF
    or NUL.
    """
    if _is_token(name) is None:
        raise ValueError(
            f"Invalid header name {name!r}: use letters, digits and !#$%&'*+-.^_`|~ only"
        )
    if _find_forbidden(value) is not None:
        raise ValueError(f"Invalid value for header {name!r}: CR, LF and NUL are not allowed")
    return name.lower().encode("latin-1"), value.encode("latin-1")


def scope_headers(scope: Scope) -> RawHeaders:
    """The raw header list of a scope; another iterable there is made a list, in place."""
    # PERF: the server's list is kept as is; only a tuple or other iterable is copied.
    headers = scope.get("headers", [])
    if type(headers) is not list:
        headers = scope["headers"] = list(headers)
    return headers


def first_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of the header ``name`` (lower case) in a raw list, or None."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive, multi-valued HTTP headers.

    Built from a mapping, a raw `[(name, value)]` byte list (names lowercase) or a scope.
    `[name]` and `.get` give the first value, `.getlist` every value.
    """

    __slots__ = ("_list",)

    _list: RawHeaders

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        raw: RawHeaders | None = None,
        scope: Scope | None = None,
    ) -> None:
        if headers is not None:
            if raw is not None or scope is not None:
                raise TypeError("Headers() takes one of headers, raw or scope")
            self._list = [encode_header(key, value) for key, value in headers.items()]
        elif raw is not None:
            if scope is not None:
                raise TypeError("Headers() takes one of headers, raw or scope")
            self._list = raw
        elif scope is not None:
            self._list = scope_headers(scope)
        else:
            self._list = []

    @property
    def raw(self) -> RawHeaders:
        return list(self._list)

    def keys(self) -> list[str]:  # type: ignore[override]
        return [key.decode("latin-1") for key, _ in self._list]

    def values(self) -> list[str]:  # type: ignore[override]
        return [value.decode("latin-1") for _, value in self._list]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return [(key.decode("latin-1"), value.decode("latin-1")) for key, value in self._list]

    def get(self, key: str, default: Any = None) -> Any:
        # PERF: first_value()'s loop written out here and in __getitem__: calling it costs
        # every lookup 26 ns (11%).
        name = key.lower().encode("latin-1")
        for item_key, item_value in self._list:
            if item_key == name:
                return item_value.decode("latin-1")
        return default

    def getlist(self, key: str) -> list[str]:
        """Return every value of header `key`, in order."""
        name = key.lower().encode("latin-1")
        return [value.decode("latin-1") for item_key, value in self._list if item_key == name]

    def mutablecopy(self) -> MutableHeaders:
        return MutableHeaders(raw=self._list[:])

    def __getitem__(self, key: str) -> str:
        name = key.lower().encode("latin-1")
        for item_key, item_value in self._list:
            if item_key == name:
                return item_value.decode("latin-1")
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = key.lower().encode("latin-1")
        return any(item_key == name for item_key, _ in self._list)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return False
        return sorted(self._list) == sorted(other._list)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        as_dict = dict(self.items())
        if len(as_dict) == len(self):
            return f"{type(self).__name__}({as_dict!r})"
        return f"{type(self).__name__}(raw={self.raw!r})"


class MutableHeaders(Headers):
    """Headers that can be changed; a raw list given to it is changed in place.

    Every setter raises `ValueError` for an invalid name or a value with CR, LF or NUL.
    """

    __slots__ = ()

    @property
    def raw(self) -> RawHeaders:
        return self._list

    def __setitem__(self, key: str, value: str) -> None:
        """Set header `key` to `value`, replacing every value it had (at the first's place)."""
        name, encoded = encode_header(key, value)
        items = self._list
        found = [index for index, (item_key, _) in enumerate(items) if item_key == name]
        if not found:
            items.append((name, encoded))
            return
        items[found[0]] = (name, encoded)
        if len(found) > 1:
            drop = set(found[1:])
            items[:] = [item for index, item in enumerate(items) if index not in drop]

    def __delitem__(self, key: str) -> None:
        """Remove every value of header `key`."""
        name = key.lower().encode("latin-1")
        self._list[:] = [item for item in self._list if item[0] != name]

    def __ior__(self, other: Mapping[str, str]) -> MutableHeaders:
        if not isinstance(other, Mapping):
            raise TypeError(f"Expected a mapping but got {type(other).__name__}")
        self.update(other)
        return self

    def __or__(self, other: Mapping[str, str]) -> MutableHeaders:
        if not isinstance(other, Mapping):
            raise TypeError(f"Expected a mapping but got {type(other).__name__}")
        new = self.mutablecopy()
        new.update(other)
        return new

    def setdefault(self, key: str, value: str) -> str:
        """Return the first value of `key`, setting it to `value` if absent."""
        name, encoded = encode_header(key, value)
        for item_key, item_value in self._list:
            if item_key == name:
                return item_value.decode("latin-1")
        self._list.append((name, encoded))
        return value

    def update(self, other: Mapping[str, str]) -> None:
        for key, value in other.items():
            self[key] = value

    def append(self, key: str, value: str) -> None:
        """Add a value for `key`, keeping the ones it has."""
        self._list.append(encode_header(key, value))

    def add_vary_header(self, vary: str) -> None:
        """Add `vary` to the `Vary` header unless it is already listed."""
        existing = [token.strip() for value in self.getlist("vary") for token in value.split(",")]
        if vary.lower() in (token.lower() for token in existing):
            return
        self["vary"] = ", ".join([*filter(None, existing), vary])


# --- state and cookies -----------------------------------------------------------------------


class State:
    """An attribute bag over a dict: `request.state`, `app.state`."""

    _state: dict[str, Any]

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", {} if state is None else state)

    def __setattr__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_state"][key]
        except KeyError:
            message = f"{type(self).__name__!r} object has no attribute {key!r}"
            raise AttributeError(message) from None

    def __delattr__(self, key: str) -> None:
        try:
            del self._state[key]
        except KeyError:
            message = f"{type(self).__name__!r} object has no attribute {key!r}"
            raise AttributeError(message) from None

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)


# SECURITY: one regex pass, as CPython >= 3.13 does; the `http.cookies._unquote` of older
# patch releases searches from every escape and is quadratic (CVE-2024-7592).
_unquote_sub = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))").sub


def _unquote_replace(match: re.Match[str]) -> str:
    octal = match[1]
    return chr(int(octal, 8)) if octal else match[2]


def _unquote_cookie(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _unquote_sub(_unquote_replace, value[1:-1])


def request_cookies(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The cookies of every ``Cookie`` header of a request, as one header joined by "; ".

    HTTP/2 and HTTP/3 clients may split cookies over several headers (RFC 9113, 8.2.3).
    """
    values = [value for name, value in raw_headers if name == b"cookie"]
    if not values:
        return {}
    return parse_cookie((values[0] if len(values) == 1 else b"; ".join(values)).decode("latin-1"))


def parse_cookie(header: str) -> dict[str, str]:
    """Parse a `Cookie` header into a dict; a repeated name keeps its last value.

    Linear in the header's length. Pairs without a name (`=x`, or `x` alone) are skipped,
    so `=__Host-sid=x` can neither create nor shadow a `__Host-sid` cookie.
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, separator, value = chunk.partition("=")
        name = name.strip()
        if separator and name:
            cookies[name] = _unquote_cookie(value.strip())
    return cookies
