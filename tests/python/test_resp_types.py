"""The Redis data types (hashes, lists, sets, sorted sets) through redis-py
from PyPI against the real daemon binary: every command with its edge cases
and exact error replies, the generic key commands on collections, MULTI/EXEC,
restart and expiry across restart, combined changes of one hot key, and
redis-benchmark's data-type tests when redis-tools are installed."""

import shutil
import socket
import subprocess
import threading
import time

import pytest
import redis

from test_resp import Daemon, daemon, err, raw  # noqa: F401 (daemon: the shared fixture)

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


@pytest.fixture
def r(daemon):
    c = daemon.client(single_connection_client=True)
    yield c
    c.close()


def fresh(r, *keys):
    r.delete(*keys)
    return keys


def test_hashes(r):
    (h,) = fresh(r, "h:1")
    assert r.hset(h, mapping={"a": "1", "b": "2"}) == 2
    assert r.hset(h, mapping={"b": "3", "c": "4"}) == 1
    assert r.hget(h, "b") == b"3" and r.hget(h, "zz") is None and r.hget("h:none", "a") is None
    assert r.hmget(h, "a", "zz", "c") == [b"1", None, b"4"]
    assert r.hmget("h:none", "a") == [None]
    assert r.execute_command("HMSET", h, "d", "5") is True
    assert r.hsetnx(h, "d", "x") == 0 and r.hsetnx(h, "e", "6") == 1
    assert r.hlen(h) == 5 and r.hlen("h:none") == 0
    assert r.hexists(h, "a") is True and r.hexists(h, "zz") is False
    assert r.hgetall(h) == {b"a": b"1", b"b": b"3", b"c": b"4", b"d": b"5", b"e": b"6"}
    assert r.hkeys(h) == [b"a", b"b", b"c", b"d", b"e"]
    assert r.hvals(h) == [b"1", b"3", b"4", b"5", b"6"]
    assert r.hstrlen(h, "a") == 1 and r.hstrlen(h, "zz") == 0
    assert r.hincrby(h, "a", 10) == 11 and r.hincrby(h, "new", -3) == -3
    assert r.hincrbyfloat(h, "a", 0.5) == 11.5 and r.hincrbyfloat(h, "f", "1e2") == 100.0
    assert r.hincrbyfloat(h, "fl", 1.1) == 1.1 and r.hincrbyfloat(h, "fl", 2.2) == 3.3 and r.hget(h, "fl") == b"3.3"
    err(lambda: r.hincrbyfloat(h, "fl", "inf"), "value is NaN or Infinity")
    err(lambda: r.hincrby(h, "a", 1), "hash value is not an integer")
    r.hset(h, "big", str(2**63 - 1))
    err(lambda: r.hincrby(h, "big", 1), "increment or decrement would overflow")
    err(lambda: r.hincrby(h, "a", "x"), "value is not an integer or out of range")
    r.hset(h, "txt", "abc")
    err(lambda: r.hincrbyfloat(h, "txt", 1), "hash value is not a float")
    err(lambda: r.execute_command("HSET", h, "a"), "wrong number of arguments for 'hset' command")
    err(lambda: r.execute_command("HGET", h), "wrong number of arguments for 'hget' command")
    assert r.hdel(h, "a", "zz", "b") == 2
    # HSCAN walks every field exactly once.
    fields = {}
    cursor = 0
    while True:
        cursor, page = r.hscan(h, cursor, count=2)
        fields.update(page)
        if cursor == 0:
            break
    assert fields == r.hgetall(h)
    assert r.hscan(h, 0, match="t*") == (0, {b"txt": b"abc"})
    c, keys = r.hscan(h, 0, count=100, no_values=True)
    assert c == 0 and sorted(keys) == sorted(r.hkeys(h))
    assert r.hrandfield(h) in r.hkeys(h)
    picks = r.hrandfield(h, 3)
    assert len(picks) == 3 == len(set(picks))
    assert len(r.hrandfield(h, -10)) == 10
    assert len(r.hrandfield(h, 100)) == r.hlen(h)
    wv = r.hrandfield(h, 2, withvalues=True)
    assert len(wv) == 4 and r.hget(h, wv[0]) == wv[1]
    assert r.hrandfield("h:none") is None and r.hrandfield("h:none", 2) == []
    err(lambda: r.hrandfield(h, -10**12), "value is out of range")
    # The last field removed deletes the key.
    assert r.hdel(h, *r.hkeys(h)) > 0
    assert r.exists(h) == 0 and r.type(h) == b"none"


