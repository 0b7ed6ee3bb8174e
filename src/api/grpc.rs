//! The gRPC edge (`flashkv.v1.KV` and `flashkv.v1.Admin`; `Txn` is in
//! [`crate::api::txn`]): decodes requests, checks them, calls the router
//! (or the transaction coordinator for `Write`), and maps errors to status
//! codes in one function ([`status`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, ErrorCode};
use crate::shard::Router;
use crate::shard::router::scan_bounds;
use crate::storage::store::now_ms;
use crate::storage::{Batch, Condition, Op, Outcome, READ_AHEAD, Value};

/// Generated protobuf and gRPC code.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod proto {
    tonic::include_proto!("flashkv.v1");
    /// Encoded descriptors, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("flashkv_descriptor");
}

use proto::admin_server::Admin;
use proto::kv_server::Kv;
use proto::*;

/// A tower layer on the gRPC server that counts and times every call under
/// its method (`KV/Get`, `grpc.health.v1.Health/Check`) and counts failures
/// under the status code name.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

/// The service [`MetricsLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
}

/// The metrics label of a gRPC path; unknown services share one label so a
/// client cannot grow the label set.
fn grpc_command(path: &str) -> String {
    let path = path.trim_start_matches('/');
    let known = ["flashkv.v1.", "grpc.health.v1.", "grpc.reflection."];
    match known.iter().find(|k| path.starts_with(*k)) {
        Some(&"flashkv.v1.") => path["flashkv.v1.".len()..].to_string(),
        Some(_) => path.to_string(),
        None => "unknown".to_string(),
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let command = grpc_command(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            // A failed unary call carries its status in the headers
            // (trailers-only); a stream's later failure is not seen here.
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<i32>().ok())
                    .filter(|c| *c != 0)
                    .map(|c| format!("{:?}", tonic::Code::from(c))),
                Err(_) => Some("transport".to_string()),
            };
            // A client-streaming call answers once its client stops
            // sending: its duration is the client's, not a slow server's.
            let m = crate::metrics::metrics();
            if command == "KV/BulkLoad" {
                m.streamed("grpc", &command, start, code.as_deref());
            } else {
                m.request("grpc", &command, start, code.as_deref());
            }
            r
        })
    }
}

/// A client connection (plain or TLS) counted in the connection gauge
/// while open.
pub struct CountedStream {
    stream: crate::api::security::BoxStream,
    info: tonic::transport::server::TcpConnectInfo,
    _open: (crate::metrics::ConnectionGuard, crate::shard::spread::Seat),
}

impl CountedStream {
    /// A connection admitted under `open`.
    pub fn new(
        stream: crate::api::security::BoxStream,
        info: tonic::transport::server::TcpConnectInfo,
        open: (crate::metrics::ConnectionGuard, crate::shard::spread::Seat),
    ) -> Self {
        CountedStream {
            stream,
            info,
            _open: open,
        }
    }
}

impl tonic::transport::server::Connected for CountedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_shutdown(cx)
    }
}

/// Maps a crate error to a gRPC status: the one place this happens.
pub fn status(e: Error) -> Status {
    let msg = e.to_string();
    match e.code() {
        ErrorCode::InvalidArgument => Status::invalid_argument(msg),
        ErrorCode::Io if e.is_disk_full() => Status::resource_exhausted(msg),
        ErrorCode::Io | ErrorCode::Poisoned | ErrorCode::Unavailable => Status::unavailable(msg),
        ErrorCode::Corruption => Status::data_loss(msg),
        ErrorCode::Locked | ErrorCode::Config => Status::internal(msg),
        ErrorCode::AlreadyExists => Status::already_exists(msg),
    }
}

fn failed_condition(key: &[u8], current: u64, expected: u64) -> Status {
    Status::failed_precondition(format!(
        "compare-and-set failed: key {:?} is at version {current}, expected {expected}{}",
        String::from_utf8_lossy(key),
        if current == 0 { " (0 = absent)" } else { "" }
    ))
}

pub use crate::api::Limits;

