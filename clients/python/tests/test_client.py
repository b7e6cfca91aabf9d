"""The client against a real server: following a live rebalance through a server
restart (nothing missed, nothing twice), following `master-events demo` through a
restart (a `Reset`, then the new run from its start), a `Gap` for what the archive
no longer holds, tokens and Basic credentials, https with a private CA, the archive
as typed events, and the typed errors (unreachable, refused, timed out, bad URL)."""

import json
import logging
import re
import subprocess
import threading
import time

import pytest

from conftest import BIN, ROOT
from master_events import (
    AuthError,
    Client,
    Event,
    Gap,
    Heartbeat,
    HTTPError,
    InvalidURLError,
    Reset,
    ServerUnreachable,
    StreamTimeout,
)
from master_events.models import RebalanceStart, VbucketMoveDone

# A real rebalance log (becameMaster, rebalanceStart, vbucket moves, rebalanceEnd);
# the server stamps seq, ts and origin of its own.
REBALANCE = [
    {k: v for k, v in json.loads(line).items() if k != "ts"}
    for line in (ROOT / "tests" / "data" / "report" / "rebalance_normal.log").read_text().splitlines()
    if line.strip()
]


class Follower:
    """Runs `client.stream(...)` on a thread, collecting what it yields."""

    def __init__(self, client, **kwargs):
        self.client = client
        self.items = []
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(client, kwargs), daemon=True)
        self.thread.start()

    def _run(self, client, kwargs):
        try:
            for item in client.stream(heartbeat=0.2, heartbeats=True, **kwargs):
                if not isinstance(item, Heartbeat):
                    self.items.append(item)
                if self.stop.is_set():
                    return
        except Exception as e:  # surfaced by wait_for
            self.error = e

    def events(self):
        return [i for i in self.items if isinstance(i, Event)]

    def events_after_reset(self):
        items = list(self.items)
        resets = [n for n, i in enumerate(items) if isinstance(i, Reset)]
        return [i for i in items[resets[-1] + 1 :] if isinstance(i, Event)] if resets else []

    def wait_for(self, what, cond, within=30):
        deadline = time.monotonic() + within
        while not cond():
            assert self.error is None, f"the stream failed: {self.error!r}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.items!r}"
            time.sleep(0.02)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)


def test_the_client_follows_a_live_rebalance_through_a_server_restart(make_server):
    server = make_server(persistent=True)
    writer = Client(server.url)
    follower = Follower(Client(server.url))
    try:
        half = len(REBALANCE) // 2
        for event in REBALANCE[:half]:
            writer.send([event])
        follower.wait_for("the first half", lambda: len(follower.events()) == half)
        server.restart()
        for event in REBALANCE[half:]:
            writer.send([event])
        follower.wait_for("every event", lambda: len(follower.events()) == len(REBALANCE))
    finally:
        follower.close()
    events = follower.events()
    assert [e.seq for e in events] == list(range(1, len(REBALANCE) + 1)), "nothing missed, nothing twice"
    assert not any(isinstance(i, Reset) for i in follower.items), follower.items
    assert [e.TYPE for e in events] == [e["type"] for e in REBALANCE]
    starts = [e for e in events if isinstance(e, RebalanceStart)]
    assert starts and starts[0].keep_nodes == REBALANCE[1]["keepNodes"]
    assert any(isinstance(e, VbucketMoveDone) and e.bucket for e in events)


def test_a_restart_without_persistence_surfaces_as_a_reset(make_server, caplog):
    caplog.set_level(logging.WARNING, logger="master_events")
    server = make_server(persistent=False)
    writer = Client(server.url)
    follower = Follower(Client(server.url))
    try:
        writer.send(REBALANCE[:3])
        follower.wait_for("3 events", lambda: len(follower.events()) == 3)
        server.restart()
        writer.send(REBALANCE[3:5])
        follower.wait_for("a reset, then the new archive", lambda: len(follower.events()) == 5)
    finally:
        follower.close()
    kinds = [type(i).__name__ for i in follower.items]
    assert "Reset" in kinds, kinds
    reset_at = kinds.index("Reset")
    after = [i for i in follower.items[reset_at + 1 :] if isinstance(i, Event)]
    assert [e.seq for e in after] == [1, 2], "the new history's events, from its start"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reconnecting" in m for m in warnings), warnings
    assert any("reset to history" in m for m in warnings), warnings


