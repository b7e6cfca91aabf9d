#!/usr/bin/env bash
# Regenerates master_events/models.py from the repository's committed schemas/
# (see generate.py for why the generator is our own). Commit the result;
# tests/test_models.py fails when the committed module differs from a fresh generation.
# Usage: clients/python/generate.sh [--out FILE]
set -euo pipefail
exec python3 "$(dirname "$0")/generate.py" "$@"
