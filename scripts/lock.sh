#!/usr/bin/env bash
# Refresh the lock: compile requirements.in (what we ask for) into requirements.txt (every package,
# transitive ones too, at the exact version and hashes the tests then pass with). Run it after
# editing requirements.in, then run the tests, then commit both files.
#   bash scripts/lock.sh                      # keep every pin that still fits, add what is new
#   bash scripts/lock.sh --upgrade-package streamlit   # move one dependency deliberately
#   bash scripts/lock.sh --upgrade            # move everything (then read the diff)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ZHIYIN_VENV:-.venv}
[ -x "$VENV/bin/pip-compile" ] || { echo "Run bash scripts/install.sh first (it installs pip-tools into $VENV)." >&2; exit 1; }
"$VENV/bin/pip-compile" --quiet --strip-extras --allow-unsafe --generate-hashes \
  --no-emit-find-links --no-emit-index-url -o requirements.txt "$@" requirements.in
echo "requirements.txt refreshed; run the tests before committing it." >&2
