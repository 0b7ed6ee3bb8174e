"""FlashKV through a stock third-party client: grpcio from PyPI, with stubs
generated from proto/flashkv.proto by grpcio-tools, against the real daemon
binary (FLASHKV_BIN, default target/debug/flashkv)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import grpc
import pytest
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLASHKV_BIN", os.path.join(ROOT, "target", "debug", "flashkv"))


@pytest.fixture(scope="module")
def pb():
    out = tempfile.mkdtemp(prefix="flashkv-stubs-")
    rc = protoc.main(["protoc", f"-I{ROOT}/proto", f"--python_out={out}", f"--grpc_python_out={out}", f"{ROOT}/proto/flashkv.proto"])
    assert rc == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, out)
    import flashkv_pb2
    import flashkv_pb2_grpc

    yield flashkv_pb2, flashkv_pb2_grpc
    sys.path.remove(out)
    shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def running_daemon():
    """The daemon binary with 2 shards on ephemeral 127.0.0.1 ports; yields
    its ready line (which names the addresses); then SIGTERM, which must
    end it with exit code 0."""
    data = tempfile.mkdtemp(prefix="flashkv-py-")
    proc = subprocess.Popen(
        [BIN, "--data-dir", data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--resp-addr", "127.0.0.1:0", "--shards", "2", "--no-pin", "--log-level", "warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert "gRPC on " in line, f"daemon did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
    yield line
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0, "graceful shutdown must exit 0"
    finally:
        shutil.rmtree(data, ignore_errors=True)


def address(line, name):
    """The address the ready line gives for `name` (gRPC, HTTP or RESP)."""
    return line.split(f"{name} on ")[1].split(" ")[0]


@pytest.fixture(scope="module")
def daemon():
    with running_daemon() as line:
        yield address(line, "gRPC")


@pytest.fixture(scope="module")
def stubs(pb, daemon):
    pb2, pb2_grpc = pb
    channel = grpc.insecure_channel(daemon)
    grpc.channel_ready_future(channel).result(timeout=10)
    return pb2, pb2_grpc.KVStub(channel), pb2_grpc.AdminStub(channel)


def test_put_get_delete(stubs):
    pb2, kv, _ = stubs
    v = kv.Put(pb2.PutRequest(key=b"py:hello", value=b"world")).version
    assert v > 0
    r = kv.Get(pb2.GetRequest(key=b"py:hello"))
    assert (r.found, r.value, r.version) == (True, b"world", v)
    assert kv.Delete(pb2.DeleteRequest(key=b"py:hello")).found
    assert not kv.Get(pb2.GetRequest(key=b"py:hello")).found


def test_batch_get_answers_each_key_in_order(stubs):
    """BatchGet reads its keys ahead in groups of 16: a long batch over both
    shards, with absent, deleted and repeated keys, answers each in its
    place; a bad key refuses the whole batch."""
    pb2, kv, _ = stubs
    versions = {}
    for i in range(60):
        versions[i] = kv.Put(pb2.PutRequest(key=b"py:bg:%d" % i, value=b"v%d" % i)).version
    for i in range(0, 60, 7):
        kv.Delete(pb2.DeleteRequest(key=b"py:bg:%d" % i))
    wanted = [i * 11 % 80 for i in range(80)] + [3, 3, 59]
    r = kv.BatchGet(pb2.BatchGetRequest(keys=[b"py:bg:%d" % i for i in wanted]))
    assert len(r.results) == len(wanted)
    for i, got in zip(wanted, r.results):
        present = i < 60 and i % 7 != 0
        assert got.found == present, i
        assert got.value == (b"v%d" % i if present else b""), i
        assert got.version == (versions[i] if present else 0), i
    with pytest.raises(grpc.RpcError) as e:
        kv.BatchGet(pb2.BatchGetRequest(keys=[b"py:bg:1", b"", b"py:bg:2"]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_compare_and_set_and_errors(stubs):
    pb2, kv, _ = stubs
    kv.Put(pb2.PutRequest(key=b"py:cas", value=b"1", expected_version=0))
    with pytest.raises(grpc.RpcError) as e:
        kv.Put(pb2.PutRequest(key=b"py:cas", value=b"2", expected_version=0))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        kv.Put(pb2.PutRequest(key=b"", value=b"x"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in e.value.details()


def test_bulk_load_then_scan(stubs):
    pb2, kv, admin = stubs
    n = 5000
    summary = kv.BulkLoad(pb2.PutRequest(key=b"py:bulk:%05d" % i, value=b"v%d" % i) for i in range(n))
    assert summary.keys == n
    got = list(kv.Scan(pb2.ScanRequest(prefix=b"py:bulk:")))
    assert [x.key for x in got] == [b"py:bulk:%05d" % i for i in range(n)]
    assert got[42].value == b"v42"
    rev = list(kv.Scan(pb2.ScanRequest(prefix=b"py:bulk:", reverse=True, limit=2, keys_only=True)))
    assert [x.key for x in rev] == [b"py:bulk:04999", b"py:bulk:04998"]
    stats = admin.Stats(pb2.StatsRequest())
    assert sum(s.keys for s in stats.shards) >= n


def test_pipeline_stream(stubs):
    pb2, kv, _ = stubs

    def reqs():
        for i in range(300):
            yield pb2.PipelineRequest(id=i, put=pb2.PutRequest(key=b"py:pipe:%d" % i, value=b"x"))
        yield pb2.PipelineRequest(id=1000, get=pb2.GetRequest(key=b"py:pipe:0"))

    ids = {}
    for r in kv.Pipeline(reqs()):
        assert r.code == 0, r.message
        ids[r.id] = r
    assert len(ids) == 301
    assert all(ids[i].put.version > 0 for i in range(300))


def test_pipeline_gets_each_answer_their_own_id(stubs):
    """A stream of gets the server takes in batches (read ahead together):
    each id gets the answer for its own key, whether present, absent,
    invalid (empty key) or a message without an operation, in any order."""
    pb2, kv, _ = stubs
    n = 200
    for r in kv.Pipeline(
        pb2.PipelineRequest(id=i, put=pb2.PutRequest(key=b"py:pg:%d" % i, value=b"value-%d" % i)) for i in range(n)
    ):
        assert r.code == 0, r.message

    def reqs():
        for i in range(1200):
            k = i // 4
            if i % 4 in (0, 1):
                yield pb2.PipelineRequest(id=i, get=pb2.GetRequest(key=b"py:pg:%d" % (k % n)))
            elif i % 4 == 2:
                yield pb2.PipelineRequest(id=i, get=pb2.GetRequest(key=b"py:pg:absent:%d" % k))
            elif k % 2:
                yield pb2.PipelineRequest(id=i, get=pb2.GetRequest(key=b""))
            else:
                yield pb2.PipelineRequest(id=i)

    seen = set()
    for r in kv.Pipeline(reqs()):
        assert r.id not in seen, r.id
        seen.add(r.id)
        k = r.id // 4
        if r.id % 4 in (0, 1):
            assert r.code == 0, r.message
            assert r.get.found and r.get.value == b"value-%d" % (k % n), (r.id, r.get)
        elif r.id % 4 == 2:
            assert r.code == 0, r.message
            assert not r.get.found, (r.id, r.get)
        else:
            assert r.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (r.id, r.code, r.message)
    assert seen == set(range(1200))


def test_reflection_and_health_for_stock_tools(daemon):
    """Server reflection lists the services (what grpcurl and friends use),
    and the standard health service reports SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(daemon)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"flashkv.v1.KV", "flashkv.v1.Admin", "grpc.health.v1.Health"} <= names, names
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="flashkv.v1.KV")).status
    assert status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def txn(pb, daemon):
    pb2, pb2_grpc = pb
    channel = grpc.insecure_channel(daemon)
    grpc.channel_ready_future(channel).result(timeout=10)
    return pb2, pb2_grpc.TxnStub(channel), pb2_grpc.KVStub(channel)


