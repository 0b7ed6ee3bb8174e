//! The Redis protocol edge: RESP2 and RESP3 (after `HELLO 3`) on its own
//! port, accepted on every shard thread (SO_REUSEPORT), with pipelining.
//!
//! Redis strings are FlashKV keys: `SET k v` and the gRPC/HTTP `Put k v`
//! write the same record, so every protocol sees the same data with the same
//! durability (`--sync`). A connection parses every complete command in its
//! input buffer, runs them in order, and writes their replies in one go;
//! the index entries and records of the GETs among them are prefetched 16
//! at a time ([`read_ahead`]), so that their cache misses overlap.
//! Read-modify-write commands (INCR, APPEND, SET NX, EXPIRE, ...) read the
//! key and commit on the condition that its version has not changed, and
//! retry if it has (optimistic concurrency on the engine's version check).
//! Commands live one per file in [`cmd`]; the protocol is [`proto`].

pub mod blocking;
pub mod clients;
pub mod cmd;
pub mod coll;
pub mod glob;
pub mod ldouble;
pub mod proto;
pub mod pubsub;
pub mod slowlog;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::api::{ConnLimits, Limits};
use crate::error::{Error, ErrorCode, Result};
use crate::keyspace;
use crate::metrics::metrics;
use crate::shard::Router;
use crate::storage::{Batch, Condition, Op, Outcome, Value};
use proto::Reply;

/// How often a read-modify-write command re-reads a key that changed under
/// it before giving up.
const UPDATE_ATTEMPTS: usize = 64;
/// Replies are flushed once this many bytes are pending, even mid-pipeline.
const FLUSH_AT: usize = 1 << 20;
/// Open SCAN cursors kept (oldest dropped first).
pub(crate) const MAX_CURSORS: usize = 4096;

/// What the connections of one shard thread's RESP listener share.
pub struct Shared {
    /// The shards.
    pub router: Arc<Router>,
    /// The transaction coordinator (multi-key writes).
    pub coord: Arc<crate::txn::Coordinator>,
    /// Key and value limits.
    pub limits: Limits,
    /// `--sync` as text.
    pub sync: String,
    /// I/O engine name.
    pub io_engine: &'static str,
    /// The RESP listen address.
    pub addr: String,
    /// Connection limits.
    pub conn_limits: ConnLimits,
    /// The password clients must AUTH with (None: no authentication).
    pub password: Option<crate::api::security::Secret>,
    /// TLS, if on.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// What every shard thread's connections share.
    pub server: Arc<Server>,
    /// This listener's shard (its slot in the server's counters).
    shard: usize,
}

/// The RESP state of the whole daemon, shared by the listeners of every
/// shard thread: client ids unique across them, SCAN cursors that any
/// connection can continue, INFO's counters, and the open connections
/// (CLIENT LIST).
pub struct Server {
    started: Instant,
    next_client_id: AtomicU64,
    /// Commands run, one counter per shard thread (on its own cache line:
    /// each thread counts every command it runs).
    commands: Box<[Padded]>,
    connections: AtomicU64,
    cursors: Mutex<Cursors>,
    /// The open connections.
    pub clients: Arc<clients::Clients>,
    /// SLOWLOG.
    pub slowlog: slowlog::SlowLog,
    /// The clients blocked on keys (BLPOP and the other blocking pops).
    pub wakeups: blocking::Wakeups,
    /// Pub/sub subscriptions.
    pub pubsub: pubsub::Hub,
}

/// A counter alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

impl Server {
    /// The state for a daemon with `shards` shard threads.
    pub fn new(shards: usize) -> Arc<Server> {
        Arc::new(Server {
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            commands: (0..shards.max(1)).map(|_| Padded::default()).collect(),
            connections: AtomicU64::new(0),
            cursors: Mutex::new(Cursors::default()),
            clients: Arc::new(clients::Clients::default()),
            slowlog: slowlog::SlowLog::default(),
            wakeups: blocking::Wakeups::default(),
            pubsub: pubsub::Hub::default(),
        })
    }
}

#[derive(Default)]
struct Cursors {
    next: u64,
    by_id: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
}

/// What a RESP listener is set up with.
pub struct Settings {
    /// The transaction coordinator (and through it the shards).
    pub coord: Arc<crate::txn::Coordinator>,
    /// Key and value limits.
    pub limits: Limits,
    /// `--sync` as text.
    pub sync: String,
    /// I/O engine name.
    pub io_engine: &'static str,
    /// The RESP listen address.
    pub addr: String,
    /// Connection limits.
    pub conn_limits: ConnLimits,
    /// The AUTH password, if one is required.
    pub password: Option<crate::api::security::Secret>,
    /// TLS, if on.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The daemon-wide state ([`Server::new`], one for all shards).
    pub server: Arc<Server>,
    /// The shard this listener runs on.
    pub shard: usize,
}

