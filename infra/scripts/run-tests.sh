#!/usr/bin/env bash
# `make test`: start the broker/store only if they are not running, run pytest, stop what
# was started here (also on failure or Ctrl-C), and exit with pytest's exit code.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

state="$RUN_DIR/test-started.$$"
trap '"$ROOT/infra/scripts/platform.sh" release "$state" || true' EXIT
"$ROOT/infra/scripts/platform.sh" ensure "$state"

set +e
"$VENV_PY" -m pytest -q tests "$@"
rc=$?
set -e
exit "$rc"
