//! The thread-per-core daemon: one thread per shard, each pinned to a core
//! (when the shards take every core) and running its own current-thread
//! runtime (tokio-uring's when io_uring is available), its storage task,
//! and a gRPC server on a listener that every
//! shard binds to the same port with SO_REUSEPORT — the kernel spreads
//! connections over the shards, with no shared acceptor, and a shard hands a
//! connection on where the kernel's spread came out uneven
//! ([`crate::shard::spread`]).
//!
//! Start-up: lock the data directory, read or write its manifest, bind the
//! listeners, open every shard's store on its thread (in parallel), build the
//! router from their handles, then serve. Shutdown (SIGTERM/SIGINT, or
//! [`Daemon::shutdown`]): stop accepting, let in-flight requests finish,
//! then each storage task syncs and closes its store.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

use crate::api::grpc::{AdminService, CountedStream, KvService, Limits, MetricsLayer, proto};
use crate::api::http::HttpState;
use crate::clock::Clock;
use crate::config::{Config, IoChoice};
use crate::error::{Error, Result};
use crate::shard::spread::Listener;
use crate::shard::{Partitioner, Router, manifest};
use crate::storage::service::{MAX_GROUP, serve};
use crate::storage::{Io, IoEngine, RecoveryReport, Store, StoreHandle};
use crate::txn::Coordinator;

/// Directory of shard `i` inside a data directory.
pub fn shard_dir(data_dir: &Path, i: u32) -> PathBuf {
    data_dir.join(format!("shard-{i:03}"))
}

/// A running daemon.
pub struct Daemon {
    /// Address the gRPC listeners are bound to.
    pub grpc_addr: SocketAddr,
    /// Address the HTTP listeners are bound to.
    pub http_addr: SocketAddr,
    /// Address the RESP listeners are bound to.
    pub resp_addr: SocketAddr,
    /// I/O engine in use.
    pub engine: IoEngine,
    /// Partitioner in use.
    pub partitioner: Partitioner,
    /// What recovery did on each shard.
    pub recovery: Vec<RecoveryReport>,
    /// Cross-shard writes re-applied from redo records at start-up.
    pub redone: usize,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<Result<()>>>,
    persister: Option<crate::shard::floor::Persister>,
    clock: Arc<Clock>,
    data_dir: PathBuf,
    _lock: File,
}

fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let what = |e| Error::io("bind", addr.to_string(), e);
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(what)?;
    s.set_reuse_address(true).map_err(what)?;
    s.set_reuse_port(true).map_err(what)?;
    s.set_tcp_nodelay(true).map_err(what)?;
    s.bind(&addr.into()).map_err(what)?;
    s.listen(1024).map_err(what)?;
    s.set_nonblocking(true).map_err(what)?;
    Ok(s.into())
}

/// `n` listeners on one address, one per shard thread (SO_REUSEPORT).
///
/// SO_REUSEPORT would also let a second daemon of the same user bind the
/// same port and silently take half of its connections, so the address is
/// first claimed by a socket without it: if anyone listens there, that bind
/// fails and so does start-up. Port 0 becomes the port the claim got.
fn bind_group(
    addr: SocketAddr,
    n: u32,
    what: &str,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    use socket2::{Domain, Socket, Type};
    let taken = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::Config(format!(
                "{what} address {addr} is in use (another flashkv or another program listens there); \
                 choose another with --{}-addr",
                what.to_ascii_lowercase()
            ))
        } else {
            Error::io("bind", addr.to_string(), e)
        }
    };
    let claim = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(taken)?;
    claim.set_reuse_address(true).map_err(taken)?;
    claim.bind(&addr.into()).map_err(taken)?;
    claim.listen(1).map_err(taken)?;
    let actual = claim
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| Error::Config(format!("{what} address {addr}: no local address")))?;
    drop(claim);
    let listeners = (0..n)
        .map(|_| bind_reuseport(actual))
        .collect::<Result<Vec<_>>>()?;
    Ok((actual, listeners))
}

fn pin_to_core(core: usize) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin shard thread to its core");
        }
    }
}

