#!/usr/bin/env bash
# Installs what building and testing master-events needs when it is missing, on a
# Debian/Ubuntu machine. Sourced by scripts/test.sh (everything) and scripts/install.sh
# (the build's needs only: `deps_build`).
#
# Packages are installed with --no-install-recommends, so every package a step relies
# on is named here explicitly, never left to a Recommends: line. protobuf-compiler, for
# one, only *recommends* libprotobuf-dev, which holds google/protobuf/*.proto that the
# etcd client's build imports; without it the build fails on a fresh machine.

_deps_apt() {
  local pkg wanted=()
  for pkg in "$@"; do [ -n "$pkg" ] && wanted+=("$pkg"); done
  set -- ${wanted[@]+"${wanted[@]}"}
  [ $# -gt 0 ] || return 0
  echo "installing Debian packages: $*"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to apt-get install $*" >&2; return 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

# What `cargo build --features etcd` needs: protoc and the well-known .proto includes
# (etcd-client); make, a C compiler, pkg-config, OpenSSL's and zlib's headers
# (librdkafka, built from source by rdkafka-sys for the kafka sink).
deps_build_packages() {
  local need=()
  command -v protoc >/dev/null || need+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
  command -v make >/dev/null || need+=(make)
  command -v cc >/dev/null || need+=(gcc)
  command -v pkg-config >/dev/null || need+=(pkg-config)
  [ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
  [ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
  [ ${#need[@]} -eq 0 ] || printf '%s\n' "${need[@]}"
}

deps_build() {
  local need
  mapfile -t need < <(deps_build_packages)
  _deps_apt "${need[@]}"
}

# Everything the test suite needs: the build's packages, etcd (election tests),
# Chromium and a font (the live page's browser test), nats-server (the nats sink's
# tests), g++ (libFuzzer, built by scripts/fuzz.sh, which installs cargo-fuzz
# itself), and Python's jsonschema, pytest and the CloudEvents SDK (the consumer tests).
deps_test() {
  local need
  mapfile -t need < <(deps_build_packages)
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v chromium >/dev/null || need+=(chromium)
  [ -d /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
  # libFuzzer (the fuzz targets, scripts/fuzz.sh) is C++: it needs a C++ compiler.
  command -v c++ >/dev/null || need+=(g++)
  # openssl: the Python client's https test makes its certificates with it.
  command -v openssl >/dev/null || need+=(openssl)
  _deps_apt "${need[@]}"
  # Node.js and npm: the AsyncAPI parser (tests/asyncapi, installed there by npm ci).
  command -v npm >/dev/null || _deps_apt nodejs npm
  # cloudevents: the SDK the stream's format=cloudevents is read with (its 2.x
  # `cloudevents.core` API); openapi-spec-validator checks schemas/openapi.json;
  # nats-py: the fleet's JetStream reader (scripts/fleet.py).
  if ! python3 -c 'import jsonschema, pytest, cloudevents.core.formats.json, openapi_spec_validator, nats.js' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check 'jsonschema>=4.18' 'pytest>=7' \
      'cloudevents>=2.2,<3' 'openapi-spec-validator>=0.7' 'nats-py>=2.6,<3'
  fi
}
