"""TLS and authentication with stock clients: grpcio with TLS credentials,
curl with a CA file, redis-py with ssl=True and a password; client
certificates; refusals without credentials; secrets never logged; no
listening beyond loopback without authentication. Certificates come from
trustme (PyPI)."""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

import grpc
import pytest
import redis
import trustme
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FLASHKV_BIN", os.path.join(ROOT, "target", "debug", "flashkv"))
TOKEN = "tok-3f9a1c-never-logged"
PASSWORD = "pw-77e2b0-never-logged"


@pytest.fixture(scope="module")
def pb():
    out = tempfile.mkdtemp(prefix="flashkv-stubs-")
    assert protoc.main(["protoc", f"-I{ROOT}/proto", f"--python_out={out}", f"--grpc_python_out={out}",
                        f"{ROOT}/proto/flashkv.proto"]) == 0
    sys.path.insert(0, out)
    import flashkv_pb2
    import flashkv_pb2_grpc

    yield flashkv_pb2, flashkv_pb2_grpc
    sys.path.remove(out)
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="flashkv-pki-")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example")
    paths = {
        "ca": os.path.join(d, "ca.pem"),
        "cert": os.path.join(d, "server.pem"),
        "key": os.path.join(d, "server.key"),
        "client_cert": os.path.join(d, "client.pem"),
        "client_key": os.path.join(d, "client.key"),
        "token": os.path.join(d, "token"),
        "password": os.path.join(d, "password"),
    }
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(paths["cert"], append=True)
    server.private_key_pem.write_to_path(paths["key"])
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    client.private_key_pem.write_to_path(paths["client_key"])
    with open(paths["token"], "w") as f:
        f.write(TOKEN + "\n")
    with open(paths["password"], "w") as f:
        f.write(PASSWORD + "\n")
    yield paths
    shutil.rmtree(d, ignore_errors=True)