def test_lists(r):
    l, m = fresh(r, "l:1", "l:2")
    assert r.rpush(l, "a", "b", "c") == 3 and r.lpush(l, "z", "y") == 5
    assert r.lrange(l, 0, -1) == [b"y", b"z", b"a", b"b", b"c"]
    assert r.lrange(l, -2, 100) == [b"b", b"c"] and r.lrange(l, 3, 1) == [] and r.lrange("l:none", 0, -1) == []
    assert r.llen(l) == 5 and r.llen("l:none") == 0
    assert r.lindex(l, 0) == b"y" and r.lindex(l, -1) == b"c" and r.lindex(l, 9) is None
    assert r.lset(l, 1, "Z") is True and r.lindex(l, 1) == b"Z"
    err(lambda: r.lset(l, 9, "x"), "index out of range")
    err(lambda: r.lset("l:none", 0, "x"), "no such key")
    assert r.lpushx("l:none", "a") == 0 and r.rpushx("l:none", "a") == 0 and r.exists("l:none") == 0
    assert r.lpushx(l, "w") == 6 and r.rpushx(l, "d") == 7
    assert r.lpop(l) == b"w" and r.rpop(l) == b"d"
    assert r.lpop(l, 2) == [b"y", b"Z"] and r.rpop(l, 2) == [b"c", b"b"]
    assert r.lpop("l:none") is None
    assert raw(r, "LPOP", "l:none", 2) is None
    assert r.lpop(l, 0) == []
    err(lambda: r.lpop(l, -1), "value is out of range, must be positive")
    assert r.lpop(l) == b"a" and r.exists(l) == 0
    r.rpush(l, "1", "2", "3", "2", "1", "2")
    assert r.lrem(l, 2, "2") == 2 and r.lrange(l, 0, -1) == [b"1", b"3", b"1", b"2"]
    assert r.lrem(l, -1, "1") == 1 and r.lrange(l, 0, -1) == [b"1", b"3", b"2"]
    assert r.lrem(l, 0, "nope") == 0
    assert r.linsert(l, "BEFORE", "3", "x") == 4 and r.linsert(l, "AFTER", "2", "y") == 5
    assert r.lrange(l, 0, -1) == [b"1", b"x", b"3", b"2", b"y"]
    assert r.linsert(l, "BEFORE", "zz", "q") == -1 and r.linsert("l:none", "BEFORE", "a", "b") == 0
    err(lambda: r.execute_command("LINSERT", l, "MIDDLE", "3", "x"), "syntax error")
    r.rpush(l, "x", "x")
    assert r.lpos(l, "x") == 1 and r.lpos(l, "x", rank=2) == 5 and r.lpos(l, "x", rank=-1) == 6
    assert r.lpos(l, "x", count=0) == [1, 5, 6] and r.lpos(l, "x", count=2, rank=-1) == [6, 5]
    assert r.lpos(l, "x", maxlen=2) == 1 and r.lpos(l, "x", rank=2, maxlen=3) is None
    assert r.lpos(l, "nope") is None
    err(lambda: r.lpos(l, "x", rank=0), "RANK can't be zero")
    assert r.ltrim(l, 1, -2) is True and r.lrange(l, 0, -1) == [b"x", b"3", b"2", b"y", b"x"]
    assert r.ltrim(l, 5, 10) is True and r.exists(l) == 0
    r.rpush(l, "a", "b", "c")
    assert r.lmove(l, m, "LEFT", "RIGHT") == b"a" and r.lmove(l, m, "RIGHT", "LEFT") == b"c"
    assert r.lrange(l, 0, -1) == [b"b"] and r.lrange(m, 0, -1) == [b"c", b"a"]
    assert r.rpoplpush(m, m) == b"a" and r.lrange(m, 0, -1) == [b"a", b"c"]
    assert r.lmove(m, m, "LEFT", "RIGHT") == b"a" and r.lrange(m, 0, -1) == [b"c", b"a"]
    assert r.rpoplpush("l:none", m) is None
    assert r.rpoplpush(l, m) == b"b" and r.exists(l) == 0 and r.lrange(m, 0, -1) == [b"b", b"c", b"a"]
    err(lambda: r.execute_command("LMOVE", m, l, "UP", "LEFT"), "syntax error")


def test_sets(r):
    s, t, u, d = fresh(r, "s:1", "s:2", "s:u", "s:d")
    assert r.sadd(s, "a", "b", "c", "a") == 3 and r.sadd(s, "c", "d") == 1
    assert r.smembers(s) == {b"a", b"b", b"c", b"d"} and r.smembers("s:none") == set()
    assert r.sismember(s, "a") == 1 and r.sismember(s, "z") == 0
    assert r.smismember(s, ["a", "z"]) == [1, 0]
    assert r.scard(s) == 4 and r.scard("s:none") == 0
    assert r.srem(s, "d", "zz") == 1
    r.sadd(t, "b", "c", "x")
    assert r.sinter(s, t) == {b"b", b"c"} and r.sunion(s, t) == {b"a", b"b", b"c", b"x"}
    assert r.sdiff(s, t) == {b"a"} and r.sinter(s, "s:none") == set() and r.sdiff(s, "s:none") == {b"a", b"b", b"c"}
    assert r.sintercard(2, [s, t]) == 2 and r.sintercard(2, [s, t], limit=1) == 1
    err(lambda: r.execute_command("SINTERCARD", 0, s), "numkeys should be greater than 0")
    assert r.sinterstore(d, [s, t]) == 2 and r.smembers(d) == {b"b", b"c"}
    assert r.sunionstore(u, [s, t]) == 4 and r.sdiffstore(d, [s, t]) == 1 and r.smembers(d) == {b"a"}
    assert r.sinterstore(d, [s, "s:none"]) == 0 and r.exists(d) == 0
    r.set(d, "a string")
    assert r.sunionstore(d, [s]) == 3 and r.type(d) == b"set"
    assert r.smove(s, t, "a") is True and r.smove(s, t, "zz") is False
    assert r.smembers(s) == {b"b", b"c"} and r.smembers(t) == {b"a", b"b", b"c", b"x"}
    assert r.smove(s, "s:new", "b") is True and r.smembers("s:new") == {b"b"}
    r.delete("s:new")
    assert r.srandmember(t) in r.smembers(t)
    assert len(r.srandmember(t, 3)) == 3 == len(set(r.srandmember(t, 3)))
    assert len(r.srandmember(t, -7)) == 7 and r.srandmember("s:none") is None
    err(lambda: r.srandmember(t, -10**12), "value is out of range")
    popped = r.spop(t)
    assert popped not in r.smembers(t) and r.scard(t) == 3
    assert len(r.spop(t, 2)) == 2 and r.scard(t) == 1
    assert len(r.spop(t, 5)) == 1 and r.exists(t) == 0 and r.spop(t) is None
    big = [f"m{i:03}" for i in range(250)]
    r.sadd(u, *big)
    seen, cursor = set(), 0
    while True:
        cursor, page = r.sscan(u, cursor, count=17)
        seen.update(page)
        if cursor == 0:
            break
    assert len(seen) == 254
    assert set(r.sscan(u, 0, match="m00*", count=1000)[1]) == {f"m00{i}".encode() for i in range(10)}
    # A large SPOP burst leaves exactly the rest.
    out = set()
    for _ in range(100):
        out.add(r.spop(u))
    assert len(out) == 100 and r.scard(u) == 154 and not (out & r.smembers(u))


