#!/usr/bin/env bash
# Runs the kafka sink's tests against a real Kafka-protocol broker, for what
# librdkafka's mock cluster (the main suite's) cannot show: fencing by a new
# producer of the same transactional.id, aborted transactions hidden from
# read_committed readers, topic creation; and the SIGKILL and failover hand-offs of
# crates/cli/tests/kafka_handoff.rs against it.
#
# The broker is tansu (crates.io: an Apache-licensed Kafka-protocol broker written in
# Rust), built once into target/tools (several minutes, ~2 GB while it builds) and
# run with in-memory storage on a free loopback port; it is killed on any exit.
# Not part of scripts/test.sh: the build alone would take a third of its time.
#
#   bash scripts/kafka-broker.sh            # build (once), start, run the tests
#   KAFKA_BROKERS=host:port bash scripts/kafka-broker.sh   # use a broker of your own
set -euo pipefail
cd "$(dirname "$0")/.."

broker_pid=
work=$(mktemp -d)
cleanup() {
  if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${KAFKA_BROKERS:-}" ]; then
  tools="$PWD/target/tools"
  if [ ! -x "$tools/bin/tansu" ]; then
    echo "building tansu 0.6.0 into $tools (once)"
    CARGO_TARGET_DIR="$work/build" cargo install --quiet --locked --root "$tools" \
      tansu --version 0.6.0 --features dynostore
    rm -rf "$work/build"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$tools/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "memory://tansu/" > "$work/broker.log" 2>&1 &
  broker_pid=$!
  # Wait (at most 30 s) for it to accept connections.
  for _ in $(seq 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then break; fi
    kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; echo "the broker exited" >&2; exit 1; }
    sleep 0.1
  done
  export KAFKA_BROKERS="127.0.0.1:$port"
  echo "tansu broker at $KAFKA_BROKERS"
fi

cargo test -p master-events-sink-kafka --test broker -- --ignored --test-threads 1
cargo test -p master-events-cli --all-features --test kafka_handoff -- --test-threads 1
