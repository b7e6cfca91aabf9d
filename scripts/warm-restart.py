"""Cold start and warm restart of `serve`: how long until it listens.

    cargo build --release -p master-events-cli
    python3 scripts/warm-restart.py [EVENTS] [ROUNDS] [BINARY]

In a temp dir: times ROUNDS (default 5) cold starts of `serve` (no config) to its
`listening on` line; then fills a `file` sink's log with EVENTS (default 1,000,000)
~110-byte events (posted in requests of 1,000 lines, with the archive as large as
the log, so that every event is restored), stops the server, and times ROUNDS warm
restarts: from spawning the process to its `listening on` line, the whole log
verified and restored into the archive. Prints the medians and every round, and the
server's RSS once listening after the last restart and again once the archive's
older blocks are compressed (its cold blocks stop growing). Every process is killed
at the end; every wait is bounded.
"""

import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
BIN = sys.argv[3] if len(sys.argv) > 3 else str(ROOT / "target" / "release" / "master-events")
BATCH = 1000
LIMIT = 120.0  # seconds any one wait may take


def serve(args):
    """Starts `serve ARGS`; returns (process, seconds to `listening on`, address)."""
    start = time.perf_counter()
    p = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = start + LIMIT
    while time.perf_counter() < deadline:
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"serve exited before listening (code {p.wait()})")
        if line.startswith("listening on "):
            took = time.perf_counter() - start
            return p, took, line.split()[-1].removeprefix("http://")
    p.kill()
    raise SystemExit("serve did not listen in time")


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss(p):
    """The process's resident set, bytes."""
    for line in pathlib.Path(f"/proc/{p.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


def gauge(addr, name):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=LIMIT) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def post(addr, body):
    req = urllib.request.Request(
        f"http://{addr}/diag/masterEvents", data=body, method="POST",
        headers={"Content-Type": "application/x-ndjson"},
    )
    with urllib.request.urlopen(req, timeout=LIMIT) as r:
        r.read()
        if r.status != 200:
            raise SystemExit(f"POST answered {r.status}")


def main():
    with tempfile.TemporaryDirectory() as d:
        cold = []
        for _ in range(ROUNDS):
            p, took, _ = serve([])
            cold.append(took)
            stop(p)
        config = pathlib.Path(d) / "config.toml"
        config.write_text(
            f'[[sinks]]\ntype = "file"\ndir = "{d}/log"\n'
        )
        args = ["--config", str(config), "--archive-size", str(N)]
        p, _, addr = serve(args)
        line = b'{"type":"vbucketMoveDone","bucket":"default","vbucket":%d}\n'
        for b in range(N // BATCH):
            post(addr, b"".join(line % ((b * BATCH + i) % 1024) for i in range(BATCH)))
        stop(p)
        size = sum(f.stat().st_size for f in (pathlib.Path(d) / "log").iterdir())
        warm = []
        for i in range(ROUNDS):
            p, took, addr = serve(args)
            warm.append(took)
            if i == ROUNDS - 1:
                listening_rss = rss(p)
                # The freezer compresses blocks a second old, a batch every 250 ms.
                deadline = time.perf_counter() + LIMIT
                last, still_since = -1.0, time.perf_counter()
                while time.perf_counter() < deadline:
                    frozen = gauge(addr, "master_events_archive_cold_blocks")
                    if frozen != last:
                        last, still_since = frozen, time.perf_counter()
                    elif time.perf_counter() - still_since > 2.0 and (
                        frozen > 0 or time.perf_counter() - deadline + LIMIT > 5.0
                    ):
                        # Settled (or a binary that compresses nothing, after 5 s).
                        break
                    time.sleep(0.25)
                settled_rss = rss(p)
                stored = gauge(addr, "master_events_archive_stored_bytes")
                lines = gauge(addr, "master_events_archived_bytes")
            stop(p)
        ms = lambda xs: ", ".join(f"{x * 1000:.1f}" for x in xs)
        print(f"cold start to listening: median {statistics.median(cold) * 1000:.1f} ms ({ms(cold)})")
        print(
            f"warm restart of {N:,} events ({size / 1e6:.0f} MB log) to listening: "
            f"median {statistics.median(warm) * 1000:.0f} ms ({ms(warm)})"
        )
        print(
            f"RSS after the last warm restart: {listening_rss / 1e6:.0f} MB listening, "
            f"{settled_rss / 1e6:.0f} MB once {last:.0f} blocks are compressed "
            f"(lines {lines / 1e6:.0f} MB, held in {stored / 1e6:.0f} MB)"
        )


if __name__ == "__main__":
    main()
