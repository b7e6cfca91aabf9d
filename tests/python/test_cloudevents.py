"""The stream's `format=cloudevents`, read with the CloudEvents SDK for Python.

Starts the server binary (target/debug/master-events, or $MASTER_EVENTS_BIN) on a
free loopback port, sends events, and reads `GET /diag/masterEvents?o=1&format=cloudevents`
line by line (NDJSON) and frame by frame (SSE) with the SDK's structured JSON format:
every line is a CloudEvent 1.0 with a unique id, the sequence extension in seq order,
and a `dataschema` this server serves, which the event's data validates against.
"""

import json
import os
import pathlib
import subprocess
import time
import urllib.request

import jsonschema
import pytest
from cloudevents.core.formats.json import JSONFormat

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MASTER_EVENTS_BIN", str(ROOT / "target" / "debug" / "master-events"))

EVENTS = [
    '{"type":"rebalanceStart","pid":"<0.1.0>","keepNodes":["a:1"],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}',
    '{"type":"vbucketMoveDone","vbucket":7,"bucket":"default"}',
    '{"type":"vbucketMoveDone","vbucket":8,"bucket":"default"}',
    '{"type":"failover","hosts":["10.0.0.7:8091"]}',
    '{"type":"rebalanceEnd","pid":"<0.1.0>","reason":"normal"}',
]


@pytest.fixture()
def server(tmp_path):
    if not pathlib.Path(BIN).exists():
        pytest.fail(f"{BIN} is missing: build it with `cargo build -p master-events-cli`")
    proc = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--heartbeat", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # the server's first line, written at once
        assert line.startswith("listening on http://"), line
        url = line.split()[2]
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def request(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, resp.headers, resp.read()


def post_events(url):
    body = ("\n".join(EVENTS) + "\n").encode()
    status, _, _ = request(
        url + "/diag/masterEvents",
        "POST",
        body,
        {"Content-Type": "application/x-ndjson"},
    )
    assert status == 200


def check_events(url, events, history):
    ids = [e.get_id() for e in events]
    assert len(ids) == len(set(ids)) == len(EVENTS), ids
    seqs = [e.get_data()["seq"] for e in events]
    assert seqs == sorted(seqs)
    sequences = [e.get_extension("sequence") for e in events]
    assert sequences == sorted(sequences)
    assert [int(s) for s in sequences] == seqs
    schemas = {}
    for event, line in zip(events, EVENTS):
        data = event.get_data()
        assert data["type"] == json.loads(line)["type"]
        assert event.get_type() == "io.master-events.event." + data["type"]
        assert event.get_id() == f"{history}:{data['seq']}"
        assert event.get_source() == f"/clusters/{history}/nodes/{data['origin']}"
        assert event.get_time().year >= 2024
        assert event.get_datacontenttype() == "application/json"
        schema_url = event.get_dataschema()
        assert schema_url.startswith(url + "/schemas/event/"), schema_url
        if schema_url not in schemas:
            status, headers, body = request(schema_url)
            assert status == 200
            schemas[schema_url] = json.loads(body)
        jsonschema.validate(data, schemas[schema_url])


def test_an_ndjson_cloudevents_stream_reads_line_by_line_with_the_sdk(server):
    post_events(server)
    status, headers, body = request(server + "/diag/masterEvents?o=1&format=cloudevents")
    assert status == 200
    history = headers["Master-Events-History"]
    fmt = JSONFormat()
    events = [fmt.read(None, line) for line in body.decode().splitlines() if line.strip()]
    check_events(server, events, history)


def test_an_sse_cloudevents_stream_carries_one_event_a_frame_with_its_id(server):
    post_events(server)
    status, headers, body = request(
        server + "/diag/masterEvents?o=1&format=cloudevents",
        headers={"Accept": "text/event-stream"},
    )
    assert status == 200
    history = headers["Master-Events-History"]
    fmt = JSONFormat()
    events = []
    for frame in body.decode().split("\n\n"):
        fields = dict(l.split(": ", 1) for l in frame.splitlines() if ": " in l)
        if "data" not in fields:
            continue
        event = fmt.read(None, fields["data"])
        assert fields["id"] == event.get_id()
        events.append(event)
    check_events(server, events, history)


def test_a_gap_reaches_a_cloudevents_reader_as_a_control_event(server):
    post_events(server)
    # Resuming in another history: the stream starts with a reset frame.
    status, _, body = request(
        server + "/diag/masterEvents?o=1&format=cloudevents&since=1&history=other"
    )
    assert status == 200
    first = JSONFormat().read(None, body.decode().splitlines()[0])
    assert first.get_type() == "io.master-events.control.reset"
    assert first.get_data()["type"] == "reset"
    assert first.get_dataschema().endswith("/schemas/control/reset.json")


def test_an_unknown_format_is_refused_naming_the_known_ones(server):
    with pytest.raises(urllib.error.HTTPError) as err:
        request(server + "/diag/masterEvents?o=1&format=xml")
    assert err.value.code == 400
    assert "cloudevents" in err.value.read().decode()