def test_transactions_commit_conflict_and_rollback(txn):
    pb2, tx, kv = txn
    kv.Write(pb2.WriteRequest(mutations=[
        pb2.Mutation(put=pb2.PutRequest(key=b"py:acct:a", value=b"100")),
        pb2.Mutation(put=pb2.PutRequest(key=b"py:acct:b", value=b"0")),
    ]))
    t1 = tx.Begin(pb2.BeginRequest())
    t2 = tx.Begin(pb2.BeginRequest())
    assert t1.txn_id != t2.txn_id and t1.read_version > 0
    for t in (t1, t2):
        a = int(tx.Get(pb2.TxnGetRequest(txn_id=t.txn_id, key=b"py:acct:a")).value)
        b = int(tx.Get(pb2.TxnGetRequest(txn_id=t.txn_id, key=b"py:acct:b")).value)
        tx.Put(pb2.TxnPutRequest(txn_id=t.txn_id, key=b"py:acct:a", value=str(a - 10).encode()))
        tx.Put(pb2.TxnPutRequest(txn_id=t.txn_id, key=b"py:acct:b", value=str(b + 10).encode()))
    # Reads see the transaction's own writes.
    assert tx.Get(pb2.TxnGetRequest(txn_id=t1.txn_id, key=b"py:acct:a")).value == b"90"
    version = tx.Commit(pb2.CommitRequest(txn_id=t1.txn_id)).version
    assert version > t1.read_version
    with pytest.raises(grpc.RpcError) as e:
        tx.Commit(pb2.CommitRequest(txn_id=t2.txn_id))
    assert e.value.code() == grpc.StatusCode.ABORTED
    assert "conflict" in e.value.details()
    # The committed transfer is there, whole; the aborted one is not.
    assert kv.Get(pb2.GetRequest(key=b"py:acct:a")).value == b"90"
    assert kv.Get(pb2.GetRequest(key=b"py:acct:b")).value == b"10"
    # Scan at a snapshot, then roll back; the id is gone afterwards.
    t3 = tx.Begin(pb2.BeginRequest())
    items = tx.Scan(pb2.TxnScanRequest(txn_id=t3.txn_id, prefix=b"py:acct:")).items
    assert [i.key for i in items] == [b"py:acct:a", b"py:acct:b"]
    assert tx.Rollback(pb2.RollbackRequest(txn_id=t3.txn_id)).found
    with pytest.raises(grpc.RpcError) as e:
        tx.Get(pb2.TxnGetRequest(txn_id=t3.txn_id, key=b"py:acct:a"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_watch_streams_changes(txn):
    pb2, _, kv = txn
    stream = kv.Watch(pb2.WatchRequest(prefix=b"py:watch:"))
    stream.initial_metadata()  # (answered once the watcher is registered)
    v = kv.Put(pb2.PutRequest(key=b"py:watch:1", value=b"x")).version
    kv.Delete(pb2.DeleteRequest(key=b"py:watch:1"))
    first = next(stream)
    second = next(stream)
    assert (first.key, first.value, first.version, first.deleted) == (b"py:watch:1", b"x", v, False)
    assert (second.key, second.deleted) == (b"py:watch:1", True) and second.version > v
    stream.cancel()
