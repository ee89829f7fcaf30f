# The two commands a user needs: `make run` and `make test`. `make bench` runs the benchmarks.
SHELL := /bin/bash
VENV := .venv
BIN := target/release/snapstream
S3_ENV := .s3-server/env

.PHONY: run test build venv js-deps browser s3-start s3-stop lint bench fuzz

build:
	cargo build --release

## Builds and starts the service on 127.0.0.1:6333 with the embedded defaults.
run: build
	./$(BIN)

$(VENV)/.installed: tests/e2e/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/e2e/requirements.txt
	touch $@

venv: $(VENV)/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --silent --no-audit --no-fund
	touch $@

js-deps: tests/js/node_modules/.installed

## Debian's Chromium and ChromeDriver, for the dashboard's browser test; installed only when
## missing (as root, or through sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver > /dev/null; }

s3-start:
	bash minio/start.sh > /dev/null

s3-stop:
	bash minio/stop.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings

## Installs what the tests need (venv with qdrant-client, the JS client, the S3 server), then
## runs every test: Rust unit and integration tests, then the official clients end to end,
## and the dashboard in headless Chromium.
test: venv js-deps browser s3-start
	@set -a; source $(S3_ENV); set +a; \
	cargo test --release && \
	SNAPSTREAM_BIN=$(BIN) $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/e2e; \
	status=$$?; \
	if [ $$status -ne 0 ]; then echo "--- S3 server log (tail) ---"; tail -n 40 .s3-server/server.log; fi; \
	exit $$status

## Longer fuzzing of the REST API than `make test` runs: FUZZ_CASES requests (default 20000)
## from a random seed, printed so that a failure replays with FUZZ_SEED=<seed>.
fuzz:
	FUZZ_CASES=$${FUZZ_CASES:-20000} FUZZ_SEED=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	cargo test --release --test fuzz_api -- --nocapture

## Benchmarks with baselines measured in the same run (see BENCHMARKS.md); writes
## bench/out/results.json. Needs about 12 GB of free disk for the 2 GiB collection.
bench: s3-start build
	@set -a; source $(S3_ENV); set +a; \
	SNAPSTREAM_BIN=$(BIN) cargo run --release --example bench
