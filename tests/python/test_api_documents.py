"""The API documents: schemas/openapi.json is valid OpenAPI 3.1 (checked by the
independent openapi-spec-validator), and a running server serves exactly the
committed schemas/openapi.json and schemas/asyncapi.json (generated from its route
table and channels; the AsyncAPI parser checks the latter in scripts/test.sh)."""

import json
import os
import pathlib
import subprocess
import urllib.request

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
BIN = os.environ.get("MASTER_EVENTS_BIN", str(ROOT / "target" / "debug" / "master-events"))


def test_the_committed_openapi_document_is_valid_openapi_3_1():
    spec, base_uri = read_from_filename(str(SCHEMAS / "openapi.json"))
    assert spec["openapi"] == "3.1.0"
    validate(spec, base_uri=base_uri)


def test_the_stream_and_the_ingest_reference_the_published_line_schemas():
    spec = json.loads((SCHEMAS / "openapi.json").read_text())
    stream = spec["paths"]["/diag/masterEvents"]["get"]["responses"]["200"]["content"]
    assert stream["application/x-ndjson"]["schema"] == {"$ref": "#/components/schemas/StreamLine"}
    ingest = spec["paths"]["/diag/masterEvents"]["post"]["requestBody"]["content"]
    assert ingest["application/x-ndjson"]["schema"] == {"$ref": "#/components/schemas/IngestLine"}
    published = json.loads((SCHEMAS / "stream-line.json").read_text())
    embedded = spec["components"]["schemas"]["StreamLine"]
    assert sorted(embedded["$defs"]) == sorted(published["$defs"])


@pytest.fixture()
def server(tmp_path):
    if not pathlib.Path(BIN).exists():
        pytest.fail(f"{BIN} is missing: build it with `cargo build -p master-events-cli`")
    proc = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://"), line
        yield line.split()[2]
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("name", ["openapi.json", "asyncapi.json"])
def test_the_server_serves_the_committed_document(server, name):
    with urllib.request.urlopen(f"{server}/{name}", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        served = resp.read()
    assert served == (SCHEMAS / name).read_bytes()
