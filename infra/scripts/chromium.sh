#!/usr/bin/env bash
# Debian's Chromium for the report's browser test (tests/e2e/test_feedback_supervision.py):
# installed with apt-get when /usr/bin/chromium is missing; needs root (or sudo).
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "chromium: /usr/bin/chromium is missing and installing Debian's package needs root" >&2
  exit 1
fi
# stale package lists are refreshed once, only when the install needs it
"${sudo[@]}" apt-get install -y --no-install-recommends chromium \
  || { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y --no-install-recommends chromium; }
