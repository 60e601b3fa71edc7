#!/usr/bin/env bash
# Starts Azurite, the Azure Storage emulator the blob tests and local trials use, on
# 127.0.0.1:10000 in the foreground (Ctrl-C stops it). Telemetry is always off.
#
#   npm ci && scripts/azurite.sh                 # in memory, gone when stopped
#   scripts/azurite.sh --location .azurite       # kept in a folder between runs
#
# Then: cargo test --release --locked, or telemetry-hunt with `azure.identity = "emulator"`.
set -euo pipefail
cd "$(dirname "$0")/.."
azurite=node_modules/.bin/azurite-blob
if [[ ! -x $azurite ]]; then
  echo "Azurite is not installed: run \`npm ci\` in $(pwd) first (package.json pins the version)." >&2
  exit 2
fi
storage=(--inMemoryPersistence)
if [[ ${1:-} == --location ]]; then
  storage=(--location "${2:?--location needs a folder}")
fi
port=${AZURITE_PORT:-10000}
echo "Azurite blob endpoint: http://127.0.0.1:$port/devstoreaccount1 (account devstoreaccount1, the emulator's well-known key)"
exec "$azurite" --silent --disableTelemetry --blobHost 127.0.0.1 --blobPort "$port" "${storage[@]}"
