#!/usr/bin/env python3
"""FlashKV against Redis, command by command (`make redis-diff`).

Starts redis-server and the FlashKV daemon (target/release/flashkv, or
FLASHKV_BIN) on 127.0.0.1, sends every line of the corpus files beside
this script to both through redis-py (one connection each), once in
RESP2 and once in RESP3 (HELLO 3), and compares the replies as sent (no
redis-py callbacks): values, error texts, reply types. A line is a
command, its words split on spaces ("\\s" for a space inside a word);
RESET flushes both servers; # starts a comment. Replies that Redis gives
in no fixed order (SMEMBERS, KEYS, ...) are compared sorted.

expected.txt lists the differences that are meant (a Redis 7.2 behaviour
where Debian's redis-server is 7.0, a FlashKV limit, a command FlashKV
does not have), each as `file: command` with the reason after `#`. Any
other difference fails the run (exit status 1), as does an expected one
that happens in neither protocol (stale entry).

Needs redis-server (Debian's redis-server package) and redis-py.
"""

import os
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("FLASHKV_BIN", os.path.join(ROOT, "target", "release", "flashkv"))
UNORDERED = {"SMEMBERS", "SINTER", "SUNION", "SDIFF", "KEYS", "HKEYS", "HVALS", "HGETALL"}


def reply(c, words):
    """The reply as the server sent it (no redis-py callback)."""
    c.connection.send_command(*words)
    try:
        return plain(c.connection.read_response())
    except redis.exceptions.ResponseError as e:
        return ("error", str(e))


def plain(v):
    """Replies as comparable values (errors inside EXEC replies as text)."""
    if isinstance(v, Exception):
        return ("error", str(v))
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return sorted((plain(k), plain(x)) for k, x in v.items())
    return v


def ordered(words, v):
    if words[0].upper() in UNORDERED and isinstance(v, list):
        return sorted(v, key=repr)
    return v


def wait(port):
    c = redis.Redis(port=port, socket_timeout=1)
    for _ in range(100):
        try:
            if c.ping():
                return
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
    sys.exit(f"nothing answers on port {port}")


def main():
    expected = {}
    with open(os.path.join(HERE, "expected.txt")) as f:
        for line in f:
            entry = line.split("#", 1)[0].strip()
            if entry:
                expected[entry] = False
    work = tempfile.mkdtemp(prefix="flashkv-redis-diff-")
    rport, fport = 16399, 16398
    rd = subprocess.Popen(["redis-server", "--port", str(rport), "--dir", work, "--save", "", "--appendonly", "no"],
                          stdout=subprocess.DEVNULL)
    fk = subprocess.Popen([BIN, "--data-dir", os.path.join(work, "fk"), "--grpc-addr", "127.0.0.1:0",
                           "--http-addr", "127.0.0.1:0", "--resp-addr", f"127.0.0.1:{fport}",
                           "--shards", "2", "--log-level", "warn"], stdout=subprocess.DEVNULL)
    failed = 0
    try:
        wait(rport)
        wait(fport)
        # The servers answering must be the two started here, not others
        # left listening on these ports (a server that could not bind has
        # exited by now, or soon).
        time.sleep(0.5)
        for port, proc in ((rport, rd), (fport, fk)):
            pid = redis.Redis(port=port).info("server")["process_id"]
            if proc.poll() is not None or pid != proc.pid:
                sys.exit(f"port {port} is answered by process {pid}, not the server started here "
                         f"(exit status {proc.poll()}); stop what listens there")
        total = 0
        for proto in (2, 3):
            r = redis.Redis(port=rport, single_connection_client=True, protocol=proto)
            f = redis.Redis(port=fport, single_connection_client=True, protocol=proto)
            for name in sorted(n for n in os.listdir(HERE) if n.endswith(".txt") and n != "expected.txt"):
                with open(os.path.join(HERE, name)) as corpus:
                    lines = [l.rstrip("\n") for l in corpus if l.strip() and not l.startswith("#")]
                for line in lines:
                    if line == "RESET":
                        r.flushall()
                        f.flushall()
                        continue
                    total += 1
                    words = [w.replace("\\s", " ") for w in line.split(" ")]
                    want, got = ordered(words, reply(r, words)), ordered(words, reply(f, words))
                    if want == got:
                        continue
                    key = f"{name}: {line}"
                    if key in expected:
                        expected[key] = True
                        continue
                    failed += 1
                    print(f"DIFF (RESP{proto}) {key}\n  redis:   {want!r}\n  flashkv: {got!r}")
            r.close()
            f.close()
        stale = [k for k, seen in expected.items() if not seen]
        for k in stale:
            print(f"STALE expected difference (no longer differs): {k}")
        print(f"{total} commands (RESP2 and RESP3), {failed} unexpected differences, "
              f"{sum(expected.values())} expected ones, {len(stale)} stale entries")
        return 1 if failed or stale else 0
    finally:
        fk.terminate()
        rd.terminate()
        fk.wait(timeout=30)
        rd.wait(timeout=30)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
