#!/usr/bin/env bash
# `make test`: start the broker/store only if they are not running, run pytest, stop what
# was started here (also on failure or Ctrl-C), and exit with pytest's exit code. The SCRAM
# users of principals declared since the broker's data dir was formatted are added first.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

state="$RUN_DIR/test-started.$$"
trap '"$ROOT/infra/scripts/platform.sh" release "$state" || true' EXIT
"$ROOT/infra/scripts/platform.sh" ensure "$state"
if kafka_is_local && [[ "$TONGBAN_KAFKA_SECURITY" != PLAINTEXT ]]; then
  "$VENV_PY" -m tongban.ops principals apply >/dev/null
fi

set +e
# Arguments replace the default selection (the whole of tests/ but the tests of the
# three-broker cluster, which `make cluster-test` runs), e.g. one module.
if (($#)); then
  "$VENV_PY" -m pytest -q "$@"
else
  "$VENV_PY" -m pytest -q -m "not cluster" tests
fi
rc=$?
set -e
exit "$rc"
