#!/usr/bin/env bash
# Local single-node Kafka (KRaft combined mode) from the Maven Central jars in var/kafka/libs.
#   infra/scripts/kafka.sh start|stop|status|render
# TONGBAN_KAFKA_SECURITY=SASL_PLAINTEXT (default, 127.0.0.1:19092) or SASL_SSL (127.0.0.1:19094):
# SCRAM-SHA-512 logins and ACLs either way. TONGBAN_KAFKA_INSTANCE and TONGBAN_KAFKA_PORT_BASE
# run another broker beside the default one (see lib.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KAFKA_DIR="$VAR/kafka"
LIBS="$KAFKA_DIR/libs"
TLS_DIR="$KAFKA_DIR/tls"  # one local CA and broker certificate (127.0.0.1/localhost) for every instance
if [[ "$KAFKA_INSTANCE" == kafka ]]; then
  INSTANCE_DIR="$KAFKA_DIR"; INSTANCE_LOG_DIR="$LOG_DIR"
else  # another broker beside the default one: its own files under var/kafka/<instance>/
  INSTANCE_DIR="$KAFKA_DIR/$KAFKA_INSTANCE"; INSTANCE_LOG_DIR="$LOG_DIR/$KAFKA_INSTANCE"
fi
DATA_DIR="${TONGBAN_KAFKA_DATA_DIR:-$INSTANCE_DIR/data}"
CONFIG="$INSTANCE_DIR/server.properties"
PIDFILE="$KAFKA_PIDFILE"
MODEFILE="$RUN_DIR/$KAFKA_INSTANCE.security"
HEAP="${TONGBAN_KAFKA_HEAP:--Xmx512m -Xms512m}"
START_TIMEOUT="${TONGBAN_KAFKA_START_TIMEOUT:-120}"
# Every principal's secret (admin included), made by `make setup`; see tongban/ops/principals.py.
SECRETS_FILE="${TONGBAN_KAFKA_SECRETS_FILE:-$KAFKA_DIR/principals.secrets}"
export TONGBAN_KAFKA_SECRETS_FILE="$SECRETS_FILE"
ADMIN_USER="admin"
TLS_PASSWORD="tongban-local-tls"

JAVA="${JAVA:-java}"
JVM_OPTS=(
  $HEAP
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:ActiveProcessorCount=2
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.properties"
  -Dkafka.logs.dir="$INSTANCE_LOG_DIR"
  -DZstdTempFolder="$KAFKA_DIR/tmp" -Dorg.xerial.snappy.tempdir="$KAFKA_DIR/tmp"
)

java_cp() { "$JAVA" -cp "$LIBS/*" "$@"; }

# The secrets file holds a secret for every declared principal (adds what is missing).
ensure_secrets() {
  "$VENV_PY" -m tongban.ops principals init >&2 || die "could not write $SECRETS_FILE"
}

admin_password() {
  local line
  line="$(grep -m1 "^$ADMIN_USER=" "$SECRETS_FILE" 2>/dev/null)" || die "no $ADMIN_USER secret in $SECRETS_FILE"
  printf '%s' "${line#*=}"
}

# render_file TEMPLATE OUT: fill the @NAME@ placeholders; the output is readable by its owner only.
render_file() {
  local admin_password listener_lc
  admin_password="$(admin_password)"
  listener_lc="$(tr '[:upper:]' '[:lower:]' <<<"$INTER")"
  ( umask 077; sed \
    -e "s#@LISTENERS@#$LISTENERS#" \
    -e "s#@ADVERTISED_LISTENERS@#$ADVERTISED#" \
    -e "s#@INTER_BROKER_LISTENER@#$INTER#" \
    -e "s#@INTER_BROKER_LISTENER_LC@#$listener_lc#" \
    -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#" \
    -e "s#@DATA_DIR@#$DATA_DIR#" \
    -e "s#@TLS_DIR@#$TLS_DIR#g" \
    -e "s#@TLS_PASSWORD@#$TLS_PASSWORD#g" \
    -e "s#@ADMIN_USER@#$ADMIN_USER#g" \
    -e "s#@ADMIN_PASSWORD@#$admin_password#g" \
    "$@" > "$OUT.tmp" )
  mv "$OUT.tmp" "$OUT"
}

