#!/usr/bin/env bash
# Start and stop the local platform (Kafka + FerretDB).
#   infra/scripts/platform.sh up|down|status
#   infra/scripts/platform.sh ensure STATEFILE   # start what is not running, record it
#   infra/scripts/platform.sh release STATEFILE  # stop only what `ensure` recorded
# When TONGBAN_KAFKA_BOOTSTRAP / TONGBAN_MONGO_URI point elsewhere, no local broker/store
# is started; `up` only checks that the external one answers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S="$ROOT/infra/scripts"

kafka_running() { pid_alive "$KAFKA_PIDFILE" kafka.Kafka || port_open "${LOCAL_KAFKA_BOOTSTRAP%:*}" "${LOCAL_KAFKA_BOOTSTRAP##*:}"; }
mongo_running() { pid_alive "$RUN_DIR/ferretdb.pid" ferretdb || port_open 127.0.0.1 27217; }

check_external() {
  local what="$1" target="$2"
  log "$what: external $target (not starting a local one); checking it answers"
  "$VENV_PY" "$S/wait_ready.py" "$what" --timeout 5 --wait 30 || die "$what: $target does not answer"
}

up() {
  if kafka_is_local; then "$S/kafka.sh" start; else check_external kafka "$TONGBAN_KAFKA_BOOTSTRAP"; fi
  if mongo_is_local; then "$S/ferretdb.sh" start; else check_external mongo "$TONGBAN_MONGO_URI"; fi
}

down() {
  "$S/ferretdb.sh" stop
  "$S/kafka.sh" stop
}

ensure() {
  local state="$1"
  mkdir -p "$RUN_DIR"; : > "$state"
  exec 9>"$RUN_DIR/platform.lock"; flock 9
  if kafka_is_local; then
    if kafka_running; then
      mode="$(cat "$RUN_DIR/$KAFKA_INSTANCE.security" 2>/dev/null || echo PLAINTEXT)"
      [[ "$mode" == "$TONGBAN_KAFKA_SECURITY" ]] || die "kafka: the running local broker is $mode, \
not $TONGBAN_KAFKA_SECURITY: 'make down' (and 'make clean-data' if it predates Kafka identities), then retry"
      log "kafka: already running, leaving it as it is"
    else "$S/kafka.sh" start; echo kafka >> "$state"; fi
  else
    check_external kafka "$TONGBAN_KAFKA_BOOTSTRAP"
  fi
  if mongo_is_local; then
    if mongo_running; then log "ferretdb: already running, leaving it as it is"
    else "$S/ferretdb.sh" start; echo ferretdb >> "$state"; fi
  else
    check_external mongo "$TONGBAN_MONGO_URI"
  fi
}

release() {
  local state="$1"
  [[ -f "$state" ]] || return 0
  grep -qx ferretdb "$state" && "$S/ferretdb.sh" stop
  grep -qx kafka "$state" && "$S/kafka.sh" stop
  rm -f "$state"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) "$S/kafka.sh" status || true; "$S/ferretdb.sh" status || true ;;
  ensure) ensure "${2:?state file}" ;;
  release) release "${2:?state file}" ;;
  *) echo "usage: $0 up|down|status|ensure FILE|release FILE" >&2; exit 2 ;;
esac
