"""A consumer in another language can use the published schemas.

Validates sample lines of every catalog type, written the way ns_server writes
them, with Python's `jsonschema` package against the committed files in schemas/,
and checks that bad lines are rejected.
"""

import json
import pathlib

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
DATA = ROOT / "tests" / "data"


def load(path):
    return json.loads((SCHEMAS / path).read_text())


def validator(path):
    schema = load(path)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def sample_lines():
    lines = (DATA / "ns_server_samples.ndjson").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def event_types():
    return sorted(p.stem for p in (SCHEMAS / "event").glob("*.json"))


def test_every_schema_file_is_a_valid_2020_12_schema():
    # version.json is the set's version, and openapi.json / asyncapi.json are the API
    # documents (tests/python/test_api_documents.py): none is an event schema.
    not_schemas = {"version.json", "openapi.json", "asyncapi.json"}
    files = sorted(
        p for p in SCHEMAS.rglob("*.json") if not (p.parent == SCHEMAS and p.name in not_schemas)
    )
    control = sorted(p.stem for p in (SCHEMAS / "control").glob("*.json"))
    assert control == ["gap", "heartbeat", "reset"]
    # event/*, control/*, and the three unions: event, stream-line, ingest-line.
    assert len(files) == len(event_types()) + len(control) + 3
    assert json.loads((SCHEMAS / "version.json").read_text())["version"].count(".") == 2
    for path in files:
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_samples_cover_every_event_type():
    assert sorted({line["type"] for line in sample_lines()}) == event_types()


@pytest.mark.parametrize("union", ["event.json", "stream-line.json", "ingest-line.json"])
def test_every_sample_validates_against_the_unions(union):
    v = validator(union)
    for line in sample_lines():
        errors = [e.message for e in v.iter_errors(line)]
        assert not errors, (line["type"], errors)


def test_every_sample_validates_against_its_own_type_file():
    for line in sample_lines():
        v = validator(f"event/{line['type']}.json")
        errors = [e.message for e in v.iter_errors(line)]
        assert not errors, (line["type"], errors)


def test_sample_of_one_type_does_not_validate_against_another():
    v = validator("event/vbucketMoveDone.json")
    line = next(l for l in sample_lines() if l["type"] == "becameMaster")
    assert not v.is_valid(line)


def test_invalid_samples_are_rejected():
    v = validator("stream-line.json")
    lines = [
        json.loads(line)
        for line in (DATA / "invalid_samples.ndjson").read_text().splitlines()
        if line.strip()
    ]
    assert lines
    for line in lines:
        assert not v.is_valid(line), line


def test_wrongly_typed_vbucket_names_the_field():
    v = validator("event/vbucketMoveDone.json")
    line = {"type": "vbucketMoveDone", "ts": 1333576052.926554, "vbucket": "x", "bucket": "default"}
    errors = list(v.iter_errors(line))
    assert [list(e.absolute_path) for e in errors] == [["vbucket"]]


def test_control_frames_validate_as_stream_lines():
    v = validator("stream-line.json")
    assert v.is_valid({"type": "heartbeat", "seq": 12, "ts": 1333576052.926554})
    assert v.is_valid(
        {"type": "gap", "fromSeq": 1, "toSeq": 9, "missed": 9, "reason": "evicted from the archive"}
    )
    assert not v.is_valid({"type": "gap", "fromSeq": 1})
    reset = {
        "type": "reset", "history": "3f2a9c0d1e4b5a67", "oldestSeq": 1, "lastSeq": 24,
        "requestedHistory": "0123456789abcdef", "requestedSince": 50,
        "reason": "history changed: this archive is not the one the reader resumes",
    }
    assert v.is_valid(reset)
    assert not v.is_valid({**reset, "lastSeq": -1})
    assert v.is_valid({"type": "heartbeat", "seq": 12, "ts": 1.5, "history": "3f2a9c0d1e4b5a67"})
