#!/usr/bin/env bash
# A local Kafka cluster of three brokers (KRaft) for `make cluster` and `make cluster-test`:
# three controller-only nodes (the quorum) and three broker-only nodes, from the jars,
# principals (SCRAM-SHA-512, the same secrets file) and configuration of the single broker.
# Each node is an instance of infra/scripts/kafka.sh (its functions, sourced per node)
# rendered from infra/kafka/server.properties.in + auth.properties.in, with
# infra/kafka/cluster/node.properties.in for what a cluster does differently.
#   infra/scripts/cluster.sh start|stop|status
#   infra/scripts/cluster.sh test [PYTEST ARGS]      # make cluster-test (see docs/cluster.md)
#   infra/scripts/cluster.sh kill|start-node NODE    # what the cluster test does to a node
# Nodes b1 b2 b3 are brokers 1-3, clients on 127.0.0.1:29292-29294 (SASL_PLAINTEXT);
# c1 c2 c3 are controllers 101-103 on 127.0.0.1:29295-29297 (TONGBAN_CLUSTER_PORT_BASE moves
# them). Data in var/cluster/<node>/data, logs in var/log/cluster-<node>/, pid files in
# var/run/cluster-<node>.pid.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CLUSTER_DIR="$VAR/cluster"
# Below the ephemeral port range (32768-60999): there, any client's outgoing connection may
# hold a listener's port when the broker binds it late in its start (it happened on 39092).
PORT_BASE="${TONGBAN_CLUSTER_PORT_BASE:-29292}"
BROKERS=(b1 b2 b3)
CONTROLLERS=(c1 c2 c3)
# Six JVMs on a shared two-core machine: small heaps (the single broker has 512 MB).
BROKER_HEAP="${TONGBAN_CLUSTER_BROKER_HEAP:--Xmx320m -Xms320m}"
CONTROLLER_HEAP="${TONGBAN_CLUSTER_CONTROLLER_HEAP:--Xmx256m -Xms256m}"
START_TIMEOUT="${TONGBAN_CLUSTER_START_TIMEOUT:-180}"

[[ "$TONGBAN_KAFKA_SECURITY" == SASL_PLAINTEXT ]] \
  || die "the local cluster takes SASL_PLAINTEXT clients only (TONGBAN_KAFKA_SECURITY=$TONGBAN_KAFKA_SECURITY)"

node_id() { case "$1" in b?) echo "${1:1}" ;; c?) echo $((100 + ${1:1})) ;; esac; }
node_port() { case "$1" in b?) echo $((PORT_BASE + ${1:1} - 1)) ;; c?) echo $((PORT_BASE + ${1:1} + 2)) ;; esac; }
node_pidfile() { echo "$RUN_DIR/cluster-$1.pid"; }
valid_node() { [[ " ${BROKERS[*]} ${CONTROLLERS[*]} " == *" ${1:-} "* ]] || die "no node '${1:-}' (b1 b2 b3 c1 c2 c3)"; }

BOOTSTRAP="$(for b in "${BROKERS[@]}"; do printf '127.0.0.1:%s,' "$(node_port "$b")"; done)"
BOOTSTRAP="${BOOTSTRAP%,}"
VOTERS="$(for c in "${CONTROLLERS[@]}"; do printf '%s@127.0.0.1:%s,' "$(node_id "$c")" "$(node_port "$c")"; done)"
VOTERS="${VOTERS%,}"

# in_node NODE CMD...: run CMD in a subshell holding kafka.sh's functions and settings for
# that node (its instance name, heap, data dir, pid file and log dir).
in_node() {
  local node="$1"; shift
  (
    export TONGBAN_KAFKA_INSTANCE="cluster-$node" TONGBAN_KAFKA_PORT="$(node_port "$node")" \
      TONGBAN_KAFKA_DATA_DIR="$CLUSTER_DIR/$node/data"
    if [[ "$node" == c* ]]; then export TONGBAN_KAFKA_HEAP="$CONTROLLER_HEAP"; else export TONGBAN_KAFKA_HEAP="$BROKER_HEAP"; fi
    source "$ROOT/infra/scripts/kafka.sh"
    NODE="$node"
    CONFIG="$CLUSTER_DIR/$node/server.properties"
    "$@"
  )
}

