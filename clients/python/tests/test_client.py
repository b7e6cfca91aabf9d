"""The client against a real server: following a live rebalance through a server
restart (nothing missed, nothing twice), a restart without persistence surfacing as
a `Reset`, tokens and Basic credentials, the archive as typed events."""

import json
import subprocess
import threading
import time

import pytest

from conftest import BIN, ROOT
from master_events import AuthError, Client, Event, Heartbeat, Reset
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


def test_a_restart_without_persistence_surfaces_as_a_reset(make_server):
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
    with pytest.raises(ValueError, match="url"):
        Client("ftp://x")
    with pytest.raises(ValueError, match="not both"):
        Client("http://127.0.0.1:1", auth=("a", "b"), token="t")