/// The client side of `--auth-token-file`: an interceptor that sends
/// `authorization: Bearer <token>` with every call (nothing when empty),
/// for the tools and any Rust client.
#[derive(Clone, Debug, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// Reads the token from `path` (a trailing newline is ignored).
    pub fn from_file(path: &std::path::Path) -> crate::error::Result<Self> {
        let t = std::fs::read_to_string(path)
            .map_err(|e| crate::error::Error::io("read the token file", path, e))?;
        let v = format!("Bearer {}", t.trim_end()).parse().map_err(|_| {
            crate::error::Error::InvalidArgument(format!(
                "the token in {} is not printable ASCII",
                path.display()
            ))
        })?;
        Ok(BearerToken(Some(v)))
    }
}

/// Where a client reaches a daemon's gRPC port: `addr` is host:port as the
/// daemon prints it (https is assumed with `ca_file`, http otherwise) or a
/// URL; with `ca_file` the daemon's certificate is verified against that
/// CA. Used by flashkv-ctl and flashkv-bench; connect with
/// [`tonic::transport::Endpoint::connect`].
pub fn client_endpoint(
    addr: &str,
    ca_file: Option<&std::path::Path>,
) -> crate::error::Result<tonic::transport::Endpoint> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else if ca_file.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| {
        crate::error::Error::InvalidArgument(format!("not a daemon address: {url:?}: {e}"))
    })?;
    if let Some(ca) = ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| crate::error::Error::io("read the CA file", ca, e))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            crate::error::Error::InvalidArgument(format!("TLS settings for {url}: {e}"))
        })?;
    }
    Ok(endpoint)
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

/// Which keys a watch covers.
enum WatchFilter {
    All,
    Key(Vec<u8>),
    Range(std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>),
}

impl WatchFilter {
    fn new(key: Vec<u8>, prefix: Vec<u8>, start: Vec<u8>, end: Vec<u8>) -> Result<Self, Status> {
        let given = [
            !key.is_empty(),
            !prefix.is_empty(),
            !start.is_empty() || !end.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Status::invalid_argument(
                "give at most one of key, prefix and start/end",
            ));
        }
        Ok(if !key.is_empty() {
            WatchFilter::Key(key)
        } else if prefix.is_empty() && start.is_empty() && end.is_empty() {
            WatchFilter::All
        } else {
            let (lo, hi) = scan_bounds(&start, &end, &prefix);
            WatchFilter::Range(lo, hi)
        })
    }

    fn matches(&self, k: &[u8]) -> bool {
        if crate::keyspace::is_reserved(k) {
            // The Redis collections' internal records.
            return false;
        }
        match self {
            WatchFilter::All => true,
            WatchFilter::Key(key) => key.as_slice() == k,
            WatchFilter::Range(lo, hi) => crate::storage::store::key_in_range(k, lo, hi),
        }
    }
}

