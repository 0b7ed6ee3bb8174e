//! `flashkv-bench`: the load generator and latency benchmarking harness.
//!
//! Modes: `unary` (one request per call, `--connections` x `--inflight`
//! concurrent calls), `pipeline` (one bidirectional Pipeline stream per
//! connection with `--inflight` requests outstanding), `bulk` (BulkLoad
//! streams, throughput only). `--protocol http` runs the unary mode over
//! the HTTP API instead (`--http-addr`; one keep-alive HTTP/1.1 connection
//! per caller, i.e. `--connections` x `--inflight` connections; the gRPC
//! connection is then used for `--preload` only). Keys are uniform or zipfian over `--keys`;
//! values are `--value-size` bytes; `--read-ratio` sets the get/put mix.
//! After `--warmup` seconds it measures for `--duration` seconds (or
//! `--count` operations) and prints ops/s and p50/p90/p99/p99.9/max latency
//! per operation (HdrHistogram); `--rate` paces unary calls (latency from
//! the scheduled start), and results go optionally as JSON (`--json`), the full
//! latency distribution (`--hist`) and an SVG chart of it (`--svg`). A
//! progress line runs on stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use flashkv::api::grpc::BearerToken;
use flashkv::api::grpc::proto::kv_client::KvClient;
use flashkv::api::grpc::proto::*;
use hdrhistogram::Histogram;
use rand::Rng;
use rand_distr::Distribution;
use tonic::service::interceptor::InterceptedService;

mod transport;
use transport::Transport;

/// The gRPC client, with the bearer token (if any) on every call.
type Kv = KvClient<InterceptedService<Transport, BearerToken>>;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    Unary,
    Pipeline,
    Bulk,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Protocol {
    Grpc,
    Http,
    Resp,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Dist {
    Uniform,
    Zipf,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "flashkv-bench", version, about = "FlashKV load generator")]
struct Args {
    /// Daemon gRPC address: host:port as the daemon prints it (https is
    /// assumed with --ca-file, http otherwise), or a URL.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// CA certificate (PEM) to verify a TLS daemon's certificate with
    /// (gRPC).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// File holding the daemon's bearer token (--auth-token-file; gRPC).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Send unary gRPC calls through tonic's `Channel` (its request queue
    /// and worker task, as tonic applications usually do) rather than
    /// straight onto the HTTP/2 connection; always so with TLS.
    #[arg(long)]
    channel: bool,
    #[arg(long, value_enum, default_value = "unary")]
    mode: Mode,
    /// Protocol of the unary mode (preload always uses gRPC BulkLoad).
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// HTTP address of the daemon, for --protocol http.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// RESP address of the daemon, for --protocol resp.
    #[arg(long, default_value = "127.0.0.1:6380")]
    resp_addr: String,
    /// gRPC connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    dist: Dist,
    /// Zipf exponent.
    #[arg(long, default_value_t = 0.99)]
    zipf_s: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Share of gets (the rest are puts).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Measure this many operations instead of a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Target rate in ops/s over all unary callers (0: as fast as possible).
    /// A call that starts late because the previous one ran past its slot is
    /// timed from its scheduled start, so queueing counts (no coordinated
    /// omission); one started on time is timed from when it was sent.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Bulk-load every key once before the run (so that gets hit).
    #[arg(long)]
    preload: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write the full latency distribution (percentile, microseconds) here.
    #[arg(long)]
    hist: Option<std::path::PathBuf>,
    /// Write an SVG chart of the latency distribution here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

struct KeyGen {
    zipf: Option<rand_distr::Zipf<f64>>,
    keys: u64,
}

impl KeyGen {
    fn new(a: &Args) -> anyhow::Result<Self> {
        let zipf = match a.dist {
            Dist::Uniform => None,
            Dist::Zipf => {
                Some(rand_distr::Zipf::new(a.keys as f64, a.zipf_s).context("zipf parameters")?)
            }
        };
        Ok(KeyGen { zipf, keys: a.keys })
    }

