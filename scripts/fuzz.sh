#!/usr/bin/env bash
# Coverage-guided fuzzing of master-events (cargo-fuzz, libFuzzer): each target of
# crates/fuzzing, run for a bounded time from its committed corpus.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   # default: 10 s each, every target
#
# Targets: line ingest query config warm report schemas (docs/security.md,
# "Fuzzing", says what each checks). Runs on the stable toolchain without a
# sanitizer (`-s none`: the targets are safe Rust, a panic is the finding); set
# FUZZ_SANITIZER=address to use AddressSanitizer on a nightly toolchain.
# New inputs go to a temporary directory; with FUZZ_KEEP=1 those adding coverage
# are merged into fuzz/corpus/<target> (to commit). A crash stops the script with
# exit 1, its input saved in fuzz/artifacts/<target>/ (replay it:
# cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...). Installs
# cargo-fuzz when missing. Prints one line per target: runs, seconds, corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-10}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(line ingest query config warm report schemas)
fi
case "$secs" in
  ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install -q cargo-fuzz --locked
fi

sanitizer="${FUZZ_SANITIZER:-none}"
toolchain=()
if [ "$sanitizer" != none ]; then
  toolchain=(+nightly)
fi
# The fuzz project's own target directory; incremental caches are no use here.
export CARGO_INCREMENTAL=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! cargo "${toolchain[@]}" fuzz build -s "$sanitizer" >"$work/build.log" 2>&1; then
  echo "fuzz.sh: building the fuzz targets failed:" >&2
  tail -40 "$work/build.log" >&2
  exit 1
fi
status=0
for t in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "fuzz.sh: no target '$t' (fuzz/fuzz_targets/)" >&2
    exit 2
  fi
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  log="$work/$t.log"
  if cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$t" "$work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    new=$(find "$work/$t" -type f | wc -l)
    printf '%-8s ok: %s runs in %s s, coverage %s edges, %s new inputs\n' \
      "$t" "${runs:-?}" "$secs" "${cov:-?}" "$new"
    if [ "${FUZZ_KEEP:-0}" = 1 ] && [ "$new" -gt 0 ]; then
      cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$t" "fuzz/corpus/$t" "$work/$t" -- \
        -merge=1 >/dev/null 2>&1
      echo "         merged into fuzz/corpus/$t: $(find "fuzz/corpus/$t" -type f | wc -l) inputs"
    fi
  else
    status=1
    echo "$t FAILED: a promise broke; the input is in fuzz/artifacts/$t/. The end of its log:" >&2
    tail -40 "$log" >&2
  fi
done
exit "$status"
