#!/usr/bin/env bash
# Stops the emulators started by emulators/start.sh and removes their data.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
EMU_DIR=${EMU_DIR:-"$here/../.emulators"}
for name in azurite gcs; do
  if [ -f "$EMU_DIR/$name.pid" ]; then
    pid=$(cat "$EMU_DIR/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$EMU_DIR/$name.pid"
  fi
done
rm -rf "$EMU_DIR/azurite" "$EMU_DIR/gcs"
