"""FlashKV's HTTP API through stock clients: requests (HTTP), the official
Prometheus parser (prometheus_client) and schemathesis (checks the server
against docs/openapi.yaml), all from PyPI, against the real daemon binary
(FLASHKV_BIN, default target/debug/flashkv)."""

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from test_grpc import pb  # noqa: F401 (the generated gRPC stubs fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLASHKV_BIN", os.path.join(ROOT, "target", "debug", "flashkv"))
MAX_VALUE = 64 << 10


STARTED = []  # every daemon the module started, killed at its end if running


@pytest.fixture(scope="module", autouse=True)
def no_daemon_left_running():
    """A test that fails before stopping its daemon leaves no process."""
    yield
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Daemon:
    """A flashkv process on ephemeral ports; stderr is collected."""

    def __init__(self, *extra, data=None, http="127.0.0.1:0"):
        self.data = data or tempfile.mkdtemp(prefix="flashkv-http-")
        self.proc = subprocess.Popen(
            [BIN, "--data-dir", self.data, "--grpc-addr", "127.0.0.1:0", "--http-addr", http, "--resp-addr", "127.0.0.1:0",
             "--no-pin", "--log-level", "warn", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        STARTED.append(self.proc)
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def wait_ready_line(self):
        line = self.proc.stdout.readline()
        assert "HTTP on " in line, f"daemon did not start: {line!r} {''.join(self.stderr)}"
        self.url = "http://" + line.split("HTTP on ")[1].split(" ")[0]
        self.grpc = line.split("gRPC on ")[1].split(" ")[0]
        self.resp = line.split("RESP on ")[1].split(" ")[0]
        return self

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, f"graceful shutdown must exit 0, got {code}: {''.join(self.stderr[-20:])}"


@pytest.fixture(scope="module")
def daemon():
    d = Daemon("--shards", "2", "--max-value-size", str(MAX_VALUE), "--slow-request-ms", "1").wait_ready_line()
    yield d
    d.stop()
    # The slow-request log saw the large requests of test_oversized_bodies.
    assert any("slow request" in l for l in d.stderr), "".join(d.stderr[-20:])
    shutil.rmtree(d.data, ignore_errors=True)


@pytest.fixture(scope="module")
def url(daemon):
    return daemon.url


def kv(url, key: bytes):
    return f"{url}/v1/kv/{urllib.parse.quote(key, safe='')}"


def err(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    return body


def test_put_get_delete_with_versions(url):
    r = requests.put(kv(url, b"h:one"), data=b"v1")
    assert r.status_code == 200
    v1 = r.json()["version"]
    assert r.headers["etag"] == f'"{v1}"'
    r = requests.get(kv(url, b"h:one"))
    assert r.status_code == 200 and r.content == b"v1"
    assert r.headers["etag"] == f'"{v1}"' and int(r.headers["x-flashkv-version"]) == v1
    assert r.headers["content-type"] == "application/octet-stream"
    assert "x-flashkv-ttl-ms" not in r.headers
    r = requests.delete(kv(url, b"h:one"))
    assert r.status_code == 200 and r.json()["found"] is True and r.json()["version"] > v1
    err(requests.get(kv(url, b"h:one")), 404, "not_found")
    err(requests.delete(kv(url, b"h:one")), 404, "not_found")


def test_non_utf8_and_reserved_bytes_in_keys(url):
    key = b"h:\xff\x00/?#%+ \xc3"
    assert requests.put(kv(url, key), data=b"\x00\xfe binary").status_code == 200
    r = requests.get(kv(url, key))
    assert r.status_code == 200 and r.content == b"\x00\xfe binary"
    # A listing shows such keys (and values) as base64.
    items = requests.get(f"{url}/v1/kv", params={"prefix": b"h:\xff"}).json()["items"]
    assert len(items) == 1
    assert base64.b64decode(items[0]["key_b64"]) == key
    assert base64.b64decode(items[0]["value_b64"]) == b"\x00\xfe binary"
    assert "key" not in items[0] and "value" not in items[0]


def test_compare_and_set_with_if_match(url):
    k = kv(url, b"h:cas")
    r = requests.put(k, data=b"a", headers={"If-None-Match": "*"})
    assert r.status_code == 200
    v = r.json()["version"]
    body = err(requests.put(k, data=b"b", headers={"If-None-Match": "*"}), 412, "version_mismatch")
    assert body["current_version"] == v
    body = err(requests.put(k, data=b"b", headers={"If-Match": f'"{v + 1000}"'}), 412, "version_mismatch")
    assert body["current_version"] == v
    r = requests.put(k, data=b"b", headers={"If-Match": f'"{v}"'})
    assert r.status_code == 200
    v2 = r.json()["version"]
    err(requests.delete(k, headers={"If-Match": str(v)}), 412, "version_mismatch")
    assert requests.get(k).content == b"b"
    err(requests.put(k, data=b"c", headers={"If-Match": "*"}), 400, "invalid_argument")
    err(requests.put(k, data=b"c", headers={"If-None-Match": '"3"'}), 400, "invalid_argument")
    assert requests.delete(k, headers={"If-Match": f'W/"{v2}"'}).status_code == 200


def test_ttl(url):
    k = kv(url, b"h:ttl")
    assert requests.put(k, data=b"x", params={"ttl_ms": 60000}).status_code == 200
    r = requests.get(k)
    assert 0 < int(r.headers["x-flashkv-ttl-ms"]) <= 60000
    assert requests.put(k, data=b"x", params={"ttl_ms": 150}).status_code == 200
    time.sleep(0.3)
    err(requests.get(k), 404, "not_found")
    err(requests.put(k, data=b"x", params={"ttl_ms": "soon"}), 400, "invalid_argument")
    err(requests.put(k, data=b"x", params={"ttl": "5"}), 400, "invalid_argument")


def test_bad_keys(url):
    err(requests.get(f"{url}/v1/kv/"), 400, "invalid_argument")
    err(requests.put(f"{url}/v1/kv/", data=b"x"), 400, "invalid_argument")
    err(requests.get(kv(url, b"k" * 20000)), 400, "invalid_argument")


def test_oversized_bodies(url):
    k = kv(url, b"h:big")
    assert requests.put(k, data=b"x" * MAX_VALUE).status_code == 200
    err(requests.put(k, data=b"x" * (MAX_VALUE + 1)), 413, "payload_too_large")

    # Without a Content-Length (chunked), the limit holds while reading.
    def chunks():
        for _ in range(MAX_VALUE // 1024 + 2):
            yield b"y" * 1024

    err(requests.put(k, data=chunks()), 413, "payload_too_large")
    assert requests.get(k).content == b"x" * MAX_VALUE
    huge = {"ops": [{"op": "put", "key": "h:b", "value": "z" * (80 << 20)}]}
    err(requests.post(f"{url}/v1/batch", json=huge), 413, "payload_too_large")


def test_listing(url):
    for i in range(30):
        requests.put(kv(url, b"l:%02d" % i), data=b"v%d" % i).raise_for_status()
    get = lambda **p: requests.get(f"{url}/v1/kv", params=p)
    body = get(prefix="l:").json()
    assert [i["key"] for i in body["items"]] == ["l:%02d" % i for i in range(30)]
    assert body["count"] == 30 and body["more"] is False
    assert body["items"][3]["value"] == "v3" and body["items"][3]["version"] > 0
    body = get(prefix="l:", limit=5, reverse="true").json()
    assert [i["key"] for i in body["items"]] == ["l:29", "l:28", "l:27", "l:26", "l:25"]
    assert body["more"] is True
    body = get(start="l:10", end="l:13", keys_only="true").json()
    assert body["items"] == [{"key": "l:10", "version": body["items"][0]["version"]},
                             {"key": "l:11", "version": body["items"][1]["version"]},
                             {"key": "l:12", "version": body["items"][2]["version"]}]
    err(get(limit="-1"), 400, "invalid_argument")
    err(get(reverse="maybe"), 400, "invalid_argument")
    err(get(colour="blue"), 400, "invalid_argument")


def test_large_listing_is_streamed(url):
    value = "v" * 1000
    ops = [{"op": "put", "key": "s:%05d" % i, "value": value} for i in range(3000)]
    # One batch across both shards, atomic.
    requests.post(f"{url}/v1/batch", json={"ops": ops}).raise_for_status()
    r = requests.get(f"{url}/v1/kv", params={"prefix": "s:"}, stream=True)
    assert r.headers.get("transfer-encoding") == "chunked"
    chunks = list(r.iter_content(chunk_size=None))
    assert len(chunks) > 1
    body = requests.models.complexjson.loads(b"".join(chunks))
    assert body["count"] == 3000 and [i["key"] for i in body["items"]] == ["s:%05d" % i for i in range(3000)]


_shards = {}


def shard_of(url, key):
    """Which shard owns a key: GET answers it in X-FlashKV-Shard."""
    if key not in _shards:
        requests.put(kv(url, key.encode()), data=b"probe").raise_for_status()
        r = requests.get(kv(url, key.encode()))
        _shards[key] = int(r.headers["x-flashkv-shard"])
        requests.delete(kv(url, key.encode())).raise_for_status()
    return _shards[key]


def two_keys_on_one_shard(url, prefix):
    first = f"{prefix}0"
    for i in range(1, 100):
        k = f"{prefix}{i}"
        if shard_of(url, k) == shard_of(url, first):
            return first, k
    raise AssertionError("no two keys on one shard")


def key_on_other_shard(url, key, prefix):
    for i in range(100):
        k = f"{prefix}{i}"
        if shard_of(url, k) != shard_of(url, key):
            return k
    raise AssertionError("no key on another shard")


def test_batch(url):
    a, b = two_keys_on_one_shard(url, "b:")
    r = requests.post(f"{url}/v1/batch", json={"ops": [
        {"op": "put", "key": a, "value": "1"},
        {"op": "put", "key_b64": base64.b64encode(b.encode()).decode(), "value_b64": base64.b64encode(b"\xff").decode()},
    ]})
    assert r.status_code == 200, r.text
    v = r.json()["version"]
    assert requests.get(kv(url, b.encode())).content == b"\xff"
    # A failed condition applies nothing.
    body = err(requests.post(f"{url}/v1/batch", json={"ops": [
        {"op": "delete", "key": a},
        {"op": "put", "key": b, "value": "2", "expected_version": v + 99},
    ]}), 412, "version_mismatch")
    assert body["current_version"] == v
    assert requests.get(kv(url, a.encode())).content == b"1"
    # Keys on two shards: atomic too, at one version; a failed condition on
    # one shard applies nothing on the other.
    other = key_on_other_shard(url, a, "b:x")
    va = int(requests.get(kv(url, a.encode())).headers["x-flashkv-version"])
    body = err(requests.post(f"{url}/v1/batch", json={"ops": [
        {"op": "delete", "key": a}, {"op": "put", "key": other, "value": "x", "expected_version": 12345678}]}), 412, "version_mismatch")
    assert requests.get(kv(url, a.encode())).status_code == 200
    assert requests.get(kv(url, other.encode())).status_code == 404
    r = requests.post(f"{url}/v1/batch", json={"ops": [
        {"op": "put", "key": a, "value": "2", "expected_version": va}, {"op": "put", "key": other, "value": "x"}]})
    assert r.status_code == 200, r.text
    assert requests.get(kv(url, a.encode())).headers["x-flashkv-version"] == str(r.json()["version"])
    assert requests.get(kv(url, other.encode())).headers["x-flashkv-version"] == str(r.json()["version"])
    for bad in [b"not json", b'{"ops": []}', b'{"ops": [{"op": "put", "key": "k"}]}',
                b'{"ops": [{"op": "zap", "key": "k"}]}', b'{"ops": [{"op": "delete", "key": "k", "value": "v"}]}',
                b'{"ops": [{"op": "put", "key": "k", "key_b64": "aw==", "value": "v"}]}',
                b'{"ops": [{"op": "put", "key_b64": "!!!", "value": "v"}]}',
                b'{"ops": [{"op": "put", "key": null, "value": "v"}]}', b'{"ops": [], "extra": 1}']:
        r = requests.post(f"{url}/v1/batch", data=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] in ("invalid_json", "invalid_argument")


def test_txn_compare_then_write(url):
    a, b = two_keys_on_one_shard(url, "t:")
    t = lambda body: requests.post(f"{url}/v1/txn", json=body)
    # Create-if-absent, twice: the second takes the failure branch.
    create = {"compare": [{"key": a, "exists": False}],
              "success": [{"op": "put", "key": a, "value": "first"}],
              "failure": [{"op": "put", "key": b, "value": "lost the race"}]}
    r = t(create)
    assert r.status_code == 200 and r.json()["succeeded"] is True and r.json()["version"] > 0
    r = t(create)
    assert r.json()["succeeded"] is False
    assert requests.get(kv(url, a.encode())).content == b"first"
    assert requests.get(kv(url, b.encode())).content == b"lost the race"
    va = int(requests.get(kv(url, a.encode())).headers["x-flashkv-version"])
    # Value and version comparisons, several at once.
    r = t({"compare": [{"key": a, "value": "first"}, {"key": a, "version": va}, {"key": b, "exists": True}],
           "success": [{"op": "delete", "key": b}]})
    assert r.json() == {"succeeded": True, "version": r.json()["version"]}
    assert requests.get(kv(url, b.encode())).status_code == 404
    # No writes in the chosen branch: a pure check, version null.
    r = t({"compare": [{"key": a, "value": "other"}], "success": [{"op": "delete", "key": a}]})
    assert r.json() == {"succeeded": False, "version": None}
    assert requests.get(kv(url, a.encode())).status_code == 200
    err(t({}), 400, "invalid_argument")
    err(t({"compare": [{"key": a, "exists": True, "version": 1}]}), 400, "invalid_argument")
    err(t({"compare": [{"key": a, "exists": True}], "success": [{"op": "put", "key": a, "value": "v", "expected_version": 3}]}), 400, "invalid_argument")
    # Across shards: compare on one, write on the other, atomically.
    other = key_on_other_shard(url, a, "t:x")
    r = t({"compare": [{"key": a, "exists": True}], "success": [{"op": "put", "key": other, "value": "v"}]})
    assert r.json()["succeeded"] is True
    assert requests.get(kv(url, other.encode())).content == b"v"


def test_txn_is_atomic_under_concurrent_increments(url):
    """Compare-the-value-then-write from 8 threads: every success is one
    increment, none lost."""
    k = "t:counter"
    requests.put(kv(url, k.encode()), data=b"0").raise_for_status()
    done = []

    def worker():
        s = requests.Session()
        n = 0
        while n < 15:
            cur = s.get(kv(url, k.encode())).content.decode()
            r = s.post(f"{url}/v1/txn", json={"compare": [{"key": k, "value": cur}],
                                               "success": [{"op": "put", "key": k, "value": str(int(cur) + 1)}]})
            if r.status_code == 200 and r.json()["succeeded"]:
                n += 1
            else:
                assert r.status_code in (200, 409), r.text
        done.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    assert requests.get(kv(url, k.encode())).content == str(sum(done)).encode() == b"120"


def test_admin_and_stats(url):
    r = requests.get(f"{url}/v1/stats")
    body = r.json()
    assert r.status_code == 200 and len(body["shards"]) == 2
    assert body["sync"] == "always" and body["io_engine"] in ("io_uring", "plain")
    assert sum(s["keys"] for s in body["shards"]) > 0
    assert all(s["segments"] for s in body["shards"])
    r = requests.post(f"{url}/v1/admin/compact")
    assert r.status_code == 200 and set(r.json()) == {"shards_merged", "bytes_reclaimed"}
    target = os.path.join(tempfile.mkdtemp(prefix="flashkv-ckpt-"), "copy")
    r = requests.post(f"{url}/v1/admin/checkpoint", json={"path": target})
    assert r.status_code == 200, r.text
    assert os.path.exists(os.path.join(target, "MANIFEST"))
    err(requests.post(f"{url}/v1/admin/checkpoint", json={"path": target}), 409, "already_exists")
    err(requests.post(f"{url}/v1/admin/checkpoint", json={"path": ""}), 400, "invalid_argument")
    err(requests.post(f"{url}/v1/admin/checkpoint", json={}), 400, "invalid_json")
    # The checkpoint is a data directory a daemon starts on.
    d = Daemon("--shards", "2", data=target).wait_ready_line()
    try:
        assert requests.get(kv(d.url, b"l:07")).content == b"v7"
    finally:
        d.stop()
    shutil.rmtree(os.path.dirname(target), ignore_errors=True)


def test_health_and_unknown_routes(url):
    assert requests.get(f"{url}/healthz").json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz").json() == {"status": "ready"}
    err(requests.get(f"{url}/v2/nothing"), 404, "no_such_endpoint")
    err(requests.patch(kv(url, b"k")), 405, "method_not_allowed")
    err(requests.get(f"{url}/v1/batch"), 405, "method_not_allowed")


def scrape(url):
    r = requests.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(families, name, suffix="", **labels):
    fam = families[name]
    total = 0
    for s in fam.samples:
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def test_metrics_parse_and_move(url):
    before = scrape(url)
    for i in range(5):
        requests.put(kv(url, b"m:%d" % i), data=b"x").raise_for_status()
        requests.get(kv(url, b"m:%d" % i)).raise_for_status()
    requests.get(kv(url, b"m:missing"))
    requests.put(kv(url, b"m:0"), data=b"y", headers={"If-Match": '"1"'})
    after = scrape(url)
    get = dict(protocol="http", command="GET /v1/kv/{*key}")
    put = dict(protocol="http", command="PUT /v1/kv/{*key}")
    assert sample(after, "flashkv_requests", "_total", **get) - sample(before, "flashkv_requests", "_total", **get) == 6
    assert sample(after, "flashkv_requests", "_total", **put) - sample(before, "flashkv_requests", "_total", **put) == 6
    assert sample(after, "flashkv_request_errors", "_total", code="not_found", **get) >= 1
    assert sample(after, "flashkv_request_errors", "_total", code="version_mismatch", **put) >= 1
    # Valid histograms: cumulative le buckets ending in +Inf equal to _count.
    hist = after["flashkv_request_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [s for s in hist.samples if s.name.endswith("_bucket") and s.labels["command"] == get["command"]]
    les = [float(s.labels["le"]) for s in buckets]
    assert les == sorted(les) and les[-1] == float("inf")
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == sample(after, "flashkv_request_duration_seconds", "_count", **get)
    for name in ["flashkv_fsync_duration_seconds", "flashkv_group_commit_batches"]:
        assert after[name].type == "histogram"
        assert sample(after, name, "_count") > sample(before, name, "_count")
    assert sample(after, "flashkv_bytes_written", "_total") > sample(before, "flashkv_bytes_written", "_total")
    assert sample(after, "flashkv_aborts", "_total", reason="condition_failed") > sample(before, "flashkv_aborts", "_total", reason="condition_failed")
    for name in ["flashkv_keys", "flashkv_live_bytes", "flashkv_dead_bytes", "flashkv_index_memory_bytes",
                 "flashkv_shard_queue_depth", "flashkv_merges", "flashkv_merge_reclaimed_bytes",
                 "flashkv_process_resident_memory_bytes", "flashkv_open_transactions"]:
        assert name in after, name
    assert sample(after, "flashkv_keys") > 0
    assert sample(after, "flashkv_connections", protocol="http") >= 1
    assert after["flashkv_shard_refusing_writes"].type == "gauge"
    assert [sample(after, "flashkv_shard_refusing_writes", shard=s) for s in ["0", "1"]] == [0, 0]


@pytest.mark.parametrize("protocol", ["resp", "grpc"])
def test_connections_are_spread_evenly_over_the_shards(daemon, protocol):
    """Each shard thread serves an even share of a protocol's connections,
    however the kernel's SO_REUSEPORT hash happens to place them: every new
    connection goes to the shard serving fewer, so after each one the two
    shards' counts differ by at most one (16 connections placed at random
    would stray further all but 1 time in 250)."""
    import socket

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    def per_shard():
        m = scrape(daemon.url)
        return [sample(m, "flashkv_shard_connections", protocol=protocol, shard=str(i)) for i in range(2)]

    def connect():
        """A new connection, answered once: accepted and placed."""
        if protocol == "resp":
            host, port = daemon.resp.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"PING\r\n")
            assert s.recv(64) == b"+PONG\r\n"
            return s
        ch = grpc.insecure_channel(daemon.grpc, options=[("grpc.use_local_subchannel_pool", 1)])
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return ch

    conns = []
    try:
        # Connections of earlier tests may leave the shards uneven: each new
        # one must then go to the shard with fewer.
        c0 = per_shard()
        for n in range(1, 17):
            conns.append(connect())
            counts = per_shard()
            assert sum(counts) == sum(c0) + n, counts
            assert abs(counts[0] - counts[1]) <= max(1, abs(c0[0] - c0[1]) - n), (n, c0, counts)
    finally:
        for c in conns:
            c.close()


def test_grpc_traffic_shows_in_metrics(daemon):
    """The gRPC edge is metered too (grpcio's health check, a stock call)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    before = scrape(daemon.url)
    with grpc.insecure_channel(daemon.grpc) as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    after = scrape(daemon.url)
    cmd = dict(protocol="grpc", command="grpc.health.v1.Health/Check")
    assert sample(after, "flashkv_requests", "_total", **cmd) == sample(before, "flashkv_requests", "_total", **cmd) + 1


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_removed_data_directory_fails_health_checks():
    """The data directory removed under the daemon: writes answer 503
    poisoned (naming the deleted file), /healthz 503 "failing" listing the
    shards that refuse writes, /readyz 503, flashkv_shard_refusing_writes
    1, and the gRPC health service (grpcio's stock client) NOT_SERVING;
    reads go on."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    d = Daemon("--shards", "2").wait_ready_line()
    try:
        assert requests.get(f"{d.url}/healthz").json() == {"status": "ok"}
        for i in range(10):
            assert requests.put(kv(d.url, f"rm{i}".encode()), data=b"v").status_code == 200
        shutil.rmtree(d.data)
        for i in range(10):
            body = err(requests.put(kv(d.url, f"rm{i}".encode()), data=b"w"), 503, "poisoned")
            assert "was deleted while the shard had it open" in body["message"], body
        assert requests.get(kv(d.url, b"rm3")).content == b"v"
        r = requests.get(f"{d.url}/healthz")
        assert r.status_code == 503, r.text
        h = r.json()
        assert h["status"] == "failing" and sorted(s["shard"] for s in h["refusing_writes"]) == [0, 1], h
        assert all("was deleted" in s["cause"] for s in h["refusing_writes"]), h
        err(requests.get(f"{d.url}/readyz"), 503, "poisoned")
        m = scrape(d.url)
        assert [sample(m, "flashkv_shard_refusing_writes", shard=s) for s in ["0", "1"]] == [1, 1]
        with grpc.insecure_channel(d.grpc) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.time() + 5
            while True:
                status = health.Check(health_pb2.HealthCheckRequest(service="flashkv.v1.KV")).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            overall = health.Check(health_pb2.HealthCheckRequest(service="")).status
            assert overall == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=30) in (0, 1)


def test_recovering_daemon_answers_503():
    port = free_port()
    d = Daemon("--startup-delay-ms", "3000", http=f"127.0.0.1:{port}")
    try:
        # The ready line comes after recovery; HTTP answers before it.
        deadline = time.time() + 10
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "no HTTP listener during recovery"
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/healthz").json() == {"status": "recovering"}
        err(requests.get(f"{base}/readyz"), 503, "recovering")
        err(requests.get(f"{base}/v1/kv/x"), 503, "recovering")
        err(requests.put(f"{base}/v1/kv/x", data=b"v"), 503, "recovering")
        d.wait_ready_line()
        assert d.url == base
        assert requests.get(f"{base}/readyz").json() == {"status": "ready"}
        assert requests.put(f"{base}/v1/kv/x", data=b"v").status_code == 200
    finally:
        d.stop()
        shutil.rmtree(d.data, ignore_errors=True)


def test_openapi_conformance_with_schemathesis():
    """Property-based: schemathesis generates requests from docs/openapi.yaml
    and checks every response against it. One shard, so that batches of
    random keys are not refused as cross-shard; checkpoint is left out (it
    writes where the request says; tested above)."""
    d = Daemon("--shards", "1", "--sync", "none").wait_ready_line()
    scratch = tempfile.mkdtemp(prefix="flashkv-st-")
    try:
        r = subprocess.run(
            ["schemathesis", "--config-file", os.path.join(ROOT, "tests/python/schemathesis.toml"), "run",
             os.path.join(ROOT, "docs/openapi.yaml"), "--url", d.url, "--checks", "all",
             "--max-examples", os.environ.get("FLASHKV_SCHEMATHESIS_EXAMPLES", "50"),
             "--exclude-operation-id", "checkpoint", "--seed", "1"],
            capture_output=True, text=True, timeout=600, cwd=scratch)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
        assert " passed" in r.stdout
    finally:
        d.stop()
        shutil.rmtree(d.data, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def test_connection_limit_slow_clients_and_deadlines():
    """--max-connections refuses the connection beyond the limit (HTTP: 503
    too_many_connections; gRPC: closed) and admits again once one closes; a
    client that dribbles its headers is cut off after the request timeout;
    a request whose body stalls is answered 503 timeout; the stalled
    clients never hold up the others."""
    import socket

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # The request timeout leaves the setup below (four connections, one
    # request) ample time on a loaded machine: the slow clients must still
    # hold their slots when the fourth connects.
    d = Daemon("--shards", "2", "--max-connections", "3", "--request-timeout-ms", "2000").wait_ready_line()
    host, port = d.url[len("http://"):].rsplit(":", 1)
    try:
        def conn():
            return socket.create_connection((host, int(port)), timeout=5)

        def read_all(s):
            """Everything until the server closes; fails if it never does."""
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    return out
                except socket.timeout:
                    raise AssertionError(f"the server did not close the connection; got {out!r}")
                if not chunk:
                    return out
                out += chunk

        def read_response(s):
            """One keep-alive response: (status line and headers, body)."""
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, f"connection closed mid-response: {buf!r}"
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
            while len(body) < length:
                chunk = s.recv(65536)
                assert chunk, "connection closed mid-body"
                body += chunk
            return head, None, body

        # A slow client: half a request line, then nothing.
        slow = conn()
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # A stalled body: 10 bytes announced, 3 sent.
        stalled = conn()
        stalled.sendall(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        # A third connection works while those two stall.
        ok = conn()
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in ok.recv(4096).split(b"\r\n")[0]
        # A connection is counted when a shard's accept loop takes it, which
        # can come after the client's connect returns (each shard has its own
        # listener): wait, over the admitted connection, until all three are.
        deadline = time.time() + 10
        while True:
            ok.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, rest = read_response(ok)
            assert b" 200 " in head.split(b"\r\n")[0], head
            if re.search(rb'^flashkv_connections\{protocol="http"\} 3$', rest, re.M):
                break
            assert time.time() < deadline, "the daemon never counted three HTTP connections"
            time.sleep(0.05)
        # The fourth is beyond the limit.
        extra = conn()
        reply = read_all(extra)
        assert reply.startswith(b"HTTP/1.1 503"), reply
        body = reply.split(b"\r\n\r\n", 1)[1]
        assert requests.models.complexjson.loads(body)["error"]["code"] == "too_many_connections"
        # After the timeout: the stalled body got 503 timeout, the slow
        # client was disconnected.
        reply = read_all(stalled)
        assert reply.startswith(b"HTTP/1.1 503"), reply
        assert b'"code":"timeout"' in reply
        assert not read_all(slow).startswith(b"HTTP/1.1 200")
        ok.close()
        time.sleep(0.2)
        # Room again.
        assert requests.get(f"{d.url}/healthz").status_code == 200
        m = scrape(d.url)
        assert sample(m, "flashkv_connections_refused", "_total", protocol="http") >= 1
        assert sample(m, "flashkv_request_errors", "_total", code="timeout") >= 1

        # gRPC: three open channels fill the limit; a fourth fails.
        chans = [grpc.insecure_channel(d.grpc, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
        for ch in chans[:3]:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(chans[3]).Check(health_pb2.HealthCheckRequest(), timeout=2)
        chans[0].close()
        time.sleep(0.3)
        health_pb2_grpc.HealthStub(chans[3]).Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
        for ch in chans[1:]:
            ch.close()
    finally:
        d.stop()
        shutil.rmtree(d.data, ignore_errors=True)


def test_a_bulk_load_is_not_logged_as_a_slow_request(daemon, pb):  # noqa: F811
    """A BulkLoad answers once its client stops streaming: its duration is
    the client's, so the slow-request log (1 ms here) leaves it out."""
    import grpc

    pb2, pb2_grpc = pb

    def slowly():
        for i in range(5):
            time.sleep(0.05)
            yield pb2.PutRequest(key=b"http:bulk:%d" % i, value=b"v")

    with grpc.insecure_channel(daemon.grpc) as ch:
        assert pb2_grpc.KVStub(ch).BulkLoad(slowly()).keys == 5
    time.sleep(0.2)
    logged = [l for l in daemon.stderr if "slow request" in l and "BulkLoad" in l]
    assert not logged, logged


def stop_timed(d):
    """Stops `d` (exit code 0 within 30 s, or the test fails and the
    process is killed); returns the seconds it took."""
    started = time.time()
    try:
        d.stop()
    finally:
        d.proc.kill()  # (if it did not stop)
    return time.time() - started


def stall(address, request, times):
    """A client that sends `request` `times` times and then reads nothing,
    so that the daemon's writes of the replies wait for room in its
    socket. Returns the socket."""
    import socket

    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.sendall(request * times)
    return s


def test_a_shutdown_ends_open_streams_and_stalled_resp_clients_at_once(pb):  # noqa: F811
    """SIGTERM with gRPC streams open and idle (Watch, Pipeline, BulkLoad)
    and a RESP client that stopped reading its replies: each stream ends
    with UNAVAILABLE saying what ran (Watch: the version to resume from),
    the RESP connection is closed, and the daemon exits 0 at once, with
    what the streams wrote on disk. (Until session 26 a Watch stream or the
    RESP client kept the daemon running for ever, and the other streams
    held it up for the 10 s drain.)"""
    import grpc

    pb2, pb2_grpc = pb
    d = Daemon("--shards", "2", "--max-value-size", str(MAX_VALUE)).wait_ready_line()
    ch = grpc.insecure_channel(d.grpc)
    stub = pb2_grpc.KVStub(ch)
    watch = stub.Watch(pb2.WatchRequest(prefix=b"stop:"))
    # The daemon answers a Watch once the watcher is registered: after
    # this, no change is missed.
    watch.initial_metadata()
    v = stub.Put(pb2.PutRequest(key=b"stop:big", value=b"v" * 60000)).version
    assert next(watch).version == v
    never = threading.Event()  # the clients' streams stay open, idle
    # (Their keys are outside the watched prefix.)

    def pipe():
        yield pb2.PipelineRequest(id=7, put=pb2.PutRequest(key=b"halt:pipe", value=b"p"))
        never.wait()

    def load():
        for i in range(3):
            yield pb2.PutRequest(key=b"halt:load:%d" % i, value=b"l")
        never.wait()

    piped = stub.Pipeline(pipe())
    assert next(piped).id == 7
    loading = stub.BulkLoad.future(load())
    s = stall(d.resp, b"GET stop:big\r\n", 2000)
    time.sleep(0.5)
    took = stop_timed(d)
    assert took < 8, f"shutdown took {took:.1f} s"
    with pytest.raises(grpc.RpcError) as ended:
        next(watch)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    # (Past v: nothing after it matched the prefix.)
    resume = re.search(r"resume with start_version (\d+)", ended.value.details())
    assert resume and int(resume.group(1)) > v, ended.value.details()
    with pytest.raises(grpc.RpcError) as ended:
        next(piped)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    assert "answered on this stream ran" in ended.value.details(), ended.value.details()
    loaded = loading.exception(timeout=10)
    assert loaded is not None and loaded.code() == grpc.StatusCode.UNAVAILABLE, loaded
    assert "the first 3 keys of this load are written" in loaded.details(), loaded.details()
    never.set()
    s.close()
    ch.close()
    again = Daemon(data=d.data).wait_ready_line()
    for key in [b"halt:pipe", b"halt:load:0", b"halt:load:2"]:
        assert requests.get(kv(again.url, key)).status_code == 200, key
    again.stop()
    shutil.rmtree(d.data, ignore_errors=True)


def test_a_shutdown_ends_a_lagging_watch_after_its_queued_events(pb):  # noqa: F811
    """SIGTERM while a Watch consumer is far behind (its buffers full): the
    events queued for it still arrive, then UNAVAILABLE naming a version to
    resume from at or below the next one it has not seen, with nothing
    before that version missed. (Until session 27 the status was dropped
    when the buffer was full: the stream ended OK after the queued events,
    as if there were nothing more.)"""
    import grpc

    pb2, pb2_grpc = pb
    d = Daemon("--shards", "2", "--max-value-size", str(MAX_VALUE)).wait_ready_line()
    ch = grpc.insecure_channel(d.grpc)
    stub = pb2_grpc.KVStub(ch)
    watch = stub.Watch(pb2.WatchRequest(prefix=b"lag:"))
    watch.initial_metadata()  # (the watcher is registered)
    # 80 commits of 50 keys, 2 KB each: 8 MB, past every buffer between
    # the daemon's watch task and this unread stream.
    written = set()
    for b in range(80):
        muts = [pb2.Mutation(put=pb2.PutRequest(key=b"lag:%03d:%02d" % (b, i), value=b"w" * 2048)) for i in range(50)]
        written.add(stub.Write(pb2.WriteRequest(mutations=muts)).version)
    time.sleep(0.5)
    d.proc.send_signal(signal.SIGTERM)
    seen = {}
    with pytest.raises(grpc.RpcError) as ended:
        for ev in watch:
            seen[ev.version] = seen.get(ev.version, 0) + 1
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    resume = re.search(r"resume with start_version (\d+)", ended.value.details())
    assert resume, ended.value.details()
    resume = int(resume.group(1))
    assert seen, "no event arrived"
    assert resume <= max(seen) + 1, (resume, max(seen))
    # Every commit before the resume point arrived whole.
    for v in sorted(written):
        if v < resume:
            assert seen.get(v) == 50, (v, seen.get(v), resume)
    assert resume <= max(written), "the test should stop the stream mid-way"
    assert d.proc.wait(timeout=30) == 0, "".join(d.stderr[-20:])
    ch.close()
    shutil.rmtree(d.data, ignore_errors=True)


@pytest.mark.parametrize(
    "flags,low,high",
    [([], 9, 25), (["--shutdown-drain-ms", "1500"], 1.4, 8)],
    ids=["default-10s", "flag-1.5s"],
)
def test_a_shutdown_cuts_off_a_stalled_http_client_after_the_drain_period(flags, low, high):
    """SIGTERM with an HTTP client that stopped reading pipelined replies:
    open connections get the drain period (10 s, or --shutdown-drain-ms)
    to finish, then they are cut off and the daemon exits 0 with
    everything acknowledged on disk. (Until session 26 it kept running for
    ever; the flag came in session 27.)"""
    d = Daemon("--max-value-size", str(MAX_VALUE), *flags).wait_ready_line()
    assert requests.put(kv(d.url, b"drain:big"), data=b"v" * 60000).status_code == 200
    host = d.url.removeprefix("http://")
    s = stall(host, b"GET /v1/kv/drain:big HTTP/1.1\r\nHost: x\r\n\r\n", 2000)
    time.sleep(0.5)
    took = stop_timed(d)
    assert low < took < high, f"shutdown took {took:.1f} s"
    assert any("closing them" in l for l in d.stderr), "".join(d.stderr[-20:])
    s.close()
    again = Daemon(data=d.data).wait_ready_line()
    assert requests.get(kv(again.url, b"drain:big")).content == b"v" * 60000
    again.stop()
    shutil.rmtree(d.data, ignore_errors=True)