impl Daemon {
    /// Starts the daemon described by `cfg`.
    pub fn start(cfg: Config) -> Result<Daemon> {
        let lock = crate::storage::store::lock_dir(&cfg.data_dir)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stored = manifest::read(&cfg.data_dir)?;
        let partitioner = manifest::reconcile(
            &cfg.data_dir,
            stored.clone(),
            cfg.partitioner.clone(),
            Partitioner::hash(cores as u32)?,
        )?;
        if stored.is_none() {
            manifest::write(&cfg.data_dir, &partitioner)?;
        }
        let engine = match cfg.io {
            IoChoice::Auto => IoEngine::detect(),
            IoChoice::Force(IoEngine::Uring) if !crate::storage::io::uring_available() => {
                return Err(Error::Config(
                    "--io-engine io_uring: the kernel refuses io_uring here (seccomp or kernel settings); use --io-engine plain".into(),
                ));
            }
            IoChoice::Force(e) => e,
        };
        let n = partitioner.shards();
        // Thread-per-core: shards that take every core pin one thread to
        // each. Fewer shards than cores share the machine with something
        // else, and a thread pinned to a core then waits wherever the
        // scheduler puts the other work on that core (redis-benchmark
        // beside one pinned shard on two cores: SET -P 16 297k-372k/s at
        // p99 4.3-7.4 ms pinned against 335k-404k/s at 3.9-5.2 ms unpinned,
        // six alternating rounds), so they are left to the scheduler.
        let pin = cfg.pin && n as usize >= cores;
        if cfg.pin && !pin {
            tracing::info!(
                shards = n,
                cores,
                "fewer shards than cores: shard threads are not pinned"
            );
        }
        let (grpc_addr, listeners) = bind_group(cfg.grpc_addr, n, "gRPC")?;
        let (http_addr, http_listeners) = bind_group(cfg.http_addr, n, "HTTP")?;
        let (resp_addr, resp_listeners) = bind_group(cfg.resp_addr, n, "RESP")?;
        crate::metrics::metrics().set_slow_request_threshold(cfg.slow_request);
        let limits = Limits {
            max_key_size: cfg.store.max_key_size,
            max_value_size: cfg.store.max_value_size,
        };
        // Until every shard has recovered, HTTP answers 503 from here.
        let tls = cfg
            .security
            .tls
            .as_ref()
            .map(crate::api::security::Tls::load)
            .transpose()?;
        // Each protocol's connections are spread evenly over the shards.
        let listeners = crate::shard::spread::spread("grpc", listeners);
        let resp_listeners = crate::shard::spread::spread("resp", resp_listeners);
        let interim = InterimHttp::start(
            &http_listeners,
            limits,
            cfg.conn_limits,
            tls.as_ref().map(|t| t.http.clone()),
        )?;
        let http_listeners = crate::shard::spread::spread("http", http_listeners);

        let clock = Arc::new(Clock::new());
        clock.track_settlement(crate::shard::floor::read(&cfg.data_dir)?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<(u32, Result<(StoreHandle, RecoveryReport)>)>();
        let mut router_txs = Vec::new();
        let mut threads = Vec::new();
        let resp_server = crate::resp::Server::new(n as usize);
        for (i, ((listener, http_listener), resp_listener)) in listeners
            .into_iter()
            .zip(http_listeners)
            .zip(resp_listeners)
            .enumerate()
        {
            let i = i as u32;
            let (router_tx, router_rx) =
                tokio::sync::oneshot::channel::<Option<Arc<Coordinator>>>();
            router_txs.push(router_tx);
            let ctx = ShardCtx {
                id: i,
                dir: shard_dir(&cfg.data_dir, i),
                opts: crate::storage::StoreOptions {
                    shard_id: i,
                    ..cfg.store.clone()
                },
                engine,
                log_append: cfg.log_append,
                clock: clock.clone(),
                listener: Some(listener),
                http_listener: Some(http_listener),
                resp_listener: Some(resp_listener),
                resp_addr: resp_addr.to_string(),
                ready: ready_tx.clone(),
                router: router_rx,
                shutdown: shutdown_rx.clone(),
                limits,
                max_message_size: cfg.max_message_size,
                pin: pin.then_some(i as usize % cores),
                sync: cfg.store.sync.to_string(),
                startup_delay: cfg.startup_delay,
                conn_limits: cfg.conn_limits,
                security: cfg.security.clone(),
                tls: tls.clone(),
                resp_server: resp_server.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("flashkv-shard-{i}"))
                .spawn(move || ctx.run())
                .map_err(|e| Error::io("spawn thread", "flashkv-shard", e))?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut handles: Vec<Option<StoreHandle>> = (0..n).map(|_| None).collect();
        let mut recovery: Vec<RecoveryReport> = vec![RecoveryReport::default(); n as usize];
        let mut failure = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok((i, Ok((h, r)))) => {
                    handles[i as usize] = Some(h);
                    recovery[i as usize] = r;
                }
                Ok((i, Err(e))) => {
                    failure.get_or_insert(Error::Unavailable(format!(
                        "shard {i} failed to open: {e}"
                    )));
                }
                Err(_) => {
                    failure.get_or_insert(Error::Unavailable(
                        "a shard thread died during start-up".into(),
                    ));
                    break;
                }
            }
        }
        interim.stop();
        if let Some(e) = failure {
            drop(handles);
            for tx in router_txs.drain(..) {
                let _ = tx.send(None);
            }
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        let router = Arc::new(Router::new(
            partitioner.clone(),
            handles
                .into_iter()
                .map(|h| h.expect("every shard answered"))
                .collect(),
            clock.clone(),
        ));
        // Cross-shard commits whose parts did not all reach their shards
        // before the crash are completed from the primaries' redo records.
        let redo: Vec<_> = recovery
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.redo))
            .collect();
        let redone = match futures::executor::block_on(crate::txn::apply_redo(&router, redo)) {
            Ok(n) => n,
            Err(e) => {
                drop(router);
                for tx in router_txs.drain(..) {
                    let _ = tx.send(None);
                }
                for t in threads {
                    let _ = t.join();
                }
                return Err(Error::Unavailable(format!(
                    "re-applying cross-shard commits at start-up failed: {e}"
                )));
            }
        };
        if redone > 0 {
            tracing::info!(
                writes = redone,
                "re-applied cross-shard commit parts from redo records"
            );
        }
        crate::shard::floor::persist(&cfg.data_dir, &clock)?;
        let coordinator = Arc::new(Coordinator::new(router, clock.clone(), cfg.txn));
        let persister = {
            let c = coordinator.clone();
            crate::shard::floor::Persister::start(
                cfg.data_dir.clone(),
                clock.clone(),
                std::time::Duration::from_secs(1),
                move || {
                    c.registry.expire();
                },
            )?
        };
        for tx in router_txs.drain(..) {
            let _ = tx.send(Some(coordinator.clone()));
        }
        drop(coordinator);
        Ok(Daemon {
            grpc_addr,
            http_addr,
            resp_addr,
            engine,
            partitioner,
            recovery,
            redone,
            shutdown,
            threads,
            persister: Some(persister),
            clock,
            data_dir: cfg.data_dir.clone(),
            _lock: lock,
        })
    }

    /// Stops accepting, finishes in-flight requests, syncs, and waits for
    /// every shard to close its store.
    pub fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        // The persister's registry sweep holds the coordinator, and with it
        // every storage handle: it must go for the storage tasks to end.
        drop(self.persister.take());
        let mut first_err = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Unavailable("a shard thread panicked".into()));
                }
            }
        }
        // Everything is applied and synced: the floor can catch up.
        if let Err(e) = crate::shard::floor::persist(&self.data_dir, &self.clock) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