def test_sorted_sets(r):
    z, w, o = fresh(r, "z:1", "z:2", "z:out")
    assert r.zadd(z, {"a": 1, "b": 2, "c": 3}) == 3
    assert r.zadd(z, {"a": 5, "d": 4}, ch=True) == 2
    assert r.zadd(z, {"a": 0}, nx=True) == 0 and r.zscore(z, "a") == 5.0
    assert r.zadd(z, {"zz": 1}, xx=True) == 0 and r.zscore(z, "zz") is None
    assert r.zadd(z, {"a": 6}, gt=True, ch=True) == 1 and r.zadd(z, {"a": 1}, gt=True, ch=True) == 0
    assert r.zadd(z, {"a": 1}, lt=True, ch=True) == 1 and r.zscore(z, "a") == 1.0
    assert r.zadd(z, {"a": 2}, incr=True) == 3.0
    assert r.zadd(z, {"q": 2}, incr=True, xx=True) is None
    err(lambda: r.execute_command("ZADD", z, "NX", "XX", 1, "a"), "XX and NX options at the same time are not compatible")
    err(lambda: r.execute_command("ZADD", z, "GT", "LT", 1, "a"), "GT, LT, and/or NX options")
    err(lambda: r.execute_command("ZADD", z, "INCR", 1, "a", 2, "b"), "INCR option supports a single increment-element pair")
    err(lambda: r.execute_command("ZADD", z, "x", "a"), "value is not a valid float")
    err(lambda: r.execute_command("ZADD", z, 1, "a", 2), "syntax error")
    # a=3 b=2 c=3 d=4
    assert r.zcard(z) == 4 and r.zcard("z:none") == 0
    assert r.zrange(z, 0, -1, withscores=True) == [(b"b", 2.0), (b"a", 3.0), (b"c", 3.0), (b"d", 4.0)]
    assert r.zrange(z, 0, 1, desc=True) == [b"d", b"c"]
    assert r.zrevrange(z, 0, 0, withscores=True) == [(b"d", 4.0)]
    assert r.zrangebyscore(z, "(2", "+inf") == [b"a", b"c", b"d"]
    assert r.zrangebyscore(z, "-inf", "3", start=1, num=1) == [b"a"]
    assert r.zrevrangebyscore(z, "4", "(3", withscores=True) == [(b"d", 4.0)]
    assert r.zrange(z, "(2", 3, byscore=True) == [b"a", b"c"]
    assert r.zrange(z, "+inf", "-inf", byscore=True, desc=True, offset=0, num=2) == [b"d", b"c"]
    err(lambda: r.zrangebyscore(z, "x", 1), "min or max is not a float")
    assert r.zcount(z, 3, 4) == 3 and r.zcount(z, "(3", "+inf") == 1
    assert r.zrank(z, "b") == 0 and r.zrank(z, "d") == 3 and r.zrevrank(z, "d") == 0 and r.zrank(z, "zz") is None
    assert raw(r, "ZRANK", z, "c", "WITHSCORE") == [2, b"3"]
    assert r.zmscore(z, ["a", "zz"]) == [3.0, None]
    assert r.zincrby(z, 1.5, "b") == 3.5 and r.zincrby(z, 1, "new") == 1.0
    assert r.zrem(z, "new", "zz") == 1
    assert r.zpopmin(z) == [(b"a", 3.0)] and r.zpopmax(z, 2) == [(b"d", 4.0), (b"b", 3.5)]
    assert r.zpopmin("z:none") == [] and r.zrange(z, 0, -1) == [b"c"]
    r.zadd(w, {m: 0 for m in "abcdefg"})
    assert r.zrangebylex(w, "[b", "(e") == [b"b", b"c", b"d"]
    assert r.zrangebylex(w, "-", "+", start=2, num=2) == [b"c", b"d"]
    assert r.zlexcount(w, "(a", "[c") == 2 and r.zlexcount(w, "-", "+") == 7
    err(lambda: r.zrangebylex(w, "b", "c"), "min or max not valid string range item")
    assert r.zremrangebyrank(w, 0, 1) == 2 and r.zrange(w, 0, 0) == [b"c"]
    r.zadd(z, {"x": 10, "y": 20, "q": -1.5})
    assert r.zremrangebyscore(z, 10, "(20") == 1 and r.zrange(z, 0, -1) == [b"q", b"c", b"y"]
    assert r.zscore(z, "q") == -1.5
    r.zadd(z, {"inf": float("inf"), "ninf": float("-inf")})
    assert r.zrange(z, 0, 0) == [b"ninf"] and r.zrange(z, -1, -1) == [b"inf"]
    members, cursor = {}, 0
    while True:
        cursor, page = r.zscan(z, cursor, count=2)
        members.update(dict(page))
        if cursor == 0:
            break
    assert members == dict(r.zrange(z, 0, -1, withscores=True))
    # Union and intersection, with weights and aggregates; sets count as 1.
    r.delete("z:a", "z:b", "z:s")
    r.zadd("z:a", {"p": 1, "q": 2})
    r.zadd("z:b", {"q": 10, "r": 20})
    r.sadd("z:s", "q", "r")
    assert r.zunionstore(o, ["z:a", "z:b"]) == 3
    assert r.zrange(o, 0, -1, withscores=True) == [(b"p", 1.0), (b"q", 12.0), (b"r", 20.0)]
    assert r.zinterstore(o, {"z:a": 2, "z:b": 1}) == 1 and r.zscore(o, "q") == 14.0
    assert r.zunionstore(o, ["z:a", "z:b", "z:s"], aggregate="MAX") == 3 and r.zscore(o, "q") == 10.0
    assert r.zinterstore(o, ["z:a", "z:b", "z:s"], aggregate="MIN") == 1 and r.zscore(o, "q") == 1.0
    assert r.zinterstore(o, ["z:a", "z:none"]) == 0 and r.exists(o) == 0
    err(lambda: r.execute_command("ZUNIONSTORE", o, 0, "z:a"), "at least 1 input key is needed")


