#!/usr/bin/env bash
# redis-py's own test suite against FlashKV (`make redis-py-suite`).
#
# Fetches the redis-py source release pinned in tests/python/requirements.txt
# from PyPI (its tests/ directory is in the sdist; cached under
# target/redis-py), starts the daemon (FLASHKV_BIN, else target/debug/flashkv)
# with two shards on a free port, and runs the test files below with
# --redis-url pointing at it, in RESP2 and again in RESP3. Tests nobody here wrote, for the client
# library most Redis users have.
#
# Many of them exercise what FlashKV does not have (streams, geo, ACL,
# Lua, ...): known-failures.txt beside this script lists each such test
# with the reason. The run fails on any other failure, and on a listed test
# that passes (a stale entry), so the list stays the truth.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tools/redis-py-suite
BIN=${FLASHKV_BIN:-target/debug/flashkv}
VER=$(sed -n 's/^redis==//p' tests/python/requirements.txt)
SRC=target/redis-py/redis-$VER
FILES=(test_commands.py test_pipeline.py test_encoding.py test_connection_pool.py test_pubsub.py
  test_multiprocessing.py test_helpers.py test_retry.py)

if [ ! -d "$SRC/tests" ]; then
  mkdir -p target/redis-py
  python3 -m pip download --quiet --no-deps --no-binary :all: "redis==$VER" -d target/redis-py
  tar xzf "target/redis-py/redis-$VER.tar.gz" -C target/redis-py
fi

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$BIN" --data-dir "$work/data" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
  --resp-addr 127.0.0.1:0 --shards 2 --log-level warn > "$work/ready" &
for _ in $(seq 100); do grep -q "RESP on" "$work/ready" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*RESP on \([0-9.:]*\).*/\1/p' "$work/ready")
[ -n "$addr" ] || { echo "the daemon did not start:"; cat "$work/ready"; exit 1; }

# The sdist's tests import its own redis package (the same release). Once
# in RESP2 and once in RESP3 (the suite's --protocol); a test failing in
# either counts as failing.
for proto in 2 3; do
  # (-m: the tests of a standalone server, as redis-py's own CI runs them.)
  (cd "$SRC" && python3 -m pytest -q -p no:cacheprovider --tb=no -rfE -m "not onlycluster" \
    "${FILES[@]/#/tests/}" --redis-url="redis://$addr" --protocol=$proto > "$work/out$proto" 2>&1) || true
  echo "RESP$proto: $(tail -1 "$work/out$proto")"
  if ! grep -qE '[0-9]+ passed' "$work/out$proto"; then
    echo "redis-py's suite did not run:"; tail -30 "$work/out$proto"; exit 1
  fi
done
cat "$work/out2" "$work/out3" | grep -E '^(FAILED|ERROR) ' | awk '{print $2}' | sort -u > "$work/failed"
sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$HERE/known-failures.txt" | sort -u > "$work/known"
new=$(comm -23 "$work/failed" "$work/known")
stale=$(comm -13 "$work/failed" "$work/known")
status=0
if [ -n "$new" ]; then
  echo "unexpected failures (not in $HERE/known-failures.txt):"; echo "$new"; status=1
fi
if [ -n "$stale" ]; then
  echo "listed as failing but passed (remove them from $HERE/known-failures.txt):"; echo "$stale"; status=1
fi
[ $status = 0 ] && echo "redis-py $VER suite: every failure is a listed one ($(wc -l < "$work/known") listed)"
exit $status
