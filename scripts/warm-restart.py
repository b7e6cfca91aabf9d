"""Cold start and warm restart of `serve`: how long until it listens.

    cargo build --release -p master-events-cli
    python3 scripts/warm-restart.py [EVENTS] [ROUNDS] [BINARY]

In a temp dir: times ROUNDS (default 5) cold starts of `serve` (no config) to its
`listening on` line; then fills a `file` sink's log with EVENTS (default 1,000,000)
~110-byte events (posted in requests of 1,000 lines, with the archive as large as
the log, so that every event is restored), stops the server, and times ROUNDS warm
restarts: from spawning the process to its `listening on` line, the whole log
verified and restored into the archive. Prints the medians and every round. Every
process is killed at the end; every wait is bounded.
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
        for _ in range(ROUNDS):
            p, took, _ = serve(args)
            warm.append(took)
            stop(p)
        ms = lambda xs: ", ".join(f"{x * 1000:.1f}" for x in xs)
        print(f"cold start to listening: median {statistics.median(cold) * 1000:.1f} ms ({ms(cold)})")
        print(
            f"warm restart of {N:,} events ({size / 1e6:.0f} MB log) to listening: "
            f"median {statistics.median(warm) * 1000:.0f} ms ({ms(warm)})"
        )


if __name__ == "__main__":
    main()
