#!/usr/bin/env bash
# Stops the S3 server started by minio/start.sh and removes its data.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S3_DIR=${S3_DIR:-"$here/../.s3-server"}
if [ -f "$S3_DIR/pid" ]; then
  pid=$(cat "$S3_DIR/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$S3_DIR/pid"
fi
rm -rf "$S3_DIR/meta" "$S3_DIR/data" "$S3_DIR/minio-data"
