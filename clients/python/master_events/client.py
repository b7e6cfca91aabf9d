"""A client of a master-events server: follow its stream, read its archive.

`Client.stream()` yields typed events (`master_events.models`) and the control
frames a consumer must act on (`Gap`, `Reset`); it reconnects by itself after a
lost connection or a server restart and resumes after the last event it yielded
(`since` + `history`), so nothing is yielded twice and nothing is skipped silently:
what the server no longer holds arrives as a `Gap`, and a server that lost its
archive (a restart without persistence) answers with a `Reset`.
"""

import base64
import dataclasses
import functools
import http.client
import json
import logging
import ssl
import time
import typing
import dataclasses
import urllib.parse
from typing import Any, Callable, Iterator, Optional, Union

from .models import (
    CONTROL_TYPES,
    EVENT_TYPES,
    SCHEMA_VERSION,
    Control,
    Event,
    Gap,
    Heartbeat,
    Reset,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """An event of a type these models do not have: a newer server, whose schema
    set added a type (a compatible change for the schema gate, so a reader must
    go on). `type` names it, the envelope (`seq`, `ts`, `origin`, ...) is read as for
    any event, and every field is in `.raw`. Regenerate the models to type it."""

    type: str = ""

HISTORY_HEADER = "Master-Events-History"

#: Where the client reports what it does not raise: a dropped connection and each
#: reconnect attempt, a `Gap`, a `Reset` (WARNING).
log = logging.getLogger("master_events")


class MasterEventsError(Exception):
    """Anything that went wrong talking to the server."""


class InvalidURLError(MasterEventsError, ValueError):
    """The URL given to `Client` is not `http://HOST[:PORT]` or `https://HOST[:PORT]`."""


class ServerUnreachable(MasterEventsError, ConnectionError):
    """The server cannot be reached (refused, reset, timed out, TLS failure), or a
    stream gave up reconnecting to it (`max_reconnects`)."""


class StreamTimeout(MasterEventsError, TimeoutError):
    """`stream(timeout=...)` ran out before its `until` condition held."""


class AuthError(MasterEventsError):
    """The server refused the credentials (401) or the route to them (403)."""


class HTTPError(MasterEventsError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ProtocolError(MasterEventsError):
    """A line the client cannot read (not JSON, or not a known line)."""


def parse_line(line: Union[str, bytes]) -> Union[Event, Control]:
    """One stream line as its typed model: an event of the catalog, a `Heartbeat`,
    a `Gap` or a `Reset`, each field checked against its model's type (a missing
    required field or a value of the wrong JSON type is a `ProtocolError` naming
    it). Fields the model does not know (a newer server) are kept in `.raw` only; an
    event of a type the models do not know is an `UnknownEvent`."""
    try:
        raw = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not a JSON line: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError("a stream line is a JSON object with a string \"type\"")
    ty = raw["type"]
    cls = EVENT_TYPES.get(ty) or CONTROL_TYPES.get(ty)
    if cls is None:
        cls = UnknownEvent
    names = dict(cls.WIRE)
    if issubclass(cls, Event):
        names.update(Event.ENVELOPE)
    kwargs = {attr: raw[wire] for attr, wire in names.items() if wire in raw}
    for attr in _required(cls):
        if attr not in kwargs:
            raise ProtocolError(f"{ty} line: required field {names.get(attr, attr)!r} is missing")
    hints = _field_types(cls)
    for attr, value in kwargs.items():
        if not _fits(value, hints.get(attr, Any)):
            raise ProtocolError(
                f"{ty} line: field {names[attr]!r} is {value!r}, expected {_type_name(hints[attr])}"
            )
    if cls is UnknownEvent:
        kwargs["type"] = ty
    try:
        return cls(raw=raw, **kwargs)
    except TypeError as e:
        raise ProtocolError(f"{ty} line does not fit its model: {e}") from None


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The annotated type of every field of a model (computed once per model)."""
    return typing.get_type_hints(cls)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a model field's annotation (the types the
    generator writes: str, int, float, bool, list[...], dict[str, Any], Optional,
    Any). A JSON integer fits a float field; a boolean is not an integer."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is Union:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    """`int`, `list[str]`, `Optional[int]`: an annotation as written."""
    if typing.get_origin(hint) is None and isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


@functools.cache
def _required(cls: type) -> tuple[str, ...]:
    """The fields a model cannot be built without."""
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )


class Client:
    """A master-events server at `url` (`http://host:port` or `https://...`).

    Credentials: `auth=(user, password)` (HTTP Basic) or `token="..."` (a bearer
    token from `master-events token create`), not both. `cacert`: a PEM file of the
    CA that signed an https server's certificate. `timeout`: seconds a connection or
    a read may take (the stream asks for heartbeats more often than that).

    Raises `InvalidURLError` for a URL that is not an http(s) base URL, and
    `ValueError` for credentials given both ways or an unreadable `cacert`. Calls
    raise `ServerUnreachable`, `AuthError`, `HTTPError` or `ProtocolError`, all
    `MasterEventsError`; no message carries the password or the token.
    """

    def __init__(
        self,
        url: str,
        auth: Optional[tuple[str, str]] = None,
        token: Optional[str] = None,
        cacert: Optional[str] = None,
        timeout: float = 30.0,
    ):
        if auth is not None and token is not None:
            raise ValueError("give auth=(user, password) or token=..., not both")
        if auth is not None and (
            not isinstance(auth, tuple) or len(auth) != 2 or not all(isinstance(a, str) for a in auth)
        ):
            raise ValueError("auth: expected a (user, password) tuple of two strings")
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # raises ValueError on a port that is not a number
        except (ValueError, TypeError, AttributeError) as e:
            raise InvalidURLError(f"url {_safe_url(url)!r}: not a valid host and port ({e})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidURLError(
                f"url {_safe_url(url)!r}: expected http://HOST[:PORT] or https://HOST[:PORT]"
            )
        if parts.username is not None or parts.password is not None:
            raise InvalidURLError("url: credentials go in auth=(user, password), not in the URL")
        if parts.query or parts.fragment:
            raise InvalidURLError(f"url {url!r}: the server's base URL, without a query or fragment")
        if cacert is not None and parts.scheme != "https":
            raise InvalidURLError(f"url {url!r}: cacert is for an https:// server")
        self.url = url.rstrip("/")
        self._parts = parts
        # A server behind a reverse proxy under a path prefix: every route goes under it.
        self._prefix = parts.path.rstrip("/")
        self._headers = {}
        if auth is not None:
            user, password = auth
            encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {encoded}"
        elif token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._context = None
        if parts.scheme == "https":
            try:
                self._context = ssl.create_default_context(cafile=cacert)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"cacert {cacert!r}: not a readable PEM file of CA certificates: {e}") from None
        self.timeout = timeout
        self.history: Optional[str] = None
        self.last_seq: Optional[int] = None

    def __repr__(self):
        # Never the credentials.
        return f"Client({self.url!r})"

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname, self._parts.port
        if self._context is not None:
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._context)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _request(self, method: str, path: str, body: Optional[bytes] = None, headers=None):
        conn = self._connect()
        all_headers = dict(self._headers)
        all_headers.update(headers or {})
        try:
            conn.request(method, self._prefix + path, body=body, headers=all_headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ServerUnreachable(f"cannot reach {self.url}: {e}") from None
        if resp.status >= 400:
            text = resp.read().decode("utf-8", "replace")
            conn.close()
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            if resp.status in (401, 403):
                raise AuthError(f"{resp.status}: {message}")
            raise HTTPError(resp.status, message)
        return conn, resp

    @staticmethod
    def _query(params: dict[str, Any]) -> str:
        pairs = []
        for key, value in params.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple, set)):
                value = ",".join(str(v) for v in value)
            pairs.append((key, str(value)))
        return urllib.parse.urlencode(pairs)

    def dump(self, **filters) -> list[Union[Event, Control]]:
        """The retained archive (`o=1`), typed; `filters` as for `stream`."""
        query = self._query({"o": 1, **filters})
        conn, resp = self._request("GET", f"/diag/masterEvents?{query}")
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnreachable(f"{self.url}: the archive was cut short: {e}") from None
        finally:
            conn.close()
        return [parse_line(line) for line in body.splitlines() if line.strip()]

    def send(self, lines: list[Union[str, dict]]) -> dict[str, Any]:
        """Sends events (JSON objects or lines); the server's reply."""
        body = "".join((json.dumps(l) if isinstance(l, dict) else l.rstrip("\n")) + "\n" for l in lines)
        conn, resp = self._request(
            "POST", "/diag/masterEvents", body.encode(), {"Content-Type": "application/x-ndjson"}
        )
        try:
            reply = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnreachable(f"{self.url}: no reply to the events sent: {e}") from None
        finally:
            conn.close()
        try:
            return json.loads(reply or b"{}")
        except ValueError:
            raise ProtocolError(f"{self.url}: the reply to the events sent is not JSON") from None

    def stream(
        self,
        since: Optional[int] = None,
        history: Optional[str] = None,
        heartbeat: float = 5.0,
        heartbeats: bool = False,
        max_reconnects: Optional[int] = None,
        until: Optional[Callable[[Union[Event, Control]], bool]] = None,
        timeout: Optional[float] = None,
        **filters,
    ) -> Iterator[Union[Event, Control]]:
        """Follows the stream: the retained events after `since` (all when `None`),
        then live ones, until the caller leaves the loop.

        Yields typed events, `Gap` (events the server no longer had) and `Reset` (the
        server's archive is another history: the events that follow start a new one,
        from its oldest retained event); `Heartbeat`s too when `heartbeats=True`
        (otherwise they only keep the cursor's history current).

        On a lost connection or a server restart it reconnects (backoff 0.1 s
        doubling to 5 s, each attempt logged at WARNING on the `master_events`
        logger) and resumes after the last event yielded, in its history
        (`since` + `history`). `max_reconnects` consecutive failed attempts raise
        `ServerUnreachable` (default: retry for ever). `AuthError` and any other
        4xx refusal (`HTTPError`, e.g. a bad filter) are raised at once.

        Bounds, for tests: `until(item)` true ends the stream after yielding that
        item; `timeout` seconds raise `StreamTimeout` if the stream has not ended
        by then. `filters`: `type`, `bucket`, `vbucket`, `node` (a value or a
        list). `self.last_seq` and `self.history` are the cursor."""
        self.last_seq = since
        self.history = history
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        delay = 0.1
        unknown_types: set[str] = set()

        def check_deadline():
            if deadline is not None and time.monotonic() >= deadline:
                raise StreamTimeout(
                    f"{self.url}: stream ran for {timeout} s without its end condition "
                    f"(last seq {self.last_seq}, history {self.history})"
                )

        def back_off(why: str):
            nonlocal failures, delay
            failures += 1
            if max_reconnects is not None and failures > max_reconnects:
                raise ServerUnreachable(f"{self.url}: gave up after {max_reconnects} reconnects: {why}")
            log.warning(
                "master-events stream %s: %s; reconnecting in %.1f s (attempt %d), resuming after seq %s",
                self.url, why, delay, failures, self.last_seq,
            )
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, 5.0)
            check_deadline()

        while True:
            check_deadline()
            params = {"heartbeat": heartbeat, **filters}
            if self.last_seq is not None:
                params["since"] = self.last_seq
                if self.history:
                    params["history"] = self.history
            try:
                conn, resp = self._request("GET", f"/diag/masterEvents?{self._query(params)}")
            except HTTPError as e:
                if e.status < 500:
                    raise
                back_off(f"server error {e}")
                continue
            except ServerUnreachable as e:
                back_off(str(e))
                continue
            self.history = resp.getheader(HISTORY_HEADER) or self.history
            why = "the server ended the stream"
            try:
                for raw_line in resp:
                    if not raw_line.strip():
                        continue
                    item = parse_line(raw_line)
                    failures, delay = 0, 0.1
                    if isinstance(item, UnknownEvent) and item.type not in unknown_types:
                        unknown_types.add(item.type)
                        log.warning(
                            "master-events stream %s: events of type %r are not in this client's "
                            "models (schema set %s; a newer server?): yielded as UnknownEvent",
                            self.url, item.type, SCHEMA_VERSION,
                        )
                    if isinstance(item, Event):
                        self.last_seq = item.seq
                    elif isinstance(item, Heartbeat):
                        self.history = item.history or self.history
                        if not heartbeats:
                            check_deadline()
                            continue
                    elif isinstance(item, Reset):
                        log.warning(
                            "master-events stream %s: reset to history %s (asked for seq %s of %s): %s",
                            self.url, item.history, item.requested_since, item.requested_history, item.reason,
                        )
                        self.history = item.history
                        self.last_seq = None
                    elif isinstance(item, Gap):
                        log.warning(
                            "master-events stream %s: gap, %d events missed (seq %d to %d): %s",
                            self.url, item.missed, item.from_seq, item.to_seq, item.reason,
                        )
                    yield item
                    if until is not None and until(item):
                        return
                    check_deadline()
            except (OSError, http.client.HTTPException) as e:
                why = f"connection lost: {e}"  # reconnect and resume
            finally:
                conn.close()
            back_off(why)


def _safe_url(url: Any) -> str:
    """A URL for an error message, with any user:password@ part removed."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text
