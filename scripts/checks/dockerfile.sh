#!/usr/bin/env bash
# Lints the Dockerfile with dockerfile-utils (from npm, pinned): unknown instructions,
# bad arguments, invalid ports, and so on. No Docker engine is needed or used.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.16.3
PREFIX="${XDG_CACHE_HOME:-$HOME/.cache}/teamhub-checks/dockerfile-utils-$VERSION"
BIN="$PREFIX/node_modules/.bin/dockerfile-utils"

if ! command -v npm >/dev/null; then
  echo "FATAL: npm is required to install dockerfile-utils" >&2
  exit 1
fi
if [ ! -x "$BIN" ]; then
  echo "installing dockerfile-utils $VERSION into $PREFIX"
  npm install --silent --no-audit --no-fund --prefix "$PREFIX" "dockerfile-utils@$VERSION"
fi
"$BIN" lint Dockerfile
# The linter must be able to fail: a broken file is rejected.
broken=$(mktemp)
trap 'rm -f "$broken"' EXIT
printf 'FROM debian:bookworm-slim\nEXPOSE not-a-port\n' >"$broken"
if "$BIN" lint "$broken" >/dev/null; then
  echo "FATAL: dockerfile-utils accepted an invalid Dockerfile" >&2
  exit 1
fi
# Everything the release build reads at compile time must be in the build context:
# no include_str!/include_bytes!/sqlx::migrate! path may be excluded by .dockerignore.
python3 - <<'PY'
import fnmatch, os, re, sys
from pathlib import Path

patterns = [l.strip() for l in Path(".dockerignore").read_text().splitlines()
            if l.strip() and not l.startswith("#")]

def ignored(rel):
    parts = rel.split("/")
    for pat in patterns:
        pat = pat.rstrip("/")
        # A pattern matches the path itself or any of its parent directories.
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pat) or (pat.startswith("**/") and fnmatch.fnmatch(prefix, pat[3:])) \
               or (pat.startswith("**/") and any(fnmatch.fnmatch("/".join(parts[j:i]), pat[3:]) for j in range(i))):
                return True
    return False

missing, seen = [], 0
for src in Path(".").glob("*/src/**/*.rs"):
    if src.parts[0] in ("target", "loadtest"):
        continue
    text = src.read_text()
    for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
        target = os.path.normpath(src.parent / m.group(1))
        seen += 1
        if ignored(target) or not Path(target).exists():
            missing.append(f"{src}: {m.group(1)} -> {target}")
    crate = src.parts[0]
    for m in re.finditer(r'migrate!\(\s*"([^"]+)"', text):
        target = os.path.normpath(Path(crate) / m.group(1))
        seen += 1
        if ignored(target) or not Path(target).exists():
            missing.append(f"{src}: {m.group(1)} -> {target}")
if missing:
    print("FATAL: the build embeds files that .dockerignore leaves out of the context:")
    print("\n".join(missing))
    sys.exit(1)
if seen == 0:
    print("FATAL: found no embedded files at all: the scan is broken")
    sys.exit(1)
print(f"all {seen} embedded paths are in the Docker build context")
PY
echo "Dockerfile lint passed"
