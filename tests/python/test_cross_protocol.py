"""One key space under three protocols, with stock clients against the real
daemon binary: a string written or deleted through gRPC (Put, Delete,
Write, BulkLoad, Pipeline, Txn) or HTTP (PUT, DELETE, /v1/batch) replaces
or deletes a Redis collection of the same name, as Redis' SET and DEL do;
the collection never comes back. And a gRPC transaction left open while
RESP overwrites its key keeps its snapshot, at the cost of one old version
(/metrics)."""

import time
import urllib.error
import urllib.request

import grpc
import pytest
import redis

from test_grpc import address, pb, running_daemon  # noqa: F401 (pb: the shared stubs fixture)


@pytest.fixture(scope="module")
def addrs():
    with running_daemon() as line:
        yield address(line, "gRPC"), address(line, "HTTP"), address(line, "RESP")


@pytest.fixture(scope="module")
def clients(pb, addrs):  # noqa: F811
    pb2, pb2_grpc = pb
    g, h, r = addrs
    channel = grpc.insecure_channel(g)
    grpc.channel_ready_future(channel).result(timeout=10)
    host, port = r.rsplit(":", 1)
    rc = redis.Redis(host=host, port=int(port))
    yield pb2, pb2_grpc.KVStub(channel), pb2_grpc.TxnStub(channel), f"http://{h}", rc
    rc.close()
    channel.close()


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def collections(rc, key):
    """One collection of each kind under `key`, one after the other."""
    yield lambda: rc.hset(key, mapping={"f": "1", "g": "2"})
    yield lambda: rc.rpush(key, "a", "b")
    yield lambda: rc.sadd(key, "m", "n")
    yield lambda: rc.zadd(key, {"z": 1.0})


def test_grpc_and_http_string_writes_replace_a_collection(clients):
    pb2, kv, tx, base, rc = clients
    writers = {
        "grpc Put": lambda k: kv.Put(pb2.PutRequest(key=k, value=b"s")),
        "grpc Write": lambda k: kv.Write(pb2.WriteRequest(mutations=[pb2.Mutation(put=pb2.PutRequest(key=k, value=b"s"))])),
        "grpc BulkLoad": lambda k: kv.BulkLoad(iter([pb2.PutRequest(key=k, value=b"s")])),
        "grpc Pipeline": lambda k: list(kv.Pipeline(iter([pb2.PipelineRequest(id=1, put=pb2.PutRequest(key=k, value=b"s"))]))),
        "http PUT": lambda k: http("PUT", f"{base}/v1/kv/{k.decode()}", b"s"),
        "http batch": lambda k: http("POST", f"{base}/v1/batch", b'{"ops":[{"op":"put","key":"%s","value":"s"}]}' % k),
    }

    def txn_put(k):
        t = tx.Begin(pb2.BeginRequest()).txn_id
        tx.Put(pb2.TxnPutRequest(txn_id=t, key=k, value=b"s"))
        tx.Commit(pb2.CommitRequest(txn_id=t))

    writers["grpc Txn"] = txn_put
    for name, write in writers.items():
        key = f"xp:{name.replace(' ', '-')}".encode()
        for make in collections(rc, key):
            rc.delete(key)
            make()
            write(key)
            assert rc.type(key) == b"string", f"{name} over a {make}"
            assert rc.get(key) == b"s", name
            assert rc.exists(key) == 1
            # The collection is gone, not hidden: deleting the string
            # through RESP leaves nothing behind.
            assert rc.delete(key) == 1
            assert rc.exists(key) == 0 and rc.type(key) == b"none", f"{name}: a collection came back"


