#!/usr/bin/env bash
# Soak test: mixed load on every protocol the daemon speaks (gRPC unary,
# gRPC Pipeline, HTTP, RESP) for SOAK_SECS, with merges (small segments, a merge
# schedule and forced compactions) and checkpoints running, while RSS is
# sampled from /metrics. Fails on any client error, on a failed compaction
# or checkpoint, or if memory keeps growing (the peak RSS of the second half
# more than 1.25x the peak of the first half plus 64 MiB).
#
# Usage: tools/soak.sh [seconds]   (make soak; make soak-smoke runs 20 s)
# SOAK_BIN picks the binaries (default target/release); SOAK_MEMCHECK=0
# reports memory without judging it (the smoke run: 20 s is too short to
# tell growth from warm-up).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
BIN=${SOAK_BIN:-target/release}
OUT=${SOAK_OUT:-target/soak}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$BIN/flashkv" --data-dir "$work/data" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --resp-addr 127.0.0.1:0 \
  --log-level warn --segment-size-mb 8 --max-value-size 4096 --merge-interval-secs 5 \
  --merge-garbage-ratio 0.3 > "$work/ready" 2> "$OUT/daemon.log" &
daemon=$!
for _ in $(seq 100); do grep -q "HTTP on" "$work/ready" 2>/dev/null && break; sleep 0.1; done
head -1 "$work/ready"
GRPC=http://$(sed 's/.*gRPC on \([^ ]*\).*/\1/' "$work/ready")
RESP=$(sed 's/.*RESP on \([^ ]*\).*/\1/' "$work/ready")
HTTP=$(sed 's/.*HTTP on \([^ ]*\).*/\1/' "$work/ready")

bench() { # name flags...
  local name=$1; shift
  "$BIN/flashkv-bench" --addr "$GRPC" --http-addr "$HTTP" --resp-addr "$RESP" --quiet --warmup 0 --duration "$SECS" \
    --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2>&1
}
"$BIN/flashkv-bench" --addr "$GRPC" --quiet --preload --keys 200000 --duration 0.1 --warmup 0 --read-ratio 1 >/dev/null
bench grpc-unary --keys 200000 --connections 2 --inflight 4 --read-ratio 0.5 &
b1=$!
bench grpc-pipeline --mode pipeline --keys 200000 --connections 1 --inflight 64 --read-ratio 0.7 &
b2=$!
bench http --protocol http --keys 200000 --connections 4 --inflight 1 --read-ratio 0.8 &
b3=$!
bench resp --protocol resp --keys 200000 --connections 4 --inflight 1 --read-ratio 0.6 &
b4=$!

rss() { curl -sf "http://$HTTP/metrics" | sed -n 's/^flashkv_process_resident_memory_bytes \(.*\)/\1/p'; }
start=$(date +%s)
n=0
: > "$OUT/rss.txt"
while kill -0 $b1 2>/dev/null; do
  sleep 2
  now=$(( $(date +%s) - start ))
  echo "$now $(rss)" >> "$OUT/rss.txt"
  n=$((n + 1))
  if (( n % 5 == 0 )); then
    curl -sf -X POST "http://$HTTP/v1/admin/compact" > /dev/null || { echo "compact failed"; exit 1; }
  fi
  if (( n % 7 == 0 )); then
    rm -rf "$work/ckpt"
    curl -sf -X POST "http://$HTTP/v1/admin/checkpoint" -d "{\"path\":\"$work/ckpt\"}" > /dev/null \
      || { echo "checkpoint failed"; exit 1; }
  fi
done
wait $b1 $b2 $b3 $b4
kill -TERM $daemon
wait $daemon

python3 - "$OUT" "$SECS" "${SOAK_MEMCHECK:-1}" <<'PY'
import json, os, sys
out, secs, memcheck = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
ok = True
print(f"| load ({secs:.0f} s) | ops | ops/s | p50 us | p99 us | p99.9 us | errors |")
print("|---|---|---|---|---|---|---|")
for name in ["grpc-unary", "grpc-pipeline", "http", "resp"]:
    d = json.load(open(os.path.join(out, name + ".json")))
    a = d["latency"]["all"]
    print(f"| {name} | {d['operations']:,} | {d['ops_per_sec']:,.0f} | {a['p50_us']} | {a['p99_us']} | {a['p999_us']} | {d['errors']} |")
    ok &= d["errors"] == 0 and d['operations'] > 0
rows = [l.split() for l in open(os.path.join(out, "rss.txt")) if len(l.split()) == 2]
rss = [(float(t), float(r)) for t, r in rows]
half = len(rss) // 2
first = max(r for _, r in rss[:half]) if half else 0
second = max(r for _, r in rss[half:])
print(f"\nRSS: peak {max(r for _, r in rss) / 2**20:.0f} MiB; first half peak {first / 2**20:.0f} MiB, second half peak {second / 2**20:.0f} MiB ({len(rss)} samples)")
if memcheck and half and second > 1.25 * first + 64 * 2**20:
    print("memory kept growing"); ok = False
sys.exit(0 if ok else 1)
PY
