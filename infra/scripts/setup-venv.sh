#!/usr/bin/env bash
# .venv with Python 3.11 from requirements.txt, constrained by requirements.lock (pip freeze).
# Reuses an existing .venv when it already runs Python 3.11.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

find_python() {
  local c
  for c in "${PYTHON:-}" python3.11 "$(pyenv root 2>/dev/null)"/versions/3.11*/bin/python3.11; do
    [[ -n "$c" ]] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  py="$(find_python)" || die "Python 3.11 not found (set PYTHON=/path/to/python3.11)"
  log "venv: creating .venv with $py"
  rm -rf .venv
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

constraints=()
[[ -f requirements.lock ]] && constraints=(-c requirements.lock)
log "venv: installing requirements.txt ${constraints[*]}"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt "${constraints[@]}"
# The project itself, editable: .venv/bin/tongban (the operator command, pyproject.toml).
# Its dependencies are the pinned ones above; setuptools comes with the venv.
log "venv: installing the project (editable) for .venv/bin/tongban"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
touch .venv/.tongban-installed