def test_grpc_and_http_deletes_remove_a_collection(clients):
    pb2, kv, tx, base, rc = clients

    def txn_delete(k):
        t = tx.Begin(pb2.BeginRequest()).txn_id
        tx.Delete(pb2.TxnDeleteRequest(txn_id=t, key=k))
        tx.Commit(pb2.CommitRequest(txn_id=t))

    deleters = {
        "grpc Delete": lambda k: kv.Delete(pb2.DeleteRequest(key=k)).found,
        # These two answer no found flag (None).
        "grpc Write": lambda k: kv.Write(pb2.WriteRequest(mutations=[pb2.Mutation(delete=pb2.DeleteRequest(key=k))])) and None,
        "grpc Txn": txn_delete,
        "http DELETE": lambda k: http("DELETE", f"{base}/v1/kv/{k.decode()}") == 200,
    }
    for name, delete in deleters.items():
        key = f"xd:{name.replace(' ', '-')}".encode()
        for make in collections(rc, key):
            rc.delete(key)
            make()
            assert delete(key) is not False, f"{name} found the collection"
            assert rc.exists(key) == 0 and rc.type(key) == b"none", f"{name} left a collection"
            # A string written and deleted again over gRPC does not bring
            # the collection back either.
            kv.Put(pb2.PutRequest(key=key, value=b"s"))
            kv.Delete(pb2.DeleteRequest(key=key))
            assert rc.exists(key) == 0, f"{name}: a collection came back"
    # Without a collection, a delete of an absent key still finds nothing.
    assert kv.Delete(pb2.DeleteRequest(key=b"xd:absent")).found is False
    assert http("DELETE", f"{base}/v1/kv/xd:absent") == 404


def test_resp_commands_are_counted_in_metrics(clients):
    """Each RESP command of a pipeline is one request in /metrics, with its
    latency and its error code: GETs (run one after the other, timed from
    the previous one's end), plain SETs (queued on their shard) and an
    error reply."""
    from test_http import sample, scrape

    pb2, kv, tx, base, rc = clients
    get = dict(protocol="resp", command="get")
    put = dict(protocol="resp", command="set")
    push = dict(protocol="resp", command="lpush")
    before = scrape(base)
    p = rc.pipeline(transaction=False)
    for i in range(10):
        p.set(f"mx:{i}", "v")
    for i in range(12):
        p.get(f"mx:{i}")
    p.lpush("mx:0", "x")
    out = p.execute(raise_on_error=False)
    assert out[:10] == [True] * 10 and out[10:20] == [b"v"] * 10 and out[20:22] == [None, None]
    assert isinstance(out[22], redis.ResponseError) and str(out[22]).startswith("WRONGTYPE")
    after = scrape(base)

    def delta(name, suffix="", **labels):
        return sample(after, name, suffix, **labels) - sample(before, name, suffix, **labels)

    assert delta("flashkv_requests", "_total", **get) == 12
    assert delta("flashkv_requests", "_total", **put) == 10
    assert delta("flashkv_requests", "_total", **push) == 1
    assert delta("flashkv_request_duration_seconds", "_count", **get) == 12
    assert delta("flashkv_request_duration_seconds", "_count", **put) == 10
    assert delta("flashkv_request_errors", "_total", code="WRONGTYPE", **push) == 1
    assert delta("flashkv_request_duration_seconds", "_sum", **get) >= 0


def old_version_bytes(base):
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("flashkv_old_version_bytes{"))


def test_an_idle_transaction_keeps_one_old_version_of_a_hot_key(clients):
    """A gRPC transaction left open while redis-py overwrites one key 2000
    times: it keeps reading the value it began with, and after the shards'
    once-a-second trim the daemon holds about one old version for it (not
    2000); none once it is rolled back."""
    pb2, kv, tx, base, rc = clients
    rc.set("xp:hot", "0")
    t = tx.Begin(pb2.BeginRequest()).txn_id
    assert tx.Get(pb2.TxnGetRequest(txn_id=t, key=b"xp:hot")).value == b"0"
    p = rc.pipeline(transaction=False)
    for _ in range(2000):
        p.incr("xp:hot")
    assert p.execute()[-1] == 2000
    time.sleep(1.5)
    kept = old_version_bytes(base)
    assert 0 < kept < 1024, kept
    assert tx.Get(pb2.TxnGetRequest(txn_id=t, key=b"xp:hot")).value == b"0"
    tx.Rollback(pb2.RollbackRequest(txn_id=t))
    time.sleep(1.5)
    assert old_version_bytes(base) == 0
