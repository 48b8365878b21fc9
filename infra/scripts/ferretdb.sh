#!/usr/bin/env bash
# Local FerretDB v1 (MongoDB wire protocol on 127.0.0.1:27217, SQLite handler).
#   infra/scripts/ferretdb.sh start|stop|status
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BIN="$VAR/bin/ferretdb"
DATA_DIR="${TONGBAN_FERRETDB_DATA_DIR:-$VAR/ferretdb}"
PIDFILE="$RUN_DIR/ferretdb.pid"
LISTEN="127.0.0.1:27217"
START_TIMEOUT="${TONGBAN_FERRETDB_START_TIMEOUT:-60}"

start() {
  if pid_alive "$PIDFILE" ferretdb; then
    log "ferretdb: already running (pid $(cat "$PIDFILE"))"
    return 0
  fi
  [[ -x "$BIN" ]] || die "no $BIN: run 'make setup'"
  port_open 127.0.0.1 27217 && die "ferretdb: port 27217 is in use by a process without our pid file ($PIDFILE)"
  mkdir -p "$DATA_DIR/state" "$LOG_DIR" "$RUN_DIR"
  log "ferretdb: starting on $LISTEN (data $DATA_DIR, log $LOG_DIR/ferretdb.log)"
  # --debug-addr=- switches off the HTTP debug/metrics listener (default 127.0.0.1:8088).
  launch "$PIDFILE" "$LOG_DIR/ferretdb.log" "$BIN" \
    --handler=sqlite \
    --sqlite-url="file:$DATA_DIR/" \
    --state-dir="$DATA_DIR/state" \
    --listen-addr="$LISTEN" \
    --debug-addr="${TONGBAN_FERRETDB_DEBUG_ADDR:--}" \
    --telemetry=disable \
    --log-level="${TONGBAN_FERRETDB_LOG_LEVEL:-info}" \
    --log-format=text
  await_start "ferretdb on $LISTEN" "$PIDFILE" ferretdb "$START_TIMEOUT" "$LOG_DIR/ferretdb.log" \
    env TONGBAN_MONGO_URI="mongodb://$LISTEN/" "$VENV_PY" "$ROOT/infra/scripts/wait_ready.py" mongo --timeout 3
}

status() {
  if pid_alive "$PIDFILE" ferretdb; then
    echo "ferretdb: running (pid $(cat "$PIDFILE"), $LISTEN)"
  else
    echo "ferretdb: stopped"; return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile ferretdb "$PIDFILE" ferretdb "${TONGBAN_FERRETDB_STOP_TIMEOUT:-15}" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
