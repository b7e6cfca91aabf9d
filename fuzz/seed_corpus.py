#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*) from
the project's samples: the ns_server sample lines and the invalid ones
(tests/data), the report test logs, control frames, the configuration examples of
docs/configuration.md and stream query strings. Run from the repository root; it
only adds or rewrites seed-* files (inputs a fuzzer found are kept beside them)."""

import hashlib
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def lines(path):
    return [l for l in read(path).split(b"\n") if l.strip()]


def write(target, items):
    d = os.path.join(ROOT, "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    for item in items:
        name = "seed-" + hashlib.sha1(item).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(item)


samples = lines("tests/data/ns_server_samples.ndjson")
invalid = lines("tests/data/invalid_samples.ndjson")
frames = [
    b'{"type":"heartbeat","seq":42,"history":"h1"}',
    b'{"type":"gap","fromSeq":3,"toSeq":9,"missed":7,"reason":"evicted from the archive"}',
    b'{"type":"reset","history":"h2","oldestSeq":1,"lastSeq":40,"requestedSince":57,"reason":"another history"}',
]
stamped = [
    b'{"type":"deleteBucket","ts":1700000000.5,"seq":%d,"origin":"n_0@127.0.0.1","originSeq":%d,"bucket":"b%d"}'
    % (i, 1000 + i, i)
    for i in range(1, 6)
]

write("line", samples + invalid + frames + stamped)
write("schemas", samples + invalid + frames + stamped)

body = b"\n".join(samples[:8]) + b"\n"
write("ingest", [bytes([step]) + body for step in (1, 7, 64, 255)]
      + [bytes([3]) + b"\n".join(invalid[:4]), bytes([5]) + b"a\r\n\n{}\n\xff"])

write("query", [
    b"o=1",
    b"o=1&type=rebalanceStart,rebalanceEnd&bucket=b1",
    b"since=5&history=h1&heartbeat=0",
    b"start=now&vbucket=1,2,1023&node=n_0@127.0.0.1",
    b"o=1&heartbeat=2.5\nh1:42",
    b"bucket=%62%31&type=vbucketMoveDone\n42",
    b"since=18446744073709551615&o=0",
])

conf = read("docs/configuration.md").decode()
tomls = [m.group(1).encode() for m in re.finditer(r"```toml\n(.*?)```", conf, re.S)]
write("config", tomls + [
    b'[[sinks]]\ntype = "stdout"\nfilter = { type = ["rebalanceStart"], bucket = "b1" }\n',
    b'[[sinks]]\ntype = "webhook"\nurl = "http://127.0.0.1:1/x"\nheaders = { Authorization = "Bearer s3cr3t-value-1234" }\nbogus = 1\n',
    b'[[sinks]]\ntype = "nats"\npassword = "hunter2-hunter2"\nuser = 5\n',
    b'[[sinks]]\ntype = "file"\ndir = "/tmp/x"\nfsync = { every_ms = 0 }\n',
    b'[archive]\nsize = 10\n[[sinks]]\ntype = "archiver"\n',
])

log = b"\n".join(stamped) + b"\n"
write("warm", [
    log,
    log + frames[1] + b"\n",
    log + frames[2] + b"\n" + stamped[0] + b"\n",
    log + b'{"type":"deleteBucket","ts":1,"seq":9,"bucket',
    b"\n".join(samples[:5]) + b"\n",
    stamped[2] + b"\n" + stamped[1] + b"\n",
])

reports = [read("tests/data/report/" + n) for n in sorted(os.listdir(os.path.join(ROOT, "tests/data/report")))
           if n.endswith((".log", ".ndjson"))]
write("report", [r[:16384] for r in reports] + [body, log + b"not json\n" + log])
