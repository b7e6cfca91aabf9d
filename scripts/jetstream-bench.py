"""Events/s from one master-events server into a NATS JetStream stream.

    python3 -m pip install nats-py
    cargo build --release -p master-events-cli
    python3 scripts/jetstream-bench.py [EVENTS] [BINARY]

Starts nats-server -js and `serve` (a nats sink in JetStream mode, ack_window 1024)
on free loopback ports in a temp dir, posts EVENTS (default 200,000) ~200-byte
events in requests of 1,000 lines, and times until the stream holds all of them
(each acknowledged by JetStream). Prints one line. Both processes are killed at the
end; every wait is bounded.
"""

import asyncio
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import nats

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = str(ROOT / "target" / "release" / "master-events")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
BIN = sys.argv[2] if len(sys.argv) > 2 else BIN

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

async def stream_last(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        info = await js.stream_info("EVENTS")
        return info.state.messages
    except Exception:
        return 0
    finally:
        await nc.close()

def main():
    work = tempfile.mkdtemp()
    port = free_port()
    ns = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", f"{work}/js"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline, "nats-server did not start"
        time.sleep(0.02)
    url = f"nats://127.0.0.1:{port}"
    open(f"{work}/config.toml", "w").write(f'[[sinks]]\ntype = "nats"\nservers = ["{url}"]\njetstream = {{ stream = "EVENTS", ack_window = 1024 }}\n')
    srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--config", f"{work}/config.toml", "--archive-size", str(N + 1000)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = srv.stdout.readline().split()[2]
    try:
        line = '{"type":"vbucketMoveStart","vbucket":43,"pid":"<0.2211.0>","node":"n_1@10.17.2.163","bucket":"default","chainBefore":["10.17.2.163:12002",""],"chainAfter":["10.17.2.163:12000","10.17.2.163:12002"]}\n'
        body = (line * 1000).encode()
        t0 = time.monotonic()
        for _ in range(N // 1000):
            urllib.request.urlopen(urllib.request.Request(addr + "/diag/masterEvents", data=body, headers={"Content-Type": "application/x-ndjson"}), timeout=60).read()
        t_ingest = time.monotonic() - t0
        deadline = time.monotonic() + 300
        while asyncio.run(stream_last(url)) < N:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t = time.monotonic() - t0
        print(f"{N} events: ingested in {t_ingest:.2f} s; all in JetStream after {t:.2f} s: {N / t:,.0f} events/s into JetStream")
    finally:
        srv.kill()
        ns.kill()

main()
