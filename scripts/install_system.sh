#!/usr/bin/env bash
# Debian packages Zhiyin needs; safe to run again. Skips apt when everything is present.
set -euo pipefail
need=()
for pkg in ffmpeg espeak-ng chromium chromium-driver libgl1 libglib2.0-0 sox; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
