#!/usr/bin/env bash
# Local single-node Kafka (KRaft combined mode) from the Maven Central jars in var/kafka/libs.
#   infra/scripts/kafka.sh start|stop|status|render
# TONGBAN_KAFKA_SECURITY=PLAINTEXT (default, 127.0.0.1:19092) or SASL_SSL (127.0.0.1:19094).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

KAFKA_DIR="$VAR/kafka"
LIBS="$KAFKA_DIR/libs"
DATA_DIR="${TONGBAN_KAFKA_DATA_DIR:-$KAFKA_DIR/data}"
CONFIG="$KAFKA_DIR/server.properties"
TLS_DIR="$KAFKA_DIR/tls"
PIDFILE="$RUN_DIR/kafka.pid"
HEAP="${TONGBAN_KAFKA_HEAP:--Xmx512m -Xms512m}"
START_TIMEOUT="${TONGBAN_KAFKA_START_TIMEOUT:-120}"

# Local development credentials only (SASL_SSL mode). The services' user and the admin
# user are created at format time, so they exist in every data dir formatted by this script.
ADMIN_USER="admin"
ADMIN_PASSWORD="${TONGBAN_KAFKA_ADMIN_PASSWORD:-tongban-admin-secret}"
CLIENT_USER="${TONGBAN_KAFKA_USERNAME:-tongban}"
CLIENT_PASSWORD="${TONGBAN_KAFKA_PASSWORD:-tongban-secret}"
TLS_PASSWORD="tongban-local-tls"

JAVA="${JAVA:-java}"
JVM_OPTS=(
  $HEAP
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:ActiveProcessorCount=2
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.properties"
  -Dkafka.logs.dir="$LOG_DIR"
  -DZstdTempFolder="$KAFKA_DIR/tmp" -Dorg.xerial.snappy.tempdir="$KAFKA_DIR/tmp"
)

java_cp() { "$JAVA" -cp "$LIBS/*" "$@"; }

render() {
  [[ -d "$LIBS" ]] || die "no Kafka jars in $LIBS: run 'make setup'"
  mkdir -p "$KAFKA_DIR/tmp" "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
  local listeners advertised inter
  if [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]]; then
    listeners="SASL_SSL://$LOCAL_KAFKA_SASL_SSL,CONTROLLER://127.0.0.1:19093"
    advertised="SASL_SSL://$LOCAL_KAFKA_SASL_SSL"
    inter="SASL_SSL"
  else
    listeners="PLAINTEXT://$LOCAL_KAFKA_PLAINTEXT,CONTROLLER://127.0.0.1:19093"
    advertised="PLAINTEXT://$LOCAL_KAFKA_PLAINTEXT"
    inter="PLAINTEXT"
  fi
  local files=("$ROOT/infra/kafka/server.properties.in")
  [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]] && files+=("$ROOT/infra/kafka/sasl_ssl.properties.in")
  cat "${files[@]}" | sed \
    -e "s#@LISTENERS@#$listeners#" \
    -e "s#@ADVERTISED_LISTENERS@#$advertised#" \
    -e "s#@INTER_BROKER_LISTENER@#$inter#" \
    -e "s#@DATA_DIR@#$DATA_DIR#" \
    -e "s#@TLS_DIR@#$TLS_DIR#g" \
    -e "s#@TLS_PASSWORD@#$TLS_PASSWORD#g" \
    -e "s#@ADMIN_USER@#$ADMIN_USER#g" \
    -e "s#@ADMIN_PASSWORD@#$ADMIN_PASSWORD#g" \
    -e "s#@CLIENT_USER@#$CLIENT_USER#g" \
    > "$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
  if [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]]; then
    sed -e "s#@TLS_DIR@#$TLS_DIR#g" -e "s#@TLS_PASSWORD@#$TLS_PASSWORD#g" \
        -e "s#@ADMIN_USER@#$ADMIN_USER#g" -e "s#@ADMIN_PASSWORD@#$ADMIN_PASSWORD#g" \
        "$ROOT/infra/kafka/client-sasl_ssl.properties.in" > "$KAFKA_DIR/client-sasl_ssl.properties"
  fi
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

format_once() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    if [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL && ! -f "$DATA_DIR/.tongban-scram" ]]; then
      die "$DATA_DIR was formatted without SCRAM users; stop Kafka and remove it (make clean-kafka) to switch to SASL_SSL"
    fi
    return 0
  fi
  local uuid
  uuid="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  [[ -n "$uuid" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
  log "kafka: formatting $DATA_DIR (cluster id $uuid)"
  # Static voters (controller.quorum.voters), so no --standalone. The SCRAM users are
  # added in every mode: harmless for PLAINTEXT, and the data dir can later run SASL_SSL.
  java_cp kafka.tools.StorageTool format --ignore-formatted -t "$uuid" -c "$CONFIG" \
    --add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$ADMIN_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=$CLIENT_USER,password=$CLIENT_PASSWORD]" \
    >>"$LOG_DIR/kafka-format.log" 2>&1 || { tail -20 "$LOG_DIR/kafka-format.log" >&2; die "format failed"; }
  touch "$DATA_DIR/.tongban-scram"
}

start() {
  if pid_alive "$PIDFILE" kafka.Kafka; then
    local mode; mode="$(cat "$RUN_DIR/kafka.security" 2>/dev/null || echo PLAINTEXT)"
    [[ "$mode" == "$TONGBAN_KAFKA_SECURITY" ]] \
      || die "kafka: already running in $mode mode; 'make down' first to switch to $TONGBAN_KAFKA_SECURITY"
    log "kafka: already running (pid $(cat "$PIDFILE"), $mode)"
    return 0
  fi
  local host="${LOCAL_KAFKA_BOOTSTRAP%:*}" port="${LOCAL_KAFKA_BOOTSTRAP##*:}"
  if port_open "$host" "$port" || port_open 127.0.0.1 19093; then
    die "kafka: port $port or 19093 is in use by a process without our pid file ($PIDFILE)"
  fi
  render
  [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]] && make_tls
  format_once
  log "kafka: starting ($TONGBAN_KAFKA_SECURITY on $LOCAL_KAFKA_BOOTSTRAP, log $LOG_DIR/kafka.log)"
  echo "$TONGBAN_KAFKA_SECURITY" > "$RUN_DIR/kafka.security"
  launch "$PIDFILE" "$LOG_DIR/kafka.out" "$JAVA" "${JVM_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$CONFIG"
  wait_ready
}

wait_ready() {
  await_start "kafka on $LOCAL_KAFKA_BOOTSTRAP" "$PIDFILE" kafka.Kafka "$START_TIMEOUT" "$LOG_DIR/kafka.log" \
    env TONGBAN_KAFKA_BOOTSTRAP="$LOCAL_KAFKA_BOOTSTRAP" "$VENV_PY" "$ROOT/infra/scripts/wait_ready.py" kafka --timeout 5
}

status() {
  if pid_alive "$PIDFILE" kafka.Kafka; then
    echo "kafka: running (pid $(cat "$PIDFILE"), $(cat "$RUN_DIR/kafka.security" 2>/dev/null || echo PLAINTEXT))"
  else
    echo "kafka: stopped"; return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop_pidfile kafka "$PIDFILE" kafka.Kafka "${TONGBAN_KAFKA_STOP_TIMEOUT:-60}" ;;
  status) status ;;
  render) render; [[ "$TONGBAN_KAFKA_SECURITY" == SASL_SSL ]] && make_tls; echo "$CONFIG" ;;
  *) echo "usage: $0 start|stop|status|render" >&2; exit 2 ;;
esac
