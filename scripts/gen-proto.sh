#!/usr/bin/env bash
# Generates TypeScript types for the wire contract from proto/ (types only:
# the runtime loads the .proto itself through @grpc/proto-loader).
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/wire/gen
rm -rf "$out"
mkdir -p "$out"
# The generator writes extension-less imports, which only CommonJS accepts;
# the files hold types alone, so nothing of them runs either way.
echo '{ "type": "commonjs" }' > "$out/package.json"
node_modules/.bin/proto-loader-gen-types --longs=Number --enums=String --defaults --oneofs \
  --grpcLib=@grpc/grpc-js --outDir="$out" proto/ghostfs/v1/ghostfs.proto >/dev/null
