"""FlashKV's Redis protocol through stock clients: redis-py from PyPI (RESP2
and RESP3) against the real daemon binary (FLASHKV_BIN), and redis-cli and
redis-benchmark from Debian's redis-tools when they are installed."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLASHKV_BIN", os.path.join(ROOT, "target", "debug", "flashkv"))


class Daemon:
    def __init__(self, *extra, data=None):
        self.data = data or tempfile.mkdtemp(prefix="flashkv-resp-")
        self.proc = subprocess.Popen(
            [BIN, "--data-dir", self.data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
             "--resp-addr", "127.0.0.1:0", "--no-pin", "--log-level", "warn", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self.proc.stdout.readline()
        assert "RESP on " in line, f"daemon did not start: {line!r} {''.join(self.stderr)}"
        host, port = line.split("RESP on ")[1].split(" ")[0].rsplit(":", 1)
        self.host, self.port = host, int(port)

    def client(self, **kw):
        return redis.Redis(host=self.host, port=self.port, **kw)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, f"graceful shutdown must exit 0, got {code}: {''.join(self.stderr[-20:])}"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon("--shards", "2", "--max-value-size", "65536")
    yield d
    d.stop()
    shutil.rmtree(d.data, ignore_errors=True)


@pytest.fixture
def r(daemon):
    c = daemon.client()
    yield c
    c.close()


def same_shard_keys(r, prefix, n):
    """n fresh keys (multi-key commands no longer need them on one shard)."""
    keys = [f"{prefix}{i}" for i in range(n)]
    r.delete(*keys)
    return keys


def raw(c, *args):
    """A command and its reply as the server sent it (no redis-py callback);
    `c` must be a single-connection client."""
    c.connection.send_command(*args)
    try:
        return c.connection.read_response()
    except redis.ResponseError as e:
        return e


def err(fn, text):
    # redis-py raises AuthenticationError (not a ResponseError) for AUTH.
    with pytest.raises((redis.ResponseError, redis.AuthenticationError)) as e:
        fn()
    assert text in str(e.value), str(e.value)


def test_connection_commands(r, daemon):
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.execute_command("SELECT", 0) is True
    err(lambda: r.execute_command("SELECT", 1), "DB index is out of range")
    assert r.client_setname("tester") is True
    assert r.client_getname() == "tester"
    assert isinstance(r.client_id(), int)
    assert "name=tester" in r.execute_command("CLIENT", "INFO").decode()
    # redis-py parses every field of Redis' CLIENT INFO (a missing integer
    # field raises KeyError), and announces itself with CLIENT SETINFO.
    me = r.client_info()
    assert me["name"] == "tester" and me["id"] == r.client_id() and me["multi"] == -1
    assert me["lib-name"] == "redis-py" and me["cmd"] == "client|info" and me["tot-mem"] > 0
    assert r.client_setinfo("LIB-VER", "9.9") is True and r.client_info()["lib-ver"] == "9.9"
    err(lambda: r.client_setinfo("lib-name", "a b"), "lib-name cannot contain spaces")
    err(lambda: r.client_setinfo("colour", "x"), "Unrecognized option 'colour'")
    err(lambda: r.execute_command("AUTH", "pw"), "without any password configured")
    assert r.command_count() > 40
    table = r.command()
    assert table["get"]["arity"] == 2 and table["set"]["arity"] == -3
    secs, micros = r.time()
    assert abs(secs - time.time()) < 5
    sections = r.info()
    assert sections["redis_mode"] == "standalone" and "connected_clients" in sections
    assert sections["role"] == "master" and sections["cluster_enabled"] == 0
    assert r.info("cluster") == {"cluster_enabled": 0}
    # CONFIG RESETSTAT starts INFO's counters again.
    prior = r.info("stats")
    assert prior["total_commands_processed"] > 5 and prior["total_connections_received"] >= 1
    assert r.config_resetstat() is True
    after = r.info("stats")
    assert after["total_commands_processed"] <= 2 and after["total_connections_received"] == 0
    assert "aof_enabled" in r.info("persistence")
    assert r.config_get("appendfsync") == {"appendfsync": "always"}
    assert r.config_get("maxclients")["maxclients"] == "10000"
    assert r.config_set("slowlog-log-slower-than", 200000) is True
    err(lambda: r.config_set("maxclients", 5), "start-up only")
    err(lambda: r.config_set("no-such", 5), "Unknown option")
    assert r.execute_command("RESET") == "RESET"
    c = daemon.client()
    assert c.execute_command("QUIT") is True


def test_ids_cursors_counters_and_client_list_are_the_daemons(daemon):
    # Connections are spread over both shard threads; client ids, SCAN
    # cursors, INFO's counters and CLIENT LIST belong to the daemon, not to
    # the shard a connection landed on (each shard kept its own until
    # session 25: ids repeated, and a cursor continued on a connection of
    # the other shard answered "0", the end, with keys unseen).
    cs = [daemon.client(single_connection_client=True) for _ in range(4)]
    ids = [c.client_id() for c in cs]
    assert len(set(ids)) == 4, ids
    for i in range(60):
        cs[0].set(f"xs:{i:02}", i)
    cursor, seen = cs[0].scan(0, match="xs:*", count=7)
    turn = 1
    while cursor:
        cursor, page = cs[turn % 4].scan(cursor, match="xs:*", count=7)
        seen += page
        turn += 1
    assert sorted(seen) == [f"xs:{i:02}".encode() for i in range(60)] and turn > 4
    counts = [c.info("stats")["total_commands_processed"] for c in cs]
    assert [b - a for a, b in zip(counts, counts[1:])] == [1, 1, 1], counts
    cs[1].client_setname("lister-1")
    listed = {int(c["id"]): c for c in cs[2].client_list()}
    assert set(ids) <= set(listed), listed
    # Another connection's last command shows as Redis 7 shows it: a
    # subcommand under its container's name (until session 26: "client").
    assert listed[ids[1]]["name"] == "lister-1" and listed[ids[1]]["cmd"] == "client|setname"
    assert listed[ids[2]]["cmd"] == "client|list" and listed[ids[0]]["cmd"] == "info"
    assert all(listed[i]["lib-name"] == "redis-py" and listed[i]["flags"] == "N" for i in ids)
    one = cs[0].execute_command("CLIENT", "LIST", "ID", ids[3]).decode().splitlines()
    assert len(one) == 1 and one[0].startswith(f"id={ids[3]} ")
    assert cs[0].client_list(_type="pubsub") == [] and len(cs[0].client_list(_type="normal")) >= 4
    err(lambda: cs[0].execute_command("CLIENT", "LIST", "TYPE", "nobody"), "Unknown client type 'nobody'")
    err(lambda: cs[0].execute_command("CLIENT", "LIST", "ID", "x"), "Invalid client ID")
    cs[3].close()
    deadline = time.time() + 5
    while ids[3] in {int(c["id"]) for c in cs[0].client_list()} and time.time() < deadline:
        time.sleep(0.05)
    assert ids[3] not in {int(c["id"]) for c in cs[0].client_list()}
    # CLIENT KILL, by id and by address, on a connection of either shard:
    # gone from the list at once, its socket closed.
    victims = [daemon.client(single_connection_client=True) for _ in range(2)]
    vids = [v.client_id() for v in victims]
    assert cs[0].client_kill_filter(_id=vids[0]) == 1
    addr = next(c["addr"] for c in cs[0].client_list() if int(c["id"]) == vids[1])
    assert cs[0].client_kill(addr) is True
    assert not {int(c["id"]) for c in cs[0].client_list()} & set(vids)
    for v in victims:
        v.connection.retry_on_error = []
        with pytest.raises(redis.ConnectionError):
            v.connection.send_command("PING")
            v.connection.read_response()
    err(lambda: cs[0].client_kill("10.0.0.1:1"), "No such client")
    assert cs[0].client_kill_filter(_id=vids[0]) == 0
    # SKIPME yes (the default) spares the caller; no kills it after its reply.
    me = cs[2].client_id()
    assert cs[2].client_kill_filter(_id=me) == 0 and cs[2].ping()
    assert cs[2].client_kill_filter(_id=me, skipme=False) == 1
    # A cursor the table no longer has is an error, not the end of the scan.
    err(lambda: cs[0].scan(987654321), "cursor 987654321 is unknown or expired")
    cs[0].hset("xs:h", mapping={"a": 1, "b": 2})
    err(lambda: cs[0].hscan("xs:h", 987654321), "unknown or expired")
    assert cs[0].hscan("xs:none", 987654321) == (0, {})
    for c in cs[:3]:
        c.close()


def test_client_kill_closes_a_connection_that_stopped_reading(daemon):
    # A client that stops reading, while the daemon's write of its replies
    # waits for room in the socket, is closed at once by CLIENT KILL, as in
    # Redis. Until session 26 the kill took effect at the connection's next
    # read: after every pending reply had been written.
    r = daemon.client(single_connection_client=True)
    value = b"v" * 60000
    r.set("stall:v", value)
    s = socket.create_connection((daemon.host, daemon.port))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.sendall(b"CLIENT ID\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += s.recv(64)
        victim = int(reply[1:-2])
        gets = 2000  # 120 MB of replies, never read before the kill
        s.sendall(b"GET stall:v\r\n" * gets)
        deadline = time.time() + 10
        listed = {}
        while time.time() < deadline:
            listed = {int(c["id"]): c for c in r.client_list()}
            if listed[victim]["cmd"] == "get":
                break
            time.sleep(0.05)
        time.sleep(0.3)
        assert r.client_kill_filter(_id=victim) == 1
        s.settimeout(20)
        got = 0
        try:
            while chunk := s.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got < gets * len(value) // 4, f"{got} bytes arrived after the kill"
    finally:
        s.close()
        r.delete("stall:v")


def test_slowlog_records_what_ran_slower_than_its_threshold(daemon):
    c = daemon.client(single_connection_client=True)
    c.client_setname("slowpoke")
    assert c.config_get("slowlog-max-len") == {"slowlog-max-len": "128"}
    try:
        # 0 records every command (Redis' meaning), on either shard thread;
        # SLOWLOG RESET is the first entry after itself, as in Redis.
        other = daemon.client(single_connection_client=True)
        other.ping()
        assert c.config_set("slowlog-log-slower-than", 0) and c.slowlog_reset()
        c.get("sl:a")
        c.hset("sl:h", "f", "x" * 300)
        other.lrange("sl:l", 0, -1)
        entries = c.slowlog_get(-1)
        cmds = [e["command"] for e in entries]
        assert cmds == [b"LRANGE sl:l 0 -1", b"HSET sl:h f " + b"x" * 128 + b"... (172 more bytes)",
                        b"GET sl:a", b"SLOWLOG RESET"], cmds
        assert entries[2]["client_name"] == b"slowpoke" and entries[2]["duration"] >= 0
        assert entries[0]["id"] > entries[1]["id"] > entries[2]["id"]
        assert len(c.slowlog_get(2)) == 2 and c.slowlog_len() >= 4
        # A negative threshold turns it off; the length bounds it.
        c.config_set("slowlog-log-slower-than", -1)
        n = c.slowlog_len()
        c.get("sl:a")
        assert c.slowlog_len() == n
        c.config_set("slowlog-max-len", 2)
        assert c.slowlog_len() == 2
        assert c.slowlog_reset() and c.slowlog_len() == 0
    finally:
        c.config_set("slowlog-log-slower-than", 10000)
        c.config_set("slowlog-max-len", 128)


def test_exact_error_replies(r):
    err(lambda: r.execute_command("NOSUCH", "a", "b"), "unknown command 'NOSUCH', with args beginning with: 'a' 'b'")
    # Names match in any case; one longer than any command is unknown.
    r.set("e:case", "v")
    assert r.execute_command("gEt", "e:case") == b"v"
    err(lambda: r.execute_command("GET" * 20, "x"), "unknown command '" + "GET" * 20 + "'")
    err(lambda: r.execute_command("GET"), "wrong number of arguments for 'get' command")
    err(lambda: r.execute_command("SET", "k"), "wrong number of arguments for 'set' command")
    r.set("e:s", "abc")
    err(lambda: r.incr("e:s"), "value is not an integer or out of range")
    err(lambda: r.incrbyfloat("e:s", 1), "value is not a valid float")
    err(lambda: r.execute_command("SET", "k", "v", "EX", "x"), "value is not an integer or out of range")
    err(lambda: r.execute_command("SET", "k", "v", "EX", "0"), "invalid expire time in 'set' command")
    err(lambda: r.execute_command("SET", "k", "v", "NX", "XX"), "syntax error")
    err(lambda: r.execute_command("SET", "k", "v", "BOGUS"), "syntax error")
    err(lambda: r.execute_command("SETEX", "k", "-1", "v"), "invalid expire time in 'setex' command")
    r.set("e:max", str(2**63 - 1))
    err(lambda: r.incr("e:max"), "increment or decrement would overflow")


def test_strings(r):
    assert r.set("s:a", "1") is True
    assert r.get("s:a") == b"1"
    assert r.get("s:missing") is None
    assert r.set("s:a", "2", nx=True) is None
    assert r.set("s:new", "x", xx=True) is None
    assert r.set("s:a", "3", xx=True) is True
    assert r.set("s:a", "4", get=True) == b"3"
    assert r.set("s:absent", "v", get=True) is None
    assert r.setnx("s:a", "z") is False and r.setnx("s:nx", "z") is True
    assert r.getset("s:a", "5") == b"4"
    assert r.getdel("s:nx") == b"z" and r.get("s:nx") is None and r.getdel("s:nx") is None
    assert r.incr("s:n") == 1 and r.incrby("s:n", 10) == 11 and r.decr("s:n") == 10 and r.decrby("s:n", 4) == 6
    # Long double sums printed with 17 decimals, as Redis makes them: the
    # text is exact, not "0.30000000000000004".
    assert r.incrbyfloat("s:f", 10.5) == 10.5 and r.incrbyfloat("s:f", 0.1) == 10.6
    assert r.get("s:f") == b"10.6" and r.incrbyfloat("s:f", -10.6) == 0 and r.get("s:f") == b"0"
    assert r.incrbyfloat("s:f2", 0.1) == 0.1 and r.incrbyfloat("s:f2", 0.2) == 0.3 and r.get("s:f2") == b"0.3"
    assert r.append("s:ap", "Hello") == 5 and r.append("s:ap", " World") == 11
    assert r.strlen("s:ap") == 11 and r.strlen("s:missing") == 0
    assert r.getrange("s:ap", 0, 4) == b"Hello" and r.getrange("s:ap", -5, -1) == b"World"
    assert r.getrange("s:ap", 5, 2) == b"" and r.getrange("s:missing", 0, -1) == b""
    assert r.setrange("s:ap", 6, "Redis") == 11 and r.get("s:ap") == b"Hello Redis"
    assert r.setrange("s:pad", 3, "x") == 4 and r.get("s:pad") == b"\x00\x00\x00x"
    assert r.setrange("s:none", 0, "") == 0 and r.exists("s:none") == 0
    err(lambda: r.setrange("s:ap", -1, "x"), "offset is out of range")
    # Binary-safe values.
    blob = bytes(range(256)) * 4
    r.set(b"s:\xff\x00bin", blob)
    assert r.get(b"s:\xff\x00bin") == blob
    assert r.mget("s:a", "s:missing", "s:n") == [b"5", None, b"6"]


def test_multi_key_writes_are_atomic_across_shards(r):
    a, b, c = same_shard_keys(r, "m:", 3)
    assert r.mset({a: "1", b: "2"}) is True
    assert r.mget(a, b) == [b"1", b"2"]
    assert r.msetnx({b: "x", c: "3"}) is False
    assert r.get(c) is None and r.get(b) == b"2"
    assert r.msetnx({c: "3"}) is True
    # Keys on both shards: MSET, MSETNX, RENAME and DEL are one transaction.
    many = {f"m:x{i}": str(i) for i in range(20)}
    assert r.mset(many) is True
    assert r.mget(*many) == [v.encode() for v in many.values()]
    assert r.msetnx({"m:x0": "no", "m:fresh": "no"}) is False
    assert r.get("m:fresh") is None and r.get("m:x0") == b"0"
    assert r.rename("m:x1", "m:renamed") is True
    assert r.get("m:x1") is None and r.get("m:renamed") == b"1"
    assert r.delete(*many, "m:renamed", "m:x0") == 20
    assert r.exists(*many) == 0


def test_keys_expiry_and_iteration(r):
    r.set("k:a", "1")
    r.set("k:b", "2", ex=100)
    assert r.exists("k:a", "k:b", "k:a", "k:none") == 3
    assert r.type("k:a") == b"string" and r.type("k:none") == b"none"
    assert r.ttl("k:a") == -1 and r.ttl("k:none") == -2
    assert 99 <= r.ttl("k:b") <= 100 and 99000 <= r.pttl("k:b") <= 100000
    # TTL rounds to the nearest second, as Redis does (1.2 s left: 1).
    assert r.set("round:k", "v", px=1200) and r.ttl("round:k") == 1 and r.delete("round:k") == 1
    assert r.expire("k:a", 50) is True and 49 <= r.ttl("k:a") <= 50
    assert r.expire("k:a", 60, nx=True) is False
    assert r.expire("k:a", 60, gt=True) is True and r.ttl("k:a") >= 59
    assert r.expire("k:a", 10, gt=True) is False
    assert r.expire("k:none", 10) is False
    assert r.pexpire("k:a", 100000) is True
    assert r.expireat("k:a", int(time.time()) + 1000) is True
    assert r.pexpireat("k:a", int(time.time() * 1000) + 200000) is True
    assert r.persist("k:a") is True and r.ttl("k:a") == -1 and r.persist("k:a") is False
    assert r.set("k:keep", "v", ex=100) and r.set("k:keep", "w", keepttl=True)
    assert r.ttl("k:keep") > 90
    assert r.set("k:keep", "w2") and r.ttl("k:keep") == -1
    assert r.getex("k:keep", ex=30) == b"w2" and 29 <= r.ttl("k:keep") <= 30
    assert r.getex("k:keep", persist=True) == b"w2" and r.ttl("k:keep") == -1
    r.set("k:short", "v", px=100)
    time.sleep(0.25)
    assert r.get("k:short") is None and r.exists("k:short") == 0
    # A time in the past deletes the key.
    r.set("k:gone", "v")
    assert r.expire("k:gone", -1) is True and r.exists("k:gone") == 0
    assert sorted(r.keys("k:*")) == [b"k:a", b"k:b", b"k:keep"]
    assert sorted(r.keys("k:[ab]")) == [b"k:a", b"k:b"]
    for i in range(50):
        r.set(f"it:{i:02}", i)
    seen = list(r.scan_iter(match="it:*", count=7))
    assert sorted(seen) == [f"it:{i:02}".encode() for i in range(50)]
    cursor, page = r.scan(0, match="it:*", count=5)
    assert cursor != 0 and len(page) <= 5
    assert r.scan(0, match="it:*", count=1000, _type="hash") == (0, [])
    assert r.randomkey() is not None
    assert r.delete("it:00", "it:01", "it:01", "it:none") == 2
    assert r.unlink("it:02") == 1
    assert r.dbsize() >= 45


def test_rename(r):
    a, b = same_shard_keys(r, "rn:", 2)
    r.set(a, "v", ex=100)
    assert r.rename(a, b) is True
    assert r.get(a) is None and r.get(b) == b"v" and r.ttl(b) > 90
    err(lambda: r.rename(a, b), "no such key")
    r.set(a, "w")
    assert r.renamenx(a, b) is False and r.get(a) == b"w"
    r.delete(b)
    assert r.renamenx(a, b) is True and r.get(b) == b"w"


def test_concurrent_increments_lose_nothing(daemon):
    errors = []

    def worker():
        c = daemon.client()
        for _ in range(50):
            try:
                c.incr("cc:counter")
            except redis.RedisError as e:
                errors.append(e)
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == []
    assert daemon.client().get("cc:counter") == b"400"


def test_pipelining_and_resp3(daemon):
    c = daemon.client()
    p = c.pipeline(transaction=False)
    for i in range(200):
        p.set(f"p:{i}", i)
        p.get(f"p:{i}")
        p.incr("p:count")
    out = p.execute()
    assert out[1::3] == [str(i).encode() for i in range(200)]
    assert out[2::3] == list(range(1, 201))
    # Queued SETs of one pipeline apply in order, before what follows them.
    p = c.pipeline(transaction=False)
    for i in range(100):
        p.set("p:same", i)
    p.get("p:same")
    p.set("p:k" * 10000, "too long a key")
    p.set("p:after", "x")
    p.append("p:after", "y")
    out = p.execute(raise_on_error=False)
    assert out[:100] == [True] * 100 and out[100] == b"99"
    assert isinstance(out[101], redis.ResponseError) and "exceeds the limit" in str(out[101])
    assert out[102] is True and out[103] == 2
    c3 = daemon.client(protocol=3)
    assert c3.get("p:5") == b"5" and c3.get("p:none") is None
    assert c3.incrbyfloat("p:f", 1.25) == 1.25
    assert c3.config_get("appendonly") == {"appendonly": "yes"}
    hello = c3.execute_command("HELLO", 3)
    assert hello[b"proto"] == 3 and hello[b"server"] == b"redis"


def test_a_long_pipeline_of_gets_answers_each_in_order(daemon):
    """GETs are read ahead 16 at a time: hits, misses, deleted and expired
    keys and a collection (WRONGTYPE) in one pipeline of 100, mixed with
    writes, each get its own reply in order."""
    c = daemon.client()
    for i in range(0, 100, 2):
        c.set(f"la:{i}", f"v{i}")
    c.hset("la:hash", "f", "1")
    c.set("la:gone", "x")
    c.delete("la:gone")
    c.set("la:exp", "x", px=1)
    time.sleep(0.01)
    p = c.pipeline(transaction=False)
    want = []
    for i in range(100):
        if i % 10 == 3:
            p.set(f"la:{i}", f"w{i}")
            p.get(f"la:{i}")
            want += [True, f"w{i}".encode()]
        else:
            p.get(f"la:{i}")
            want.append(f"v{i}".encode() if i % 2 == 0 else None)
    for k in ["la:hash", "la:gone", "la:exp", "la:0"]:
        p.get(k)
    out = p.execute(raise_on_error=False)
    assert out[: len(want)] == want
    assert isinstance(out[len(want)], redis.ResponseError)
    assert str(out[len(want)]).startswith("WRONGTYPE")
    assert out[len(want) + 1 :] == [None, None, b"v0"]


def test_protocol_errors_close_only_that_connection(daemon):
    bad = socket.create_connection((daemon.host, daemon.port), timeout=5)
    bad.sendall(b"*1\r\n$abc\r\n")
    reply = bad.recv(1000)
    assert reply.startswith(b"-ERR Protocol error: invalid bulk length"), reply
    assert bad.recv(1000) == b""  # closed
    big = socket.create_connection((daemon.host, daemon.port), timeout=5)
    big.sendall(b"*1\r\n$70000\r\n")  # over --max-value-size 65536
    assert big.recv(1000).startswith(b"-ERR Protocol error: invalid bulk length")
    # Commands ahead of a malformed frame in the same packet are answered
    # first, in order (a pipeline of GETs is read ahead together).
    early = socket.create_connection((daemon.host, daemon.port), timeout=5)
    early.sendall(b"SET pe v\r\nGET pe\r\nGET pe:none\r\nGET pe\r\n*1\r\n$abc\r\n")
    got = b""
    while not got.endswith(b"\r\n") or b"Protocol" not in got:
        chunk = early.recv(1000)
        assert chunk, got
        got += chunk
    assert got.startswith(b"+OK\r\n$1\r\nv\r\n$-1\r\n$1\r\nv\r\n-ERR Protocol error:"), got
    # Inline commands work (as typed into telnet).
    inline = socket.create_connection((daemon.host, daemon.port), timeout=5)
    inline.sendall(b"SET inl \"a b\"\r\nGET inl\r\nPING hello\r\n")
    time.sleep(0.2)
    assert inline.recv(1000) == b"+OK\r\n$3\r\na b\r\n$5\r\nhello\r\n"
    assert daemon.client().ping()


def test_max_clients():
    d = Daemon("--max-connections", "2")
    try:
        a, b = d.client(), d.client()
        assert a.ping() and b.ping()
        s = socket.create_connection((d.host, d.port), timeout=5)
        assert s.recv(1000) == b"-ERR max number of clients reached\r\n"
        a.close()
        time.sleep(0.2)
        assert d.client().ping()
    finally:
        d.stop()
        shutil.rmtree(d.data, ignore_errors=True)


def test_data_and_expiry_survive_restart():
    d = Daemon("--shards", "2")
    data = d.data
    try:
        c = d.client()
        c.set("dur:a", "kept")
        c.set("dur:ttl", "soon", px=1500)
        c.set("dur:long", "later", ex=1000)
        c.incrby("dur:n", 41)
        c.incr("dur:n")
    finally:
        d.stop()
    d = Daemon("--shards", "2", data=data)
    try:
        c = d.client()
        assert c.get("dur:a") == b"kept" and c.get("dur:n") == b"42"
        assert 990 <= c.ttl("dur:long") <= 1000
        time.sleep(1.6)
        assert c.get("dur:ttl") is None
    finally:
        d.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_removed_data_directory_answers_misconf():
    """The data directory removed under the daemon (default sync=always):
    writes answer MISCONF, as Redis answers them once it cannot persist,
    instead of OK for data written to deleted files; reads go on."""
    d = Daemon("--shards", "2")
    try:
        c = d.client()
        c.mset({f"gone:{i}": "v" for i in range(10)})
        shutil.rmtree(d.data)
        for i in range(10):
            with pytest.raises(redis.ResponseError) as e:
                c.set(f"gone:{i}", "w")
            assert str(e.value).startswith("MISCONF FlashKV cannot write"), str(e.value)
            assert "was deleted while the shard had it open" in str(e.value), str(e.value)
        assert c.get("gone:3") == b"v"
    finally:
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=30) in (0, 1)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-tools not installed")
def test_redis_cli(daemon):
    cli = ["redis-cli", "-h", daemon.host, "-p", str(daemon.port)]
    assert subprocess.run(cli + ["set", "cli:k", "hello"], capture_output=True, text=True).stdout == "OK\n"
    assert subprocess.run(cli + ["get", "cli:k"], capture_output=True, text=True).stdout == "hello\n"
    out = subprocess.run(cli, input="incr cli:n\nincr cli:n\nping\n", capture_output=True, text=True).stdout
    assert out.split() == ["1", "2", "PONG"]
    # Mass insertion as Redis documents it: raw commands through --pipe,
    # which ends with an ECHO of a random marker to find the last reply.
    cmds = "".join(f"SET cli:m:{i} v{i}\r\n" for i in range(2000)) + "RPUSH cli:l a b c\r\nHSET cli:h f v\r\n"
    out = subprocess.run(cli + ["--pipe"], input=cmds, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "errors: 0, replies: 2002" in out.stdout, out.stdout + out.stderr
    scanned = subprocess.run(cli + ["--scan", "--pattern", "cli:m:1*"], capture_output=True, text=True).stdout
    assert sorted(scanned.split()) == sorted(f"cli:m:{i}" for i in range(2000) if str(i).startswith("1"))
    big = subprocess.run(cli + ["--bigkeys"], capture_output=True, text=True, timeout=60)
    assert big.returncode == 0 and "Biggest   list found" in big.stdout and "hashs with" in big.stdout, big.stdout
    # --stat reads INFO: keys, memory, clients, blocked clients (a missing
    # field prints as -9223372036854775808), requests, connections.
    stat = subprocess.Popen(["stdbuf", "-oL"] + cli + ["--stat", "-i", "0.2"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [stat.stdout.readline() for _ in range(3)]
    finally:
        stat.kill()
        stat.wait()
    keys, _mem, clients, blocked, requests = lines[2].split()[:5]
    assert int(keys) >= 2002 and int(clients) >= 1 and blocked == "0" and int(requests) > 2000, lines


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-tools not installed")
def test_redis_benchmark_set_get_incr(daemon):
    out = subprocess.run(
        ["redis-benchmark", "-h", daemon.host, "-p", str(daemon.port), "-t", "set,get,incr",
         "-n", "2000", "-c", "10", "-r", "1000", "-P", "4", "-q"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ["SET", "GET", "INCR"]:
        assert f"{cmd}: " in out.stdout, out.stdout
    assert "ERR" not in out.stdout + out.stderr


def test_multi_exec_is_atomic_and_serializable(r, daemon):
    # redis-py pipelines are MULTI/EXEC transactions by default.
    with r.pipeline() as p:
        p.set("tx:a", "1").incr("tx:a").set("tx:b", "x").get("tx:a").mget("tx:a", "tx:b")
        assert p.execute() == [True, 2, True, b"2", [b"2", b"x"]]
    # Errors while queuing abort the whole transaction.
    c = daemon.client(single_connection_client=True)
    assert raw(c, "MULTI") == b"OK"
    assert raw(c, "SET", "tx:c", "1") == b"QUEUED"
    assert "unknown command" in str(raw(c, "NOSUCHCOMMAND"))
    assert "wrong number of arguments" in str(raw(c, "GET"))
    assert isinstance(raw(c, "EXEC"), redis.exceptions.ExecAbortError)  # the EXECABORT code
    assert r.get("tx:c") is None
    # Errors while running are replies in the array; the rest commits.
    raw(c, "SET", "tx:s", "notanumber")
    raw(c, "MULTI")
    raw(c, "INCR", "tx:s")
    raw(c, "SET", "tx:d", "1")
    out = raw(c, "EXEC")
    assert isinstance(out[0], redis.ResponseError) and "not an integer" in str(out[0])
    assert out[1] == b"OK" and r.get("tx:d") == b"1"
    # The protocol's own errors, as Redis words them.
    assert "EXEC without MULTI" in str(raw(c, "EXEC"))
    assert "DISCARD without MULTI" in str(raw(c, "DISCARD"))
    raw(c, "MULTI")
    assert "MULTI calls can not be nested" in str(raw(c, "MULTI"))
    assert "WATCH inside MULTI is not allowed" in str(raw(c, "WATCH", "x"))
    assert raw(c, "DISCARD") == b"OK"
    assert raw(c, "GET", "tx:c") is None


def test_watch_is_optimistic_locking(r, daemon):
    r.set("tx:w", "0")
    c = daemon.client(single_connection_client=True)
    raw(c, "WATCH", "tx:w")
    r.set("tx:w", "changed")  # another client
    raw(c, "MULTI")
    raw(c, "SET", "tx:w", "mine")
    assert raw(c, "EXEC") is None  # nil: nothing written
    assert r.get("tx:w") == b"changed"
    # After UNWATCH a change does not matter.
    raw(c, "WATCH", "tx:w")
    raw(c, "UNWATCH")
    r.set("tx:w", "again")
    raw(c, "MULTI")
    raw(c, "SET", "tx:w", "mine")
    assert raw(c, "EXEC") == [b"OK"]
    assert r.get("tx:w") == b"mine"

    # The classic check-and-set loop from 8 threads, keys on both shards:
    # no increment is lost and the two counters never disagree.
    r.mset({"tx:n1": 0, "tx:n2": 0})

    def worker():
        c = daemon.client()
        for _ in range(25):
            with c.pipeline() as p:
                while True:
                    try:
                        p.watch("tx:n1", "tx:n2")
                        # Two plain reads: a commit may land between them;
                        # EXEC then fails on the WATCH.
                        n1, n2 = int(p.get("tx:n1")), int(p.get("tx:n2"))
                        p.multi()
                        p.set("tx:n1", n1 + 1)
                        p.set("tx:n2", n1 + 1)
                        p.execute()
                        break
                    except redis.WatchError:
                        continue

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert r.mget("tx:n1", "tx:n2") == [b"200", b"200"]