    fn next(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipf {
            // Zipf ranks 1..=n; scatter ranks over the key space so that hot
            // keys are not all neighbours.
            Some(z) => ((z.sample(rng) as u64 - 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % self.keys,
            None => rng.random_range(0..self.keys),
        }
    }
}

#[derive(Clone)]
struct Recorder {
    get: Histogram<u64>,
    put: Histogram<u64>,
    errors: u64,
}

impl Recorder {
    fn new() -> Self {
        let h = || {
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds are valid")
        };
        Recorder {
            get: h(),
            put: h(),
            errors: 0,
        }
    }

    fn add(&mut self, o: &Recorder) {
        self.get.add(&o.get).expect("same bounds");
        self.put.add(&o.put).expect("same bounds");
        self.errors += o.errors;
    }

    fn record(&mut self, is_put: bool, us: u64) {
        let h = if is_put { &mut self.put } else { &mut self.get };
        h.saturating_record(us.max(1));
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    done: AtomicU64,
    started: Instant,
}

#[cfg(feature = "jemalloc")]
flashkv::jemalloc_global_allocator!();

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Where every gRPC connection goes, and the token it sends: the CA and
/// token files are read once, not once per connection.
struct Target {
    endpoint: tonic::transport::Endpoint,
    /// `--channel`.
    channel: bool,
    token: BearerToken,
}

impl Target {
    fn new(args: &Args) -> anyhow::Result<Target> {
        let endpoint = flashkv::api::grpc::client_endpoint(&args.addr, args.ca_file.as_deref())?;
        Ok(Target {
            channel: args.channel,
            endpoint,
            token: match &args.token_file {
                None => BearerToken::default(),
                Some(p) => BearerToken::from_file(p)?,
            },
        })
    }

    async fn connect(&self, unary: bool) -> anyhow::Result<Kv> {
        let (transport, origin) = Transport::connect(&self.endpoint, self.channel, unary).await?;
        Ok(KvClient::with_origin(
            InterceptedService::new(transport, self.token.clone()),
            origin,
        ))
    }
}

async fn preload(args: &Args, target: &Target) -> anyhow::Result<()> {
    let t = Instant::now();
    let per = args.keys.div_ceil(args.connections as u64);
    let mut tasks = Vec::new();
    for c in 0..args.connections as u64 {
        let mut kv = target.connect(false).await?;
        let value = vec![b'v'; args.value_size];
        let (lo, hi) = (c * per, ((c + 1) * per).min(args.keys));
        tasks.push(tokio::spawn(async move {
            let items = (lo..hi).map(move |i| PutRequest {
                key: key(i),
                value: value.clone(),
                ttl_ms: 0,
                expected_version: None,
            });
            kv.bulk_load(tokio_stream::iter(items))
                .await
                .map(|r| r.into_inner().keys)
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    eprintln!("preloaded {n} keys in {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.rate > 0.0 && (args.connections * args.inflight) as f64 / args.rate < 0.002 {
        anyhow::bail!(
            "--rate {} gives each of the {} callers less than 2 ms between calls, finer than the timer \
             can pace; use fewer --connections/--inflight (or measure closed-loop without --rate)",
            args.rate,
            args.connections * args.inflight
        );
    }
    if args.protocol != Protocol::Grpc && args.mode != Mode::Unary {
        anyhow::bail!("--protocol http and resp run the unary mode only");
    }
    let target = Target::new(&args)?;
    if args.preload && args.mode != Mode::Bulk {
        preload(&args, &target).await?;
    }
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        started: Instant::now(),
    });
    let keygen = Arc::new(KeyGen::new(&args)?);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let kv = target.connect(args.mode == Mode::Unary).await?;
        match args.mode {
            Mode::Unary => {
                for _ in 0..args.inflight {
                    let callers = (args.connections * args.inflight) as f64;
                    let interval =
                        (args.rate > 0.0).then(|| Duration::from_secs_f64(callers / args.rate));
                    let client = match args.protocol {
                        Protocol::Grpc => Client::Grpc(kv.clone()),
                        Protocol::Http => Client::Http(HttpConn::connect(&args.http_addr).await?),
                        Protocol::Resp => Client::Resp(RespConn::connect(&args.resp_addr).await?),
                    };
                    tasks.push(tokio::spawn(unary(
                        client,
                        args.clone(),
                        keygen.clone(),
                        shared.clone(),
                        interval,
                    )));
                }
            }
            Mode::Pipeline => tasks.push(tokio::spawn(pipeline(
                kv,
                args.clone(),
                keygen.clone(),
                shared.clone(),
            ))),
            Mode::Bulk => tasks.push(tokio::spawn(bulk(
                kv,
                args.clone(),
                c as u64,
                shared.clone(),
            ))),
        }
    }
    // Warm-up, then measure.
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    shared.done.store(0, Ordering::SeqCst);
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::SeqCst);
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = shared.done.load(Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        if !args.quiet
            && (done / 50_000 != last / 50_000 || elapsed as u64 != (elapsed - 0.25) as u64)
        {
            eprint!(
                "\r{:>6.1} s  {:>12} ops  {:>10.0} ops/s   ",
                elapsed,
                done,
                done as f64 / elapsed.max(1e-9)
            );
        }
        last = done;
        let finished = match args.count {
            Some(n) => done >= n,
            None => elapsed >= args.duration,
        };
        if finished || tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = t0.elapsed().as_secs_f64();
    let done = shared.done.load(Ordering::SeqCst);
    shared.stop.store(true, Ordering::SeqCst);
    if !args.quiet {
        eprintln!();
    }
    let mut total = Recorder::new();
    for t in tasks {
        total.add(&t.await??);
    }
    report(&args, &total, done, elapsed)
}

async fn unary(
    mut client: Client,
    args: Args,
    keygen: Arc<KeyGen>,
    shared: Arc<Shared>,
    interval: Option<Duration>,
) -> anyhow::Result<Recorder> {
    let mut rec = Recorder::new();
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let value = vec![b'v'; args.value_size];
    // Spread the callers' schedules over one interval.
    let mut next =
        Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.random::<f64>()));
    while !shared.stop.load(Ordering::Relaxed) {
        let k = key(keygen.next(&mut rng));
        let is_put = rng.random::<f64>() >= args.read_ratio;
        let t = match interval {
            Some(i) => {
                let scheduled = next;
                next += i;
                if Instant::now() < scheduled {
                    // On time: the timer wakes up to a millisecond late, which
                    // is the harness's delay, not the server's.
                    tokio::time::sleep_until(scheduled.into()).await;
                    Instant::now()
                } else {
                    // Behind schedule because earlier calls were slow: the
                    // wait counts (no coordinated omission).
                    scheduled
                }
            }
            None => Instant::now(),
        };
        let ok = client.call(is_put, k, &value).await?;
        if shared.measuring.load(Ordering::Relaxed) {
            if ok {
                rec.record(is_put, t.elapsed().as_micros() as u64);
            } else {
                rec.errors += 1;
            }
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        if !ok {
            // A call on a broken connection fails at once, without ever
            // waiting: a loop of them would hold its worker thread and
            // starve the task that ends the run.
            tokio::task::yield_now().await;
        }
    }
    Ok(rec)
}

use rand::SeedableRng;

/// One keep-alive HTTP/1.1 connection.
struct HttpConn {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    host: String,
}

impl HttpConn {
    async fn connect(addr: &str) -> anyhow::Result<HttpConn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(HttpConn {
            send,
            host: addr.to_string(),
        })
    }

    /// One request; whether it succeeded (2xx, or 404 for a GET; body read).
    async fn call(&mut self, method: &str, key: &[u8], body: Vec<u8>) -> anyhow::Result<bool> {
        use http_body_util::BodyExt;
        let path = format!("/v1/kv/{}", std::str::from_utf8(key)?);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .body(http_body_util::Full::new(body.into()))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        // A GET of a missing key is an answer (gRPC says found=false), not a failure.
        let ok = resp.status().is_success()
            || (method == "GET" && resp.status() == hyper::StatusCode::NOT_FOUND);
        resp.into_body().collect().await?;
        Ok(ok)
    }
}

/// What a unary caller talks through.
enum Client {
    Grpc(Kv),
    Http(HttpConn),
    Resp(RespConn),
}

impl Client {
    /// One get or put; whether it succeeded. A gRPC error status and a
    /// non-2xx HTTP reply count as failures; a broken HTTP connection ends
    /// the run.
    async fn call(&mut self, is_put: bool, key: Vec<u8>, value: &[u8]) -> anyhow::Result<bool> {
        match self {
            Client::Grpc(kv) => Ok(if is_put {
                kv.put(PutRequest {
                    key,
                    value: value.to_vec(),
                    ttl_ms: 0,
                    expected_version: None,
                })
                .await
                .is_ok()
            } else {
                kv.get(GetRequest { key }).await.is_ok()
            }),
            Client::Http(conn) if is_put => conn.call("PUT", &key, value.to_vec()).await,
            Client::Http(conn) => conn.call("GET", &key, Vec::new()).await,
            Client::Resp(conn) if is_put => conn.call(&[b"SET", &key, value]).await,
            Client::Resp(conn) => conn.call(&[b"GET", &key]).await,
        }
    }
}

/// One RESP connection, one command at a time.
struct RespConn {
    stream: tokio::io::BufStream<tokio::net::TcpStream>,
    line: Vec<u8>,
}

impl RespConn {
    async fn connect(addr: &str) -> anyhow::Result<RespConn> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            stream: tokio::io::BufStream::new(stream),
            line: Vec::new(),
        })
    }