struct ShardCtx {
    id: u32,
    dir: PathBuf,
    opts: crate::storage::StoreOptions,
    engine: IoEngine,
    log_append: crate::storage::io::LogAppend,
    clock: Arc<Clock>,
    listener: Option<Listener>,
    http_listener: Option<Listener>,
    resp_listener: Option<Listener>,
    resp_addr: String,
    ready: std::sync::mpsc::Sender<(u32, Result<(StoreHandle, RecoveryReport)>)>,
    router: tokio::sync::oneshot::Receiver<Option<Arc<Coordinator>>>,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
    max_message_size: usize,
    pin: Option<usize>,
    sync: String,
    startup_delay: std::time::Duration,
    conn_limits: crate::api::ConnLimits,
    security: crate::config::Security,
    tls: Option<crate::api::security::Tls>,
    /// The RESP state all shard threads share.
    resp_server: Arc<crate::resp::Server>,
}

impl ShardCtx {
    fn run(self) -> Result<()> {
        if let Some(core) = self.pin {
            pin_to_core(core);
        }
        if !self.startup_delay.is_zero() {
            std::thread::sleep(self.startup_delay);
        }
        let engine = self.engine;
        engine.block_on(self.serve())
    }

    async fn serve(mut self) -> Result<()> {
        let io = Io::new(self.engine).with_log_append(self.log_append);
        let (store, report) =
            match Store::open(&self.dir, self.opts.clone(), io, self.clock.clone()).await {
                Ok(x) => x,
                Err(e) => {
                    let _ = self.ready.send((self.id, Err(e)));
                    return Ok(());
                }
            };
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        let handle = StoreHandle::new(tx, store.reader());
        let closer = handle.closer();
        let mut storage = tokio::task::spawn_local(serve(store, rx));
        let _ = self.ready.send((self.id, Ok((handle, report))));
        // Every shard has to be open before any can route; start-up only.
        // Awaited, not blocked on: the storage task must run meanwhile (the
        // redo of cross-shard commits at start-up goes through it).
        let router_rx = std::mem::replace(&mut self.router, tokio::sync::oneshot::channel().1);
        let coordinator = match router_rx.await {
            Ok(Some(c)) => c,
            _ => return join_storage(&mut storage).await,
        };
        let router = coordinator.router().clone();
        let http = crate::api::http::app(HttpState::ready(
            coordinator.clone(),
            self.limits,
            self.max_message_size,
            self.engine.as_str(),
            self.sync.clone(),
            self.conn_limits.request_timeout,
            self.security.token.clone(),
        ));
        let http_listener = self.http_listener.take().expect("listeners are taken once");
        let resp_listener = self.resp_listener.take().expect("listeners are taken once");
        let grpc_listener = self.listener.take().expect("listeners are taken once");
        let resp = crate::resp::Shared::new(crate::resp::Settings {
            coord: coordinator.clone(),
            limits: self.limits,
            sync: self.sync.clone(),
            io_engine: self.engine.as_str(),
            addr: self.resp_addr.clone(),
            conn_limits: self.conn_limits,
            password: self.security.resp_password.clone(),
            tls: self.tls.as_ref().map(|t| t.resp.clone()),
            server: self.resp_server.clone(),
            shard: self.id as usize,
        });
        let reclaimer =
            crate::resp::coll::reclaimer(router.clone(), self.id as usize, self.shutdown.clone());
        // From the shutdown on, open connections get the drain period to
        // finish; then they are cut off (a client that keeps a stream open,
        // or stops reading its replies, must not keep the daemon from
        // stopping).
        let drain = self.conn_limits.shutdown_drain;
        let mut stopping = self.shutdown.clone();
        let drained = async move {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        };
        tokio::pin!(drained);
        let servers = async {
            tokio::join!(
                self.serve_grpc(coordinator, grpc_listener),
                crate::resp::serve(resp_listener, resp, self.shutdown.clone()),
                crate::api::http::serve(
                    http_listener,
                    http,
                    self.shutdown.clone(),
                    self.conn_limits,
                    self.tls.as_ref().map(|t| t.http.clone())
                ),
                reclaimer
            )
        };
        let mut cut_off = false;
        let served = tokio::select! {
            (grpc, http, resp, ()) = servers => grpc.and(http).and(resp),
            () = &mut drained => {
                cut_off = true;
                tracing::warn!(shard = self.id, "connections still open {drain:?} after the shutdown began; closing them");
                Ok(())
            }
        };
        drop(router);
        // The servers and this thread's clones of the router are gone: once
        // all shards are here, the storage tasks see their inboxes close and
        // sync. A connection cut off above (its task ends with this
        // thread's runtime), or one of another shard, may still hold a
        // handle: after the drain period the task is told to close.
        let stored = if cut_off {
            closer.close().await;
            join_storage(&mut storage).await
        } else {
            tokio::select! {
                r = join_storage(&mut storage) => r,
                () = &mut drained => {
                    closer.close().await;
                    join_storage(&mut storage).await
                }
            }
        };
        served.and(stored)
    }