# render_node (in_node): the node's server.properties. Keys appear once, with the last value
# the templates give them, so the file says what the node runs with.
render_node() {
  local port roles
  port="$(node_port "$NODE")"
  mkdir -p "$KAFKA_DIR/tmp" "$CLUSTER_DIR/$NODE" "$DATA_DIR" "$INSTANCE_LOG_DIR" "$RUN_DIR"
  if [[ "$NODE" == c* ]]; then roles=controller; LISTENERS="CONTROLLER://127.0.0.1:$port"
  else roles=broker; LISTENERS="SASL_PLAINTEXT://127.0.0.1:$port"; fi
  ADVERTISED="$LISTENERS"; INTER=SASL_PLAINTEXT
  OUT="$CONFIG.all" render_file "$ROOT/infra/kafka/server.properties.in" "$ROOT/infra/kafka/auth.properties.in" \
    "$ROOT/infra/kafka/cluster/node.properties.in"
  (
    umask 077
    echo "# Rendered by infra/scripts/cluster.sh from infra/kafka/{server,auth}.properties.in and cluster/node.properties.in."
    sed -e "s#@PROCESS_ROLES@#$roles#" -e "s#@NODE_ID@#$(node_id "$NODE")#" -e "s#@VOTERS@#$VOTERS#" "$CONFIG.all" \
      | awk -F= '/^[a-z]/ { lines[NR] = $0; last[$1] = NR } END { for (i = 1; i <= NR; i++) if (i in lines) { split(lines[i], kv, "="); if (last[kv[1]] == i) print lines[i] } }'
  ) > "$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
  rm -f "$CONFIG.all"
}

# launch_node (in_node): render, format once (the cluster's one id), start; returns at once.
launch_node() {
  if pid_alive "$PIDFILE" kafka.Kafka; then
    log "cluster $NODE: already running (pid $(cat "$PIDFILE"))"
    return 0
  fi
  port_open 127.0.0.1 "$(node_port "$NODE")" \
    && die "cluster $NODE: port $(node_port "$NODE") is in use by a process without our pid file ($PIDFILE)"
  render_node
  format_once
  launch "$PIDFILE" "$INSTANCE_LOG_DIR/kafka.out" "$JAVA" "${JVM_OPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$CONFIG"
}

# await_node (in_node): a controller listens; a broker answers a metadata request, which it
# does only once the quorum has unfenced it.
await_node() {
  local port; port="$(node_port "$NODE")"
  if [[ "$NODE" == c* ]]; then
    await_start "cluster $NODE" "$PIDFILE" kafka.Kafka "$START_TIMEOUT" "$INSTANCE_LOG_DIR/kafka.log" \
      port_open 127.0.0.1 "$port"
  else
    await_start "cluster $NODE (127.0.0.1:$port)" "$PIDFILE" kafka.Kafka "$START_TIMEOUT" "$INSTANCE_LOG_DIR/kafka.log" \
      env TONGBAN_KAFKA_BOOTSTRAP="127.0.0.1:$port" "$VENV_PY" "$ROOT/infra/scripts/wait_ready.py" kafka --timeout 5
  fi
}