impl Shared {
    /// The state shared by a listener's connections.
    pub fn new(s: Settings) -> Arc<Shared> {
        Arc::new(Shared {
            password: s.password,
            tls: s.tls,
            router: s.coord.router().clone(),
            coord: s.coord,
            limits: s.limits,
            sync: s.sync,
            io_engine: s.io_engine,
            addr: s.addr,
            conn_limits: s.conn_limits,
            shard: s.shard.min(s.server.commands.len() - 1),
            server: s.server,
        })
    }

    /// Seconds since the server started.
    pub fn uptime(&self) -> Duration {
        self.server.started.elapsed()
    }

    /// Commands processed so far, on every shard.
    pub fn commands_processed(&self) -> u64 {
        self.server
            .commands
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a command run on this listener's shard.
    fn count_command(&self) {
        self.server.commands[self.shard]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted so far, on every shard.
    pub fn connections_received(&self) -> u64 {
        self.server.connections.load(Ordering::Relaxed)
    }

    /// CONFIG RESETSTAT: INFO's stats counters start again from 0 (the
    /// Prometheus counters under /metrics stay monotonic, as scrapers
    /// need).
    pub fn reset_stats(&self) {
        for c in self.server.commands.iter() {
            c.0.store(0, Ordering::Relaxed);
        }
        self.server.connections.store(0, Ordering::Relaxed);
    }

    /// A SCAN cursor that resumes after `key` (any connection can continue
    /// it).
    pub fn save_cursor(&self, key: Vec<u8>) -> u64 {
        let mut c = self.server.cursors.lock().expect("cursor table lock");
        c.next += 1;
        let id = c.next;
        c.by_id.insert(id, key);
        c.order.push_back(id);
        while c.order.len() > MAX_CURSORS {
            if let Some(old) = c.order.pop_front() {
                c.by_id.remove(&old);
            }
        }
        id
    }

    /// The key a cursor resumes after (None: unknown or expired cursor).
    pub fn cursor(&self, id: u64) -> Option<Vec<u8>> {
        self.server
            .cursors
            .lock()
            .expect("cursor table lock")
            .by_id
            .get(&id)
            .cloned()
    }
}

/// One client connection.
pub struct Conn {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Protocol version (2, or 3 after `HELLO 3`).
    pub proto: u8,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
    /// What other connections see of this one (CLIENT LIST, CLIENT INFO),
    /// and its id and peer address.
    pub slot: Arc<clients::Slot>,
    /// Keeps `slot` listed while the connection is open (None: internal
    /// work, never listed).
    pub listed: Option<clients::Registration>,
    /// Close after this reply (QUIT).
    pub quit: bool,
    /// Whether AUTH succeeded (or no password is configured).
    pub authenticated: bool,
    /// When the connection was accepted.
    pub since: Instant,
    /// When the previous command of the input being run ended: the next
    /// one's start (None: take the time afresh).
    pub mark: Option<Instant>,
    /// Whether the last command run was a read-only one (its reply waited
    /// for no write).
    pub last_readonly: bool,
    /// Commands queued since MULTI (None: not in MULTI).
    pub multi: Option<Multi>,
    /// WATCHed keys with the version each had (0: absent).
    pub watched: Vec<(Vec<u8>, u64)>,
    /// The transaction EXEC runs its queue in: reads and writes of the
    /// commands go through it while it is set.
    pub txn: std::sync::Mutex<Option<crate::txn::Txn>>,
    /// Nanoseconds the running command has waited in a blocking pop (left
    /// out of its latency, as Redis leaves it out of SLOWLOG).
    pub blocked_ns: std::sync::atomic::AtomicU64,
    /// Pub/sub subscriptions and mailbox (None: never subscribed).
    pub subs: Option<pubsub::Subscriptions>,
}

/// A MULTI block being queued.
#[derive(Debug, Default)]
pub struct Multi {
    /// The queued commands.
    pub queued: Vec<Vec<Vec<u8>>>,
    /// A command was refused while queuing: EXEC answers EXECABORT.
    pub failed: bool,
    /// The queued commands' argument bytes (CLIENT LIST's `multi-mem`).
    pub bytes: usize,
}

/// The reply for a crate error. A shard that cannot persist writes (disk
/// full; refusing them after a failed fdatasync or with its files deleted)
/// answers `MISCONF`, as Redis answers writes after its AOF or RDB failed.
pub fn error_reply(e: Error) -> Reply {
    match e.code() {
        ErrorCode::Io if e.is_disk_full() => Reply::Error(format!(
            "MISCONF FlashKV cannot write: the disk is full; reads still work ({e})"
        )),
        ErrorCode::Poisoned => Reply::Error(format!(
            "MISCONF FlashKV cannot write: {e}; reads still work"
        )),
        _ => Reply::err(e),
    }
}

/// "ERR value is not an integer or out of range".
pub fn not_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// An integer argument, or the Redis error.
pub fn int_arg(b: &[u8]) -> std::result::Result<i64, Reply> {
    proto::parse_int(b).ok_or_else(not_integer)
}

/// `WRONGTYPE Operation against a key holding the wrong kind of value`.
pub fn wrong_type() -> Reply {
    Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into())
}

/// `ERR syntax error`.
pub fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

/// `ERR wrong number of arguments for 'cmd|sub' command` (the subcommand
/// lower-cased, as Redis names it).
pub fn subcommand_arity(cmd: &str, sub: &[u8]) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{cmd}|{}' command",
        String::from_utf8_lossy(sub).to_ascii_lowercase()
    ))
}