    async fn serve_grpc(&self, coordinator: Arc<Coordinator>, listener: Listener) -> Result<()> {
        let router = coordinator.router().clone();
        use crate::api::txn::TxnService;
        use proto::admin_server::AdminServer;
        use proto::kv_server::KvServer;
        use proto::txn_server::TxnServer;
        let max_connections = self.conn_limits.max_connections;
        let mut acceptor = listener
            .acceptor()
            .map_err(|e| Error::io("listener", "grpc", e))?;
        // Accept, admit, and hand over after the TLS handshake (each in its
        // own task, so a slow handshake holds up no other connection).
        let (tx, rx) = mpsc::channel::<std::io::Result<CountedStream>>(64);
        let tls = self.tls.as_ref().map(|t| t.grpc.clone());
        let timeout = self.conn_limits.request_timeout;
        let mut stop = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = acceptor.accept() => match accepted {
                        Ok((stream, peer, seat)) => {
                            // Over the limit: dropped, i.e. closed.
                            let Some(open) = crate::metrics::metrics().admit("grpc", max_connections) else {
                                continue;
                            };
                            let info = tonic::transport::server::TcpConnectInfo {
                                local_addr: stream.local_addr().ok(),
                                remote_addr: Some(peer),
                            };
                            let (tx, tls) = (tx.clone(), tls.clone());
                            tokio::spawn(async move {
                                match crate::api::security::accept(stream, tls.as_ref(), timeout).await {
                                    Ok(io) => {
                                        let _ = tx.send(Ok(CountedStream::new(io, info, (open, seat)))).await;
                                    }
                                    Err(e) => tracing::debug!(error = %e, "gRPC TLS handshake failed"),
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "gRPC accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    },
                    // (The watch guard must not live across the await: Send.)
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                }
            }
        });
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
        let auth = crate::api::security::GrpcAuth(self.security.token.clone());
        let kv = tonic::service::interceptor::InterceptedService::new(
            KvServer::new(
                KvService::new(coordinator.clone(), self.limits)
                    .with_shutdown(self.shutdown.clone()),
            )
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size),
            auth.clone(),
        );
        let txn = tonic::service::interceptor::InterceptedService::new(
            TxnServer::new(TxnService::new(coordinator.clone(), self.limits))
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size),
            auth.clone(),
        );
        let admin = tonic::service::interceptor::InterceptedService::new(
            AdminServer::new(AdminService::new(
                router,
                self.engine.as_str(),
                self.sync.clone(),
            )),
            auth,
        );
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_serving::<KvServer<KvService>>().await;
        reporter.set_serving::<AdminServer<AdminService>>().await;
        reporter.set_serving::<TxnServer<TxnService>>().await;
        // A shard that refuses writes until restart makes the daemon
        // NOT_SERVING (HTTP /healthz says the same), checked each second.
        {
            let (router, mut stop) = (coordinator.router().clone(), self.shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if !router.refusing_writes().is_empty() {
                                reporter.set_not_serving::<KvServer<KvService>>().await;
                                reporter.set_not_serving::<AdminServer<AdminService>>().await;
                                reporter.set_not_serving::<TxnServer<TxnService>>().await;
                                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                                break;
                            }
                        }
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                    }
                }
            });
        }
        // Reflection in both versions: grpcurl asks v1 first, older tools and
        // grpcio-reflection speak v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| Error::Config(format!("reflection service: {e}")))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| Error::Config(format!("reflection service: {e}")))?;
        let mut shutdown = self.shutdown.clone();
        let signal = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .layer(MetricsLayer)
            // Bounded work per connection; dead peers are found by pings.
            .max_concurrent_streams(1024)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(kv)
            .add_service(txn)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .map_err(|e| Error::Unavailable(format!("gRPC server on shard {}: {e}", self.id)))
    }
}

