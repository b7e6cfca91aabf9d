#!/usr/bin/env bash
# Benchmarks master-events side by side with Redis Streams and NATS (see
# docs/benchmarks.md). Installs Debian's redis-server and nats-server when missing,
# builds the project and the harness in release mode, and runs the harness, which
# starts every server itself on free 127.0.0.1 ports and writes
# target/bench/results.{md,json}.
#
#   scripts/bench.sh              # the full run (about 3 minutes)
#   scripts/bench.sh --quick      # a smoke run (under a minute)
#   scripts/bench.sh --repeat 3   # every throughput and latency row three times,
#                                 # reported as medians and ranges (about 9 minutes)
#   scripts/bench.sh --systems master-events,redis --scenarios throughput --readers 10
#   scripts/bench.sh --repeat 3 --window 1   # one producer connection, a request at a
#                                 # time (docs/benchmarks.md's lead table)
#   scripts/bench.sh --scenarios watchers --watchers 19400
#                                 # that many streams at once on each system, from
#                                 # 127.0.0.2, .3, ...
#                                 # (each needs a descriptor in the harness and in the
#                                 # server: past the hard open-file limit, root)
#   scripts/bench.sh --scenarios watchers --systems master-events,nats \
#       --watchers 100000 --watchers-per-connection 200 --watchers-rate 1
#                                 # 100,000 streams, 200 on each connection (HTTP/2
#                                 # streams; NATS SUBs): 500 descriptors, not 100,000
#
# Any argument is passed to master-events-bench (`--help` lists them).
# CARGO_TARGET_DIR is honoured (default: target/).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to apt-get install ${missing[*]} (or install them and re-run)" >&2
    exit 1
  fi
  apt-get update -qq
  for pkg in "${missing[@]}"; do
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
      echo "Debian has no package named $pkg here" >&2
      exit 1
    fi
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The package starts a system-wide redis-server on port 6379 where an init
  # system runs; the harness does not use it (it starts its own).
fi

step "building master-events and master-events-bench (release)"
cargo build --release -p master-events-cli -p master-events-bench

target="${CARGO_TARGET_DIR:-target}"
step "running the harness"
PATH="$PATH:/usr/sbin" exec "$target/release/master-events-bench" \
  --master-events-bin "$target/release/master-events" "$@"