/// The KV service.
#[derive(Clone)]
pub struct KvService {
    router: Arc<Router>,
    coord: Arc<crate::txn::Coordinator>,
    limits: Limits,
    /// The daemon's shutdown signal: streams end at it.
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl KvService {
    /// A service over `coord` (and its router).
    pub fn new(coord: Arc<crate::txn::Coordinator>, limits: Limits) -> Self {
        KvService {
            router: coord.router().clone(),
            coord,
            limits,
            stopping: None,
        }
    }

    /// Ends streams when `stopping` turns true (or its sender goes), so
    /// that open ones do not hold up a shutdown: Watch with UNAVAILABLE and
    /// the version to resume from; Pipeline and BulkLoad stop reading,
    /// finish what they read, and end with UNAVAILABLE saying so.
    pub fn with_shutdown(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }
}

/// Resolves once `stopping` turns true or its sender is gone; never
/// without one.
async fn stopped(stopping: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match stopping {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

fn check_key(key: &[u8], limits: &Limits) -> Result<(), Status> {
    limits.check_key(key).map_err(status)
}

/// The Get answer for a value read (or not found).
pub(crate) fn get_response(v: Option<Value>) -> GetResponse {
    match v {
        None => GetResponse::default(),
        Some(v) => GetResponse {
            found: true,
            ttl_ms: v
                .expires_at_ms
                .map_or(0, |t| t.saturating_sub(now_ms()).max(1)),
            value: v.value,
            version: v.version,
        },
    }
}

fn put_op(p: PutRequest, limits: &Limits) -> Result<(Op, Option<Condition>), Status> {
    check_key(&p.key, limits)?;
    let cond = p.expected_version.map(|v| Condition {
        key: p.key.clone(),
        expected_version: v,
    });
    let expires_at_ms = (p.ttl_ms > 0).then(|| now_ms().saturating_add(p.ttl_ms));
    Ok((
        Op::Put {
            key: p.key,
            value: p.value,
            expires_at_ms,
        },
        cond,
    ))
}

async fn do_put(router: &Router, p: PutRequest, limits: &Limits) -> Result<PutResponse, Status> {
    let expected = p.expected_version;
    let (op, cond) = put_op(p, limits)?;
    let mut batch = Batch {
        ops: vec![op],
        conditions: cond.into_iter().collect(),
    };
    crate::keyspace::replace_collections(&mut batch.ops);
    match router.write(batch).await.map_err(status)? {
        Outcome::Committed { version, .. } => Ok(PutResponse { version }),
        Outcome::ConditionFailed {
            key,
            current_version,
        } => Err(failed_condition(
            &key,
            current_version,
            expected.unwrap_or_default(),
        )),
    }
}

async fn do_delete(
    router: &Router,
    d: DeleteRequest,
    limits: &Limits,
) -> Result<DeleteResponse, Status> {
    check_key(&d.key, limits)?;
    let mut batch = Batch::delete(d.key);
    crate::keyspace::replace_collections(&mut batch.ops);
    match router.write(batch).await.map_err(status)? {
        Outcome::Committed { version, removed } => Ok(DeleteResponse {
            found: removed > 0,
            version: if removed > 0 { version } else { 0 },
        }),
        Outcome::ConditionFailed { .. } => {
            Err(Status::internal("a delete without conditions failed one"))
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

const BULK_BATCH_OPS: usize = 1024;
/// Kept well below the smallest segment (1 MiB), so that a batch always
/// fits in one; a record larger than this goes in a batch of its own.
const BULK_BATCH_BYTES: usize = 256 << 10;
const PIPELINE_INFLIGHT: usize = 1024;

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = req.into_inner().key;
        check_key(&key, &self.limits)?;
        Ok(Response::new(get_response(
            self.router.get(&key).map_err(status)?,
        )))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(
            do_put(&self.router, req.into_inner(), &self.limits).await?,
        ))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        Ok(Response::new(
            do_delete(&self.router, req.into_inner(), &self.limits).await?,
        ))
    }

    async fn batch_get(
        &self,
        req: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        let keys = req.into_inner().keys;
        for key in &keys {
            check_key(key, &self.limits)?;
        }
        // Read ahead together: the keys' cache misses overlap.
        let results = self
            .router
            .get_many(&keys)
            .map_err(status)?
            .into_iter()
            .map(get_response)
            .collect();
        Ok(Response::new(BatchGetResponse { results }))
    }

    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let mut batch = Batch::default();
        let mut expected = Vec::new();
        for m in req.into_inner().mutations {
            match m.op {
                Some(mutation::Op::Put(p)) => {
                    let (op, cond) = put_op(p, &self.limits)?;
                    if let Some(c) = cond {
                        expected.push((c.key.clone(), c.expected_version));
                        batch.conditions.push(c);
                    }
                    batch.ops.push(op);
                }
                Some(mutation::Op::Delete(d)) => {
                    check_key(&d.key, &self.limits)?;
                    batch.ops.push(Op::Delete { key: d.key });
                }
                None => return Err(Status::invalid_argument("mutation without an operation")),
            }
        }
        if batch.ops.is_empty() {
            return Err(Status::invalid_argument("write with no mutations"));
        }
        crate::keyspace::replace_collections(&mut batch.ops);
        match self.coord.write_batch(batch).await.map_err(status)? {
            Outcome::Committed { version, .. } => Ok(Response::new(WriteResponse { version })),
            Outcome::ConditionFailed {
                key,
                current_version,
            } => {
                let exp = expected
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map_or(0, |(_, v)| *v);
                Err(failed_condition(&key, current_version, exp))
            }
        }
    }

    type WatchStream = BoxStream<WatchEvent>;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let filter = WatchFilter::new(r.key, r.prefix, r.start, r.end)?;
        let clock = self.coord.clock().clone();
        let (tx, rx) = mpsc::channel(1024);
        // The status that ends the stream goes out after the events queued
        // before it, however full the buffer was when the task stopped.
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<Status>();
        let mut stopping = self.stopping.clone();
        // Registered before answering, so nothing after the start is missed.
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let feed = &clock.feed;
            let mut w = feed.watch(&clock).await;
            let floor = feed.complete_after();
            let start = if r.start_version == 0 {
                clock.watermark() + 1
            } else {
                r.start_version
            };
            if start <= floor {
                let _ = first_tx.send(Err(Status::out_of_range(format!(
                    "history starts after version {floor}: watch from {} or later (or 0 for now on)",
                    floor + 1
                ))));
                return;
            }
            let _ = first_tx.send(Ok(()));
            let mut ordered = crate::storage::feed::Ordered::new(start);
            for c in feed.history_from(start) {
                if filter.matches(&c.key) {
                    ordered.offer(c);
                }
            }
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
            let lagged = |next: u64| {
                Status::resource_exhausted(format!(
                    "watcher fell behind the change feed; resume with start_version {next}"
                ))
            };
            let shutting_down = |next: u64| {
                Status::unavailable(format!(
                    "the daemon is shutting down; resume with start_version {next}"
                ))
            };
            loop {
                tokio::select! {
                    () = stopped(&mut stopping) => {
                        let _ = end_tx.send(shutting_down(ordered.next()));
                        return;
                    }
                    got = w.rx.recv() => match got {
                        Ok(c) => {
                            if filter.matches(&c.key) {
                                ordered.offer(c);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let _ = end_tx.send(lagged(ordered.next()));
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => {}
                    _ = tx.closed() => return,
                }
                // Everything at or below the watermark has been recorded,
                // so after draining the channel it can go out in order.
                let mark = clock.watermark();
                loop {
                    match w.rx.try_recv() {
                        Ok(c) => {
                            if filter.matches(&c.key) {
                                ordered.offer(c);
                            }
                        }
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                            let _ = end_tx.send(lagged(ordered.next()));
                            return;
                        }
                        Err(_) => break,
                    }
                }
                let (out, failed) = ordered.release(mark, &clock);
                for c in out {
                    let ev = WatchEvent {
                        key: c.key.clone(),
                        deleted: c.value.is_none(),
                        value: c.value.clone().unwrap_or_default(),
                        version: c.version,
                    };
                    // A shutdown while the buffer is full ends the stream
                    // after what is queued, resuming at this event's
                    // version (its events already queued come again).
                    tokio::select! {
                        sent = tx.send(Ok(ev)) => if sent.is_err() {
                            return;
                        },
                        () = stopped(&mut stopping) => {
                            let _ = end_tx.send(shutting_down(c.version));
                            return;
                        }
                    }
                }
                if let Some(v) = failed {
                    let _ = end_tx.send(Status::unavailable(format!(
                        "the cross-shard commit at version {v} could not be applied on every \
                         shard (an I/O error) and completes only when the daemon restarts; \
                         read the watched keys again after the restart, then watch from there"
                    )));
                    return;
                }
            }
        });
        first_rx
            .await
            .map_err(|_| Status::unavailable("the watch task stopped"))??;
        let end = futures::stream::once(end_rx).filter_map(|r| async move { r.ok().map(Err) });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).chain(end))))
    }

    type ScanStream = BoxStream<KeyValue>;

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<Self::ScanStream>, Status> {
        let r = req.into_inner();
        let (lower, upper) = scan_bounds(&r.start, &r.end, &r.prefix);
        let limit = if r.limit == 0 { u64::MAX } else { r.limit };
        let (tx, rx) = mpsc::channel(256);
        let router = self.router.clone();
        tokio::spawn(async move {
            let mut scan = router.scan(lower, upper, r.reverse, r.keys_only);
            let mut sent = 0u64;
            while sent < limit {
                let item = match scan.next_item() {
                    Ok(Some((key, v))) => Ok(KeyValue {
                        key,
                        value: v.value,
                        version: v.version,
                    }),
                    Ok(None) => break,
                    Err(e) => Err(status(e)),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
                sent += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bulk_load(
        &self,
        req: Request<Streaming<PutRequest>>,
    ) -> Result<Response<BulkLoadSummary>, Status> {
        let mut stream = req.into_inner();
        let start = Instant::now();
        let n = self.router.shard_count();
        let mut pending: Vec<(Vec<Op>, usize)> = (0..n).map(|_| (Vec::new(), 0)).collect();
        let mut inflight = FuturesUnordered::new();
        let max_inflight = 4 * n;
        let (mut keys, mut bytes) = (0u64, 0u64);
        let submit = |shard: usize, mut ops: Vec<Op>| {
            let h = self.router.shard(shard).clone();
            crate::keyspace::replace_collections(&mut ops);
            tokio::spawn(async move {
                h.write(Batch {
                    ops,
                    conditions: vec![],
                })
                .await
            })
        };
        let mut stopping = self.stopping.clone();
        let mut cut = false;
        loop {
            // At a shutdown the load stops reading; what it read is written.
            let p = tokio::select! {
                m = stream.message() => match m? {
                    Some(p) => p,
                    None => break,
                },
                () = stopped(&mut stopping) => {
                    cut = true;
                    break;
                }
            };
            if p.expected_version.is_some() {
                return Err(Status::invalid_argument(
                    "BulkLoad does not take expected_version; use Put or Write",
                ));
            }
            check_key(&p.key, &self.limits)?;
            self.limits.check_value(&p.value).map_err(status)?;
            keys += 1;
            bytes += (p.key.len() + p.value.len()) as u64;
            let s = self.router.shard_of(&p.key) as usize;
            let size = p.key.len() + p.value.len();
            let (op, _) = put_op(p, &self.limits)?;
            let slot = &mut pending[s];
            if !slot.0.is_empty() && slot.1 + size > BULK_BATCH_BYTES {
                let ops = std::mem::take(&mut slot.0);
                slot.1 = 0;
                inflight.push(submit(s, ops));
            }
            slot.0.push(op);
            slot.1 += size;
            if slot.0.len() >= BULK_BATCH_OPS || slot.1 >= BULK_BATCH_BYTES {
                let ops = std::mem::take(&mut slot.0);
                slot.1 = 0;
                inflight.push(submit(s, ops));
                // Backpressure: stop reading the stream while enough is in flight.
                while inflight.len() >= max_inflight {
                    finish(inflight.next().await)?;
                }
            }
        }
        for (s, (ops, _)) in pending.into_iter().enumerate() {
            if !ops.is_empty() {
                inflight.push(submit(s, ops));
            }
        }
        while let Some(r) = inflight.next().await {
            finish(Some(r))?;
        }
        if cut {
            return Err(Status::unavailable(format!(
                "the daemon is shutting down: the first {keys} keys of this load are written; \
                 send the rest after it restarts"
            )));
        }
        Ok(Response::new(BulkLoadSummary {
            keys,
            bytes,
            elapsed_ms: start.elapsed().as_millis() as u64,
        }))
    }

    type PipelineStream = BoxStream<PipelineResponse>;

    async fn pipeline(
        &self,
        req: Request<Streaming<PipelineRequest>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(PIPELINE_INFLIGHT);
        let router = self.router.clone();
        let limits = self.limits;
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let router = &router;
            let mut inflight = FuturesUnordered::new();
            let mut open = true;
            // At a shutdown the stream stops reading: what was read is
            // answered, then the stream ends with UNAVAILABLE.
            let mut cut = false;
            while open || !inflight.is_empty() {
                tokio::select! {
                    () = stopped(&mut stopping), if open => {
                        open = false;
                        cut = true;
                    }
                    msg = inbound.message(), if open && inflight.len() < PIPELINE_INFLIGHT => match msg {
                        Ok(Some(m)) => {
                            // The messages already received go together, so
                            // that their gets read ahead: their cache misses
                            // overlap instead of coming one after another.
                            let mut batch = vec![m];
                            let mut failed = None;
                            while batch.len() < READ_AHEAD && inflight.len() + batch.len() < PIPELINE_INFLIGHT {
                                match inbound.message().now_or_never() {
                                    Some(Ok(Some(m))) => batch.push(m),
                                    Some(Ok(None)) => {
                                        open = false;
                                        break;
                                    }
                                    Some(Err(e)) => {
                                        failed = Some(e);
                                        break;
                                    }
                                    None => break,
                                }
                            }
                            for (id, step) in pipeline_batch(router, &limits, batch) {
                                match step {
                                    Step::Reply(r) => {
                                        if tx.send(Ok(pipeline_reply(id, r))).await.is_err() {
                                            return;
                                        }
                                    }
                                    Step::Write(w) => inflight.push(w),
                                }
                            }
                            if let Some(e) = failed {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                        Ok(None) => open = false,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    },
                    Some((id, r)) = inflight.next(), if !inflight.is_empty() => {
                        if tx.send(Ok(pipeline_reply(id, r))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if cut {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "the daemon is shutting down: the requests answered on this stream ran, \
                         no later one did",
                    )))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn finish(r: Option<Result<crate::Result<Outcome>, tokio::task::JoinError>>) -> Result<(), Status> {
    match r {
        None => Ok(()),
        Some(Ok(Ok(_))) => Ok(()),
        Some(Ok(Err(e))) => Err(status(e)),
        Some(Err(e)) => Err(Status::internal(format!(
            "bulk load writer task failed: {e}"
        ))),
    }
}

/// A pipelined write in flight: its id and outcome.
type PipelineWrite<'a> = Pin<
    Box<
        dyn std::future::Future<Output = (u64, Result<pipeline_response::Result, Status>)>
            + Send
            + 'a,
    >,
>;

/// What a Pipeline message comes to: an answer now (gets, malformed
/// messages) or a write to wait for.
enum Step<'a> {
    Reply(Result<pipeline_response::Result, Status>),
    Write(PipelineWrite<'a>),
}

/// The steps of a batch of Pipeline messages, in their order; the batch's
/// gets are read ahead together ([`Router::get_many`]'s stages) first.
fn pipeline_batch<'a>(
    router: &'a Router,
    limits: &'a Limits,
    batch: Vec<PipelineRequest>,
) -> Vec<(u64, Step<'a>)> {
    let keys: Vec<&[u8]> = batch
        .iter()
        .filter_map(|m| match &m.op {
            Some(pipeline_request::Op::Get(g)) if limits.check_key(&g.key).is_ok() => {
                Some(g.key.as_slice())
            }
            _ => None,
        })
        .collect();
    // The stages' and gets' own pins nest in this one (cheap).
    let guard = crossbeam_epoch::pin();
    if keys.len() > 1 {
        crate::storage::store::read_ahead_stages(
            || keys.iter().copied(),
            |k, stage| router.prefetch(k, stage),
        );
    }
    let steps = batch
        .into_iter()
        .map(|m| {
            let id = m.id;
            let step = match m.op {
                Some(pipeline_request::Op::Get(g)) => Step::Reply(
                    check_key(&g.key, limits)
                        .and_then(|_| router.get(&g.key).map_err(status))
                        .map(|v| pipeline_response::Result::Get(get_response(v))),
                ),
                Some(pipeline_request::Op::Put(p)) => Step::Write(Box::pin(async move {
                    (
                        id,
                        do_put(router, p, limits)
                            .await
                            .map(pipeline_response::Result::Put),
                    )
                })),
                Some(pipeline_request::Op::Delete(d)) => Step::Write(Box::pin(async move {
                    (
                        id,
                        do_delete(router, d, limits)
                            .await
                            .map(pipeline_response::Result::Delete),
                    )
                })),
                None => Step::Reply(Err(Status::invalid_argument(
                    "pipeline request without an operation",
                ))),
            };
            (id, step)
        })
        .collect();
    drop(guard);
    steps
}

fn pipeline_reply(id: u64, r: Result<pipeline_response::Result, Status>) -> PipelineResponse {
    match r {
        Ok(result) => PipelineResponse {
            id,
            code: 0,
            message: String::new(),
            result: Some(result),
        },
        Err(s) => PipelineResponse {
            id,
            code: s.code() as i32,
            message: s.message().to_string(),
            result: None,
        },
    }
}

/// The Admin service.
#[derive(Clone)]
pub struct AdminService {
    router: Arc<Router>,
    io_engine: &'static str,
    sync: String,
}

impl AdminService {
    /// A service over `router`; `io_engine` and `sync` are reported by Stats.
    pub fn new(router: Arc<Router>, io_engine: &'static str, sync: String) -> Self {
        AdminService {
            router,
            io_engine,
            sync,
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let shards = self
            .router
            .stats()
            .await
            .map_err(status)?
            .into_iter()
            .enumerate()
            .map(|(i, s)| ShardStats {
                shard: i as u32,
                keys: s.keys,
                tombstones: s.tombstones,
                index_bytes: s.index_bytes,
                old_version_bytes: s.old_version_bytes,
                live_bytes: s.live_bytes,
                dead_bytes: s.dead_bytes,
                batches: s.batches,
                log_writes: s.log_writes,
                log_syncs: s.log_syncs,
                bytes_written: s.bytes_written,
                merges: s.merges,
                bytes_reclaimed: s.bytes_reclaimed,
                segments: s
                    .segments
                    .iter()
                    .map(|g| SegmentStats {
                        id: g.id,
                        merged: g.merged,
                        active: g.active,
                        len: g.len,
                        live_bytes: g.live_bytes,
                        dead_bytes: g.dead_bytes,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(StatsResponse {
            shards,
            io_engine: self.io_engine.into(),
            sync: self.sync.clone(),
        }))
    }

    async fn compact(
        &self,
        _: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        let (shards_merged, bytes_reclaimed) = self.router.compact().await.map_err(status)?;
        Ok(Response::new(CompactResponse {
            shards_merged,
            bytes_reclaimed,
        }))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let path = std::path::PathBuf::from(req.into_inner().path);
        self.router.checkpoint(&path).await.map_err(status)?;
        Ok(Response::new(CheckpointResponse {}))
    }

    async fn shard_of(
        &self,
        req: Request<ShardOfRequest>,
    ) -> Result<Response<ShardOfResponse>, Status> {
        let key = req.into_inner().key;
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        Ok(Response::new(ShardOfResponse {
            shard: self.router.shard_of(&key),
            shards: self.router.shard_count() as u32,
        }))
    }
}

/// Entry points for the fuzz targets (fuzz/fuzz_targets/grpc_request.rs).
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;
    use prost::Message;

    /// Decodes `data` as every request message and runs the service's
    /// checks on what decodes. Must never panic.
    pub fn decode_requests(data: &[u8]) {
        let limits = Limits {
            max_key_size: 64,
            max_value_size: 256,
        };
        let accepted = |op: &Op| {
            assert!(!op.key().is_empty() && op.key().len() <= limits.max_key_size);
        };
        if let Ok(p) = PutRequest::decode(data)
            && let Ok((op, _)) = put_op(p, &limits)
        {
            accepted(&op);
        }
        if let Ok(g) = GetRequest::decode(data) {
            let _ = check_key(&g.key, &limits);
        }
        if let Ok(d) = DeleteRequest::decode(data) {
            let _ = check_key(&d.key, &limits);
        }
        if let Ok(b) = BatchGetRequest::decode(data) {
            for k in b.keys {
                let _ = check_key(&k, &limits);
            }
        }
        if let Ok(w) = WriteRequest::decode(data) {
            for m in w.mutations {
                match m.op {
                    Some(mutation::Op::Put(p)) => {
                        if let Ok((op, _)) = put_op(p, &limits) {
                            accepted(&op);
                        }
                    }
                    Some(mutation::Op::Delete(d)) => {
                        let _ = check_key(&d.key, &limits);
                    }
                    None => {}
                }
            }
        }
        if let Ok(r) = ScanRequest::decode(data) {
            let _ = scan_bounds(&r.start, &r.end, &r.prefix);
        }
        if let Ok(p) = PipelineRequest::decode(data) {
            match p.op {
                Some(pipeline_request::Op::Put(p)) => {
                    let _ = put_op(p, &limits);
                }
                Some(pipeline_request::Op::Get(g)) => {
                    let _ = check_key(&g.key, &limits);
                }
                Some(pipeline_request::Op::Delete(d)) => {
                    let _ = check_key(&d.key, &limits);
                }
                None => {}
            }
        }
        let _ = CheckpointRequest::decode(data);
        let _ = ShardOfRequest::decode(data);
    }

    #[test]
    fn survives_odd_inputs() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: u64::MAX,
            expected_version: Some(3),
        }
        .encode_to_vec();
        for input in [
            &b""[..],
            &put,
            b"\xff\xff\xff\xff\x0f",
            b"\x0a\x80\x80\x80\x80\x10",
        ] {
            decode_requests(input);
        }
    }
}
