#!/usr/bin/env bash
# Builds native/build/ghostfs.node: plain N-API in C against libfuse3 and
# Node's own headers. Run by `npm install`/`npm ci` (the project's install
# script) and by scripts/setup.sh. Without libfuse3's headers it says so
# and stops without failing the install: ghostfs then uses fuse-native.
set -euo pipefail
cd "$(dirname "$0")"
out=build/ghostfs.node
srcs=(src/*.c)

# libfuse3's flags: from pkg-config, else Debian's fixed locations.
if pkg-config --exists fuse3 2>/dev/null; then
  fuse_cflags=$(pkg-config --cflags fuse3)
  fuse_libs=$(pkg-config --libs fuse3)
elif [ -f /usr/include/fuse3/fuse_lowlevel.h ]; then
  fuse_cflags="-I/usr/include/fuse3"
  fuse_libs="-lfuse3"
else
  echo "native: libfuse3-dev is not installed; skipping the native driver (fuse-native will be used)" >&2
  exit 0
fi
# Node's headers: beside the running node, else the system's.
inc="$(node -p 'require("path").resolve(process.execPath, "../../include/node")')"
[ -f "$inc/node_api.h" ] || inc=/usr/include/node
if [ ! -f "$inc/node_api.h" ]; then
  echo "native: Node's headers (node_api.h) are not found; skipping the native driver" >&2
  exit 0
fi

# Rebuild only when a source is newer than the addon.
if [ -f "$out" ] && [ -z "$(find src build.sh -newer "$out" -type f -print -quit)" ]; then
  exit 0
fi
mkdir -p build
cc=${CC:-cc}
# N-API symbols resolve against the node binary at load time.
$cc -std=gnu11 -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter -Werror=implicit-function-declaration \
  -D_GNU_SOURCE -DNAPI_VERSION=8 -DNODE_GYP_MODULE_NAME=ghostfs \
  -I"$inc" $fuse_cflags \
  "${srcs[@]}" -o "$out.tmp" $fuse_libs -lpthread
mv "$out.tmp" "$out"
echo "native: built $out" >&2
