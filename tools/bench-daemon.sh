#!/usr/bin/env bash
# The daemon benchmarks of the README: flashkv-bench against a release
# `flashkv` on 127.0.0.1 (client and daemon share this machine's cores).
# Usage: tools/bench-daemon.sh [seconds per run]   (make bench-daemon)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
BIN=target/release
OUT=${BENCH_OUT:-target/bench-daemon}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # data-dir extra-flags...
  local dir=$1; shift
  "$BIN/flashkv" --data-dir "$dir" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --resp-addr 127.0.0.1:0 --log-level warn "$@" > "$work/ready" &
  for _ in $(seq 100); do grep -q "gRPC on" "$work/ready" 2>/dev/null && break; sleep 0.1; done
  ADDR=http://$(sed 's/.*gRPC on \([^ ]*\).*/\1/' "$work/ready")
  HTTP_ADDR=$(sed 's/.*HTTP on \([^ ]*\).*/\1/' "$work/ready")
  head -1 "$work/ready"
}
stop() { kill -TERM %1; wait %1 || true; }
bench() { # name flags...
  local name=$1; shift
  echo "== $name"
  "$BIN/flashkv-bench" --addr "$ADDR" --quiet --duration "$SECS" --json "$OUT/$name.json" --svg "$OUT/$name.svg" --hist "$OUT/$name.hist" "$@"
}

start "$work/data" --sync always
"$BIN/flashkv-bench" --addr "$ADDR" --quiet --mode bulk --connections 4 --duration 0.1 --warmup 0 --keys 1 >/dev/null # warm the connection path
"$BIN/flashkv-bench" --addr "$ADDR" --quiet --preload --keys 1000000 --duration 0.1 --warmup 0 --read-ratio 1 >/dev/null
bench unary-get --keys 1000000 --connections 4 --inflight 16 --read-ratio 1
# The same through tonic's Channel (a queue and worker task per call in the
# client, as most tonic applications send): what the client's own cost
# takes from the daemon on these shared cores.
bench unary-get-channel --channel --keys 1000000 --connections 4 --inflight 16 --read-ratio 1
# Half the peak rate or more: closed loop with 8 callers (tokio's 1 ms timer
# cannot pace 64 callers at sub-millisecond intervals without distortion).
bench unary-get-8-inflight --keys 1000000 --connections 2 --inflight 4 --read-ratio 1
# HTTP against gRPC, same load shape: 64 connections, one request each in
# flight (HTTP/1.1 has no multiplexing), 100-byte values, keep-alive.
bench grpc-get-64conn --keys 1000000 --connections 64 --inflight 1 --read-ratio 1
bench http-get-64conn --protocol http --http-addr "$HTTP_ADDR" --keys 1000000 --connections 64 --inflight 1 --read-ratio 1
bench unary-put-always --keys 1000000 --connections 4 --inflight 16 --read-ratio 0
bench pipeline-90-10 --mode pipeline --keys 1000000 --connections 4 --inflight 256 --read-ratio 0.9
stop

# Foreground latency while merge runs: a 50/50 get/put load with 32 MiB
# segments so that overwrites leave sealed garbage, once without and once
# with a compaction (rate-limited to the default 128 MiB/s) started 1 s into
# the measurement. Automatic merge triggers are off here, so the baseline
# has no merge and the compaction has all the garbage to rewrite.
start "$work/merge" --sync always --segment-size-mb 32 --merge-garbage-ratio 1 --merge-reclaimable-mb 1000000
"$BIN/flashkv-bench" --addr "$ADDR" --quiet --preload --keys 1000000 --duration 0.1 --warmup 0 --read-ratio 1 >/dev/null
"$BIN/flashkv-bench" --addr "$ADDR" --quiet --preload --keys 1000000 --duration 0.1 --warmup 0 --read-ratio 1 >/dev/null
bench mixed-no-merge --keys 1000000 --connections 2 --inflight 4 --read-ratio 0.5 --warmup 1
( sleep 2; "$BIN/flashkv-ctl" --addr "$ADDR" compact > "$OUT/compact.txt" ) &
bench mixed-during-merge --keys 1000000 --connections 2 --inflight 4 --read-ratio 0.5 --warmup 1
wait %2 2>/dev/null || true
cat "$OUT/compact.txt"
stop

start "$work/bulk" --sync always
bench bulkload-always --mode bulk --keys 100000000 --connections 4 --warmup 1
stop

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def j(n): return json.load(open(os.path.join(out, n + ".json")))
rows = [("unary Get, 64 in flight", "unary-get"), ("the same through tonic's Channel", "unary-get-channel"),
        ("unary Get, 8 in flight (half the peak or more)", "unary-get-8-inflight"),
        ("gRPC unary Get, 64 connections x 1", "grpc-get-64conn"), ("HTTP GET, 64 keep-alive connections", "http-get-64conn"),
        ("unary Put, sync=always, 64 in flight", "unary-put-always"), ("Pipeline, 4 streams, 90/10 get/put", "pipeline-90-10"),
        ("50/50 get/put, 8 in flight, no merge", "mixed-no-merge"), ("the same while a merge runs", "mixed-during-merge"),
        ("BulkLoad, sync=always, 4 streams", "bulkload-always")]
print("| measurement | ops/s | p50 us | p99 us | p99.9 us |")
print("|---|---|---|---|---|")
for label, name in rows:
    d = j(name); a = d["latency"].get("all", {})
    print(f"| {label} | {d['ops_per_sec']:,.0f} | {a.get('p50_us', '-')} | {a.get('p99_us', '-')} | {a.get('p999_us', '-')} |")
print(f"\nHTTP GET / gRPC Get (same run): {j('http-get-64conn')['ops_per_sec'] / j('grpc-get-64conn')['ops_per_sec']:.2f}")
PY
