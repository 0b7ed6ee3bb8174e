#!/usr/bin/env bash
# FlashKV against Redis (redis-server from Debian) with redis-benchmark, in
# one run on this machine, at equal durability:
#   FlashKV --sync always         vs Redis appendfsync always
#   FlashKV --sync interval:1000  vs Redis appendfsync everysec
# 50 clients, 100-byte values, 1M-key space, -P 1 and -P 16, SET and GET.
# Prints a table with throughput, p99 latency and the FlashKV/Redis ratios.
# FlashKV runs with FLASHKV_SHARDS shards (default 1: one serving core, as
# Redis has, leaving the other of this machine's two cores to
# redis-benchmark; with 2 shards the server and the client fight for both).
#
# With BENCH_REDIS_TYPES=1 it also compares the data-type tests
# (incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset; -P 1; one
# hot key per test, as redis-benchmark does them) at both durabilities.
#
# BENCH_REDIS_N16=<requests> sets the -P 16 tests' length apart (default:
# the same as -P 1): at 200k a GET -P 16 test lasts a quarter of a second,
# and one stall of a few ms moves its p99; 1M requests cover more, and
# their overwrites start merges while the tests run.
#
# Usage: tools/bench-redis.sh [requests per test]   (make bench-redis)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
N16=${BENCH_REDIS_N16:-$N}
SHARDS=${FLASHKV_SHARDS:-1}
BIN=target/release
OUT=${BENCH_OUT:-target/bench-redis}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; redis-cli -p 16399 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for tool in redis-server redis-benchmark redis-cli; do
  command -v $tool >/dev/null || { echo "$tool not found (apt-get install redis-server redis-tools)"; exit 1; }
done

TYPES=incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset
# redis-benchmark retries a closed port at 100% of a core for ever: each
# run has a time limit, and runs only against a server this script started.
run() { # label port pipeline
  n=$N; [ "$3" = 1 ] || n=$N16
  timeout 900 redis-benchmark -p "$2" -t set,get -n "$n" -c 50 -d 100 -r 1000000 -P "$3" --csv > "$OUT/$1-P$3.csv"
}
run_types() { # label port
  timeout 900 redis-benchmark -p "$2" -t "$TYPES" -n "$N" -c 50 -d 100 --csv > "$OUT/$1-types.csv"
}
# Whether the server answering on port $1 is process $2 (not another one
# left listening there).
serves() {
  kill -0 "$2" 2>/dev/null &&
    [ "$(redis-cli -p "$1" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$2" ]
}

for pair in "always always" "interval:1000 everysec"; do
  set -- $pair
  sync=$1 fsync=$2
  rm -rf "$work/fk" "$work/redis"; mkdir -p "$work/redis"
  "$BIN/flashkv" --data-dir "$work/fk" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --resp-addr 127.0.0.1:16398 --sync "$sync" --shards "$SHARDS" --log-level warn > "$work/ready" 2>&1 &
  fk=$!
  for _ in $(seq 100); do grep -q "RESP on" "$work/ready" 2>/dev/null && break; sleep 0.1; done
  serves 16398 $fk || { echo "FlashKV did not start on 16398:"; cat "$work/ready"; exit 1; }
  redis-server --port 16399 --dir "$work/redis" --appendonly yes --appendfsync "$fsync" \
    --save '' --daemonize no --logfile "$work/redis.log" &
  rd=$!
  for _ in $(seq 100); do redis-cli -p 16399 ping >/dev/null 2>&1 && break; sleep 0.1; done
  serves 16399 $rd || { echo "redis-server did not start on 16399:"; cat "$work/redis.log"; exit 1; }
  for p in 1 16; do
    run "flashkv-$fsync" 16398 $p
    run "redis-$fsync" 16399 $p
  done
  if [ "${BENCH_REDIS_TYPES:-0}" = 1 ]; then
    run_types "flashkv-$fsync" 16398
    run_types "redis-$fsync" 16399
  fi
  kill -TERM $fk; wait $fk || true
  redis-cli -p 16399 shutdown nosave >/dev/null 2>&1 || true; wait $rd || true
done

python3 - "$OUT" <<'PY'
import csv, os, sys
out = sys.argv[1]
def rows(name):
    with open(os.path.join(out, name + ".csv")) as f:
        return {r["test"]: r for r in csv.DictReader(f)}
print("| durability | test | pipeline | FlashKV ops/s | Redis ops/s | ratio | FlashKV p99 ms | Redis p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for fsync in ["always", "everysec"]:
    for p in [1, 16]:
        fk, rd = rows(f"flashkv-{fsync}-P{p}"), rows(f"redis-{fsync}-P{p}")
        for test in ["SET", "GET"]:
            a, b = float(fk[test]["rps"]), float(rd[test]["rps"])
            print(f"| appendfsync {fsync} | {test} | {p} | {a:,.0f} | {b:,.0f} | {a / b:.2f} | {fk[test]['p99_latency_ms']} | {rd[test]['p99_latency_ms']} |")
if os.environ.get("BENCH_REDIS_TYPES") == "1":
    print()
    print("| durability | test | FlashKV ops/s | Redis ops/s | ratio | FlashKV p99 ms | Redis p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for fsync in ["always", "everysec"]:
        fk, rd = rows(f"flashkv-{fsync}-types"), rows(f"redis-{fsync}-types")
        for test in fk:
            a, b = float(fk[test]["rps"]), float(rd[test]["rps"])
            print(f"| appendfsync {fsync} | {test} | {a:,.0f} | {b:,.0f} | {a / b:.2f} | {fk[test]['p99_latency_ms']} | {rd[test]['p99_latency_ms']} |")
PY
