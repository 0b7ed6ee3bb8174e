#!/usr/bin/env python3
"""Sorted-set rank lookups against a running FlashKV (or Redis): loads a
sorted set of 1M members (1,000 ZADDs of 1,000 members, pipelined), then
times ZRANK of 50 random members and ZRANGE of 10 members from rank
500,000 on. Usage: tools/bench-zrank.py PORT [KEY] (needs redis-py)."""

import random
import sys
import time

import redis


def main():
    port = int(sys.argv[1])
    key = sys.argv[2] if len(sys.argv) > 2 else "bench:zrank"
    r = redis.Redis(port=port)
    r.delete(key)
    rnd = random.Random(5)
    t = time.time()
    p = r.pipeline(transaction=False)
    for i in range(1000):
        p.zadd(key, {b"member:%07d" % (i * 1000 + j): rnd.random() for j in range(1000)})
        if i % 50 == 49:
            p.execute()
    p.execute()
    load = time.time() - t
    assert r.zcard(key) == 1_000_000
    names = [b"member:%07d" % rnd.randrange(1_000_000) for _ in range(50)]
    t = time.time()
    for n in names:
        r.zrank(key, n)
    zrank = (time.time() - t) / len(names)
    t = time.time()
    for i in range(50):
        r.zrange(key, 500_000 + i, 500_009 + i)
    zrange = (time.time() - t) / 50
    r.delete(key)
    print(
        f"load 1M members {load:.1f} s; ZRANK {zrank * 1e3:.2f} ms; "
        f"ZRANGE of 10 from rank 500,000 {zrange * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
