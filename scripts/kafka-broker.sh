#!/usr/bin/env bash
# Runs the kafka sink's tests against a real Kafka broker, for what librdkafka's
# mock cluster (the main suite's) cannot show: fencing by a new producer of the same
# transactional.id, aborted transactions hidden from read_committed readers, topic
# creation; and the SIGKILL, failover and SIGSTOP-past-the-lease hand-offs of
# crates/cli/tests/kafka_handoff.rs against it. Not part of scripts/test.sh.
#
#   KAFKA_BROKERS=127.0.0.1:9092 bash scripts/kafka-broker.sh
#
# The broker must allow topic creation (each run makes fresh topics) and
# transactions (a single broker needs transaction.state.log.replication.factor=1
# and transaction.state.log.min.isr=1). No Kafka broker can be installed from the
# package registries this project builds from; docs/scaling.md says what was tried
# instead (tansu, a Kafka-protocol broker from crates.io) and what it showed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KAFKA_BROKERS:-}" ]; then
  echo "kafka-broker.sh: set KAFKA_BROKERS=host:port to a Kafka broker (see the comment at the top)" >&2
  exit 2
fi
export KAFKA_BROKERS
cargo test -p master-events-sink-kafka --test broker -- --ignored --test-threads 1
cargo test -p master-events-cli --all-features --test kafka_handoff -- --include-ignored --test-threads 1
