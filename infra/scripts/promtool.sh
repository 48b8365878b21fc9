#!/usr/bin/env bash
# Prometheus's rule checker into var/bin/promtool (make alerts-check, tests/integration/
# test_alert_rules_promtool.py), taken from Debian's `prometheus` package without installing
# it (no server, no service): building cmd/promtool from the Go module takes well over five
# minutes on this machine (it compiles the Kubernetes client).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=var/bin/promtool
if [[ -x $target ]]; then
  exit 0
fi
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download drops root to _apt, which must write here
trap 'rm -rf "$work"' EXIT
# apt-get download writes into the current directory; stale package lists are refreshed once
(cd "$work" && { apt-get download prometheus || { apt-get update && apt-get download prometheus; }; })
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
mkdir -p var/bin
install -m 755 "$work/root/usr/bin/promtool" "$target"
"$target" --version | head -1
