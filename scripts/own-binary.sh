#!/usr/bin/env bash
# Builds examples/own-binary — a team's own master-events binary with a sink kept
# outside this workspace — and checks that its sink is a first-class one: listed by
# `sinks` (with its config schema), named by config validation, and fed by `serve`.
# Part of scripts/test.sh. Uses a temp dir, a free port (--listen 127.0.0.1:0) and a
# deadline for every wait; the server is killed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

# The workspace's target directory: the example is its own workspace, but with the
# same lock file and profile it reuses every dependency the test suite built (a
# target directory of its own was a second ~2 GB copy and ~3 minutes of building,
# librdkafka's C build among them). OWN_BINARY_TARGET_DIR builds it elsewhere.
export CARGO_TARGET_DIR="${OWN_BINARY_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}}"

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    { kill -9 "$server_pid"; wait "$server_pid"; } 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "own-binary: FAILED: $*" >&2; exit 1; }

# The workspace's lock file, so that it builds with the versions the workspace was
# tested with (cargo drops the entries it does not need; the copy is not committed).
cp Cargo.lock examples/own-binary/Cargo.lock
cargo build --quiet --manifest-path examples/own-binary/Cargo.toml
bin="$CARGO_TARGET_DIR/debug/own-master-events"

# 1. `sinks` lists it beside the built-in ones, and shows its keys.
# (Captured first: `grep -q` stops reading at its match, and with pipefail the
# writer's exit would decide the pipeline.)
"$bin" sinks > "$work/sinks.out" || fail "sinks failed"
grep -q '^  type-count ' "$work/sinks.out" || fail "sinks does not list type-count: $(cat "$work/sinks.out")"
grep -q '^  file ' "$work/sinks.out" || fail "sinks lost the built-in file sink"
"$bin" sinks --schema type-count > "$work/schema.out" || fail "sinks --schema type-count failed"
grep -q '"path"' "$work/schema.out" || fail "sinks --schema type-count has no path key"

# 2. Config validation knows it: a misspelt key is named, an unknown type lists it.
printf '[[sinks]]\ntype = "type-count"\npaht = "x"\n' > "$work/bad.toml"
if "$bin" serve --config "$work/bad.toml" --listen 127.0.0.1:0 >"$work/bad.out" 2>&1; then
  fail "serve accepted a type-count sink with an unknown key"
fi
grep -q 'paht' "$work/bad.out" || fail "the config error does not name the unknown key: $(cat "$work/bad.out")"
printf '[[sinks]]\ntype = "nope"\n' > "$work/nope.toml"
"$bin" serve --config "$work/nope.toml" --listen 127.0.0.1:0 >"$work/nope.out" 2>&1 && fail "serve accepted an unknown sink type"
grep -q 'type-count' "$work/nope.out" || fail "the unknown-type error does not list type-count: $(cat "$work/nope.out")"

# 3. `serve` feeds it.
printf '[[sinks]]\ntype = "type-count"\npath = "%s"\n' "$work/counts.tsv" > "$work/good.toml"
"$bin" serve --config "$work/good.toml" --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
url=
for _ in $(seq 1 200); do
  url=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$work/serve.out" | head -1)
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "serve exited: $(cat "$work/serve.err")"
  sleep 0.05
done
[ -n "$url" ] || fail "serve did not say where it listens within 10 s"
"$bin" emit "$url" vbucketMoveDone bucket=default vbucket=3 >/dev/null
"$bin" emit "$url" vbucketMoveDone bucket=default vbucket=4 >/dev/null
"$bin" emit "$url" failover 'hosts=["10.0.0.7:8091"]' >/dev/null
for _ in $(seq 1 200); do
  grep -qx $'vbucketMoveDone\t2' "$work/counts.tsv" 2>/dev/null \
    && grep -qx $'failover\t1' "$work/counts.tsv" && break
  sleep 0.05
done
grep -qx $'vbucketMoveDone\t2' "$work/counts.tsv" 2>/dev/null \
  || fail "type-count did not count the events within 10 s: $(cat "$work/counts.tsv" 2>/dev/null)"
echo "own-binary: type-count is listed, validated and fed by serve"
