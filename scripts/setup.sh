#!/usr/bin/env bash
# Brings a fresh machine to the point where ghostfs builds, tests and runs:
# Debian packages (FUSE libraries, libatomic for RocksDB), npm packages, the
# build. Each step is skipped when it is already done, so this is cheap to
# run before every `npm test` / `npm run demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libfuse2 fuse3 libfuse3-dev libatomic1 pkg-config gcc; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# fincore (the tests look at what the page cache holds): util-linux-extra on Debian 12 and later.
command -v fincore >/dev/null || need+=(util-linux-extra)
if ((${#need[@]})); then
  echo "setup: installing Debian packages: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# The native addon (rebuilt only when its sources changed).
bash native/build.sh

# Rebuild when any source is newer than the last build.
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test scripts proto tsconfig.json package.json -newer "$stamp" -type f -print -quit)" ]; then
  echo "setup: building" >&2
  npm run --silent build
fi
