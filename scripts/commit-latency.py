#!/usr/bin/env python3
"""Measures what the cluster commit costs a writer: the time from POST to its 200
(committed: on a single node at once; in a cluster, once a majority holds the
event) for one event per request, sequentially, on a node alone and on the
master and a follower of a three-node static cluster, all on loopback; then the
same with BATCH events per request (one request at a time), as events/s.

usage: scripts/commit-latency.py BIN [REQUESTS] [BATCHES]   (BIN: a built master-events)
"""
import http.client, json, os, socket, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500
BATCHES = int(sys.argv[3]) if len(sys.argv) > 3 else 100
BATCH = 1000

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(args):
    p = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on"):
        p.kill(); raise SystemExit(f"did not start: {line!r}")
    return p

def post(conn, body):
    conn.request("POST", "/diag/masterEvents", body, {"content-type": "application/x-ndjson"})
    r = conn.getresponse(); data = r.read()
    return r.status, data

def measure(port, label):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.time() + 30
    while post(conn, b'{"type":"deleteBucket","bucket":"warm"}\n')[0] != 200:
        if time.time() > deadline: raise SystemExit(f"{label}: no 200 within 30 s")
        time.sleep(0.1)
    lat = []
    for i in range(N):
        t = time.perf_counter()
        status, _ = post(conn, b'{"type":"deleteBucket","bucket":"b%d"}\n' % i)
        lat.append((time.perf_counter() - t) * 1000)
        if status != 200: raise SystemExit(f"{label}: status {status}")
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
    print(f"| {label} | {N} | {q(0.5):.2f} | {q(0.9):.2f} | {q(0.99):.2f} | {lat[-1]:.2f} |")

def measure_batches(port, label):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat = []
    started = time.perf_counter()
    for k in range(BATCHES):
        body = b"".join(b'{"type":"vbucketMoveDone","bucket":"default","vbucket":%d}\n' % ((k * BATCH + i) % 1024)
                        for i in range(BATCH))
        t = time.perf_counter()
        status, data = post(conn, body)
        lat.append((time.perf_counter() - t) * 1000)
        if status != 200: raise SystemExit(f"{label}: status {status}: {data[:200]!r}")
    eps = BATCHES * BATCH / (time.perf_counter() - started)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
    batches.append(f"| {label} | {BATCHES} × {BATCH} | {eps / 1000:.0f} k | {q(0.5):.2f} | {q(0.99):.2f} | {lat[-1]:.2f} |")

batches = []
procs = []
try:
    print("| node | requests | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    p = free_port(); procs.append(start(["serve", "--listen", f"127.0.0.1:{p}"]))
    measure(p, "alone")
    measure_batches(p, "alone")
    ports = [free_port() for _ in range(3)]
    names = [f"n_{i}@127.0.0.1" for i in range(3)]
    peers = sum([["--peer", f"{n}=http://127.0.0.1:{q}"] for n, q in zip(names, ports)], [])
    secret = tempfile.NamedTemporaryFile("w", delete=False); secret.write("s3cret\n"); secret.close()
    for n, q in zip(names, ports):
        procs.append(start(["serve", "--listen", f"127.0.0.1:{q}", "--node", n, "--master", names[0],
                            "--cluster-secret-file", secret.name] + peers))
    measure(ports[0], "cluster master")
    measure(ports[1], "cluster follower")
    measure_batches(ports[0], "cluster master")
    measure_batches(ports[1], "cluster follower")
    print()
    print("| node | requests × events | events/s | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(batches))
finally:
    for p in procs: p.kill()
