#!/usr/bin/env bash
# Runs the whole test suite of master-events. Installs what the tests need when it is
# missing (Python's jsonschema and pytest from PyPI; protoc, etcd, nats-server and
# Chromium from Debian), then: formatting, lints, the Rust tests of every crate (all
# features: the etcd election and failover tests included), and the Python consumer
# tests of the published schemas.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies (when missing)"
if ! python3 -c 'import jsonschema, pytest' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'jsonschema>=4.18' 'pytest>=7'
fi
# Debian packages: protoc (the etcd client's build), etcd (election tests), Chromium
# (the live page's browser test), nats-server (the nats sink's tests).
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v etcd >/dev/null || need+=(etcd-server)
command -v chromium >/dev/null || need+=(chromium)
# A real NATS server for the nats sink's tests (they start their own, and fail
# when it is missing).
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test"
cargo test --workspace --all-features

step "python consumer tests"
python3 -m pytest -q tests/python
