# Shared helpers for the infra scripts (sourced, not executed).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VAR="$ROOT/var"
RUN_DIR="$VAR/run"
LOG_DIR="$VAR/log"
VENV_PY="$ROOT/.venv/bin/python"

# Defaults from docs/conventions.md. Another broker can run beside the default one with
# TONGBAN_KAFKA_INSTANCE=name TONGBAN_KAFKA_PORT_BASE=29092 (its own pid, log, config and
# data files; see README "Configuration").
KAFKA_INSTANCE="${TONGBAN_KAFKA_INSTANCE:-kafka}"
[[ "$KAFKA_INSTANCE" =~ ^[a-z0-9-]+$ ]] || { echo "TONGBAN_KAFKA_INSTANCE may hold only a-z, 0-9 and '-'" >&2; exit 2; }
KAFKA_PORT_BASE="${TONGBAN_KAFKA_PORT_BASE:-19092}"
KAFKA_PORT="${TONGBAN_KAFKA_PORT:-$KAFKA_PORT_BASE}"                        # SASL_PLAINTEXT clients
KAFKA_CONTROLLER_PORT="${TONGBAN_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT_BASE + 1))}"
KAFKA_SSL_PORT="${TONGBAN_KAFKA_SSL_PORT:-$((KAFKA_PORT_BASE + 2))}"        # SASL_SSL clients
LOCAL_KAFKA_SASL_PLAINTEXT="127.0.0.1:$KAFKA_PORT"
LOCAL_KAFKA_SASL_SSL="127.0.0.1:$KAFKA_SSL_PORT"
KAFKA_PIDFILE="$RUN_DIR/$KAFKA_INSTANCE.pid"
LOCAL_MONGO_URI="mongodb://127.0.0.1:27217/"

# The local broker always authenticates (SCRAM-SHA-512) and authorizes (ACLs generated from
# infra/topics.toml): SASL_PLAINTEXT on 19092 (default) or SASL_SSL on 19094. PLAINTEXT is
# accepted only for an external cluster named by TONGBAN_KAFKA_BOOTSTRAP.
TONGBAN_KAFKA_SECURITY="${TONGBAN_KAFKA_SECURITY:-SASL_PLAINTEXT}"
case "$TONGBAN_KAFKA_SECURITY" in
  SASL_PLAINTEXT) LOCAL_KAFKA_BOOTSTRAP="$LOCAL_KAFKA_SASL_PLAINTEXT" ;;
  SASL_SSL)       LOCAL_KAFKA_BOOTSTRAP="$LOCAL_KAFKA_SASL_SSL" ;;
  PLAINTEXT)      LOCAL_KAFKA_BOOTSTRAP="$LOCAL_KAFKA_SASL_PLAINTEXT" ;;  # kafka.sh start refuses it
  *) echo "TONGBAN_KAFKA_SECURITY must be SASL_PLAINTEXT, SASL_SSL or PLAINTEXT (got '$TONGBAN_KAFKA_SECURITY')" >&2; exit 2 ;;
esac
export TONGBAN_KAFKA_SECURITY

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# kafka_is_local: true when TONGBAN_KAFKA_BOOTSTRAP is unset or names the local broker.
kafka_is_local() {
  local b="${TONGBAN_KAFKA_BOOTSTRAP:-}"
  [[ -z "$b" ]] && return 0
  case "$b" in
    "127.0.0.1:$KAFKA_PORT"|"localhost:$KAFKA_PORT"|"127.0.0.1:$KAFKA_SSL_PORT"|"localhost:$KAFKA_SSL_PORT") return 0 ;;
  esac
  return 1
}

# mongo_is_local: true when TONGBAN_MONGO_URI is unset or names the local FerretDB.
mongo_is_local() {
  local u="${TONGBAN_MONGO_URI:-}"
  [[ -z "$u" ]] && return 0
  u="${u#mongodb://}"; u="${u##*@}"; u="${u%%/*}"; u="${u%%\?*}"
  case "$u" in
    127.0.0.1:27217|localhost:27217) return 0 ;;
  esac
  return 1
}

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is running and its command line
# contains PATTERN (guards against a recycled pid).
pid_alive() {
  local pidfile="$1" pattern="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$pattern"
}

# port_open HOST PORT: something accepts TCP connections there.
port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# stop_pidfile NAME PIDFILE PATTERN GRACE_SECONDS: SIGTERM, wait, then SIGKILL.
stop_pidfile() {
  local name="$1" pidfile="$2" pattern="$3" grace="$4" pid i
  if ! pid_alive "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  pid="$(cat "$pidfile")"
  log "$name: stopping pid $pid (SIGTERM, up to ${grace}s)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: still running after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$pidfile"
  log "$name: stopped"
}

# launch PIDFILE OUTFILE CMD...: start CMD detached in its own session; the pid file holds
# the pid of CMD itself (bash records $$ and then execs it).
launch() {
  local pidfile="$1" outfile="$2"; shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$outfile")"
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$outfile" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s "$pidfile" ]] && return 0; sleep 0.1; done
  die "could not start: $*"
}

# await_start NAME PIDFILE PATTERN TIMEOUT LOGFILE PROBE...: wait until the PROBE command
# succeeds, failing at once (with the log's tail) if the process exits during start-up.
await_start() {
  local name="$1" pidfile="$2" pattern="$3" timeout="$4" logfile="$5"
  shift 5
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pidfile" "$pattern"; then
      tail -30 "$logfile" >&2 2>/dev/null || true
      die "$name: exited during start-up"
    fi
    if "$@" 2>/dev/null; then
      log "$name: ready (pid $(cat "$pidfile"))"
      return 0
    fi
    sleep 0.5
  done
  die "$name: not ready after ${timeout}s (see $logfile)"
}
