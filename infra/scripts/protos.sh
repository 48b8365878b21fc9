#!/usr/bin/env bash
# Compile every services/<x>/<x>.proto and tongban/<x>/<x>.proto (contracts services share) into *_pb2.py, *_pb2_grpc.py and *_pb2.pyi next to it
# (git-ignored). Skips protos whose generated files are newer; fine with zero protos.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
shopt -s nullglob

n=0
for proto in services/*/*.proto tongban/*/*.proto; do
  base="${proto%.proto}"
  if [[ -f "${base}_pb2.py" && -f "${base}_pb2_grpc.py" && -f "${base}_pb2.pyi" \
        && "${base}_pb2.py" -nt "$proto" && "${base}_pb2_grpc.py" -nt "$proto" ]]; then
    continue
  fi
  log "protos: compiling $proto"
  "$VENV_PY" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. "$proto"
  n=$((n + 1))
done
log "protos: $n compiled ($(ls services/*/*.proto tongban/*/*.proto 2>/dev/null | wc -l) found)"