def demo_last_seq(server):
    """The last seq of the demo's scenario once it has all been emitted (its log
    says so; a run killed before the end never says it), polled with a deadline."""
    deadline = time.monotonic() + 30
    while True:
        text = (server.workdir / "server.log").read_text()
        done = re.findall(r"scenario done.*last_seq=(\d+)", text)
        if done:
            return int(done[-1])
        assert time.monotonic() < deadline, f"the demo did not finish: {text[-2000:]}"
        time.sleep(0.05)


def test_the_client_follows_a_live_demo_through_a_server_restart(make_server):
    # A simulated rebalance emitted live; the demo is killed mid-scenario and started
    # again (same seed, same events, no persistence: a new history).
    server = make_server(command="demo", args=["--vbuckets", "16", "--rate", "200"])
    follower = Follower(Client(server.url))
    try:
        follower.wait_for("the demo's first events", lambda: len(follower.events()) >= 40)
        first_history = follower.client.history
        server.restart()
        last = demo_last_seq(server)
        follower.wait_for(
            "the restarted demo's whole scenario",
            lambda: len(follower.events_after_reset()) >= last,
        )
        archive = Client(server.url).dump()
    finally:
        follower.close()
    kinds = [type(i).__name__ for i in follower.items]
    assert kinds.count("Reset") == 1, kinds
    reset_at = kinds.index("Reset")
    before = [i for i in follower.items[:reset_at] if isinstance(i, Event)]
    after = [i for i in follower.items[reset_at + 1 :] if isinstance(i, Event)]
    reset = follower.items[reset_at]
    assert 40 <= len(before) < last, "the first run was killed mid-scenario"
    assert [e.seq for e in before] == list(range(1, len(before) + 1)), "nothing missed, nothing twice"
    assert [e.seq for e in after] == list(range(1, last + 1)), "the new run from its start, in order"
    assert reset.history != first_history and reset.requested_history == first_history
    assert reset.requested_since == before[-1].seq
    assert [e.TYPE for e in after] == [e.TYPE for e in archive], "the same typed events as the archive"
    assert [e.TYPE for e in after[: len(before)]] == [e.TYPE for e in before], "same seed, same scenario"
    assert any(isinstance(e, VbucketMoveDone) for e in after)


def test_events_the_archive_no_longer_holds_come_out_as_a_gap(make_server):
    server = make_server(args=["--archive-size", "5"])
    client = Client(server.url)
    client.send(REBALANCE[:20])
    items = list(
        client.stream(since=2, until=lambda i: isinstance(i, Event) and i.seq == 20, timeout=20)
    )
    assert isinstance(items[0], Gap), items
    assert (items[0].from_seq, items[0].to_seq, items[0].missed) == (3, 15, 13)
    assert [e.seq for e in items[1:]] == [16, 17, 18, 19, 20]


def test_a_stream_that_does_not_reach_its_end_condition_times_out(make_server):
    server = make_server()
    client = Client(server.url)
    client.send(REBALANCE[:2])
    started = time.monotonic()
    seen = []
    with pytest.raises(StreamTimeout, match="last seq 2"):
        for item in client.stream(heartbeat=0.1, until=lambda i: False, timeout=1):
            seen.append(item.seq)
    assert seen == [1, 2]
    assert time.monotonic() - started < 10


def test_a_server_that_is_gone_is_a_typed_error_after_the_given_reconnects(make_server):
    server = make_server()
    url = server.url
    server.stop()
    with pytest.raises(ServerUnreachable, match="cannot reach"):
        Client(url).dump()
    with pytest.raises(ServerUnreachable, match="gave up after 2 reconnects"):
        next(Client(url).stream(max_reconnects=2))


def test_a_refused_filter_is_raised_at_once_not_retried(make_server):
    server = make_server()
    with pytest.raises(HTTPError, match="unknown event type") as err:
        next(Client(server.url).stream(type="nope", max_reconnects=0))
    assert err.value.status == 400


