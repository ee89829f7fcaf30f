# The two commands a user needs: `make run` and `make test`. `make bench` runs the benchmarks.
SHELL := /bin/bash
VENV := .venv
BIN := target/release/snapstream
S3_ENV := .s3-server/env
EMU_ENV := .emulators/env

.PHONY: run test build venv js-deps browser s3-start s3-stop emulators-start emulators-stop lint bench fuzz qdrant

## Qdrant 1.19 for the backup tests: QDRANT_BIN, else the shared copy next to the checkout
## (or next to the repository this one was cloned from, for a clean clone elsewhere), unpacked
## into target/qdrant. Without any, CI (CI=true) fails; elsewhere the Qdrant tests are skipped
## with one line saying so.
QDRANT_GZ_NAME := shared/bin/qdrant-1.19.0.gz
QDRANT_ORIGIN := $(shell git config --get remote.origin.url 2>/dev/null)
QDRANT_GZ := $(firstword $(wildcard ../$(QDRANT_GZ_NAME) $(QDRANT_ORIGIN)/../$(QDRANT_GZ_NAME)) ../$(QDRANT_GZ_NAME))
QDRANT_TEST_BIN := $(CURDIR)/target/qdrant/qdrant
qdrant:
	@mkdir -p target/qdrant; \
	if [ -n "$$QDRANT_BIN" ] && [ -x "$$QDRANT_BIN" ]; then ln -sf "$$(realpath "$$QDRANT_BIN")" $(QDRANT_TEST_BIN); \
	elif [ -f $(QDRANT_GZ) ]; then [ -x $(QDRANT_TEST_BIN) ] || { gunzip -c $(QDRANT_GZ) > $(QDRANT_TEST_BIN).part && chmod +x $(QDRANT_TEST_BIN).part && mv $(QDRANT_TEST_BIN).part $(QDRANT_TEST_BIN); }; \
	elif [ "$$CI" = true ]; then echo "Qdrant 1.19 is required in CI: set QDRANT_BIN or provide $(QDRANT_GZ)" >&2; exit 1; \
	else echo "Qdrant tests skipped: no Qdrant binary (set QDRANT_BIN=/path/to/qdrant, or put qdrant-1.19.0.gz in ../shared/bin)"; fi

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

emulators/node_modules/.installed: emulators/package.json emulators/package-lock.json
	cd emulators && npm ci --silent --no-audit --no-fund
	touch $@

## Azurite and fake-gcs-server on loopback, for the Azure and GCS backends' tests.
emulators-start: venv emulators/node_modules/.installed
	bash emulators/start.sh > /dev/null

emulators-stop:
	bash emulators/stop.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings

## Installs what the tests need (venv with qdrant-client, the JS client, the S3 server, the
## Azure and GCS emulators), then
## runs every test: Rust unit and integration tests, then the official clients end to end,
## and the dashboard in headless Chromium.
test: venv js-deps browser s3-start emulators-start qdrant
	@set -a; source $(S3_ENV); source $(EMU_ENV); set +a; \
	if [ -x $(QDRANT_TEST_BIN) ]; then export QDRANT_TEST_BIN=$(QDRANT_TEST_BIN); fi; \
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
bench: s3-start emulators-start build qdrant
	@set -a; source $(S3_ENV); source $(EMU_ENV); set +a; \
	SNAPSTREAM_BIN=$(BIN) cargo run --release --example bench