def test_sorted_set_ranks_match_a_model(r):
    """ZRANK, ZREVRANK, ZRANGE/ZREVRANGE by index and ZREMRANGEBYRANK on
    sets large enough for two levels of the rank index (4,096+ members),
    under adds, score changes, removals and pops, against a Python model;
    then the same on a ZUNIONSTORE copy (an index built in one batch) and
    after RENAME."""
    import random

    rnd = random.Random(11)
    (z, u, v) = fresh(r, "zr:1", "zr:u", "zr:v")
    model = {}

    def ordered(m):
        return sorted(m.items(), key=lambda kv: (kv[1], kv[0]))

    def check(key, m, samples=60):
        o = ordered(m)
        n = len(o)
        assert r.zcard(key) == n
        index = {name: i for i, (name, _) in enumerate(o)}
        for name in rnd.sample(sorted(m), min(samples, n)):
            assert r.zrank(key, name) == index[name], name
            assert r.zrevrank(key, name) == n - 1 - index[name], name
        for _ in range(samples):
            a, b = rnd.randint(-n - 5, n + 5), rnd.randint(-n - 5, n + 5)
            want = [name for name, _ in o]
            lo, hi = (a if a >= 0 else max(n + a, 0)), (b if b >= 0 else n + b)
            assert r.zrange(key, a, b) == want[lo : hi + 1], (a, b)
            rev = want[::-1]
            assert r.zrevrange(key, a, b) == rev[lo : hi + 1], (a, b)
        # A window deep inside, with scores.
        if n > 10:
            i = rnd.randrange(n - 10)
            assert r.zrange(key, i, i + 9, withscores=True) == [(k, float(s)) for k, s in o[i : i + 10]]

    def add(count):
        p = r.pipeline(transaction=False)
        for _ in range(count):
            name = b"m%07d" % rnd.randrange(10**7)
            score = rnd.choice([rnd.randint(0, 50), rnd.random() * 1000 - 500])
            model[name] = float(score)
            p.zadd(z, {name: score})
        p.execute()

    add(50)
    check(z, model)  # below one level
    add(4500)
    check(z, model)  # two levels
    # Multi-member ZADDs, score changes and ZINCRBY.
    batch = {b"b%05d" % i: rnd.randint(0, 50) for i in range(300)}
    assert r.zadd(z, batch) == len(set(batch) - set(model))
    model.update({k: float(s) for k, s in batch.items()})
    for name in rnd.sample(sorted(model), 300):
        model[name] = r.zincrby(z, rnd.randint(-20, 20), name)
    for name in rnd.sample(sorted(model), 300):
        model[name] = float(rnd.randint(0, 50))
        r.zadd(z, {name: model[name]})
    check(z, model)
    # Removals of every kind.
    gone = rnd.sample(sorted(model), 700)
    assert r.zrem(z, *gone) == 700
    for name in gone:
        del model[name]
    for name, s in r.zpopmin(z, 25) + r.zpopmax(z, 25):
        assert model.pop(name) == s
    o = ordered(model)
    assert r.zremrangebyrank(z, 100, 399) == 300
    for name, _ in o[100:400]:
        del model[name]
    assert r.zremrangebyscore(z, 10, "(12") == len([k for k, s in model.items() if 10 <= s < 12])
    model = {k: s for k, s in model.items() if not 10 <= s < 12}
    check(z, model)
    # An index built in one batch, and one carried over by RENAME.
    assert r.zunionstore(u, [z]) == len(model)
    check(u, model)
    r.rename(u, v)
    check(v, model)
    add(200)
    check(z, model)