/// The subcommands of the container commands, under the names Redis 7
/// gives them (CLIENT LIST's `cmd`).
static SUBCOMMANDS: &[&str] = &[
    "client|getname",
    "client|id",
    "client|info",
    "client|kill",
    "client|list",
    "client|no-evict",
    "client|no-touch",
    "client|setinfo",
    "client|setname",
    "client|unblock",
    "command|count",
    "command|docs",
    "command|info",
    "config|get",
    "config|resetstat",
    "config|set",
    "pubsub|channels",
    "pubsub|help",
    "pubsub|numpat",
    "pubsub|numsub",
    "pubsub|shardchannels",
    "pubsub|shardnumsub",
    "slowlog|get",
    "slowlog|help",
    "slowlog|len",
    "slowlog|reset",
];

/// The name CLIENT LIST shows for a command `name` run with `args`:
/// `container|sub` for a known subcommand of CLIENT, COMMAND, CONFIG,
/// PUBSUB or SLOWLOG, as Redis 7 shows it, else `name`.
fn listed_name(name: &'static &'static str, args: &[Vec<u8>]) -> &'static &'static str {
    if !matches!(
        *name,
        "client" | "command" | "config" | "pubsub" | "slowlog"
    ) {
        return name;
    }
    let Some(sub) = args.get(1) else {
        return name;
    };
    SUBCOMMANDS
        .iter()
        .find(|full| {
            full.split_once('|')
                .is_some_and(|(c, s)| c == *name && s.as_bytes().eq_ignore_ascii_case(sub))
        })
        .unwrap_or(name)
}

