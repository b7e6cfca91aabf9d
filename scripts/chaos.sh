#!/usr/bin/env bash
# Runs the cluster fault-injection suite (crates/chaos): builds master-events with
# etcd discovery and the suite, then runs every scenario against real etcd and three
# `master-events serve` nodes on loopback, with a printed seed (random unless given).
# Prints a table (fault, acknowledged, lost, duplicated, stall, time without master)
# and writes the JSON report. Exit status: 0 every scenario passed, 1 an invariant
# failed (the failed invariants and the seed are printed), 2 the suite could not
# run, 3 the time limit was reached.
#
#   scripts/chaos.sh [SEED] [extra master-events-chaos arguments...]
#   CHAOS_SCENARIO=double-fault CHAOS_JSON=out.json scripts/chaos.sh 42 --keep-logs /tmp/logs
set -euo pipefail
cd "$(dirname "$0")/.."

seed="${1:-}"
[ $# -gt 0 ] && shift
if [ -z "$seed" ]; then
    seed="$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')"
fi
json="${CHAOS_JSON:-target/chaos-report.json}"
echo "chaos seed: $seed"

# The server in a target directory of its own: a build of the workspace without the
# etcd feature replaces target/debug/master-events (and a build with it, found
# fresh, does not put it back).
cargo build --target-dir target/chaos -p master-events-cli --features etcd
cargo build -p master-events-chaos

target/debug/master-events-chaos --scenario "${CHAOS_SCENARIO:-all}" --seed "$seed" \
    --bin target/chaos/debug/master-events --etcd "${ETCD_BIN:-etcd}" \
    --time-limit "${CHAOS_TIME_LIMIT:-1200}" --out-json "$json" "$@"
