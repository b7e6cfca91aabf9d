#!/usr/bin/env python3
"""A fleet of simulated clusters handing their events to one JetStream stream.

    python3 scripts/fleet.py [--clusters 10] [--rate 500] [--vbuckets 256]

Starts a nats-server with JetStream (a free loopback port, a temp store), creates
the stream FLEET (subjects master_events.>), and follows it with a durable
consumer ("fleet-reader": a reader that stops and starts again resumes where it
acknowledged). Then runs N `master-events demo` processes, each a cluster of its
own whose nats sink publishes under master_events.c<i> (run_on = "master": one copy
per cluster), each simulating a rebalance and a failover (--vbuckets sets its
size). When every demo has finished, it checks that the reader got every cluster's
events exactly once and in seq order (seqs 1..last, one history per cluster), and
prints: events in all, the rate into the stream while the clusters ran, and the
latency from each event's sequencing on its master (its `ts`) to the reader.

FLEET_DEBUG=1 prints, for each event, how long after its sequencing the stream
stored it, and how long after that the reader got it.

Needs nats-server (scripts/deps.sh), nats-py (pip install nats-py) and a built
master-events (MASTER_EVENTS=path, default target/release/master-events, else
target/debug/master-events). Every process it starts is killed when it ends.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import nats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAM = "FLEET"
PREFIX = "master_events"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    if os.environ.get("MASTER_EVENTS"):
        return os.environ["MASTER_EVENTS"]
    for build in ("release", "debug"):
        path = os.path.join(ROOT, "target", build, "master-events")
        if os.path.exists(path):
            return path
    sys.exit("no master-events binary: cargo build --release -p master-events-cli")


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run(args):
    work = tempfile.mkdtemp(prefix="fleet-")
    procs = []
    try:
        port = free_port()
        nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
        procs.append(subprocess.Popen(
            [nats_bin, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", os.path.join(work, "js")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"nats://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("nats-server did not listen within 20 s")
                await asyncio.sleep(0.05)

        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[f"{PREFIX}.>"])
        received = {}  # cluster -> list of (seq, history)
        latencies = []
        first_recv = [None]
        last_recv = [None]

        async def on_message(msg):
            now = time.time()
            cluster = msg.subject.split(".")[1]
            headers = msg.headers or {}
            seq = int(headers.get("Master-Events-Seq", "0"))
            history = headers.get("Master-Events-History", "")
            received.setdefault(cluster, []).append((seq, history))
            if not msg.subject.endswith(".gap"):
                ts = json.loads(msg.data).get("ts")
                if isinstance(ts, (int, float)):
                    latencies.append(now - ts)
                    if os.environ.get("FLEET_DEBUG"):
                        stored = msg.metadata.timestamp.timestamp()
                        print(f"{seq} stored-ts {(stored-ts)*1e3:.1f} ms, now-stored {(now-stored)*1e3:.1f} ms")
            first_recv[0] = first_recv[0] or now
            last_recv[0] = now
            await msg.ack()

        # A pull consumer: it asks for what is there and acknowledges it (a push
        # consumer's flow control delivered in bursts, adding up to a second).
        reader = await js.pull_subscribe(f"{PREFIX}.>", durable="fleet-reader", stream=STREAM)
        reading = True

        async def read():
            while reading:
                try:
                    msgs = await reader.fetch(batch=512, timeout=0.2)
                except nats.errors.TimeoutError:
                    continue
                for m in msgs:
                    await on_message(m)

        reader_task = asyncio.create_task(read())

        me = binary()
        demos = []
        started = time.time()
        for i in range(args.clusters):
            config = os.path.join(work, f"c{i}.toml")
            with open(config, "w") as f:
                f.write(
                    "[[sinks]]\ntype = \"nats\"\n"
                    f"servers = [\"{url}\"]\nsubject_prefix = \"{PREFIX}.c{i}\"\n"
                    f"jetstream = {{ stream = \"{STREAM}\", subjects = [\"{PREFIX}.>\"], ack_window = 512 }}\n")
            p = subprocess.Popen(
                [me, "demo", "--listen", "127.0.0.1:0", "--config", config,
                 "--rate", str(args.rate), "--vbuckets", str(args.vbuckets),
                 "--seed", str(i + 1), "--exit-when-done"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"c{i}.log"), "w"),
                env={**os.environ, "RUST_LOG": "warn,master_events_cli::commands::demo=info"})
            procs.append(p)
            demos.append(p)
        deadline = time.monotonic() + args.timeout
        for i, p in enumerate(demos):
            # Polled, so that the reader (on this event loop) reads meanwhile.
            while p.poll() is None:
                if time.monotonic() > deadline:
                    sys.exit(f"cluster c{i} did not finish within {args.timeout} s")
                await asyncio.sleep(0.02)
            code = p.returncode
            if code != 0:
                with open(os.path.join(work, f"c{i}.log")) as f:
                    sys.exit(f"cluster c{i} exited {code}:\n{f.read()[-2000:]}")
        finished = time.time()

        # Wait until the reader has what the stream holds.
        stream_info = await js.stream_info(STREAM)
        total = stream_info.state.messages
        while sum(len(v) for v in received.values()) < total:
            if time.monotonic() > deadline:
                sys.exit(f"the reader got {sum(len(v) for v in received.values())} of {total}")
            await asyncio.sleep(0.05)
        reading = False
        await reader_task
        await nc.drain()

        problems = []
        for i in range(args.clusters):
            got = received.get(f"c{i}", [])
            seqs = [s for s, _ in got]
            # The demo says how far its cluster went: "scenario done ... last_seq=N".
            with open(os.path.join(work, f"c{i}.log")) as f:
                said = [line.split("last_seq=")[1].split()[0]
                        for line in f if "scenario done" in line and "last_seq=" in line]
            if not said or seqs[-1:] != [int(said[-1])]:
                problems.append(f"c{i}: the stream ends at {seqs[-1:]}, the cluster at {said[-1:]}")
            histories = {h for _, h in got}
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"c{i}: seqs not 1..{len(seqs)} once in order")
            if len(histories) != 1:
                problems.append(f"c{i}: {len(histories)} histories")
            if not got:
                problems.append(f"c{i}: nothing received")
        events = sum(len(v) for v in received.values())
        busy = max(finished - started, 1e-9)
        print(f"{args.clusters} clusters, {events} events in stream {STREAM} "
              f"(rate per cluster: {args.rate or 'unpaced'}, vbuckets {args.vbuckets})")
        print(f"  into JetStream: {events / busy:,.0f} events/s over {busy:.2f} s "
              f"(first demo start to last demo exit)")
        print(f"  master -> reader latency: p50 {percentile(latencies, 50) * 1e3:.1f} ms, "
              f"p99 {percentile(latencies, 99) * 1e3:.1f} ms, "
              f"max {max(latencies) * 1e3:.1f} ms ({len(latencies)} events)")
        if problems:
            print("PROBLEMS:\n  " + "\n  ".join(problems))
            return 1
        print("  every cluster: seqs 1..its last exactly once, in order, one history")
        return 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--rate", type=float, default=500,
                        help="events/s each cluster emits (0: as fast as it can)")
    parser.add_argument("--vbuckets", type=int, default=256,
                        help="vbuckets of each simulated cluster (sets its number of events)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if args.clusters < 1:
        parser.error("--clusters must be at least 1")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