/// `ERR unknown subcommand 'sub'. Try CMD HELP.` (the subcommand as sent).
pub fn unknown_subcommand(cmd: &str, sub: &[u8]) -> Reply {
    Reply::err(format!(
        "unknown subcommand '{}'. Try {cmd} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

impl Conn {
    /// The connection's pub/sub subscriptions (made at the first use).
    pub fn subscriptions(&mut self) -> &mut pubsub::Subscriptions {
        let (server, slot) = (self.shared.server.clone(), self.slot.clone());
        self.subs
            .get_or_insert_with(|| pubsub::Subscriptions::new(server, slot))
    }

    /// Whether the connection is in subscribed mode (any subscription).
    pub fn subscribed(&self) -> bool {
        self.subs.as_ref().is_some_and(|s| s.total() > 0)
    }

    /// Shows the subscription counts in CLIENT LIST.
    pub fn publish_subscriptions(&self) {
        let (c, p, s) = self.subs.as_ref().map_or((0, 0, 0), |s| s.counts());
        self.slot.set_subscriptions(c, p, s);
    }

    /// Shows this connection's name and protocol to CLIENT LIST (after
    /// SETNAME, HELLO, RESET).
    pub fn publish_identity(&self) {
        self.slot.set_identity(self.name.as_deref(), self.proto);
    }

    /// A connection-less context for work done on behalf of clients (the
    /// combined changes of [`Conn::mutate`]).
    pub fn internal(shared: Arc<Shared>) -> Conn {
        Conn {
            shared,
            proto: 2,
            name: None,
            slot: Arc::new(clients::Slot::new(0, String::new(), String::new(), -1)),
            listed: None,
            quit: false,
            authenticated: true,
            since: Instant::now(),
            mark: None,
            last_readonly: false,
            multi: None,
            watched: Vec::new(),
            txn: std::sync::Mutex::new(None),
            blocked_ns: Default::default(),
            subs: None,
        }
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Checks a key against the limits (FlashKV keys are non-empty).
    pub fn check_key(&self, key: &[u8]) -> std::result::Result<(), Reply> {
        self.shared.limits.check_key(key).map_err(error_reply)
    }

    /// Reads the string at `key`; `WRONGTYPE` if `key` holds a collection.
    pub fn get(&self, key: &[u8]) -> std::result::Result<Option<Value>, Reply> {
        self.check_key(key)?;
        let v = self.raw_get(key)?;
        if v.is_none() && self.raw_get(&keyspace::meta_key(key))?.is_some() {
            return Err(wrong_type());
        }
        Ok(v)
    }

    /// Reads any key, the reserved namespace included (inside EXEC: in the
    /// transaction).
    pub fn raw_get(&self, key: &[u8]) -> std::result::Result<Option<Value>, Reply> {
        if let Some(t) = self.txn.lock().expect("txn lock").as_mut() {
            return self.shared.coord.get(t, key).map_err(error_reply);
        }
        self.router().get(key).map_err(error_reply)
    }

    /// Commits a batch of string writes (inside EXEC: buffers it in the
    /// transaction). A string put or delete also removes a collection of
    /// the same name, in the same atomic batch, as Redis' SET and DEL do.
    pub async fn write(&self, mut batch: Batch) -> std::result::Result<Outcome, Reply> {
        for op in &batch.ops {
            self.check_key(op.key())?;
            if let Op::Put { value, .. } = op {
                self.shared.limits.check_value(value).map_err(error_reply)?;
            }
        }
        keyspace::replace_collections(&mut batch.ops);
        self.write_raw(batch).await
    }

    /// Commits a batch of any keys, the reserved namespace included, as
    /// given (inside EXEC: buffers it in the transaction).
    /// A committed batch that deletes or replaces a collection's metadata
    /// record hands the collection's elements to the reclaimer.
    pub async fn write_raw(&self, batch: Batch) -> std::result::Result<Outcome, Reply> {
        let in_txn = self.txn.lock().expect("txn lock").is_some();
        // Collections this batch ends: (Redis key, generation).
        let mut ending = Vec::new();
        if !in_txn {
            for op in &batch.ops {
                let Some(owner) = keyspace::meta_owner(op.key()) else {
                    continue;
                };
                let Some(old) = self.raw_get(op.key())? else {
                    continue;
                };
                let Ok(old) = coll::Meta::decode(&old.value) else {
                    continue;
                };
                let kept = match op {
                    Op::Put { value, .. } => {
                        coll::Meta::decode(value).is_ok_and(|m| m.generation == old.generation)
                    }
                    Op::Delete { .. } => false,
                };
                if !kept {
                    ending.push((owner.to_vec(), old.generation));
                }
            }
        }
        let outcome = self.write_raw_inner(batch).await?;
        if matches!(outcome, Outcome::Committed { .. }) {
            for (key, generation) in ending {
                coll::note_orphan(&key, generation);
            }
        }
        Ok(outcome)
    }

    async fn write_raw_inner(&self, batch: Batch) -> std::result::Result<Outcome, Reply> {
        if let Some(t) = self.txn.lock().expect("txn lock").as_mut() {
            let coord = &self.shared.coord;
            for c in &batch.conditions {
                let current = coord.get(t, &c.key).map_err(error_reply)?;
                let v = current.map_or(0, |v| v.version);
                if v != c.expected_version {
                    return Ok(Outcome::ConditionFailed {
                        key: c.key.clone(),
                        current_version: v,
                    });
                }
            }
            let mut removed = 0;
            for op in batch.ops {
                match op {
                    Op::Put {
                        key,
                        value,
                        expires_at_ms,
                    } => t.put(key, value, expires_at_ms),
                    Op::Delete { key } => {
                        removed += u32::from(coord.get(t, &key).map_err(error_reply)?.is_some());
                        t.delete(key);
                    }
                }
            }
            return Ok(Outcome::Committed {
                version: 0,
                removed,
            });
        }
        self.shared
            .coord
            .write_batch(batch)
            .await
            .map_err(error_reply)
    }

    /// Read-modify-write of one string key: `f` sees the current value and
    /// says what to write (None: nothing) and what to answer; the write
    /// commits only if the key is still at the version `f` saw, else `f`
    /// runs again. `WRONGTYPE` if the key holds a collection.
    ///
    /// Read-modify-writes of one key are combined (as collection changes
    /// are, see [`Conn::mutate`]): clients queued on the key run in arrival
    /// order, each seeing the value the previous one left, and share one
    /// commit; the version check still guards against writers on the other
    /// protocols.
    pub async fn update<T: Send + 'static>(
        &self,
        key: &[u8],
        mut f: impl FnMut(Option<&Value>) -> std::result::Result<(Option<Op>, T), Reply>
        + Send
        + 'static,
    ) -> std::result::Result<T, Reply> {
        self.check_key(key)?;
        if self.txn.lock().expect("txn lock").is_some() {
            // Inside EXEC: the writes are buffered in the transaction.
            for _ in 0..UPDATE_ATTEMPTS {
                let current = self.get(key)?;
                let (op, answer) = f(current.as_ref())?;
                let Some(op) = op else {
                    return Ok(answer);
                };
                let batch = Batch {
                    ops: vec![op],
                    conditions: vec![Condition {
                        key: key.to_vec(),
                        expected_version: current.as_ref().map_or(0, |v| v.version),
                    }],
                };
                if let Outcome::Committed { .. } = self.write(batch).await? {
                    return Ok(answer);
                }
            }
            return Err(Reply::err(
                "the key kept changing under a read-modify-write; retry",
            ));
        }
        let work = coll::Work::Str(Box::new(move |cur| {
            f(cur).map(|(op, t)| (op, Box::new(t) as Box<dyn std::any::Any + Send>))
        }));
        self.combined(key, work)
            .await
            .map(|b| *b.downcast::<T>().expect("a job answers its own type"))
    }
}

impl Conn {
    /// Read-modify-write of the record that carries `key`'s TTL and
    /// version, whatever the key holds: the string, or the metadata record
    /// of a collection. `f` sees it (None: no such key) and answers as for
    /// [`Conn::update`], with its op on `key`; the op is applied to that
    /// record.
    pub async fn update_any<T>(
        &self,
        key: &[u8],
        mut f: impl FnMut(Option<&Value>) -> std::result::Result<(Option<Op>, T), Reply>,
    ) -> std::result::Result<T, Reply> {
        self.check_key(key)?;
        let turn = coll::turn_of(key);
        let _turn = turn.lock().await;
        for _ in 0..UPDATE_ATTEMPTS {
            let found = self.lookup(key)?;
            let record_key = match &found {
                coll::Found::Coll(..) => keyspace::meta_key(key),
                _ => key.to_vec(),
            };
            let (op, answer) = f(found.record())?;
            let Some(op) = op else {
                return Ok(answer);
            };
            let op = match op {
                Op::Put {
                    value,
                    expires_at_ms,
                    ..
                } => Op::Put {
                    key: record_key.clone(),
                    value,
                    expires_at_ms,
                },
                Op::Delete { .. } => Op::Delete {
                    key: record_key.clone(),
                },
            };
            let batch = Batch {
                ops: vec![op],
                conditions: vec![Condition {
                    key: record_key,
                    expected_version: found.record().map_or(0, |v| v.version),
                }],
            };
            match self.write_raw(batch).await? {
                Outcome::Committed { .. } => return Ok(answer),
                Outcome::ConditionFailed { .. } => continue,
            }
        }
        Err(Reply::err(
            "the key kept changing under a read-modify-write; retry",
        ))
    }
}

/// Runs one command.
/// The command named `name` (any case).
pub(crate) fn spec_of(name: &[u8]) -> Option<&'static cmd::Spec> {
    // Lower-cased on the stack: no command name is longer than 32 bytes,
    // and a longer or non-UTF-8 one is unknown.
    let mut lower = [0u8; 32];
    lower.get_mut(..name.len()).and_then(|lower| {
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        cmd::lookup(std::str::from_utf8(lower).ok()?)
    })
}

pub async fn execute(cx: &mut Conn, args: &[Vec<u8>]) -> Reply {
    let spec = spec_of(&args[0]);
    cx.last_readonly = spec.is_some_and(|s| s.flags.contains(&"readonly"));
    let Some(spec) = spec else {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(&args[0])
        );
        for a in args.iter().skip(1).take(8) {
            msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
        }
        if let Some(m) = cx.multi.as_mut() {
            m.failed = true;
        }
        metrics().request("resp", "unknown", Instant::now(), Some("ERR"));
        return Reply::Error(msg);
    };
    if !cx.authenticated && !matches!(spec.name, "auth" | "hello" | "quit" | "reset") {
        metrics().request("resp", spec.name, Instant::now(), Some("NOAUTH"));
        return Reply::Error("NOAUTH Authentication required.".into());
    }
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        if let Some(m) = cx.multi.as_mut() {
            m.failed = true;
        }
        return Reply::err(format!(
            "wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    if cx.proto == 2 && cx.subscribed() && !pubsub::allowed_when_subscribed(spec.name) {
        return Reply::err(format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
             are allowed in this context",
            spec.name
        ));
    }
    if let Some(m) = cx.multi.as_mut()
        && pubsub::is_subscription(spec.name)
    {
        m.failed = true;
        return Reply::err("Command not allowed inside a transaction");
    }
    if let Some(m) = cx.multi.as_mut()
        && !matches!(
            spec.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        )
    {
        m.queued.push(args.to_vec());
        m.bytes += args.iter().map(Vec::len).sum::<usize>();
        cx.slot.ran(
            listed_name(&spec.name, args),
            Instant::now(),
            Some((m.queued.len(), m.bytes)),
        );
        return Reply::Simple("QUEUED");
    }
    let start = cx.mark.take().unwrap_or_else(Instant::now);
    let reply = (spec.run)(cx, args).await;
    if !matches!(reply, Reply::Error(_)) {
        wake_blocked(cx, spec, args);
    }
    let end = Instant::now();
    cx.mark = Some(end);
    cx.shared.count_command();
    cx.slot.ran(
        listed_name(&spec.name, args),
        end,
        cx.multi.as_ref().map(|m| (m.queued.len(), m.bytes)),
    );
    // A blocking pop's wait is not its run time.
    let start = match cx.blocked_ns.load(Ordering::Relaxed) {
        0 => start,
        _ => {
            let waited = Duration::from_nanos(cx.blocked_ns.swap(0, Ordering::Relaxed));
            start.checked_add(waited).unwrap_or(end).min(end)
        }
    };
    let took = end.saturating_duration_since(start);
    let slow = &cx.shared.server.slowlog;
    if slow.is_slow(took) && !spec.flags.contains(&"skip_slowlog") {
        slow.record(
            args,
            took,
            &cx.slot.addr,
            cx.name.as_deref().unwrap_or_default(),
        );
    }
    let code = match &reply {
        Reply::Error(e) => Some(e.split(' ').next().unwrap_or("ERR")),
        _ => None,
    };
    metrics().command("resp", spec.name, start, end, code);
    reply
}

/// A reply owed to the client, in order: ready, or a queued SET.
enum Owed {
    Ready(Reply),
    Set(Instant, crate::storage::service::PendingWrite),
}

/// After write command `args` (of `spec`) ran on `cx`: wakes the clients
/// blocked on its keys, which it may have given elements ([`blocking`]).
/// Inside EXEC it does nothing: EXEC wakes them once its transaction
/// commits.
pub(crate) fn wake_blocked(cx: &Conn, spec: &cmd::Spec, args: &[Vec<u8>]) {
    if !spec.flags.contains(&"write") {
        return;
    }
    let server = &cx.shared.server;
    // (See `Wakeups::notify`.)
    std::sync::atomic::fence(Ordering::SeqCst);
    if server.wakeups.blocked() == 0 || cx.txn.lock().expect("txn lock").is_some() {
        return;
    }
    let (first, last, step) = spec.keys;
    if first <= 0 || step <= 0 {
        return;
    }
    let n = args.len() as i32;
    let last = if last < 0 { n + last } else { last.min(n - 1) };
    let mut i = first;
    while i <= last {
        server.wakeups.notify(&args[i as usize]);
        i += step;
    }
}

/// The next pub/sub message for a connection (never, if it has no
/// subscriptions).
async fn next_push(subs: &mut Option<pubsub::Subscriptions>) -> Option<pubsub::Push> {
    match subs {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Whether `args` is a blocking pop (flag `blocking`: it may wait for
/// another client's push; see [`blocking`]).
fn is_blocking(args: &[Vec<u8>]) -> bool {
    // (Every blocking command's name starts with B: the others are not
    // looked up twice.)
    args[0]
        .first()
        .is_some_and(|c| c.eq_ignore_ascii_case(&b'b'))
        && spec_of(&args[0]).is_some_and(|s| s.flags.contains(&"blocking"))
}

/// A plain `SET key value` (no options): a blind write that can be queued
/// behind the previous ones of the same pipeline without waiting for them.
fn is_plain_set(args: &[Vec<u8>]) -> bool {
    args.len() == 3 && args[0].eq_ignore_ascii_case(b"set")
}

/// Gets whose reads [`read_ahead`] prefetches together (as many as a
/// multi-get of the engine reads ahead).
pub const READ_AHEAD: usize = crate::storage::READ_AHEAD;

/// Starts the cache misses of the string gets of `keys` (the next GETs of
/// a pipeline, an MGET's keys; at most [`READ_AHEAD`]) together, stage by
/// stage, so that the gets that follow find their index entries and
/// records in cache: a get is two or three dependent misses (hash slot,
/// index node, record), and here they overlap instead of following one
/// another. A get of a missing key also looks up its metadata key
/// (WRONGTYPE), whose slot is fetched once the key looks absent.
pub fn read_ahead<'a, I: Iterator<Item = &'a [u8]>>(router: &Router, keys: impl Fn() -> I) {
    use crate::storage::ReadAhead;
    // Nested pins below are cheap while this one is held.
    let _guard = crossbeam_epoch::pin();
    crate::storage::store::read_ahead_stages(keys, |k, stage| {
        let present = router.prefetch(k, stage);
        if stage == ReadAhead::Node && !present {
            router.prefetch(&keyspace::meta_key(k), ReadAhead::Slot);
        }
        present
    });
}

/// [`read_ahead`] of the GETs among `cmds`, if there are two or more.
fn read_ahead_gets(router: &Router, cmds: &[Vec<Vec<u8>>]) {
    let is_get = |a: &&Vec<Vec<u8>>| a.len() == 2 && a[0].eq_ignore_ascii_case(b"get");
    if cmds.iter().filter(is_get).nth(1).is_some() {
        read_ahead(router, || {
            cmds.iter().filter(is_get).map(|a| a[1].as_slice())
        });
    }
}

/// Queues a plain SET on its shard.
async fn submit_set(cx: &Conn, mut args: Vec<Vec<u8>>) -> Owed {
    let start = Instant::now();
    let value = args.pop().expect("three arguments");
    let key = args.pop().expect("three arguments");
    let checked = cx
        .check_key(&key)
        .and_then(|_| cx.shared.limits.check_value(&value).map_err(error_reply));
    if let Err(reply) = checked {
        return Owed::Ready(reply);
    }
    // SET replaces a collection of the same name: its metadata record goes
    // in the same batch (a no-op where there is none). The elements are
    // left to the reclaimer's sweep.
    let batch = Batch {
        ops: vec![
            Op::Delete {
                key: keyspace::meta_key(&key),
            },
            Op::Put {
                key,
                value,
                expires_at_ms: None,
            },
        ],
        conditions: vec![],
    };
    match cx.router().submit(batch).await {
        Ok(p) => Owed::Set(start, p),
        Err(e) => Owed::Ready(error_reply(e)),
    }
}

/// The name CLIENT LIST shows for a pipelined plain SET.
static SET: &str = "set";

/// Encodes every owed reply, waiting for queued writes in order.
async fn settle(cx: &Conn, owed: &mut VecDeque<Owed>, out: &mut Vec<u8>) {
    while let Some(o) = owed.pop_front() {
        let reply = match o {
            Owed::Ready(r) => r,
            Owed::Set(start, pending) => {
                let reply = match pending.wait().await {
                    Ok(_) => Reply::OK,
                    Err(e) => error_reply(e),
                };
                cx.shared.count_command();
                let code = reply.is_error().then_some("ERR");
                let end = Instant::now();
                cx.slot.ran(&SET, end, None);
                metrics().command("resp", "set", start, end, code);
                reply
            }
        };
        reply.encode(cx.proto, out);
    }
}

/// The input buffer a connection may hold before it is closed.
fn query_buffer_limit(limits: &Limits) -> usize {
    (2 * limits.max_value_size).max(64 << 20)
}

/// Serves RESP on `listener` until `shutdown`; each connection is its own
/// task.
pub async fn serve(
    listener: crate::shard::spread::Listener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut acceptor = listener
        .acceptor()
        .map_err(|e| Error::io("listener", "resp", e))?;
    let mut stopping = shutdown.clone();
    loop {
        tokio::select! {
            accepted = acceptor.accept() => {
                let (stream, peer, seat) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "RESP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(open) = metrics().admit("resp", shared.conn_limits.max_connections) else {
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                };
                shared.server.connections.fetch_add(1, Ordering::Relaxed);
                let id = shared.server.next_client_id.fetch_add(1, Ordering::Relaxed);
                let slot = Arc::new(clients::Slot::new(
                    id,
                    peer.to_string(),
                    shared.addr.clone(),
                    std::os::fd::AsRawFd::as_raw_fd(&stream),
                ));
                let conn = Conn {
                    shared: shared.clone(),
                    proto: 2,
                    name: None,
                            listed: Some(shared.server.clients.register(slot.clone())),
                    slot,
                    quit: false,
                    authenticated: shared.password.is_none(),
                    since: Instant::now(),
                    mark: None,
                    last_readonly: false,
                    multi: None,
                    watched: Vec::new(),
                    txn: std::sync::Mutex::new(None),
                    blocked_ns: Default::default(),
                    subs: None,
                };
                let stop = shutdown.clone();
                let tls = shared.tls.clone();
                let timeout = shared.conn_limits.request_timeout;
                tokio::spawn(async move {
                    let _open = (open, seat);
                    let stream = match crate::api::security::accept(stream, tls.as_ref(), timeout).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "RESP TLS handshake failed");
                            return;
                        }
                    };
                    match connection(conn, stream, stop).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {
                            tracing::debug!(reason = %e, "RESP connection closed while writing");
                        }
                        Err(e) => tracing::debug!(error = %e, "RESP connection ended with an error"),
                    }
                });
            }
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// Writes `bytes` to the client, unless the connection is killed (CLIENT
/// KILL) or the daemon stops first: a client that stops reading its
/// replies, so that the write waits for room in its socket, is still
/// closed at once, as Redis closes it. Either ends the connection with
/// `ConnectionAborted`.
async fn send(
    stream: &mut crate::api::security::BoxStream,
    bytes: &[u8],
    slot: &clients::Slot,
    shutdown: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let aborted = |why: &str| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why);
    tokio::select! {
        // The write first: a write with room in the socket completes as
        // before (the reply to a CLIENT KILL of the connection itself
        // goes out, as in Redis), and the others are not polled.
        biased;
        r = stream.write_all(bytes) => r,
        _ = slot.killed() => Err(aborted("killed by CLIENT KILL")),
        _ = shutdown.wait_for(|s| *s) => Err(aborted("the daemon is stopping")),
    }
}

/// One connection: read, run every complete command, write the replies.
/// Consecutive plain SETs of a pipeline are queued on their shards before
/// any is waited for, so they share group commits (one fdatasync under
/// `sync=always`); any other command first waits for them, so it sees
/// their effect.
async fn connection(
    mut cx: Conn,
    mut stream: crate::api::security::BoxStream,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let max_bulk = cx
        .shared
        .limits
        .max_value_size
        .max(cx.shared.limits.max_key_size);
    let limit = query_buffer_limit(&cx.shared.limits);
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut owed: VecDeque<Owed> = VecDeque::new();
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    // Input read while a blocking command waited, not parsed yet.
    let mut read_more = false;
    loop {
        // Every complete command first (then the reads among them can be
        // prefetched together), then a malformed frame if one follows.
        let mut used = 0;
        let malformed = loop {
            match proto::parse(&buf[used..], max_bulk) {
                Ok(Some((args, n))) => {
                    used += n;
                    if !args.is_empty() {
                        cmds.push(args);
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        buf.drain(..used);
        // Whether every reply of this input is a read's (none waited for
        // a write).
        let mut reads_only = true;
        for i in 0..cmds.len() {
            if i % READ_AHEAD == 0 && cx.authenticated {
                read_ahead_gets(cx.router(), &cmds[i..cmds.len().min(i + READ_AHEAD)]);
            }
            let args = std::mem::take(&mut cmds[i]);
            // (Unauthenticated, it goes to `execute`, which refuses it.)
            if cx.multi.is_none() && cx.authenticated && is_plain_set(&args) {
                reads_only = false;
                owed.push_back(submit_set(&cx, args).await);
                continue;
            }
            if !owed.is_empty() {
                settle(&cx, &mut owed, &mut out).await;
                cx.mark = None;
            }
            cx.slot.set_buffers(
                buf.len(),
                buf.capacity(),
                out.len(),
                out.capacity(),
                args.iter().map(Vec::len).sum(),
            );
            let reply = if cx.multi.is_none() && is_blocking(&args) {
                // A blocking pop may wait long: meanwhile the client's input
                // is read (kept for after it), so that a client hanging up
                // or a shutdown ends the wait. The replies before it go
                // out first.
                if !out.is_empty() {
                    send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
                    out.clear();
                }
                let slot = cx.slot.clone();
                let run = execute(&mut cx, &args);
                tokio::pin!(run);
                let mut open = true;
                let reply = loop {
                    tokio::select! {
                        biased;
                        reply = &mut run => break reply,
                        n = stream.read_buf(&mut buf), if open && buf.len() <= limit => match n {
                            Ok(0) | Err(_) => {
                                open = false;
                                slot.hang_up();
                            }
                            Ok(_) => read_more = true,
                        },
                        _ = shutdown.wait_for(|s| *s), if open => {
                            open = false;
                            slot.hang_up();
                        }
                    }
                };
                // Ended by CLIENT KILL, the client hanging up or the
                // shutdown, with nothing popped: closed without a reply,
                // as Redis closes it.
                if slot.is_killed() && matches!(reply, Reply::Null | Reply::NullArray) {
                    return Ok(());
                }
                reply
            } else {
                execute(&mut cx, &args).await
            };
            reads_only &= cx.last_readonly;
            reply.encode(cx.proto, &mut out);
            if cx.quit {
                send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
                return Ok(());
            }
            if out.len() >= FLUSH_AT {
                send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
                out.clear();
                cx.mark = None;
            }
        }
        let ran = cmds.len();
        cmds.clear();
        if let Some(e) = malformed {
            settle(&cx, &mut owed, &mut out).await;
            Reply::err(format!("Protocol error: {}", e.0)).encode(cx.proto, &mut out);
            send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
            return Ok(());
        }
        settle(&cx, &mut owed, &mut out).await;
        if !out.is_empty() {
            if reads_only && ran > 1 {
                // The replies of a pipeline of reads wait until the other
                // connections with input ready have run theirs, so that
                // the replies leave together, as Redis writes every reply
                // of an event-loop pass before it sleeps. A reply to a
                // client that sleeps wakes it (an interprocessor interrupt
                // on this VM: 25% of the shard thread under GET -P 16 went
                // to such wake-ups); a burst wakes it once. Not after
                // writes: their replies come together already (a group
                // commit ends for all of them at once), and a delay there
                // slows the next group's gathering.
                tokio::task::yield_now().await;
            }
            send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
            out.clear();
        }
        if buf.len() > limit {
            Reply::err("Protocol error: query buffer limit exceeded").encode(cx.proto, &mut out);
            send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
            return Ok(());
        }
        if std::mem::take(&mut read_more) {
            cx.mark = None;
            continue;
        }
        buf.reserve(16 << 10);
        let woke = tokio::select! {
            r = stream.read_buf(&mut buf) => Ok(r?),
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            // CLIENT KILL.
            _ = cx.slot.killed() => return Ok(()),
            Some(p) = next_push(&mut cx.subs) => Err(p),
        };
        let n = match woke {
            Ok(n) => n,
            // A pub/sub message: it and the others queued go out together.
            Err(p) => {
                p.reply().encode(cx.proto, &mut out);
                while out.len() < FLUSH_AT {
                    match cx.subs.as_mut().and_then(|s| s.try_next()) {
                        Some(p) => p.reply().encode(cx.proto, &mut out),
                        None => break,
                    }
                }
                send(&mut stream, &out, &cx.slot, &mut shutdown).await?;
                out.clear();
                continue;
            }
        };
        // A CLIENT KILL that came while the input did: the select may have
        // taken the input first, and a killed connection runs nothing more.
        if n == 0 || cx.slot.is_killed() {
            return Ok(());
        }
        cx.mark = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_list_names_subcommands_as_redis_7_does() {
        static CLIENT: &str = "client";
        static GET: &str = "get";
        let args = |a: &[&str]| a.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            *listed_name(&CLIENT, &args(&["CLIENT", "SetName", "x"])),
            "client|setname"
        );
        assert_eq!(*listed_name(&CLIENT, &args(&["client", "nope"])), "client");
        assert_eq!(*listed_name(&CLIENT, &args(&["client"])), "client");
        // Only a container's own subcommands: GET's argument is a key.
        assert_eq!(*listed_name(&GET, &args(&["get", "list"])), "get");
        // Every container of the table is recognised.
        for full in SUBCOMMANDS {
            let (container, sub) = full.split_once('|').unwrap();
            let name: &'static &'static str = Box::leak(Box::new(container));
            assert_eq!(*listed_name(name, &args(&[container, sub])), *full);
        }
        assert!(SUBCOMMANDS.iter().all(|s| {
            s.split_once('|')
                .is_some_and(|(c, sub)| c.len() > 2 && sub == sub.to_ascii_lowercase())
        }));
    }
}