render() {
  [[ -d "$LIBS" ]] || die "no Kafka jars in $LIBS: run 'make setup'"
  mkdir -p "$KAFKA_DIR/tmp" "$INSTANCE_DIR" "$DATA_DIR" "$INSTANCE_LOG_DIR" "$RUN_DIR"
  local controller="CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
  case "$TONGBAN_KAFKA_SECURITY" in
    SASL_PLAINTEXT) INTER=SASL_PLAINTEXT; ADVERTISED="SASL_PLAINTEXT://$LOCAL_KAFKA_SASL_PLAINTEXT" ;;
    SASL_SSL)       INTER=SASL_SSL;       ADVERTISED="SASL_SSL://$LOCAL_KAFKA_SASL_SSL" ;;
    *) die "the local broker always authenticates: TONGBAN_KAFKA_SECURITY=SASL_PLAINTEXT (default) or SASL_SSL; PLAINTEXT is for an external cluster (TONGBAN_KAFKA_BOOTSTRAP)" ;;
  esac
  LISTENERS="$ADVERTISED,$controller"
  ensure_secrets
  local files=("$ROOT/infra/kafka/server.properties.in" "$ROOT/infra/kafka/auth.properties.in")
  [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]] && files+=("$ROOT/infra/kafka/sasl_ssl.properties.in")
  OUT="$CONFIG" render_file "${files[@]}"
  OUT="$INSTANCE_DIR/client.properties" render_file "$ROOT/infra/kafka/client.properties.in"
  OUT="$INSTANCE_DIR/client-sasl_ssl.properties" render_file "$ROOT/infra/kafka/client-sasl_ssl.properties.in"
}

# A self-signed CA and a broker certificate for 127.0.0.1/localhost, made with keytool.
# ca.pem is what Python clients load (TONGBAN_KAFKA_CAFILE).
make_tls() {
  [[ -f "$TLS_DIR/broker.p12" && -f "$TLS_DIR/truststore.p12" && -f "$TLS_DIR/ca.pem" ]] && return 0
  log "kafka: generating a local CA and broker keystore in $TLS_DIR"
  rm -rf "$TLS_DIR"; mkdir -p "$TLS_DIR"
  local kt=(keytool -storetype PKCS12 -storepass "$TLS_PASSWORD" -keypass "$TLS_PASSWORD" -noprompt)
  (
    cd "$TLS_DIR"
    "${kt[@]}" -genkeypair -keystore ca.p12 -alias ca -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=Tongban local CA" -ext bc:c >/dev/null 2>&1
    "${kt[@]}" -exportcert -rfc -keystore ca.p12 -alias ca -file ca.pem >/dev/null 2>&1
    "${kt[@]}" -genkeypair -keystore broker.p12 -alias broker -keyalg RSA -keysize 2048 \
      -validity 825 -dname "CN=localhost" >/dev/null 2>&1
    "${kt[@]}" -certreq -keystore broker.p12 -alias broker -file broker.csr >/dev/null 2>&1
    "${kt[@]}" -gencert -keystore ca.p12 -alias ca -infile broker.csr -outfile broker.pem -rfc \
      -validity 825 -ext "SAN=ip:127.0.0.1,dns:localhost" -ext "EKU=serverAuth" >/dev/null 2>&1
    "${kt[@]}" -importcert -keystore broker.p12 -alias ca -file ca.pem >/dev/null 2>&1
    "${kt[@]}" -importcert -keystore broker.p12 -alias broker -file broker.pem >/dev/null 2>&1
    "${kt[@]}" -importcert -keystore truststore.p12 -alias ca -file ca.pem >/dev/null 2>&1
    rm -f broker.csr
  )
}

