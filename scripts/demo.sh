#!/usr/bin/env bash
# The main job on a fresh machine: installs what the build needs when it is missing
# (protoc and its includes, for etcd discovery: scripts/deps.sh), installs the binary a
# cluster operator deploys — `master-events` with every discovery backend (static and
# etcd) — with `cargo install`, then runs `master-events demo` with the arguments given.
#
#   bash scripts/demo.sh                  # the demo on http://127.0.0.1:9898
#   bash scripts/demo.sh --listen 127.0.0.1:0 --exit-when-done
#   MASTER_EVENTS_NO_INSTALL=1 bash scripts/demo.sh   # use the installed binary as it is
#
# The binary goes where `cargo install` puts binaries (~/.cargo/bin unless CARGO_HOME or
# CARGO_INSTALL_ROOT say otherwise), so the `master-events tail ...` commands the demo
# prints work as printed once that directory is on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/deps.sh
root="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}"
bin="$root/bin/master-events"
if [ -z "${MASTER_EVENTS_NO_INSTALL:-}" ] || [ ! -x "$bin" ]; then
  deps_build
  cargo install --locked --quiet --path crates/cli --features etcd --root "$root"
fi
case ":$PATH:" in
  *":$root/bin:"*) ;;
  *) echo "note: $root/bin is not on PATH; add it to run the commands below as printed" >&2 ;;
esac
exec "$bin" demo "$@"