def make_ca_and_cert(directory):
    """A private CA and a certificate for 127.0.0.1 signed by it (openssl)."""
    def run(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=directory)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test CA", "-days", "2")
    run("req", *ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    return directory / "ca.pem", directory / "cert.pem", directory / "key.pem"


def test_https_with_a_private_ca_is_trusted_through_cacert(make_server, tmp_path):
    ca, cert, key = make_ca_and_cert(tmp_path)
    server = make_server(scheme="https", args=["--tls-cert", str(cert), "--tls-key", str(key)])
    client = Client(server.url, cacert=str(ca))
    client.send(REBALANCE[:3])
    assert [e.seq for e in client.dump()] == [1, 2, 3]
    assert [e.seq for e in client.stream(until=lambda i: i.seq == 3, timeout=20)] == [1, 2, 3]
    with pytest.raises(ServerUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        Client(server.url).dump()
    with pytest.raises(ValueError, match="cacert"):
        Client(server.url, cacert=str(tmp_path / "missing.pem"))


def make_token(role):
    out = subprocess.run(
        [BIN, "token", "create", "--name", f"py-{role}", "--role", role],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token, entry = out.split("\n", 1)
    return token.strip(), entry


def test_a_token_reads_and_a_wrong_one_is_refused_without_being_shown(make_server):
    token, entry = make_token("read")
    server = make_server(config_extra=entry + '\n[[users]]\nname = "ops"\npassword = "pw-123456"\nrole = "admin"\n')
    Client(server.url, auth=("ops", "pw-123456")).send(REBALANCE[:4])
    archive = Client(server.url, token=token).dump()
    assert [e.seq for e in archive] == [1, 2, 3, 4]
    assert all(isinstance(e, Event) for e in archive)
    wrong = "me_" + "x" * 40
    with pytest.raises(AuthError) as err:
        Client(server.url, token=wrong).dump()
    assert wrong not in str(err.value)
    with pytest.raises(AuthError) as err:
        next(Client(server.url, auth=("ops", "not-the-password")).stream())
    assert "not-the-password" not in str(err.value)
    assert "pw-123456" not in repr(Client(server.url, auth=("ops", "pw-123456")))


def test_dump_filters_and_types_the_archive(make_server):
    server = make_server()
    client = Client(server.url)
    client.send(REBALANCE)
    moves = client.dump(type="vbucketMoveDone")
    assert moves and all(isinstance(e, VbucketMoveDone) for e in moves)
    assert len(moves) == sum(1 for e in REBALANCE if e["type"] == "vbucketMoveDone")


def test_a_bad_url_or_both_credentials_are_refused_at_once():
    with pytest.raises(InvalidURLError, match="url"):
        Client("ftp://x")
    with pytest.raises(InvalidURLError, match="port"):
        Client("http://127.0.0.1:nine")
    with pytest.raises(InvalidURLError, match="auth=") as err:
        Client("http://ops:pw-secret@127.0.0.1:1")
    assert "pw-secret" not in str(err.value)
    with pytest.raises(InvalidURLError, match="https"):
        Client("http://127.0.0.1:1", cacert="ca.pem")
    with pytest.raises(ValueError, match="not both"):
        Client("http://127.0.0.1:1", auth=("a", "b"), token="t")


def test_a_stream_goes_on_past_an_event_type_the_models_lack(caplog):
    """A newer server's new event type (a compatible change) does not end the
    stream: it comes out as an `UnknownEvent`, said once at WARNING, and the cursor
    moves past it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from master_events import UnknownEvent

    body = (
        '{"type":"bucketRenamed","seq":1,"ts":1.0,"from":"a","to":"b"}\n'
        '{"type":"bucketRenamed","seq":2,"ts":1.1,"from":"b","to":"c"}\n'
        '{"type":"vbucketMoveDone","seq":3,"ts":1.2,"bucket":"c","vbucket":3}\n'
    ).encode()

    class Newer(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Master-Events-History", "h1")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Newer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_address[1]}")
        with caplog.at_level(logging.WARNING, logger="master_events"):
            items = list(client.stream(until=lambda i: isinstance(i, VbucketMoveDone), timeout=10))
    finally:
        server.shutdown()
    assert [type(i).__name__ for i in items] == ["UnknownEvent", "UnknownEvent", "VbucketMoveDone"]
    assert isinstance(items[0], UnknownEvent) and items[0].type == "bucketRenamed"
    assert items[1].raw["to"] == "c"
    assert client.last_seq == 3
    said = [r.getMessage() for r in caplog.records if "bucketRenamed" in r.getMessage()]
    assert len(said) == 1, said
