#!/usr/bin/env bash
# Build FerretDB v1 (MongoDB wire protocol, SQLite handler) from the Go module proxy into
# var/bin/ferretdb. `go install ...@v1.24.2` builds a binary that panics at start because
# build/version/version.txt is generated at release time, so we build from a writable copy.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION="${TONGBAN_FERRETDB_VERSION:-v1.24.2}"
MODULE="github.com/FerretDB/FerretDB"
BIN="var/bin/ferretdb"
STAMP="var/bin/.ferretdb-version"

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  echo "ferretdb $VERSION: already built ($BIN)"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build FerretDB" >&2; exit 1; }
mkdir -p var/bin var/build var/log

echo "ferretdb $VERSION: downloading module"
json="$(cd var/build && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION")"
dir="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
commit="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Hash": "\(.*\)",\{0,1\}$/\1/p')"
[[ -n "$dir" && -d "$dir" ]] || { echo "could not find module dir in: $json" >&2; exit 1; }

src="var/build/ferretdb-$VERSION"
rm -rf "$src"
cp -R "$dir" "$src"
chmod -R u+w "$src"
printf '%s\n' "$VERSION" > "$src/build/version/version.txt"
printf '%s\n' "${commit:-unknown}" > "$src/build/version/commit.txt"
printf '%s\n' "main" > "$src/build/version/branch.txt"
printf '%s\n' "tongban-local" > "$src/build/version/package.txt"

echo "ferretdb $VERSION: building (CGO_ENABLED=0)"
(cd "$src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o "$OLDPWD/$BIN.tmp" ./cmd/ferretdb)
mv "$BIN.tmp" "$BIN"
printf '%s\n' "$VERSION" > "$STAMP"
# Capture first: `| head` closes the pipe early and pipefail turns that SIGPIPE into a failure.
version_text="$("$BIN" --version)"
printf '%s\n' "$version_text" | sed -n 1,3p
