"""A client of a master-events server: follow its stream, read its archive.

`Client.stream()` yields typed events (`master_events.models`) and the control
frames a consumer must act on (`Gap`, `Reset`); it reconnects by itself after a
lost connection or a server restart and resumes after the last event it yielded
(`since` + `history`), so nothing is yielded twice and nothing is skipped silently:
what the server no longer holds arrives as a `Gap`, and a server that lost its
archive (a restart without persistence) answers with a `Reset`.
"""

import base64
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from typing import Any, Iterator, Optional, Union

from .models import CONTROL_TYPES, EVENT_TYPES, Control, Event, Gap, Heartbeat, Reset

HISTORY_HEADER = "Master-Events-History"


class MasterEventsError(Exception):
    """Anything that went wrong talking to the server."""


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
    a `Gap` or a `Reset`. Fields the model does not know (a newer server) are kept
    in `.raw` only."""
    try:
        raw = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not a JSON line: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ProtocolError("a stream line is a JSON object with a string \"type\"")
    ty = raw["type"]
    cls = EVENT_TYPES.get(ty) or CONTROL_TYPES.get(ty)
    if cls is None:
        raise ProtocolError(f"unknown line type {ty!r} (a newer server? regenerate the models)")
    names = dict(cls.WIRE)
    if issubclass(cls, Event):
        names.update(Event.ENVELOPE)
    kwargs = {attr: raw[wire] for attr, wire in names.items() if wire in raw}
    try:
        return cls(raw=raw, **kwargs)
    except TypeError as e:
        raise ProtocolError(f"{ty} line does not fit its model: {e}") from None


class Client:
    """A master-events server at `url` (`http://host:port` or `https://...`).

    Credentials: `auth=(user, password)` (HTTP Basic) or `token="..."` (a bearer
    token from `master-events token create`), not both. `cacert`: a PEM file of the
    CA that signed an https server's certificate. `timeout`: seconds a connection or
    a read may take (the stream asks for heartbeats more often than that).
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
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: expected http://HOST:PORT or https://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self._parts = parts
        self._headers = {}
        if auth is not None:
            user, password = auth
            encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {encoded}"
        elif token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._context = None
        if parts.scheme == "https":
            self._context = ssl.create_default_context(cafile=cacert)
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
            conn.request(method, path, body=body, headers=all_headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise MasterEventsError(f"cannot reach {self.url}: {e}") from None
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
            return [parse_line(line) for line in resp.read().splitlines() if line.strip()]
        finally:
            conn.close()

    def send(self, lines: list[Union[str, dict]]) -> dict[str, Any]:
        """Sends events (JSON objects or lines); the server's reply."""
        body = "".join((json.dumps(l) if isinstance(l, dict) else l.rstrip("\n")) + "\n" for l in lines)
        conn, resp = self._request(
            "POST", "/diag/masterEvents", body.encode(), {"Content-Type": "application/x-ndjson"}
        )
        try:
            return json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def stream(
        self,
        since: Optional[int] = None,
        history: Optional[str] = None,
        heartbeat: float = 5.0,
        heartbeats: bool = False,
        max_reconnects: Optional[int] = None,
        **filters,
    ) -> Iterator[Union[Event, Control]]:
        """Follows the stream: the retained events after `since` (all when `None`),
        then live ones, for ever (stop by leaving the loop).

        Yields typed events, `Gap` (events the server no longer had) and `Reset` (the
        server's archive is another history: the events that follow start a new one);
        `Heartbeat`s too when `heartbeats=True`. On a lost connection it reconnects
        (backoff 0.1 s doubling to 5 s) and resumes after the last event yielded;
        `max_reconnects` consecutive failures raise `MasterEventsError` (default:
        retry for ever). An `AuthError` is raised at once. `filters`: `type`,
        `bucket`, `vbucket`, `node` (a value or a list)."""
        self.last_seq = since
        self.history = history
        failures = 0
        delay = 0.1
        while True:
            params = {"heartbeat": heartbeat, **filters}
            if self.last_seq is not None:
                params["since"] = self.last_seq
                if self.history:
                    params["history"] = self.history
            try:
                conn, resp = self._request("GET", f"/diag/masterEvents?{self._query(params)}")
            except AuthError:
                raise
            except MasterEventsError:
                failures += 1
                if max_reconnects is not None and failures > max_reconnects:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.history = resp.getheader(HISTORY_HEADER) or self.history
            try:
                for raw_line in resp:
                    if not raw_line.strip():
                        continue
                    item = parse_line(raw_line)
                    failures, delay = 0, 0.1
                    if isinstance(item, Event):
                        self.last_seq = item.seq
                        yield item
                    elif isinstance(item, Heartbeat):
                        self.history = item.history or self.history
                        if heartbeats:
                            yield item
                    elif isinstance(item, Reset):
                        self.history = item.history
                        self.last_seq = None
                        yield item
                    elif isinstance(item, Gap):
                        yield item
            except (OSError, http.client.HTTPException):
                pass  # the connection dropped: reconnect and resume
            finally:
                conn.close()
            failures += 1
            if max_reconnects is not None and failures > max_reconnects:
                raise MasterEventsError(f"{self.url}: gave up after {max_reconnects} reconnects")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
