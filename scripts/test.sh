#!/usr/bin/env bash
# Runs the whole test suite of master-events. Installs what the tests need when it is
# missing (scripts/deps.sh: protoc and its includes, etcd, nats-server, Chromium and
# Node.js from Debian; jsonschema, pytest, the CloudEvents SDK and
# openapi-spec-validator from PyPI; the AsyncAPI parser from npm), then: formatting,
# lints, the Rust tests of every crate (all features: the etcd election and failover
# tests included; they replay every fuzz target's corpus, the coverage-guided runs
# being scripts/fuzz.sh, a suite of its own), a sink kept outside the workspace built
# into its own binary (scripts/own-binary.sh), the Python tests (published schemas,
# CloudEvents, the OpenAPI document), the Python client's own tests, the AsyncAPI
# document through its parser, and a smoke run of the benchmark harness against this
# project (both ingest modes; the peers are left to scripts/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# One clean build: incremental compilation only helps a second build, and its caches
# doubled the target directory (CI's disk is not large).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n== %s\n' "$*"; }

# The build and the tests take about 6 GiB of disk at their peak; say so up front
# when there is less, rather than failing in the linker with "No space left".
avail_mib=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1024 ))
echo "free disk here: ${avail_mib} MiB"
if [ "$avail_mib" -lt 8192 ]; then
  echo "WARNING: less than 8 GiB free; the build and the tests need about 6 GiB" >&2
fi

step "installing test dependencies (when missing)"
. scripts/deps.sh
deps_test

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test"
cargo test --workspace --all-features

# Fuzzing: cargo test above replayed each target's corpus and random mutations of
# it (the short subset); the coverage-guided runs are scripts/fuzz.sh SECONDS, a
# suite of its own (docs/security.md, "Fuzzing"): installing cargo-fuzz and building
# the instrumented targets took a quarter of this command's time on a fresh machine.

step "a sink from outside the workspace in its own binary (scripts/own-binary.sh)"
bash scripts/own-binary.sh

step "python consumer tests"
python3 -m pytest -q tests/python

step "the Python client (clients/python): installed with pip, its tests against a real server"
python3 -m pip install --quiet --disable-pip-version-check ./clients/python
rm -rf clients/python/build clients/python/*.egg-info
python3 -m pytest -q -p no:cacheprovider clients/python/tests

step "the AsyncAPI document, checked by the AsyncAPI parser (tests/asyncapi)"
(cd tests/asyncapi && npm ci --no-audit --no-fund --silent && node validate.mjs ../../schemas/asyncapi.json)

step "a fleet of two demo clusters into one JetStream stream (scripts/fleet.py)"
# Each cluster's events exactly once, in order, read by a durable consumer.
MASTER_EVENTS="${CARGO_TARGET_DIR:-target}/debug/master-events" \
  python3 scripts/fleet.py --clusters 2 --rate 0 --vbuckets 64 --timeout 120

step "benchmark harness: a smoke run against master-events, both ingest modes"
# The harness's own figures are in docs/benchmarks.md (scripts/bench.sh); this only
# checks that it still drives this project end to end: every row ran, nothing lost.
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build -q -p master-events-cli -p master-events-bench
smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
for mode in requests feed; do
  "$target_dir/debug/master-events-bench" --quick --systems master-events \
    --scenarios throughput,latency --readers 1,10 --duration 0.5 --latency-duration 0.5 \
    --master-events-ingest "$mode" --master-events-bin "$target_dir/debug/master-events" \
    --time-limit 120 --out-md "$smoke/$mode.md" --out-json "$smoke/$mode.json"
  python3 - "$smoke/$mode.json" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rows = r["throughput"] + r["latency"]
assert not r["errors"], f"{sys.argv[2]}: rows failed: {r['errors']}"
assert len(rows) == 4, f"{sys.argv[2]}: expected 4 rows, got {len(rows)}"
for row in rows:
    assert row["lost"] == 0 and row["totals"]["received"] > 0, f"{sys.argv[2]}: {row}"
print(f"{sys.argv[2]}: {len(rows)} rows, nothing lost")
PY
done
