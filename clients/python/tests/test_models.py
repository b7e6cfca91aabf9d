"""The generated models: up to date with the committed schemas, and every sample
line of ns_server's log reads as its own typed model."""

import json
import pathlib
import subprocess
import sys

import master_events
from master_events import EVENT_TYPES, parse_line

HERE = pathlib.Path(__file__).resolve().parent
CLIENT = HERE.parent
ROOT = HERE.parents[2]


def test_models_match_a_fresh_generation_from_the_committed_schemas(tmp_path):
    out = tmp_path / "models.py"
    subprocess.run([sys.executable, str(CLIENT / "generate.py"), "--out", str(out)], check=True)
    committed = (CLIENT / "master_events" / "models.py").read_text()
    assert out.read_text() == committed, "master_events/models.py drifted from schemas/: run clients/python/generate.sh and commit it"


def test_every_event_type_of_the_schemas_has_a_model():
    types = {p.stem for p in (ROOT / "schemas" / "event").glob("*.json")}
    assert set(EVENT_TYPES) == types
    assert master_events.SCHEMA_VERSION == json.loads((ROOT / "schemas" / "version.json").read_text())["version"]


def test_every_sample_line_reads_as_its_typed_model():
    seen = set()
    for line in (ROOT / "tests" / "data" / "ns_server_samples.ndjson").read_text().splitlines():
        if not line.strip():
            continue
        event = parse_line(line)
        wire = json.loads(line)
        assert type(event) is EVENT_TYPES[wire["type"]]
        for attr, name in type(event).WIRE.items():
            assert getattr(event, attr) == wire.get(name)
        seen.add(wire["type"])
    assert seen == set(EVENT_TYPES)


def test_an_event_of_a_type_the_models_lack_is_an_unknown_event_with_its_envelope():
    import pytest

    item = parse_line('{"type":"bucketRenamed","seq":7,"ts":1.5,"origin":"n_1@h","from":"a"}')
    assert isinstance(item, master_events.UnknownEvent)
    assert isinstance(item, master_events.Event)
    assert (item.type, item.seq, item.ts, item.origin) == ("bucketRenamed", 7, 1.5, "n_1@h")
    assert item.raw["from"] == "a"
    # Its envelope is checked as any event's.
    with pytest.raises(master_events.ProtocolError, match=r"field 'seq' is 'x', expected Optional\[int\]"):
        parse_line('{"type":"bucketRenamed","seq":"x"}')


def test_a_line_that_is_not_json_or_has_no_type_is_a_protocol_error():
    import pytest

    with pytest.raises(master_events.ProtocolError, match="not a JSON line"):
        parse_line("{")
    with pytest.raises(master_events.ProtocolError, match="string \"type\""):
        parse_line('{"seq":1}')


def test_a_field_of_the_wrong_type_or_a_missing_required_one_is_refused_by_its_wire_name():
    import pytest

    with pytest.raises(master_events.ProtocolError, match="field 'vbucket' is '3', expected int"):
        parse_line('{"type":"vbucketMoveDone","bucket":"b","vbucket":"3"}')
    with pytest.raises(master_events.ProtocolError, match="field 'vbucket' is True, expected int"):
        parse_line('{"type":"vbucketMoveDone","bucket":"b","vbucket":true}')
    with pytest.raises(master_events.ProtocolError, match=r"field 'keepNodes' is \[1\], expected list\[str\]"):
        parse_line('{"type":"rebalanceStart","pid":"<0.1.0>","keepNodes":[1],"ejectNodes":[],"failedNodes":[],"deltaNodes":[]}')
    with pytest.raises(master_events.ProtocolError, match="required field 'vbucket' is missing"):
        parse_line('{"type":"vbucketMoveDone","bucket":"b"}')
    with pytest.raises(master_events.ProtocolError, match="required field 'fromSeq' is missing"):
        parse_line('{"type":"gap","toSeq":2,"missed":2,"reason":"x"}')
    gap = parse_line('{"type":"gap","fromSeq":1,"toSeq":2,"missed":2,"reason":"evicted"}')
    assert isinstance(gap, master_events.Gap) and (gap.from_seq, gap.to_seq) == (1, 2)
    # A JSON integer fits a float field (ts), null an optional one.
    event = parse_line('{"type":"vbucketMoveDone","bucket":"b","vbucket":3,"ts":1333576052,"origin":null}')
    assert event.ts == 1333576052 and event.origin is None