/// The HTTP responder of start-up: a thread of its own that answers on the
/// HTTP listeners while the shard threads recover (`/healthz` 200, the rest
/// 503 "recovering"), stopped once they serve.
struct InterimHttp {
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl InterimHttp {
    fn start(
        listeners: &[std::net::TcpListener],
        limits: Limits,
        conn_limits: crate::api::ConnLimits,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<InterimHttp> {
        let clones = listeners
            .iter()
            .map(|l| l.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("listener", "http", e))?;
        let (stop, stopped) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("runtime", "http start-up responder", e))?;
        let thread = std::thread::Builder::new()
            .name("flashkv-startup-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let app = crate::api::http::app(HttpState::recovering(
                        limits,
                        conn_limits.request_timeout,
                    ));
                    let servers = clones.into_iter().map(|l| {
                        crate::api::http::serve(
                            Listener::alone(l),
                            app.clone(),
                            stopped.clone(),
                            conn_limits,
                            tls.clone(),
                        )
                    });
                    for r in futures::future::join_all(servers).await {
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "start-up HTTP responder");
                        }
                    }
                })
            })
            .map_err(|e| Error::io("spawn thread", "flashkv-startup-http", e))?;
        Ok(InterimHttp { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

async fn join_storage(t: &mut tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    t.await
        .map_err(|e| Error::Unavailable(format!("storage task failed: {e}")))?
}