class Daemon:
    def __init__(self, *extra):
        self.data = tempfile.mkdtemp(prefix="flashkv-sec-")
        self.proc = subprocess.Popen(
            [BIN, "--data-dir", self.data, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
             "--resp-addr", "127.0.0.1:0", "--no-pin", "--log-level", "trace", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self.proc.stdout.readline()
        assert "RESP on " in line, f"daemon did not start: {line!r} {''.join(self.stderr[-5:])}"
        field = lambda name: line.split(name)[1].split(" ")[0]
        self.grpc, self.http, self.resp = field("gRPC on "), field("HTTP on "), field("RESP on ")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0
        shutil.rmtree(self.data, ignore_errors=True)


def secured(pki, *extra):
    return Daemon("--tls-cert", pki["cert"], "--tls-key", pki["key"], "--auth-token-file", pki["token"],
                  "--resp-password-file", pki["password"], *extra)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def curl(*args):
    return subprocess.run(["curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def daemon(pki):
    d = secured(pki)
    yield d
    d.stop()
    log = "".join(d.stderr)
    assert TOKEN not in log and PASSWORD not in log, "a secret was logged"


def test_grpc_needs_tls_and_the_token(pki, pb, daemon):
    pb2, pb2_grpc = pb
    creds = grpc.ssl_channel_credentials(root_certificates=read(pki["ca"]))
    with grpc.secure_channel(daemon.grpc, creds) as ch:
        kv = pb2_grpc.KVStub(ch)
        auth = [("authorization", f"Bearer {TOKEN}")]
        assert kv.Put(pb2.PutRequest(key=b"sec:g", value=b"v"), metadata=auth, timeout=10).version > 0
        assert kv.Get(pb2.GetRequest(key=b"sec:g"), metadata=auth, timeout=10).value == b"v"
        for md in [None, [("authorization", "Bearer wrong")], [("authorization", TOKEN)]]:
            with pytest.raises(grpc.RpcError) as e:
                kv.Get(pb2.GetRequest(key=b"sec:g"), metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health checking stays open to probes (no data in it).
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    with grpc.insecure_channel(daemon.grpc) as plain:
        with pytest.raises(grpc.RpcError) as e:
            pb2_grpc.KVStub(plain).Get(pb2.GetRequest(key=b"sec:g"), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_http_needs_tls_and_the_token(pki, daemon):
    url = f"https://{daemon.http}"
    r = curl("--cacert", pki["ca"], "-H", f"Authorization: Bearer {TOKEN}", "-X", "PUT", "--data-binary", "v", f"{url}/v1/kv/sec:h")
    assert r.stdout == "200", r.stderr
    r = curl("--cacert", pki["ca"], "-H", f"Authorization: Bearer {TOKEN}", f"{url}/v1/kv/sec:h")
    assert r.stdout == "200" and r.stderr == "v"
    for header in [[], ["-H", "Authorization: Bearer nope"]]:
        r = curl("--cacert", pki["ca"], *header, f"{url}/v1/kv/sec:h")
        assert r.stdout == "401" and '"code":"unauthenticated"' in r.stderr
    r = subprocess.run(["curl", "-s", "-i", "--cacert", pki["ca"], f"{url}/metrics"], capture_output=True, text=True)
    assert r.stdout.startswith("HTTP/1.1 401") and "www-authenticate: bearer" in r.stdout.lower()
    # Probes need no token.
    assert curl("--cacert", pki["ca"], f"{url}/healthz").stdout == "200"
    # Without the CA the certificate is not trusted; plain HTTP is refused.
    assert subprocess.run(["curl", "-s", f"{url}/healthz"]).returncode != 0
    assert subprocess.run(["curl", "-s", "--max-time", "5", f"http://{daemon.http}/healthz"]).returncode != 0


def test_resp_needs_tls_and_the_password(pki, daemon):
    host, port = daemon.resp.rsplit(":", 1)
    c = redis.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=pki["ca"], password=PASSWORD)
    assert c.set("sec:r", "v") and c.get("sec:r") == b"v"
    c3 = redis.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=pki["ca"], password=PASSWORD, protocol=3)
    assert c3.get("sec:r") == b"v"
    anon = redis.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=pki["ca"])
    with pytest.raises(redis.AuthenticationError):
        anon.get("sec:r")
    # Every command needs the password: a plain SET too (pipelined SETs
    # take a path of their own), alone and in a pipeline.
    with pytest.raises(redis.AuthenticationError):
        anon.set("sec:r", "overwritten")
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host) as raw:
        raw.sendall(b"SET sec:r overwritten\r\nSET sec:anon v\r\nPING\r\n")
        got = b""
        while got.count(b"\r\n") < 3:
            chunk = raw.recv(1000)
            assert chunk, got
            got += chunk
    assert got == b"-NOAUTH Authentication required.\r\n" * 3, got
    assert c.get("sec:r") == b"v" and c.get("sec:anon") is None
    wrong = redis.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=pki["ca"], password="nope")
    with pytest.raises(redis.AuthenticationError):
        wrong.get("sec:r")
    plain = redis.Redis(host=host, port=int(port), password=PASSWORD, socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.get("sec:r")


def test_client_certificates(pki, pb):
    pb2, pb2_grpc = pb
    d = secured(pki, "--tls-client-ca", pki["ca"])
    try:
        auth = [("authorization", f"Bearer {TOKEN}")]
        good = grpc.ssl_channel_credentials(read(pki["ca"]), read(pki["client_key"]), read(pki["client_cert"]))
        with grpc.secure_channel(d.grpc, good) as ch:
            assert pb2_grpc.KVStub(ch).Put(pb2.PutRequest(key=b"m", value=b"v"), metadata=auth, timeout=10).version > 0
        with grpc.secure_channel(d.grpc, grpc.ssl_channel_credentials(read(pki["ca"]))) as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb2_grpc.KVStub(ch).Get(pb2.GetRequest(key=b"m"), metadata=auth, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        url = f"https://{d.http}/v1/kv/m"
        ok = curl("--cacert", pki["ca"], "--cert", pki["client_cert"], "--key", pki["client_key"],
                  "-H", f"Authorization: Bearer {TOKEN}", url)
        assert ok.stdout == "200"
        assert curl("--cacert", pki["ca"], "-H", f"Authorization: Bearer {TOKEN}", url).stdout == "000"
        host, port = d.resp.rsplit(":", 1)
        c = redis.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=pki["ca"], password=PASSWORD,
                        ssl_certfile=pki["client_cert"], ssl_keyfile=pki["client_key"])
        assert c.get("m") == b"v"
        nocert = redis.Redis(host=host, port=int(port), ssl=True, ssl_ca_certs=pki["ca"], password=PASSWORD,
                             socket_timeout=5)
        with pytest.raises(redis.ConnectionError):
            nocert.get("m")
    finally:
        d.stop()


def test_beyond_loopback_requires_auth(pki):
    data = tempfile.mkdtemp(prefix="flashkv-sec-")
    try:
        for flag in ["--grpc-addr", "--http-addr", "--resp-addr"]:
            args = {"--grpc-addr": "127.0.0.1:0", "--http-addr": "127.0.0.1:0", "--resp-addr": "127.0.0.1:0"}
            args[flag] = "0.0.0.0:0"
            r = subprocess.run([BIN, "--data-dir", data, *[x for kv in args.items() for x in kv]],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode != 0
            assert "beyond loopback without authentication" in r.stderr, r.stderr
        # With the secrets (or the explicit waiver) it starts.
        r = subprocess.Popen([BIN, "--data-dir", data, "--grpc-addr", "0.0.0.0:0", "--http-addr", "0.0.0.0:0",
                              "--resp-addr", "0.0.0.0:0", "--auth-token-file", pki["token"],
                              "--resp-password-file", pki["password"], "--log-level", "warn"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "ready" in r.stdout.readline()
        r.send_signal(signal.SIGTERM)
        assert r.wait(timeout=30) == 0
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-tools not installed")
def test_redis_cli_over_tls(pki, daemon):
    host, port = daemon.resp.rsplit(":", 1)
    cli = ["redis-cli", "--tls", "--cacert", pki["ca"], "-h", host, "-p", port]
    env = dict(os.environ, REDISCLI_AUTH=PASSWORD)
    assert subprocess.run(cli + ["set", "sec:cli", "v"], capture_output=True, text=True, env=env).stdout == "OK\n"
    assert subprocess.run(cli + ["get", "sec:cli"], capture_output=True, text=True, env=env).stdout == "v\n"
    out = subprocess.run(cli + ["get", "sec:cli"], capture_output=True, text=True).stdout
    assert "NOAUTH" in out


def test_flashkv_ctl_with_tls_and_token(pki, daemon):
    ctl = os.path.join(os.path.dirname(BIN), "flashkv-ctl")
    base = [ctl, "--addr", f"https://{daemon.grpc}", "--ca-file", pki["ca"]]
    r = subprocess.run(base + ["--token-file", pki["token"], "put", "sec:ctl", "v"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["--token-file", pki["token"], "get", "sec:ctl"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "v\n", r.stderr
    # The address as the daemon prints it: https is assumed with --ca-file.
    r = subprocess.run([ctl, "--addr", daemon.grpc, "--ca-file", pki["ca"], "--token-file", pki["token"], "get",
                        "sec:ctl"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "v\n", r.stderr
    r = subprocess.run(base + ["get", "sec:ctl"], capture_output=True, text=True)
    assert r.returncode != 0 and "token" in r.stderr, r.stderr


def test_flashkv_bench_with_tls_and_token(pki, daemon):
    bench = os.path.join(os.path.dirname(BIN), "flashkv-bench")
    # The address as the daemon prints it: https is assumed with --ca-file.
    base = [bench, "--addr", daemon.grpc, "--ca-file", pki["ca"], "--keys", "100", "--connections", "1",
            "--inflight", "2", "--warmup", "0", "--duration", "0.3", "--quiet"]
    r = subprocess.run(base + ["--token-file", pki["token"]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and " 0 errors" in r.stdout, r.stdout + r.stderr
    # Without the token every call is refused, and counted as an error.
    r = subprocess.run(base, capture_output=True, text=True, timeout=60)
    counts = re.search(r"total (\d+) operations, .* (\d+) errors", r.stdout)
    assert r.returncode != 0 or (counts and int(counts.group(2)) == int(counts.group(1)) > 0), r.stdout + r.stderr
