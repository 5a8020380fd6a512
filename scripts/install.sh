#!/usr/bin/env bash
# Install everything Zhiyin needs on a fresh Debian/Ubuntu machine: system packages, then
# the Python requirements (torch stays the pinned CPU build). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system.sh
PY=${PYTHON:-python3}
$PY -m pip install --disable-pip-version-check -q -r requirements.txt
# Refuse a silently swapped torch (a CUDA build pulled by some dependency).
$PY - <<'PYEOF'
import sys, torch
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"torch {torch.__version__} was installed instead of 2.13.0; reinstall with pip install torch==2.13.0")
PYEOF
echo "Zhiyin is installed. Start it with: python start.py" >&2