# The data dir is formatted once, with a SCRAM-SHA-512 credential for every declared principal
# from the secrets file (principals declared later are added by `tongban.ops principals apply`).
# The marker records a hash of the admin secret it was formatted with: the broker logs in to
# itself as admin, so a data dir and a secrets file that disagree would start but not work.
format_once() {
  local marker="$DATA_DIR/.tongban-principals" admin_hash
  admin_hash="$(admin_password | sha256sum | cut -c1-16)"
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    if [[ ! -f "$marker" ]]; then
      die "$DATA_DIR was formatted before Kafka identities (no $marker): 'make clean-data' formats it anew with every principal"
    fi
    if [[ "$(cat "$marker")" != "$admin_hash" ]]; then
      die "$DATA_DIR was formatted with another admin secret than $SECRETS_FILE holds: restore that file, or 'make clean-data'"
    fi
    return 0
  fi
  local uuid scram=() arg
  # The nodes of one cluster (infra/scripts/cluster.sh) are formatted with one shared id.
  uuid="${TONGBAN_KAFKA_CLUSTER_ID:-$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)}"
  [[ -n "$uuid" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
  while IFS= read -r arg; do scram+=(--add-scram "$arg"); done \
    < <("$VENV_PY" -m tongban.ops principals scram-args)
  ((${#scram[@]})) || die "no principals to add (python -m tongban.ops principals scram-args)"
  log "kafka: formatting $DATA_DIR (cluster id $uuid, $((${#scram[@]} / 2)) SCRAM users)"
  # Static voters (controller.quorum.voters), so no --standalone.
  java_cp kafka.tools.StorageTool format --ignore-formatted -t "$uuid" -c "$CONFIG" "${scram[@]}" \
    >>"$INSTANCE_LOG_DIR/kafka-format.log" 2>&1 \
    || { tail -20 "$INSTANCE_LOG_DIR/kafka-format.log" >&2; die "format failed"; }
  echo "$admin_hash" > "$marker"
}

start() {
  if pid_alive "$PIDFILE" kafka.Kafka; then
    local mode; mode="$(cat "$MODEFILE" 2>/dev/null || echo PLAINTEXT)"
    [[ "$mode" == "$TONGBAN_KAFKA_SECURITY" ]] \
      || die "kafka ($KAFKA_INSTANCE): already running in $mode mode; 'make down' first to switch to $TONGBAN_KAFKA_SECURITY"
    log "kafka ($KAFKA_INSTANCE): already running (pid $(cat "$PIDFILE"), $mode)"
    return 0
  fi
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SSL_PORT"; do
    port_open 127.0.0.1 "$port" \
      && die "kafka ($KAFKA_INSTANCE): port $port is in use by a process without our pid file ($PIDFILE)"
  done
  render
  [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]] && make_tls
  format_once
  log "kafka ($KAFKA_INSTANCE): starting ($TONGBAN_KAFKA_SECURITY on $LOCAL_KAFKA_BOOTSTRAP, log $INSTANCE_LOG_DIR/kafka.log)"
  echo "$TONGBAN_KAFKA_SECURITY" > "$MODEFILE"
  launch "$PIDFILE" "$INSTANCE_LOG_DIR/kafka.out" "$JAVA" "${JVM_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$CONFIG"
  wait_ready
}

wait_ready() {
  await_start "kafka on $LOCAL_KAFKA_BOOTSTRAP" "$PIDFILE" kafka.Kafka "$START_TIMEOUT" "$INSTANCE_LOG_DIR/kafka.log" \
    env TONGBAN_KAFKA_BOOTSTRAP="$LOCAL_KAFKA_BOOTSTRAP" "$VENV_PY" "$ROOT/infra/scripts/wait_ready.py" kafka --timeout 5
}

status() {
  if pid_alive "$PIDFILE" kafka.Kafka; then
    echo "kafka ($KAFKA_INSTANCE): running (pid $(cat "$PIDFILE"), $(cat "$MODEFILE" 2>/dev/null || echo PLAINTEXT) on $LOCAL_KAFKA_BOOTSTRAP)"
  else
    echo "kafka ($KAFKA_INSTANCE): stopped"; return 1
  fi
}

# infra/scripts/cluster.sh sources this file for its functions, once per node.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile "kafka ($KAFKA_INSTANCE)" "$PIDFILE" kafka.Kafka "${TONGBAN_KAFKA_STOP_TIMEOUT:-60}" ;;
  status) status ;;
  render) render; [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]] && make_tls; echo "$CONFIG" ;;
  *) echo "usage: $0 start|stop|status|render" >&2; exit 2 ;;
esac
