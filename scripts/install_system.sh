#!/usr/bin/env bash
# Debian packages Zhiyin needs; safe to run again. Skips apt when everything is present.
#   python3-venv: the virtual environment on Debian/Ubuntu (PEP 668)
#   ffmpeg: audio decoding and MP4 encoding   espeak-ng: last-resort offline voice
#   chromium + chromium-driver: the browser test   libgl1, libglib2.0-0: OpenCV (mediapipe)
#   fonts-noto-cjk, fonts-noto-color-emoji: Chinese in burned subtitles and in the browser, the page's icons   sox: audio checks
set -euo pipefail
need=()
for pkg in python3-venv ffmpeg espeak-ng chromium chromium-driver libgl1 libglib2.0-0 fonts-noto-cjk fonts-noto-color-emoji sox; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
