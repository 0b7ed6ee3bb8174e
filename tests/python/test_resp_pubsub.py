"""Pub/sub through redis-py and raw sockets against the real daemon binary:
channels, patterns and shard channels across shard threads, RESP2's
subscribed mode and RESP3 push frames, PUBSUB and INFO, CLIENT LIST and
KILL by type, MULTI, clean-up at disconnect, and the output limit that
disconnects a subscriber that stopped reading."""

import socket
import time

import pytest
import redis

from test_resp import daemon, err, raw  # noqa: F401 (daemon: the shared fixture)


def message(p, timeout=5):
    """The next message (not a subscribe confirmation) of PubSub `p`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = p.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if m is not None:
            return m
    raise AssertionError("no message arrived")


def wait_until(what, timeout=10):
    deadline = time.time() + timeout
    while not what():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_publish_reaches_channel_pattern_and_shard_subscribers(daemon):
    pub = daemon.client()
    subs = []
    # Several connections, so that both shard threads have subscribers.
    for i in range(4):
        p = daemon.client().pubsub()
        p.subscribe("ps:news")
        p.psubscribe("ps:n*")
        subs.append(p)
    shard = daemon.client().pubsub()
    shard.ssubscribe("ps:shard")
    for p in subs:
        assert p.get_message(timeout=5)["type"] == "subscribe"
        assert p.get_message(timeout=5)["type"] == "psubscribe"
    assert shard.get_message(timeout=5)["type"] == "ssubscribe"
    # Each subscriber twice: by the channel and by the pattern.
    assert pub.publish("ps:news", "hello") == 8
    for p in subs:
        got = sorted((m["type"], m["pattern"], m["data"]) for m in [message(p), message(p)])
        assert got == [("message", None, b"hello"), ("pmessage", b"ps:n*", b"hello")]
    assert pub.publish("ps:nothing-here", "x") == 4  # (the pattern matches)
    assert pub.publish("ps:other", "x") == 0
    assert pub.spublish("ps:shard", "s") == 1
    m = message(shard)
    assert (m["type"], m["channel"], m["data"]) == ("smessage", b"ps:shard", b"s")
    assert pub.publish("ps:shard", "not a shard message") == 0
    # PUBSUB and INFO.
    assert pub.pubsub_channels("ps:*") == [b"ps:news"]
    assert pub.pubsub_numsub("ps:news", "ps:none") == [(b"ps:news", 4), (b"ps:none", 0)]
    assert pub.pubsub_numpat() == 1
    assert pub.pubsub_shardchannels() == [b"ps:shard"]
    assert pub.pubsub_shardnumsub("ps:shard") == [(b"ps:shard", 1)]
    stats = pub.info("stats")
    assert (stats["pubsub_channels"], stats["pubsub_patterns"], stats["pubsubshard_channels"]) == (1, 1, 1)
    # Leaving: unsubscribing and closing both remove the subscriptions.
    subs[0].unsubscribe("ps:news")
    subs[0].punsubscribe()
    wait_until(lambda: pub.pubsub_numsub("ps:news") == [(b"ps:news", 3)])
    for p in subs[1:] + [shard]:
        p.close()
    wait_until(lambda: pub.pubsub_channels("ps:*") == [] and pub.pubsub_numpat() == 0)
    assert pub.pubsub_shardchannels() == []
    subs[0].close()
    pub.close()


def test_resp2_subscribed_mode_and_resp3_pushes(daemon):
    s = socket.create_connection((daemon.host, daemon.port))
    s.settimeout(5)
    f = s.makefile("rb")

    def send(*words):
        s.sendall(b"".join([b"*%d\r\n" % len(words)] + [b"$%d\r\n%s\r\n" % (len(w), w) for w in words]))

    def line():
        return f.readline()

    send(b"SUBSCRIBE", b"ps:a", b"ps:b")
    assert [line() for _ in range(12)] == [
        b"*3\r\n", b"$9\r\n", b"subscribe\r\n", b"$4\r\n", b"ps:a\r\n", b":1\r\n",
        b"*3\r\n", b"$9\r\n", b"subscribe\r\n", b"$4\r\n", b"ps:b\r\n", b":2\r\n",
    ]
    send(b"GET", b"k")
    assert line() == (b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT"
                      b" / RESET are allowed in this context\r\n")
    send(b"PING")
    assert [line() for _ in range(5)] == [b"*2\r\n", b"$4\r\n", b"pong\r\n", b"$0\r\n", b"\r\n"]
    other = daemon.client()
    assert other.publish("ps:b", "m1") == 1
    assert [line() for _ in range(7)] == [b"*3\r\n", b"$7\r\n", b"message\r\n", b"$4\r\n", b"ps:b\r\n",
                                          b"$2\r\n", b"m1\r\n"]
    # CLIENT LIST shows the subscriptions; Redis types the connection pubsub.
    listed = [c for c in other.client_list(_type="pubsub")]
    assert len(listed) == 1 and listed[0]["sub"] == "2" and listed[0]["flags"] == "P", listed
    assert all(c["flags"] != "P" for c in other.client_list(_type="normal"))
    send(b"UNSUBSCRIBE")
    got = [line() for _ in range(12)]
    assert got.count(b"unsubscribe\r\n") == 2 and got[-1] == b":0\r\n", got
    send(b"GET", b"k")  # back to normal mode
    assert line() == b"$-1\r\n"
    send(b"UNSUBSCRIBE")
    assert [line() for _ in range(5)] == [b"*3\r\n", b"$11\r\n", b"unsubscribe\r\n", b"$-1\r\n", b":0\r\n"]
    # RESP3: confirmations and messages are push frames, other commands run.
    send(b"HELLO", b"3")
    send(b"PING")
    while line() != b"+PONG\r\n":  # (past the HELLO map)
        pass
    send(b"SUBSCRIBE", b"ps:c")
    assert [line() for _ in range(6)] == [b">3\r\n", b"$9\r\n", b"subscribe\r\n", b"$4\r\n", b"ps:c\r\n", b":1\r\n"]
    send(b"GET", b"k")
    assert line() == b"_\r\n"
    assert other.publish("ps:c", "m2") == 1
    assert [line() for _ in range(7)] == [b">3\r\n", b"$7\r\n", b"message\r\n", b"$4\r\n", b"ps:c\r\n",
                                          b"$2\r\n", b"m2\r\n"]
    # Inside MULTI subscriptions are refused, and EXEC aborts.
    send(b"MULTI")
    assert line() == b"+OK\r\n"
    send(b"SUBSCRIBE", b"ps:d")
    assert line() == b"-ERR Command not allowed inside a transaction\r\n"
    send(b"EXEC")
    assert line().startswith(b"-EXECABORT")
    # RESET leaves every subscription.
    send(b"RESET")
    assert line() == b"+RESET\r\n"
    assert other.pubsub_numsub("ps:c") == [(b"ps:c", 0)]
    s.close()
    other.close()


def test_pubsub_argument_errors(daemon):
    r = daemon.client(single_connection_client=True)
    err(lambda: r.execute_command("PUBLISH", "ch"), "wrong number of arguments for 'publish' command")
    err(lambda: r.execute_command("SUBSCRIBE"), "wrong number of arguments for 'subscribe' command")
    err(lambda: r.execute_command("PUBSUB", "NUMPAT", "x"), "wrong number of arguments for 'pubsub|numpat' command")
    err(lambda: r.execute_command("PUBSUB", "NOPE"), "unknown subcommand 'NOPE'. Try PUBSUB HELP.")
    assert raw(r, "PUBSUB", "NUMSUB") == []
    r.close()


def test_a_subscriber_that_stops_reading_is_disconnected_at_the_output_limit(daemon):
    pub = daemon.client()
    s = socket.create_connection((daemon.host, daemon.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$7\r\nps:slow\r\n")
    wait_until(lambda: pub.pubsub_numsub("ps:slow") == [(b"ps:slow", 1)])
    # (The shared daemon's bulk limit is 64 KiB.)
    payload = b"x" * 60000
    sent = 0
    while pub.publish("ps:slow", payload) == 1:
        sent += 1
        assert sent < 3000, "the slow subscriber was never disconnected"
    # 32 MiB queued (559 messages), plus what the sockets hold.
    assert 500 < sent < 1500, sent
    wait_until(lambda: pub.pubsub_numsub("ps:slow") == [(b"ps:slow", 0)])
    assert pub.ping() is True
    s.close()
    pub.close()