    /// One command; whether it succeeded (an error reply is a failure, a
    /// nil GET a miss).
    async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<bool> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        self.line.clear();
        if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
            anyhow::bail!("the server closed the connection");
        }
        match self.line.first() {
            Some(b'+') | Some(b':') => Ok(true),
            Some(b'-') => Ok(false),
            Some(b'$') => {
                let n: i64 = std::str::from_utf8(&self.line[1..])?.trim().parse()?;
                if n >= 0 {
                    let mut body = vec![0; n as usize + 2];
                    self.stream.read_exact(&mut body).await?;
                }
                Ok(true)
            }
            _ => anyhow::bail!("unexpected reply {:?}", String::from_utf8_lossy(&self.line)),
        }
    }
}

async fn pipeline(
    mut kv: Kv,
    args: Args,
    keygen: Arc<KeyGen>,
    shared: Arc<Shared>,
) -> anyhow::Result<Recorder> {
    let permits = Arc::new(tokio::sync::Semaphore::new(args.inflight));
    let (tx, rx) = tokio::sync::mpsc::channel::<PipelineRequest>(args.inflight.max(1));
    let sender = {
        let permits = permits.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::from_os_rng();
            let value = vec![b'v'; args.value_size];
            while !shared.stop.load(Ordering::Relaxed) {
                let Ok(p) = permits.clone().acquire_owned().await else {
                    break;
                };
                p.forget();
                let k = key(keygen.next(&mut rng));
                let is_put = rng.random::<f64>() >= args.read_ratio;
                // The id carries the send time (ns since start) and the op type.
                let id = ((shared.started.elapsed().as_nanos() as u64) << 1) | u64::from(is_put);
                let op = if is_put {
                    pipeline_request::Op::Put(PutRequest {
                        key: k,
                        value: value.clone(),
                        ttl_ms: 0,
                        expected_version: None,
                    })
                } else {
                    pipeline_request::Op::Get(GetRequest { key: k })
                };
                if tx.send(PipelineRequest { id, op: Some(op) }).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut responses = kv
        .pipeline(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut rec = Recorder::new();
    while let Some(r) = responses.message().await? {
        permits.add_permits(1);
        if shared.measuring.load(Ordering::Relaxed) {
            let now = shared.started.elapsed().as_nanos() as u64;
            if r.code == 0 {
                rec.record(r.id & 1 == 1, now.saturating_sub(r.id >> 1) / 1000);
            } else {
                rec.errors += 1;
            }
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    sender.abort();
    Ok(rec)
}

async fn bulk(mut kv: Kv, args: Args, conn: u64, shared: Arc<Shared>) -> anyhow::Result<Recorder> {
    let value = vec![b'v'; args.value_size];
    let stride = args.connections as u64;
    let s2 = shared.clone();
    let items = (0..)
        .map(move |i| i * stride + conn)
        .take_while(move |_| !s2.stop.load(Ordering::Relaxed))
        .map(move |i| {
            if shared.measuring.load(Ordering::Relaxed) {
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            PutRequest {
                key: key(i % args.keys.max(1) + (i / args.keys.max(1)) * args.keys),
                value: value.clone(),
                ttl_ms: 0,
                expected_version: None,
            }
        });
    kv.bulk_load(tokio_stream::iter(items)).await?;
    Ok(Recorder::new())
}

fn pct(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

fn report(args: &Args, r: &Recorder, done: u64, elapsed: f64) -> anyhow::Result<()> {
    let mut all = r.get.clone();
    all.add(&r.put)?;
    if args.rate > 0.0 {
        println!("paced at {:.0} ops/s", args.rate);
    }
    println!(
        "mode {:?}, {} connections x {} in flight, {} keys {:?}, {}-byte values, {:.0}% gets, {:.1} s measured",
        args.mode,
        args.connections,
        args.inflight,
        args.keys,
        args.dist,
        args.value_size,
        args.read_ratio * 100.0,
        elapsed
    );
    println!(
        "{:<5} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8}  (latency in us)",
        "op", "count", "ops/s", "p50", "p90", "p99", "p99.9", "max"
    );
    let mut json_ops = serde_json::Map::new();
    let rows: Vec<(&str, &Histogram<u64>)> = if args.mode == Mode::Bulk {
        vec![]
    } else {
        vec![("get", &r.get), ("put", &r.put), ("all", &all)]
    };
    for (name, h) in &rows {
        let n = h.len();
        println!(
            "{:<5} {:>11} {:>11.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
            name,
            n,
            n as f64 / elapsed,
            pct(h, 0.5),
            pct(h, 0.9),
            pct(h, 0.99),
            pct(h, 0.999),
            h.max()
        );
        json_ops.insert(
            name.to_string(),
            serde_json::json!({
                "count": n, "ops_per_sec": n as f64 / elapsed,
                "p50_us": pct(h, 0.5), "p90_us": pct(h, 0.9), "p99_us": pct(h, 0.99), "p999_us": pct(h, 0.999), "max_us": h.max(),
            }),
        );
    }
    let ops_per_sec = done as f64 / elapsed;
    println!(
        "total {done} operations, {ops_per_sec:.0} ops/s, {} errors",
        r.errors
    );
    if let Some(path) = &args.json {
        let j = serde_json::json!({
            "mode": format!("{:?}", args.mode).to_lowercase(), "connections": args.connections, "inflight": args.inflight,
            "keys": args.keys, "dist": format!("{:?}", args.dist).to_lowercase(), "value_size": args.value_size,
            "read_ratio": args.read_ratio, "rate": args.rate, "seconds": elapsed, "operations": done, "ops_per_sec": ops_per_sec,
            "errors": r.errors, "latency": json_ops,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)?)?;
    }
    if let Some(path) = &args.hist {
        let mut out = String::from("percentile\tlatency_us\tcount\n");
        for v in all.iter_quantiles(2) {
            out.push_str(&format!(
                "{:.6}\t{}\t{}\n",
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to(),
                v.count_since_last_iteration()
            ));
        }
        std::fs::write(path, out)?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&rows, args))?;
    }
    Ok(())
}

/// Latency by percentile, x on a "nines" scale (0 = p0, 1 = p90, 2 = p99, ...).
fn svg(rows: &[(&str, &Histogram<u64>)], args: &Args) -> String {
    let (w, h, m) = (800.0, 480.0, 60.0);
    let max_x = 5.0;
    let ymax = rows
        .iter()
        .map(|(_, h)| pct(h, 0.99999))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let px = |x: f64| m + (x / max_x) * (w - 2.0 * m);
    let py = |y: f64| h - m - (y / ymax) * (h - 2.0 * m);
    let colors = ["#1f77b4", "#d62728", "#2ca02c"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{m}\" y=\"24\" font-size=\"14\">flashkv-bench {:?}: latency by percentile ({} conn x {} in flight)</text>\n",
        args.mode, args.connections, args.inflight
    );
    s += &format!(
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - m,
        w - m,
        h - m
    );
    s += &format!(
        "<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - m
    );
    for (i, label) in ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"]
        .iter()
        .enumerate()
    {
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            px(i as f64),
            h - m + 18.0
        );
    }
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0} us</text>\n",
            m - 6.0,
            py(y) + 4.0,
            y
        );
    }
    for (i, (name, hist)) in rows.iter().enumerate() {
        if hist.is_empty() {
            continue;
        }
        let mut pts = String::new();
        for k in 0..=500 {
            let x = max_x * k as f64 / 500.0;
            let q = 1.0 - 10f64.powf(-x);
            pts += &format!(
                "{:.1},{:.1} ",
                px(x),
                py(hist.value_at_quantile(q.min(0.999_999)) as f64)
            );
        }
        let c = colors[i % colors.len()];
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{pts}\"/>\n"
        );
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
            w - m + 6.0,
            m + 16.0 * i as f64
        );
    }
    s + "</svg>\n"
}
