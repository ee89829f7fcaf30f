#!/usr/bin/env bash
# Starts a real S3-compatible server on loopback for tests and benchmarks, with a bucket and
# fixed test credentials: MinIO when `minio` is on PATH, otherwise Garage (installed with
# `cargo install garage --locked` only when missing). Idempotent: a running server is reused.
# Prints the environment to use (also written to $S3_DIR/env).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
S3_DIR=${S3_DIR:-"$here/../.s3-server"}
mkdir -p "$S3_DIR"
S3_DIR=$(cd "$S3_DIR" && pwd)
PORT=${S3_PORT:-3900}
BUCKET=${S3_BUCKET:-snapshots}
# Fixed, throw-away test credentials (Garage's key format: GK + 24 hex, 64 hex secret).
ACCESS_KEY=GK0123456789abcdef01234567
SECRET_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ENDPOINT="http://127.0.0.1:$PORT"

log() { printf 'minio/start.sh: %s\n' "$*" >&2; }

write_env() {
  cat > "$S3_DIR/env" <<ENV
export S3_TEST_ENDPOINT=$ENDPOINT
export S3_TEST_BUCKET=$BUCKET
export S3_TEST_ACCESS_KEY=$ACCESS_KEY
export S3_TEST_SECRET_KEY=$SECRET_KEY
export S3_TEST_REGION=us-east-1
export S3_TEST_SERVER=$1
ENV
  cat "$S3_DIR/env"
}

answers() { curl -s -o /dev/null --max-time 2 "$ENDPOINT/" ; }

if [ -f "$S3_DIR/pid" ] && kill -0 "$(cat "$S3_DIR/pid")" 2>/dev/null && answers; then
  log "reusing the running server (pid $(cat "$S3_DIR/pid"))"
  cat "$S3_DIR/env"
  exit 0
fi

wait_until() {  # wait_until SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.3
  done
}

if command -v minio >/dev/null 2>&1; then
  rm -rf "$S3_DIR/minio-data"; mkdir -p "$S3_DIR/minio-data"
  MINIO_ROOT_USER=$ACCESS_KEY MINIO_ROOT_PASSWORD=$SECRET_KEY \
    nohup minio server "$S3_DIR/minio-data" --address "127.0.0.1:$PORT" > "$S3_DIR/server.log" 2>&1 &
  echo $! > "$S3_DIR/pid"
  wait_until 60 curl -sf "$ENDPOINT/minio/health/live" || { cat "$S3_DIR/server.log" >&2; exit 1; }
  # A bucket is a top-level directory for MinIO's single-drive mode is not guaranteed:
  # create it through the S3 API (PUT /bucket), signed by the Python helper below.
  python3 "$here/make_bucket.py" "$ENDPOINT" "$BUCKET" "$ACCESS_KEY" "$SECRET_KEY"
  write_env minio
  exit 0
fi

GARAGE=$(command -v garage || true)
if [ -z "$GARAGE" ] && [ -x "$HOME/.cargo/bin/garage" ]; then GARAGE="$HOME/.cargo/bin/garage"; fi
if [ -z "$GARAGE" ]; then
  log "garage not found: installing it with cargo (about 9 minutes on 2 cores, once)"
  cargo install garage --locked >&2
  GARAGE="$HOME/.cargo/bin/garage"
fi

rm -rf "$S3_DIR/meta" "$S3_DIR/data"
cat > "$S3_DIR/garage.toml" <<TOML
metadata_dir = "$S3_DIR/meta"
data_dir = "$S3_DIR/data"
db_engine = "sqlite"
replication_factor = 1
# A bucket's server CPU is not the client's on a real cloud; here it shares our two cores, and
# Garage's default zstd of every block would make incompressible uploads (encrypted pieces)
# look slower than compressible ones (random floats) for reasons of the server alone.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$((PORT + 1))"
rpc_public_addr = "127.0.0.1:$((PORT + 1))"
rpc_secret = "$(printf '%064x' 42)"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((PORT + 3))"
admin_token = "snapstream-test-admin"
TOML
G=("$GARAGE" -c "$S3_DIR/garage.toml")
nohup "${G[@]}" server > "$S3_DIR/server.log" 2>&1 &
echo $! > "$S3_DIR/pid"
wait_until 60 "${G[@]}" status || { log "garage did not start"; cat "$S3_DIR/server.log" >&2; exit 1; }
NODE=$("${G[@]}" node id -q | cut -d@ -f1)
"${G[@]}" layout assign -z dc1 -c 10G "$NODE" >/dev/null
"${G[@]}" layout apply --version 1 >/dev/null
"${G[@]}" key import --yes "$ACCESS_KEY" "$SECRET_KEY" -n test >/dev/null
"${G[@]}" bucket create "$BUCKET" >/dev/null
"${G[@]}" bucket allow --read --write --owner "$BUCKET" --key test >/dev/null
wait_until 30 answers || { log "garage S3 API does not answer"; cat "$S3_DIR/server.log" >&2; exit 1; }
write_env garage
