#!/usr/bin/env bash
# Kafka broker and tools jars from Maven Central (infra/pom.xml) into var/kafka/libs,
# and a check that exactly one slf4j binding (log4j2's) is on the class path.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

LIBS="var/kafka/libs"
NEW="var/kafka/libs.new"
command -v mvn >/dev/null || die "mvn is required (apt-get install maven)"

log "kafka jars: resolving infra/pom.xml"
rm -rf "$NEW"
mkdir -p "$LOG_DIR"
mvn -B -Dstyle.color=never -f infra/pom.xml dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$ROOT/$NEW" > "$LOG_DIR/mvn.log" 2>&1 \
  || { tail -30 "$LOG_DIR/mvn.log" >&2; die "mvn failed (full log: var/log/mvn.log)"; }

bindings="$(ls "$NEW" | grep -E '^(log4j-slf4j2?-impl|slf4j-reload4j|slf4j-log4j12|slf4j-simple|slf4j-nop|slf4j-jdk14|logback-classic)-[0-9]' || true)"
count="$(printf '%s' "$bindings" | grep -c . || true)"
[[ "$count" == 1 ]] || die "expected exactly one slf4j binding in $NEW, found $count: ${bindings:-none}"
ls "$NEW" | grep -q '^log4j-core-' || die "log4j-core missing from $NEW"
api="$(cd "$NEW" && ls slf4j-api-*.jar)"
case "$api/$bindings" in
  slf4j-api-1.*/log4j-slf4j-impl-*|slf4j-api-2.*/log4j-slf4j2-impl-*) ;;
  *) die "slf4j binding $bindings does not match $api (slf4j 1.x needs log4j-slf4j-impl, 2.x log4j-slf4j2-impl)" ;;
esac

# Replace the folder only when its content changed (a running broker keeps using it).
if [[ -d "$LIBS" ]] && diff -q <(cd "$LIBS" && ls *.jar) <(cd "$NEW" && ls *.jar) >/dev/null; then
  rm -rf "$NEW"
else
  rm -rf "$LIBS"
  mv "$NEW" "$LIBS"
fi
touch "$LIBS/.tongban-stamp"
log "kafka jars: $(ls "$LIBS"/*.jar | wc -l) jars in $LIBS, binding $bindings"