cluster_id() {
  local file="$CLUSTER_DIR/cluster.id"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$CLUSTER_DIR"
    in_node c1 java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1 > "$file.tmp"
    [[ -s "$file.tmp" ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
    mv "$file.tmp" "$file"
  fi
  cat "$file"
}

start() {
  local t0=$EPOCHREALTIME node
  in_node c1 ensure_secrets
  TONGBAN_KAFKA_CLUSTER_ID="$(cluster_id)"; export TONGBAN_KAFKA_CLUSTER_ID
  # Controllers first, all at once: each waits for the others to form the quorum.
  for node in "${CONTROLLERS[@]}"; do in_node "$node" launch_node; done
  for node in "${CONTROLLERS[@]}"; do in_node "$node" await_node; done
  for node in "${BROKERS[@]}"; do in_node "$node" launch_node; done
  for node in "${BROKERS[@]}"; do in_node "$node" await_node; done
  log "cluster: three brokers on $BOOTSTRAP ready in $(elapsed "$t0") s"
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

start_node() {
  valid_node "$1"
  TONGBAN_KAFKA_CLUSTER_ID="$(cluster_id)"; export TONGBAN_KAFKA_CLUSTER_ID
  local t0=$EPOCHREALTIME
  in_node "$1" launch_node
  in_node "$1" await_node
  log "cluster $1: ready in $(elapsed "$t0") s"
}

# Brokers first: their controlled shutdown moves leadership away and needs the quorum.
stop() {
  local node
  for node in "${BROKERS[@]}" "${CONTROLLERS[@]}"; do
    stop_pidfile "cluster $node" "$(node_pidfile "$node")" kafka.Kafka "${TONGBAN_KAFKA_STOP_TIMEOUT:-60}"
  done
}

# kill_node NODE: SIGKILL, no shutdown of any kind (the failure the cluster test injects).
kill_node() {
  valid_node "$1"
  local pidfile pid i
  pidfile="$(node_pidfile "$1")"
  pid_alive "$pidfile" kafka.Kafka || die "cluster $1: not running"
  pid="$(cat "$pidfile")"
  kill -KILL "$pid"
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$pidfile"
  log "cluster $1: killed pid $pid (SIGKILL)"
}

running() { local node; for node in "${BROKERS[@]}" "${CONTROLLERS[@]}"; do pid_alive "$(node_pidfile "$node")" kafka.Kafka || return 1; done; }

status() {
  local node rc=0
  for node in "${CONTROLLERS[@]}" "${BROKERS[@]}"; do
    if pid_alive "$(node_pidfile "$node")" kafka.Kafka; then
      echo "cluster $node: running (pid $(cat "$(node_pidfile "$node")"), 127.0.0.1:$(node_port "$node"))"
    else
      echo "cluster $node: stopped"; rc=1
    fi
  done
  return "$rc"
}

# make cluster-test: start what is not running (the cluster, FerretDB for the runtime's
# archive), declare a fresh namespace with the production overlay through the operator's
# own commands, run tests/cluster, and on any exit stop what was started here, or bring back
# the nodes a failed test left down in a cluster that was already running.
had_cluster=false had_store=false
cluster_test() {
  local ns rc
  running && had_cluster=true
  { pid_alive "$RUN_DIR/ferretdb.pid" ferretdb || port_open 127.0.0.1 27217; } && had_store=true
  # shellcheck disable=SC2317  # the EXIT trap
  cleanup() {
    if $had_cluster; then start; else stop; fi
    $had_store || "$ROOT/infra/scripts/ferretdb.sh" stop
  }
  trap cleanup EXIT
  start
  $had_store || "$ROOT/infra/scripts/ferretdb.sh" start

  export TONGBAN_KAFKA_BOOTSTRAP="$BOOTSTRAP"
  ns="c$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')-"
  "$VENV_PY" -m tongban.ops principals apply >/dev/null  # principals declared since the format
  "$ROOT/.venv/bin/tongban" --namespace "$ns" topics apply --overlay production | tail -1
  "$ROOT/.venv/bin/tongban" --namespace "$ns" acls apply | tail -1
  "$ROOT/.venv/bin/tongban" quotas apply | tail -1
  mkdir -p "$CLUSTER_DIR"; rm -f "$CLUSTER_DIR/figures.jsonl"
  set +e
  TONGBAN_CLUSTER_NAMESPACE="$ns" TONGBAN_CLUSTER_FIGURES="$CLUSTER_DIR/figures.jsonl" \
    "$VENV_PY" -m pytest -q -m cluster "${@:-tests/cluster}"
  rc=$?
  set -e
  [[ -f "$CLUSTER_DIR/figures.jsonl" ]] && { log "cluster test figures ($CLUSTER_DIR/figures.jsonl):"; cat "$CLUSTER_DIR/figures.jsonl" >&2; }
  return "$rc"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  test) shift; cluster_test "$@" ;;
  kill) kill_node "${2:-}" ;;
  start-node) start_node "${2:-}" ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  *) echo "usage: $0 start|stop|status|test [PYTEST ARGS]|kill NODE|start-node NODE|bootstrap" >&2; exit 2 ;;
esac