def test_resp3_collection_replies(daemon):
    c = daemon.client(protocol=3, single_connection_client=True)
    try:
        c.delete("r3:h", "r3:z")
        c.hset("r3:h", mapping={"a": "1"})
        assert raw(c, "HGETALL", "r3:h") == {b"a": b"1"}
        c.zadd("r3:z", {"m": 1.5})
        assert raw(c, "ZSCORE", "r3:z", "m") == 1.5
        assert raw(c, "ZRANGE", "r3:z", 0, -1, "WITHSCORES") == [[b"m", 1.5]]
        assert raw(c, "ZPOPMIN", "r3:z") == [b"m", 1.5]
        c.delete("r3:s")
        c.sadd("r3:s", "a", "b")
        assert sorted(raw(c, "SMEMBERS", "r3:s")) == [b"a", b"b"]
    finally:
        c.close()
    # Sets go out as RESP3 sets (`~`), arrays in RESP2.
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as s:
        s.sendall(b"SMEMBERS r3:s\r\nHELLO 3\r\nSMEMBERS r3:s\r\nSUNION r3:s r3:none\r\n")
        got = b""
        while got.count(b"$1\r\nb\r\n") < 3:
            got += s.recv(65536)
    assert got.startswith(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")
    assert got.endswith(b"~2\r\n$1\r\na\r\n$1\r\nb\r\n~2\r\n$1\r\na\r\n$1\r\nb\r\n")


def test_wrong_types_and_key_commands(r):
    h, l, s, z, k = fresh(r, "t:h", "t:l", "t:s", "t:z", "t:k")
    r.hset(h, "f", "v")
    r.rpush(l, "e")
    r.sadd(s, "m")
    r.zadd(z, {"m": 1})
    r.set(k, "v")
    assert [r.type(x) for x in (h, l, s, z, k, "t:none")] == [b"hash", b"list", b"set", b"zset", b"string", b"none"]
    for fn in (lambda: r.get(h), lambda: r.incr(l), lambda: r.append(s, "x"), lambda: r.hget(k, "f"),
               lambda: r.lpush(h, "x"), lambda: r.sadd(z, "x"), lambda: r.zadd(s, {"x": 1}),
               lambda: r.lrange(s, 0, -1), lambda: r.smembers(l), lambda: r.zrange(h, 0, -1),
               lambda: r.getset(h, "x"), lambda: r.sinter(s, l), lambda: r.smove(s, l, "m"),
               lambda: r.lmove(l, s, "LEFT", "LEFT")):
        err(fn, WRONGTYPE)
    assert r.exists(h, l, s, z, k, "t:none") == 5
    assert r.setnx(h, "x") is False and r.set(h, "x", nx=True) is None
    # SET replaces a collection of any type.
    assert r.set(l, "now a string") is True and r.type(l) == b"string" and r.get(l) == b"now a string"
    err(lambda: r.lpush(l, "x"), WRONGTYPE)
    r.mset({s: "str"})
    assert r.type(s) == b"string"
    assert r.msetnx({z: "1", "t:fresh": "2"}) is False and r.exists("t:fresh") == 0
    # TTLs of collections.
    assert r.ttl(h) == -1 and r.expire(h, 100) is True and 95 <= r.ttl(h) <= 100
    assert r.pexpire(z, 100000) is True and r.pttl(z) > 90000
    assert r.persist(h) is True and r.ttl(h) == -1
    assert r.pexpire(h, 200) is True
    time.sleep(0.4)
    assert r.exists(h) == 0 and r.hget(h, "f") is None and r.type(h) == b"none"
    assert r.hset(h, "g", "w") == 1 and r.hgetall(h) == {b"g": b"w"}, "a new hash must not see old fields"
    # RENAME moves a collection with its TTL, replacing the target.
    r.expire(z, 1000)
    assert r.rename(z, "t:z2") is True and r.exists(z) == 0
    assert r.zrange("t:z2", 0, -1, withscores=True) == [(b"m", 1.0)] and r.ttl("t:z2") > 990
    assert r.renamenx("t:z2", h) is False
    assert r.rename("t:z2", h) is True and r.type(h) == b"zset" and r.zscore(h, "m") == 1.0
    r.rpush("t:l2", "a", "b")
    assert r.rename(k, "t:l2") is True and r.type("t:l2") == b"string"
    # DEL and UNLINK remove collections; EXISTS counts them.
    assert r.delete(h, "t:l2", "t:none") == 2 and r.exists(h) == 0
    r.sadd("t:s2", "a")
    assert r.unlink("t:s2") == 1


def test_keyspace_listing_includes_collections(daemon):
    r = daemon.client()
    r.flushdb()
    r.set("ks:str", "1")
    r.hset("ks:hash", "f", "v")
    r.rpush("ks:list", "a")
    r.sadd("ks:set", "m")
    r.zadd("ks:zset", {"m": 1})
    assert r.dbsize() == 5
    assert r.info("keyspace")["db0"]["keys"] == 5
    assert sorted(r.keys("ks:*")) == [b"ks:hash", b"ks:list", b"ks:set", b"ks:str", b"ks:zset"]
    assert sorted(r.scan_iter(match="ks:*", count=2)) == sorted(r.keys("*"))
    assert list(r.scan_iter(_type="HASH")) == [b"ks:hash"]
    assert list(r.scan_iter(_type="zset")) == [b"ks:zset"]
    assert r.randomkey() in r.keys("*")
    assert r.flushdb() is True and r.dbsize() == 0 and r.keys("*") == []
    assert r.hgetall("ks:hash") == {}
    r.close()


def test_collections_in_multi_exec_and_watch(r, daemon):
    fresh(r, "mx:l", "mx:h", "mx:z")
    with r.pipeline() as p:
        p.rpush("mx:l", "a", "b").lpop("mx:l").hset("mx:h", "f", "1").hincrby("mx:h", "f", 2)
        p.zadd("mx:z", {"m": 1}).zincrby("mx:z", 2, "m").lrange("mx:l", 0, -1).get("mx:h")
        res = p.execute(raise_on_error=False)
    assert res[:7] == [2, b"a", 1, 3, 1, 3.0, [b"b"]]
    assert isinstance(res[7], redis.ResponseError) and WRONGTYPE in str(res[7])
    assert r.hget("mx:h", "f") == b"3"
    # WATCH on a hash: a change by another client fails EXEC.
    other = daemon.client()
    with r.pipeline() as p:
        p.watch("mx:h")
        other.hset("mx:h", "f", "changed")
        p.multi()
        p.hset("mx:h", "f", "mine")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.hget("mx:h", "f") == b"changed"
    other.close()


def test_concurrent_pushes_and_pops_of_one_list_lose_nothing(daemon):
    """Clients hammering one key are combined into shared commits; every
    push must land exactly once and every pop must return a distinct
    element."""
    c = daemon.client()
    c.delete("hot:list", "hot:n")
    per, workers = 150, 8

    def pusher(w):
        x = daemon.client()
        for i in range(per):
            x.rpush("hot:list", f"{w}:{i}")
            x.hincrby("hot:n", "count", 1)
        x.close()

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(workers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    items = c.lrange("hot:list", 0, -1)
    assert len(items) == per * workers == len(set(items))
    # Per client, order is preserved.
    for w in range(workers):
        mine = [int(i.split(b":")[1]) for i in items if i.startswith(f"{w}:".encode())]
        assert mine == list(range(per))
    assert c.hget("hot:n", "count") == str(per * workers).encode()
    popped = []
    lock = threading.Lock()

    def popper():
        x = daemon.client()
        while True:
            v = x.lpop("hot:list")
            if v is None:
                break
            with lock:
                popped.append(v)
        x.close()

    threads = [threading.Thread(target=popper) for _ in range(workers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(popped) == sorted(items) and c.exists("hot:list") == 0
    c.close()


def test_collections_and_their_expiry_survive_restart():
    d = Daemon("--shards", "2")
    data = d.data
    try:
        c = d.client()
        c.hset("dur:h", mapping={"a": "1", "b": "2"})
        c.rpush("dur:l", "x", "y", "z")
        c.lpop("dur:l")
        c.sadd("dur:s", "m1", "m2")
        c.zadd("dur:z", {"a": 1.5, "b": -2})
        c.sadd("dur:ttl", "gone")
        c.pexpire("dur:ttl", 1500)
        c.hset("dur:long", "f", "v")
        c.expire("dur:long", 1000)
    finally:
        d.stop()
    d = Daemon("--shards", "2", data=data)
    try:
        c = d.client()
        assert c.hgetall("dur:h") == {b"a": b"1", b"b": b"2"}
        assert c.lrange("dur:l", 0, -1) == [b"y", b"z"] and c.rpush("dur:l", "w") == 3
        assert c.smembers("dur:s") == {b"m1", b"m2"}
        assert c.zrange("dur:z", 0, -1, withscores=True) == [(b"b", -2.0), (b"a", 1.5)]
        assert 990 <= c.ttl("dur:long") <= 1000
        time.sleep(1.6)
        assert c.exists("dur:ttl") == 0 and c.smembers("dur:ttl") == set()
    finally:
        d.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-tools not installed")
def test_redis_benchmark_data_type_tests(daemon):
    tests = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset"
    out = subprocess.run(
        ["redis-benchmark", "-h", daemon.host, "-p", str(daemon.port), "-t", tests,
         "-n", "2000", "-c", "20", "-r", "1000", "-q"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for cmd in ["SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "HSET", "SPOP",
                "ZADD", "LRANGE_100", "MSET"]:
        assert f"{cmd}" in out.stdout, out.stdout
    assert "ERR" not in out.stdout + out.stderr and "WRONGTYPE" not in out.stdout + out.stderr


# The tests below cover what a side-by-side run against redis-server
# (7.0, and 7.2's formats where they changed) found FlashKV answering
# otherwise.


def test_integers_read_as_redis_reads_them(r):
    """No "+", no leading zeros, no spaces: Redis' string2ll, for stored
    values and arguments alike."""
    fresh(r, "d:n", "d:p", "d:i", "d:l")
    r.set("d:n", "010")
    r.set("d:p", "+5")
    for k in ("d:n", "d:p"):
        err(lambda: r.incr(k), "value is not an integer or out of range")
    r.set("d:i", 1)
    err(lambda: r.incrby("d:i", "010"), "value is not an integer or out of range")
    err(lambda: r.execute_command("LRANGE", "d:l", "+0", "-1"), "value is not an integer or out of range")
    assert r.incrby("d:i", "-10") == -9


def test_scores_print_as_redis_7_2_prints_them(r):
    """Integers within 2^62 in full; others the shortest digits, in
    scientific notation beyond Redis' thresholds."""
    fresh(r, "d:z")
    scores = {"a": 1e21, "b": 1.5e-7, "c": 102.1, "d": 1700000000000, "e": 0.00001, "f": 0.1 + 0.2}
    r.zadd("d:z", scores)
    got = {m: raw(r, "ZSCORE", "d:z", m) for m in scores}
    assert got == {
        "a": b"1e+21",
        "b": b"1.5e-7",
        "c": b"102.1",
        "d": b"1700000000000",
        "e": b"0.00001",
        "f": b"0.30000000000000004",
    }, got
    assert raw(r, "ZINCRBY", "d:z", 1e21, "a") == b"2e+21"


def test_option_and_subcommand_errors_as_redis(r):
    """EXPIRE's XX goes with GT or LT (NX with none, GT not with LT); the
    errors of SELECT, SINTERCARD, LPOS and of CONFIG's and COMMAND's
    subcommands are Redis' texts."""
    fresh(r, "d:e", "d:s", "d:l")
    r.set("d:e", "v")
    assert r.expire("d:e", 100, xx=True, gt=True) is False  # no TTL yet
    assert r.expire("d:e", 100, lt=True) is True  # none counts as infinite
    assert r.expire("d:e", 500, xx=True, gt=True) is True
    assert r.expire("d:e", 600, xx=True, lt=True) is False
    assert r.expire("d:e", 400, xx=True, lt=True) is True
    assert 300 < r.ttl("d:e") <= 400
    err(lambda: r.execute_command("EXPIRE", "d:e", 10, "GT", "LT"), "GT and LT options at the same time are not compatible")
    err(lambda: r.execute_command("EXPIRE", "d:e", 10, "NX", "GT"), "NX and XX, GT or LT options at the same time are not compatible")
    err(lambda: r.execute_command("SELECT", "abc"), "value is not an integer or out of range")
    r.sadd("d:s", "a")
    err(lambda: r.execute_command("SINTERCARD", "abc", "d:s"), "numkeys should be greater than 0")
    r.rpush("d:l", "a", "b")
    err(lambda: r.execute_command("LPOS", "d:l", "a", "RANK", -(2**63)), "value is out of range")
    err(lambda: r.execute_command("CONFIG", "GET"), "wrong number of arguments for 'config|get' command")
    err(lambda: r.execute_command("CONFIG", "FOO"), "unknown subcommand 'FOO'. Try CONFIG HELP.")
    err(lambda: r.execute_command("COMMAND", "COUNT", "x"), "wrong number of arguments for 'command|count' command")
    err(lambda: r.execute_command("COMMAND", "FOO"), "unknown subcommand 'FOO'. Try COMMAND HELP.")


def test_zrevrangebylex_and_the_range_and_pop_argument_errors(r):
    """ZREVRANGEBYLEX (max first); WITHSCORES and LIMIT where they do not
    apply get Redis' texts rather than a bare syntax error; a pop count
    that is not a number is out of range, as a negative one."""
    fresh(r, "d:zl", "d:pl", "d:ps")
    r.zadd("d:zl", {m: 0 for m in "abcde"})
    assert r.execute_command("ZREVRANGEBYLEX", "d:zl", "+", "-") == [b"e", b"d", b"c", b"b", b"a"]
    assert r.execute_command("ZREVRANGEBYLEX", "d:zl", "[d", "(b") == [b"d", b"c"]
    assert r.execute_command("ZREVRANGEBYLEX", "d:zl", "+", "-", "LIMIT", 1, 2) == [b"d", b"c"]
    assert r.execute_command("ZREVRANGEBYLEX", "d:zl", "-", "+") == []
    for cmd in (("ZRANGEBYLEX", "d:zl", "-", "+"), ("ZREVRANGEBYLEX", "d:zl", "+", "-")):
        err(lambda: r.execute_command(*cmd, "WITHSCORES"), "WITHSCORES not supported in combination with BYLEX")
    err(lambda: r.execute_command("ZREVRANGE", "d:zl", 0, -1, "LIMIT", 0, 1), "LIMIT is only supported in combination with either BYSCORE or BYLEX")
    r.rpush("d:pl", "a", "b")
    r.sadd("d:ps", "a")
    for cmd in (("LPOP", "d:pl"), ("RPOP", "d:pl"), ("SPOP", "d:ps"), ("ZPOPMIN", "d:zl"), ("ZPOPMAX", "d:zl")):
        err(lambda: r.execute_command(*cmd, "abc"), "value is out of range, must be positive")
        err(lambda: r.execute_command(*cmd, -1), "value is out of range, must be positive")


def test_repeated_and_conflicting_options_as_redis(r):
    """A TTL option given twice takes the last time (two different ones,
    or one with KEEPTTL, are a syntax error); ZRANGE takes each of BYSCORE,
    BYLEX and REV once; LPOP and RPOP with two counts are an arity error."""
    fresh(r, "d:o", "d:ol", "d:oz")
    assert r.execute_command("SET", "d:o", "v", "EX", 10, "EX", 100) is True
    assert 90 < r.ttl("d:o") <= 100
    assert r.execute_command("SET", "d:o", "v", "KEEPTTL", "KEEPTTL") is True
    assert 90 < r.ttl("d:o") <= 100
    for extra in (("EX", 10, "PX", 10), ("KEEPTTL", "EX", 10), ("EX", 10, "KEEPTTL")):
        err(lambda: r.execute_command("SET", "d:o", "v", *extra), "syntax error")
    assert r.execute_command("GETEX", "d:o", "EX", 5, "EX", 50) == b"v"
    assert 40 < r.ttl("d:o") <= 50
    err(lambda: r.execute_command("GETEX", "d:o", "PERSIST", "EX", 10), "syntax error")
    r.zadd("d:oz", {"a": 1})
    for extra in (("BYSCORE", "BYLEX"), ("BYLEX", "BYLEX"), ("REV", "REV")):
        err(lambda: r.execute_command("ZRANGE", "d:oz", 0, -1, *extra), "syntax error")
    r.rpush("d:ol", "a", "b")
    for cmd in ("LPOP", "RPOP"):
        err(lambda: r.execute_command(cmd, "d:ol", 1, 2), f"wrong number of arguments for '{cmd.lower()}' command")


def test_zscan_answers_scores_as_strings_in_resp3_too(daemon):
    """A SCAN-family reply is strings in either protocol; ZSCAN sent its
    scores as RESP3 doubles."""
    c = daemon.client(single_connection_client=True, protocol=3)
    try:
        c.delete("d:zs")
        c.zadd("d:zs", {"a": 1, "b": 2.5})
        assert raw(c, "ZSCAN", "d:zs", 0) == [b"0", [b"a", b"1", b"b", b"2.5"]]
    finally:
        c.close()


def blocked_clients(c):
    return c.info("clients")["blocked_clients"]


def wait_until(what, timeout=10):
    deadline = time.time() + timeout
    while not what():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def in_thread(fn):
    """Runs fn in a thread; returns a function that joins it and gives its
    result (or raises its exception)."""
    out = {}

    def run():
        try:
            out["v"] = fn()
        except BaseException as e:  # noqa: B902 (handed to the test)
            out["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=10):
        t.join(timeout)
        assert not t.is_alive(), "the blocked call did not return"
        if "e" in out:
            raise out["e"]
        return out.get("v")

    return join


def test_blocking_pops_serve_at_once_wait_for_a_push_and_time_out(r, daemon):
    a, b, c, z, dst = fresh(r, "bl:a", "bl:b", "bl:c", "bl:z", "bl:dst")
    r.rpush(a, "1", "2")
    r.rpush(b, "3", "4")
    # Available at once: the first key (in order) with an element.
    assert r.blpop([b, a], timeout=1) == (b"bl:b", b"3")
    assert r.brpop([b, a], timeout=1) == (b"bl:b", b"4")
    assert r.brpop([b, a], timeout=1) == (b"bl:a", b"2")
    assert r.blpop([c, a], timeout=0) == (b"bl:a", b"1")
    # Nothing to pop: nil once the timeout has passed (fractions allowed).
    r.slowlog_reset()
    started = time.time()
    assert r.blpop([a, b], timeout=0.3) is None
    assert 0.25 < time.time() - started < 5
    # The wait is not run time: SLOWLOG (10 ms) has no entry for it.
    assert not [e for e in r.slowlog_get(-1) if e["command"].startswith(b"BLPOP")], r.slowlog_get(-1)
    assert raw(r, "BRPOPLPUSH", a, dst, "0.1") is None
    assert raw(r, "BZPOPMIN", z, "0.1") is None
    # Waiting, on keys of both shards: a push by another client serves it.
    for key in [a, b]:
        other = daemon.client()
        join = in_thread(lambda: other.blpop([a, b], timeout=0))
        wait_until(lambda: blocked_clients(r) == 1)
        r.rpush(key, "x", "y")
        assert join() == (key.encode(), b"x")
        assert blocked_clients(r) == 0
        assert r.lrange(key, 0, -1) == [b"y"]
        r.delete(key)
        other.close()
    # BLMOVE and BRPOPLPUSH move the element that arrives.
    other = daemon.client(single_connection_client=True)
    join = in_thread(lambda: other.blmove(a, dst, 0, "LEFT", "RIGHT"))
    wait_until(lambda: blocked_clients(r) == 1)
    r.lpush(a, "moved")
    assert join() == b"moved"
    join = in_thread(lambda: other.brpoplpush(a, dst, 0))
    wait_until(lambda: blocked_clients(r) == 1)
    r.rpush(a, "again")
    assert join() == b"again"
    assert r.lrange(dst, 0, -1) == [b"again", b"moved"] and r.exists(a) == 0
    # BZPOPMIN and BZPOPMAX, woken by ZADD.
    join = in_thread(lambda: other.bzpopmax([c, z], timeout=0))
    wait_until(lambda: blocked_clients(r) == 1)
    r.zadd(z, {"lo": 1, "hi": 2})
    assert join() == (b"bl:z", b"hi", 2.0)
    assert r.bzpopmin([c, z], timeout=1) == (b"bl:z", b"lo", 1.0)
    # BLMPOP and BZMPOP take up to COUNT of what arrives.
    join = in_thread(lambda: other.blmpop(0, 2, c, a, direction="RIGHT", count=5))
    wait_until(lambda: blocked_clients(r) == 1)
    r.rpush(a, "m1", "m2", "m3")
    assert join() == [b"bl:a", [b"m3", b"m2", b"m1"]]
    join = in_thread(lambda: other.bzmpop(0, 1, [z], min=True, count=2))
    wait_until(lambda: blocked_clients(r) == 1)
    r.zadd(z, {"z1": 1, "z2": 2, "z3": 3})
    assert join() == [b"bl:z", [[b"z1", b"1"], [b"z2", b"2"]]]
    assert r.lmpop(1, c, direction="LEFT") is None
    assert r.zmpop(2, [c, z], max=True) == [b"bl:z", [[b"z3", b"3"]]]
    # CLIENT UNBLOCK ends a wait as a timeout, or with an error; CLIENT
    # LIST flags the blocked client "b".
    oid = other.client_id()
    assert r.client_unblock(oid) is False  # (not blocked)
    join = in_thread(lambda: other.blpop([c], timeout=0))
    wait_until(lambda: blocked_clients(r) == 1)
    assert [x["flags"] for x in r.client_list() if int(x["id"]) == oid] == ["b"]
    assert r.client_unblock(oid) is True
    assert join() is None
    join = in_thread(lambda: other.bzpopmin([c], timeout=0))
    wait_until(lambda: blocked_clients(r) == 1)
    assert r.client_unblock(oid, error=True) is True
    with pytest.raises(redis.ResponseError, match="UNBLOCKED client unblocked via CLIENT UNBLOCK"):
        join()
    assert blocked_clients(r) == 0
    err(lambda: r.execute_command("CLIENT", "UNBLOCK", oid, "NOW"), "CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    # A push inside MULTI/EXEC wakes it once the transaction commits.
    join = in_thread(lambda: other.brpop([c], timeout=0))
    wait_until(lambda: blocked_clients(r) == 1)
    p = r.pipeline(transaction=True)
    p.rpush(c, "in-exec")
    p.execute()
    assert join() == (b"bl:c", b"in-exec")
    other.close()


def test_blocking_pop_errors_and_exec_as_redis(r):
    a, s, z = fresh(r, "be:a", "be:s", "be:z")
    err(lambda: r.execute_command("BLPOP", a, "-1"), "timeout is negative")
    err(lambda: r.execute_command("BLPOP", a, "soon"), "timeout is not a float or out of range")
    err(lambda: r.execute_command("BLPOP", a), "wrong number of arguments for 'blpop' command")
    err(lambda: r.execute_command("BLMOVE", a, s, "UP", "LEFT", "1"), "syntax error")
    err(lambda: r.execute_command("BZPOPMIN", z), "wrong number of arguments for 'bzpopmin' command")
    err(lambda: r.execute_command("LMPOP", 0, a, "LEFT"), "numkeys should be greater than 0")
    err(lambda: r.execute_command("LMPOP", 2, a, "LEFT"), "syntax error")
    err(lambda: r.execute_command("ZMPOP", 1, z, "LEFT"), "syntax error")
    err(lambda: r.execute_command("LMPOP", 1, a, "LEFT", "COUNT", 0), "count should be greater than 0")
    err(lambda: r.execute_command("BZMPOP", "-1", 1, z, "MIN"), "timeout is negative")
    err(lambda: r.execute_command("BLMPOP", 0, 1, a), "wrong number of arguments for 'blmpop' command")
    r.set(s, "text")
    err(lambda: r.blpop([s, a], timeout=1), WRONGTYPE)
    err(lambda: r.bzpopmin([s], timeout=1), WRONGTYPE)
    err(lambda: r.lmpop(2, a, s, direction="LEFT"), WRONGTYPE)
    # (An empty source is nil before the destination's type matters.)
    assert r.brpoplpush(a, s, timeout=0.1) is None
    r.rpush(a, "e")
    err(lambda: r.brpoplpush(a, s, timeout=1), WRONGTYPE)
    # A list before a key of the wrong type is served, as in Redis.
    assert r.blpop([a, s], timeout=1) == (b"be:a", b"e")
    # Inside EXEC a blocking pop does not wait.
    p = r.pipeline(transaction=True)
    p.blpop([a], timeout=0)
    p.rpush(a, "later")
    p.blpop([a], timeout=0)
    started = time.time()
    assert p.execute() == [None, 1, (b"be:a", b"later")]
    assert time.time() - started < 5
    info = raw(r, "COMMAND", "INFO", "blpop")[0]
    flags = [f if isinstance(f, bytes) else f.encode() for f in info[2]]
    assert info[1] == -3 and flags == [b"write", b"blocking"] and info[3:6] == [1, -2, 1], info


def test_blocked_consumers_share_pushed_elements_exactly_once(daemon):
    """Workers blocked in BRPOP on a queue (as job queues run) take every
    element pushed exactly once."""
    c = daemon.client()
    (q,) = fresh(c, "bq:jobs")
    workers, jobs = 6, 300
    got, lock = [], threading.Lock()

    def worker():
        x = daemon.client()
        while True:
            _, job = x.brpop([q], timeout=0)
            if job == b"stop":
                break
            with lock:
                got.append(job)
        x.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    [t.start() for t in threads]
    wait_until(lambda: blocked_clients(c) == workers)
    for i in range(jobs):
        c.lpush(q, f"job{i}")
    wait_until(lambda: len(got) == jobs)
    c.lpush(q, *["stop"] * workers)
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert sorted(got) == sorted(f"job{i}".encode() for i in range(jobs))
    assert c.exists(q) == 0 and blocked_clients(c) == 0
    c.close()


def test_a_blocked_client_that_leaves_takes_nothing_and_a_shutdown_ends_the_wait():
    d = Daemon("--shards", "2")
    try:
        c = d.client()
        # A client that hangs up while blocked: it leaves, and a later push
        # stays in the list.
        s = socket.create_connection((d.host, d.port))
        s.sendall(b"*3\r\n$5\r\nBLPOP\r\n$5\r\ngone1\r\n$1\r\n0\r\n")
        wait_until(lambda: blocked_clients(c) == 1)
        s.close()
        wait_until(lambda: blocked_clients(c) == 0)
        c.rpush("gone1", "kept")
        time.sleep(0.3)
        assert c.lrange("gone1", 0, -1) == [b"kept"]
        # CLIENT KILL of a blocked client.
        k = d.client(single_connection_client=True)
        kid = k.client_id()
        join = in_thread(lambda: k.blpop(["gone2"], timeout=0))
        wait_until(lambda: blocked_clients(c) == 1)
        assert c.client_kill_filter(_id=kid) == 1
        with pytest.raises(redis.ConnectionError):
            join()
        wait_until(lambda: blocked_clients(c) == 0)
        # The replies before a blocking pop in a pipeline arrive while it waits.
        p = socket.create_connection((d.host, d.port))
        p.sendall(b"*1\r\n$4\r\nPING\r\n*3\r\n$5\r\nBLPOP\r\n$5\r\ngone4\r\n$1\r\n0\r\n")
        p.settimeout(5)
        assert p.recv(100) == b"+PONG\r\n"
        wait_until(lambda: blocked_clients(c) == 1)
        p.close()
        wait_until(lambda: blocked_clients(c) == 0)
        # A shutdown while a client waits with no timeout: the daemon stops at
        # once (not after the drain period).
        w = socket.create_connection((d.host, d.port))
        w.sendall(b"*3\r\n$5\r\nBRPOP\r\n$5\r\ngone3\r\n$1\r\n0\r\n")
        wait_until(lambda: blocked_clients(c) == 1)
        c.close()
        started = time.time()
        d.stop()
        assert time.time() - started < 8
        w.close()
    finally:
        d.proc.kill()  # (if a check failed before it stopped)
        shutil.rmtree(d.data, ignore_errors=True)
