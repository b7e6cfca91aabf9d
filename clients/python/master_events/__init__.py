"""master_events: a Python client of master-events, typed by its published schemas.

    from master_events import Client, Gap, Reset
    for item in Client("http://127.0.0.1:9898", token="met_...").stream(type="vbucketMoveDone"):
        ...
"""

from .client import (
    AuthError,
    Client,
    HTTPError,
    InvalidURLError,
    MasterEventsError,
    ProtocolError,
    ServerUnreachable,
    StreamTimeout,
    UnknownEvent,
    parse_line,
)
from .models import CONTROL_TYPES, EVENT_TYPES, SCHEMA_VERSION, Control, Event, Gap, Heartbeat, Reset

__all__ = [
    "AuthError",
    "Client",
    "CONTROL_TYPES",
    "Control",
    "EVENT_TYPES",
    "Event",
    "Gap",
    "HTTPError",
    "Heartbeat",
    "InvalidURLError",
    "MasterEventsError",
    "ProtocolError",
    "Reset",
    "SCHEMA_VERSION",
    "ServerUnreachable",
    "StreamTimeout",
    "UnknownEvent",
    "parse_line",
]
