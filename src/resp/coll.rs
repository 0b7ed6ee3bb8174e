//! Redis collections (hashes, lists, sets, sorted sets) on the ordered
//! store, in the reserved namespace of [`crate::keyspace`].
//!
//! A collection is a metadata record ([`Meta`]: kind, generation, length,
//! and for lists the head and tail positions) plus one record per field,
//! member or element under the generation's prefix:
//!
//! | kind | element suffix | value |
//! |------|----------------|-------|
//! | hash | field | value |
//! | set  | member | empty |
//! | list | position (i64, order-preserving) | element |
//! | zset | `m` member | score (f64 BE) |
//! | zset | `s` score (order-preserving) member | empty |
//! | zset | `c` level (u8) [score member] | span (u64), the rank index |
//!
//! Lookups are index lookups (O(log n)), ranks too (the sorted sets' rank
//! index, see `cmd::zsets`); ranges are ordered scans of one shard.
//! Commands read through a snapshot (or the EXEC transaction), so a reply
//! never mixes two writes. A change is one atomic batch: the element
//! writes plus the rewritten metadata record, committed on the condition
//! that the metadata record is still the version read and that no string
//! of the same name exists; a failed condition runs the command again.
//! Every change rewrites the metadata record, so changes to one collection
//! serialize on it. The TTL of a collection is the TTL of its metadata
//! record; deleting or expiring it orphans the elements (their generation
//! is never reused), which [`reclaim`] then removes.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::clock::SnapshotReg;
use crate::keyspace;
use crate::resp::proto::Reply;
use crate::resp::{Conn, error_reply, wrong_type};
use crate::storage::{Batch, Condition, Op, Outcome, Value};

/// Attempts of a change whose condition keeps failing.
const ATTEMPTS: usize = 64;

/// The kind of a Redis key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Hash.
    Hash = 1,
    /// List.
    List = 2,
    /// Set.
    Set = 3,
    /// Sorted set.
    ZSet = 4,
}

impl Kind {
    /// The TYPE reply.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hash => "hash",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
        }
    }

    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hash,
            2 => Kind::List,
            3 => Kind::Set,
            4 => Kind::ZSet,
            _ => return None,
        })
    }
}

/// The metadata record of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// What it is.
    pub kind: Kind,
    /// Prefix generation of its elements.
    pub generation: u64,
    /// Number of fields, members or elements.
    pub len: u64,
    /// Lists: position of the first element.
    pub head: i64,
    /// Lists: position after the last element.
    pub tail: i64,
}

/// Encoded size: kind, generation, len, head, tail.
const META_LEN: usize = 1 + 8 * 4;

impl Meta {
    /// An empty collection of `kind` under a generation never used before.
    pub fn fresh(kind: Kind) -> Meta {
        Meta {
            kind,
            generation: new_generation(),
            len: 0,
            head: 0,
            // A new sorted set keeps the rank index (see the zsets module).
            tail: if kind == Kind::ZSet {
                crate::resp::cmd::zsets::RANKED
            } else {
                0
            },
        }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(META_LEN);
        b.push(self.kind as u8);
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&self.len.to_be_bytes());
        b.extend_from_slice(&self.head.to_be_bytes());
        b.extend_from_slice(&self.tail.to_be_bytes());
        b
    }

    /// Parses a metadata record.
    pub fn decode(b: &[u8]) -> Result<Meta, Reply> {
        let bad = || Reply::err("corrupt collection metadata record");
        if b.len() != META_LEN {
            return Err(bad());
        }
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Meta {
            kind: Kind::from_u8(b[0]).ok_or_else(bad)?,
            generation: u(1),
            len: u(9),
            head: u(17) as i64,
            tail: u(25) as i64,
        })
    }
}

/// A generation no collection has used: the time in µs in the high bits,
/// a process-wide counter in the low 16 (unique unless 65,536 collections
/// are created within one microsecond).
pub fn new_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (micros << 16) | (n & 0xFFFF)
}

/// A list position as an order-preserving suffix.
pub fn pos_key(p: i64) -> Vec<u8> {
    ((p as u64) ^ (1 << 63)).to_be_bytes().to_vec()
}

/// The position of a list element suffix.
pub fn pos_of(suffix: &[u8]) -> i64 {
    let b: [u8; 8] = suffix
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; 8]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// A score as an order-preserving 8-byte key.
pub fn score_key(s: f64) -> [u8; 8] {
    // -0.0 and 0.0 are one score.
    let s = if s == 0.0 { 0.0 } else { s };
    let bits = s.to_bits();
    let k = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    k.to_be_bytes()
}

/// The score of an order-preserving score key.
pub fn score_of(k: &[u8]) -> f64 {
    let b: [u8; 8] = k.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]);
    let k = u64::from_be_bytes(b);
    let bits = if k >> 63 == 1 { k & !(1 << 63) } else { !k };
    f64::from_bits(bits)
}

/// An element as (suffix, value).
pub type Element = (Vec<u8>, Vec<u8>);

/// Where reads come from: a snapshot, or the EXEC transaction.
pub struct View {
    at: Option<(u64, SnapshotReg)>,
}

impl Conn {
    /// A consistent view for a command's reads.
    pub async fn view(&self) -> View {
        if self.txn.lock().expect("txn lock").is_some() {
            return View { at: None };
        }
        let (reg, at) = self.router().clock().open_snapshot().fixed().await;
        View {
            at: Some((at, reg)),
        }
    }

    /// Reads any key through `view`.
    pub fn view_get(&self, view: &View, key: &[u8]) -> Result<Option<Value>, Reply> {
        match &view.at {
            None => self.raw_get(key),
            Some((at, _)) => {
                let s = self.router().shard_of(key) as usize;
                self.router()
                    .shard(s)
                    .reader()
                    .get_at(key, *at)
                    .map_err(error_reply)
            }
        }
    }

    /// Scans keys of one routing key's shard through `view`.
    fn view_scan(
        &self,
        view: &View,
        routing: &[u8],
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>, Reply> {
        match &view.at {
            None => {
                let mut t = self.txn.lock().expect("txn lock");
                let t = t
                    .as_mut()
                    .expect("a view without a snapshot is in a transaction");
                self.shared
                    .coord
                    .scan_raw(t, lower, upper, reverse, limit)
                    .map_err(error_reply)
            }
            Some((at, _)) => {
                let s = self.router().shard_of(routing) as usize;
                self.router()
                    .shard(s)
                    .reader()
                    .scan_at(
                        crate::storage::store::bound_ref(&lower),
                        crate::storage::store::bound_ref(&upper),
                        reverse,
                        limit,
                        *at,
                    )
                    .map_err(error_reply)
            }
        }
    }

    /// Every element of collection `key` (metadata `meta`) through `view`,
    /// as (suffix, value) in order.
    pub fn elements_in(&self, view: &View, key: &[u8], meta: &Meta) -> Result<Vec<Element>, Reply> {
        let prefix = keyspace::elem_prefix(key, meta.generation);
        let hi = match crate::shard::router::prefix_successor(&prefix) {
            Some(p) => Bound::Excluded(p),
            None => Bound::Unbounded,
        };
        let n = prefix.len();
        Ok(self
            .view_scan(view, key, Bound::Included(prefix), hi, false, usize::MAX)?
            .into_iter()
            .map(|(k, v)| (k[n..].to_vec(), v.value))
            .collect())
    }

    /// What `key` is, read through `view`: a string, a collection, or
    /// nothing.
    pub fn lookup_in(&self, view: &View, key: &[u8]) -> Result<Found, Reply> {
        self.check_key(key)?;
        if let Some(v) = self.view_get(view, key)? {
            return Ok(Found::Str(v));
        }
        match self.view_get(view, &keyspace::meta_key(key))? {
            Some(v) => Ok(Found::Coll(Meta::decode(&v.value)?, v)),
            None => Ok(Found::None),
        }
    }

    /// What `key` is now.
    pub fn lookup(&self, key: &[u8]) -> Result<Found, Reply> {
        self.lookup_in(&View { at: None }, key)
    }

    /// Opens collection `key` of `kind` for reading (None: no such key;
    /// WRONGTYPE if it holds something else).
    pub async fn read_coll(&self, key: &[u8], kind: Kind) -> Result<Option<Coll<'_>>, Reply> {
        let view = self.view().await;
        self.read_coll_in(view, key, kind)
    }

    /// [`Conn::read_coll`] through a given view.
    pub fn read_coll_in(
        &self,
        view: View,
        key: &[u8],
        kind: Kind,
    ) -> Result<Option<Coll<'_>>, Reply> {
        match self.lookup_in(&view, key)? {
            Found::None => Ok(None),
            Found::Str(_) => Err(wrong_type()),
            Found::Coll(meta, _) if meta.kind != kind => Err(wrong_type()),
            Found::Coll(meta, rec) => Ok(Some(Coll::new(self, view, key, meta, Some(rec)))),
        }
    }

    /// Runs a change of collection `key` of `kind` (created empty if
    /// absent): `f` reads and stages writes through the [`Coll`] and
    /// returns the reply; the staged writes then commit atomically, or `f`
    /// runs again on fresh data if something changed meanwhile. A
    /// collection left empty is deleted, as in Redis.
    ///
    /// Changes of one key are combined: clients that queue up on the same
    /// key while a change commits are run, in arrival order, against one
    /// [`Coll`] by whichever of them gets the key's turn next, and commit
    /// in one batch (one group commit), each with its own reply. A hot list
    /// or counter thus costs one fdatasync per round, not per command.
    pub async fn mutate<T: Send + 'static>(
        &self,
        key: &[u8],
        kind: Kind,
        mut f: impl FnMut(&mut Coll<'_>) -> Result<T, Reply> + Send + 'static,
    ) -> Result<T, Reply> {
        self.check_key(key)?;
        if self.txn.lock().expect("txn lock").is_some() {
            // Inside EXEC: the writes are buffered in the transaction.
            return self.mutate_alone(key, kind, &mut f).await;
        }
        let work = Work::Coll(
            kind,
            Box::new(move |c| f(c).map(|t| Box::new(t) as Box<dyn Any + Send>)),
        );
        self.combined(key, work)
            .await
            .map(|b| *b.downcast::<T>().expect("a job answers its own type"))
    }

    /// Queues `work` on `key`'s stripe and waits for its answer, running a
    /// round of the stripe's queued work itself when the turn is free.
    pub(crate) async fn combined(&self, key: &[u8], work: Work) -> Answer {
        static NEXT_JOB: AtomicU64 = AtomicU64::new(1);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let id = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id,
            key: key.to_vec(),
            work,
            done: tx,
        };
        let stripe = stripe_of(key);
        stripe.queue.lock().expect("combiner queue").push(job);
        // A client that goes away before a round took its job takes the job
        // back: it must not run later, at some other client's turn.
        let _withdraw = Withdraw { stripe, id };
        loop {
            tokio::select! {
                biased;
                r = &mut rx => return r.unwrap_or_else(|_| Err(lost())),
                turn = stripe.turn.clone().lock_owned() => {
                    match rx.try_recv() {
                        Ok(r) => return r,
                        Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Err(lost()),
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                    }
                    let jobs: Vec<Job> = {
                        let mut q = stripe.queue.lock().expect("combiner queue");
                        let n = q.len().min(MAX_COMBINED);
                        q.drain(..n).collect()
                    };
                    if jobs.is_empty() {
                        // Our job was taken by a turn that ended without
                        // answering it: cannot happen while runners answer
                        // before they end.
                        return Err(lost());
                    }
                    // The round runs in its own task, holding the turn, so a
                    // client that disconnects mid-round cannot cut it short.
                    let cx = Conn::internal(self.shared.clone());
                    let round = tokio::spawn(async move {
                        let _turn = turn;
                        run_jobs(&cx, jobs).await;
                    });
                    let _ = round.await;
                }
            }
        }
    }

    /// [`Conn::mutate`] without combining (inside EXEC).
    async fn mutate_alone<T>(
        &self,
        key: &[u8],
        kind: Kind,
        f: &mut (impl FnMut(&mut Coll<'_>) -> Result<T, Reply> + Send),
    ) -> Result<T, Reply> {
        for _ in 0..ATTEMPTS {
            let view = self.view().await;
            let mut c = match self.lookup_in(&view, key)? {
                Found::Str(_) => return Err(wrong_type()),
                Found::Coll(meta, _) if meta.kind != kind => return Err(wrong_type()),
                Found::Coll(meta, rec) => Coll::new(self, view, key, meta, Some(rec)),
                Found::None => Coll::new(self, view, key, Meta::fresh(kind), None),
            };
            let answer = f(&mut c)?;
            let Some(batch) = c.into_batch()? else {
                return Ok(answer);
            };
            if let Outcome::Committed { .. } = self.write_raw(batch).await? {
                return Ok(answer);
            }
        }
        Err(Reply::err("the key kept changing under the command; retry"))
    }
}

/// Jobs one round of [`Conn::mutate`] takes at most.
const MAX_COMBINED: usize = 512;
/// Staged element writes after which a round takes no further job.
const MAX_ROUND_WRITES: usize = 4096;

fn lost() -> Reply {
    Reply::err("the change was interrupted before it committed; retry")
}

/// The answer of a combined job, erased to one type.
pub(crate) type Answer = Result<Box<dyn Any + Send>, Reply>;

/// A combined change, erased to one type.
pub(crate) type JobFn = Box<dyn FnMut(&mut Coll<'_>) -> Answer + Send>;

/// A string read-modify-write, erased to one type (see [`Conn::update`]).
pub(crate) type StrFn =
    Box<dyn FnMut(Option<&Value>) -> Result<(Option<Op>, Box<dyn Any + Send>), Reply> + Send>;

/// What a queued job does.
pub(crate) enum Work {
    /// A change of a collection of this kind.
    Coll(Kind, JobFn),
    /// A read-modify-write of a string.
    Str(StrFn),
}

/// Removes a job from its stripe's queue if no round has taken it yet.
struct Withdraw {
    stripe: &'static Stripe,
    id: u64,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let mut q = self.stripe.queue.lock().expect("combiner queue");
        if let Some(i) = q.iter().position(|j| j.id == self.id) {
            q.remove(i);
        }
    }
}

/// A change waiting for its key's turn.
struct Job {
    id: u64,
    key: Vec<u8>,
    work: Work,
    done: tokio::sync::oneshot::Sender<Answer>,
}

/// One stripe of keys: whose turn it is, and the changes waiting for it.
struct Stripe {
    turn: Arc<tokio::sync::Mutex<()>>,
    queue: Mutex<Vec<Job>>,
}

/// Stripes of the key space, shared by every connection of the process.
const STRIPES: usize = 4096;

fn stripe_of(key: &[u8]) -> &'static Stripe {
    static ALL: LazyLock<Box<[Stripe]>> = LazyLock::new(|| {
        (0..STRIPES)
            .map(|_| Stripe {
                turn: Arc::new(tokio::sync::Mutex::new(())),
                queue: Mutex::new(Vec::new()),
            })
            .collect()
    });
    &ALL[xxhash_rust::xxh3::xxh3_64(key) as usize % STRIPES]
}

/// The turn lock of `key`'s stripe (read-modify-writes of strings take it
/// too, so that all changes of one key through this edge take turns).
pub fn turn_of(key: &[u8]) -> Arc<tokio::sync::Mutex<()>> {
    stripe_of(key).turn.clone()
}

/// Runs the jobs of one round: per key (strings and collections apart), in
/// order, against one staged view, committed in one batch per key (more if
/// a key stages very many writes).
async fn run_jobs(cx: &Conn, jobs: Vec<Job>) {
    let mut by_key: Vec<(Vec<u8>, bool, Vec<Job>)> = Vec::new();
    for job in jobs {
        let string = matches!(job.work, Work::Str(_));
        match by_key
            .iter_mut()
            .find(|(k, s, _)| *k == job.key && *s == string)
        {
            Some((_, _, v)) => v.push(job),
            None => by_key.push((job.key.clone(), string, vec![job])),
        }
    }
    for (key, string, mut jobs) in by_key {
        while !jobs.is_empty() {
            let (taken, answers) = if string {
                run_string_round(cx, &key, &mut jobs).await
            } else {
                run_round(cx, &key, &mut jobs).await
            };
            for (job, answer) in jobs.drain(..taken).zip(answers) {
                let _ = job.done.send(answer);
            }
        }
    }
}

/// Runs string read-modify-writes of `key` in order, each seeing the value
/// the previous ones left, and commits the last write on the condition that
/// the key is still what the first one saw.
async fn run_string_round(cx: &Conn, key: &[u8], jobs: &mut [Job]) -> (usize, Vec<Answer>) {
    let all_fail = |e: Reply, n: usize| (n, (0..n).map(|_| Err(e.clone())).collect());
    for _ in 0..ATTEMPTS {
        let first = match cx.get(key) {
            Ok(v) => v,
            Err(e) => return all_fail(e, jobs.len()),
        };
        let mut cur = first.clone();
        let mut last: Option<Op> = None;
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs.iter_mut() {
            let Work::Str(f) = &mut job.work else {
                unreachable!("string jobs are grouped apart");
            };
            match f(cur.as_ref()) {
                Ok((op, answer)) => {
                    if let Some(op) = op {
                        cur = match &op {
                            Op::Put {
                                value,
                                expires_at_ms,
                                ..
                            } => Some(Value {
                                value: value.clone(),
                                version: 0,
                                expires_at_ms: *expires_at_ms,
                            }),
                            Op::Delete { .. } => None,
                        };
                        last = Some(op);
                    }
                    answers.push(Ok(answer));
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        let Some(op) = last else {
            return (jobs.len(), answers);
        };
        let batch = Batch {
            ops: vec![op],
            conditions: vec![Condition {
                key: key.to_vec(),
                expected_version: first.as_ref().map_or(0, |v| v.version),
            }],
        };
        match cx.write(batch).await {
            Ok(Outcome::Committed { .. }) => return (jobs.len(), answers),
            Ok(Outcome::ConditionFailed { .. }) => continue,
            Err(e) => return all_fail(e, jobs.len()),
        }
    }
    all_fail(
        Reply::err("the key kept changing under a read-modify-write; retry"),
        jobs.len(),
    )
}

/// Runs a prefix of `jobs` on `key` and commits it; returns how many jobs
/// it took and their answers.
async fn run_round(cx: &Conn, key: &[u8], jobs: &mut [Job]) -> (usize, Vec<Answer>) {
    let all_fail = |e: Reply, n: usize| (n, (0..n).map(|_| Err(e.clone())).collect());
    let mut taken = jobs.len();
    // Staged bytes after which a round takes no further job: well within a
    // segment, which holds at least one largest key and value.
    let round_bytes = cx.shared.limits.max_value_size / 2;
    for _ in 0..ATTEMPTS {
        let view = cx.view().await;
        let mut c = match cx.lookup_in(&view, key) {
            Err(e) => return all_fail(e, jobs.len()),
            Ok(Found::Str(_)) => return all_fail(wrong_type(), jobs.len()),
            Ok(Found::Coll(meta, rec)) => Coll::new(cx, view, key, meta, Some(rec)),
            Ok(Found::None) => {
                let kind = match &jobs[0].work {
                    Work::Coll(kind, _) => *kind,
                    Work::Str(_) => unreachable!("collection jobs are grouped apart"),
                };
                Coll::new(cx, view, key, Meta::fresh(kind), None)
            }
        };
        let mut answers = Vec::with_capacity(taken);
        for job in jobs[..taken].iter_mut() {
            if !answers.is_empty() && (c.pending.len() > MAX_ROUND_WRITES || c.staged > round_bytes)
            {
                break;
            }
            let Work::Coll(kind, f) = &mut job.work else {
                unreachable!("collection jobs are grouped apart");
            };
            if c.meta.kind != *kind {
                if c.meta.len > 0 {
                    answers.push(Err(wrong_type()));
                    continue;
                }
                // Emptied earlier in this round: the key is free again.
                c.meta.kind = *kind;
            }
            let saved = c.meta;
            c.undo = Some(Vec::new());
            let answer = f(&mut c);
            if answer.is_err() {
                // The failed job's staged writes go; the others' stay.
                c.meta = saved;
                for (suffix, before) in c.undo.take().unwrap_or_default().into_iter().rev() {
                    match before {
                        Some(w) => c.pending.insert(suffix, w),
                        None => c.pending.remove(&suffix),
                    };
                }
            }
            c.undo = None;
            answers.push(answer);
        }
        taken = answers.len();
        let batch = match c.into_batch() {
            Ok(None) => return (taken, answers),
            Ok(Some(b)) => b,
            Err(e) => return all_fail(e, taken),
        };
        match cx.write_raw(batch).await {
            Ok(Outcome::Committed { .. }) => return (taken, answers),
            Ok(Outcome::ConditionFailed { .. }) => continue,
            // A batch refused as a whole (too large, say): the first job
            // alone gets the answer it would have had by itself.
            Err(_) if taken > 1 => taken = 1,
            Err(e) => return all_fail(e, taken),
        }
    }
    all_fail(
        Reply::err("the key kept changing under the command; retry"),
        taken,
    )
}

/// What a key holds.
pub enum Found {
    /// Nothing.
    None,
    /// A string.
    Str(Value),
    /// A collection, and its metadata record.
    Coll(Meta, Value),
}

impl Found {
    /// The TYPE reply.
    pub fn type_name(&self) -> &'static str {
        match self {
            Found::None => "none",
            Found::Str(_) => "string",
            Found::Coll(m, _) => m.kind.name(),
        }
    }

    /// The record that carries the key's TTL and version.
    pub fn record(&self) -> Option<&Value> {
        match self {
            Found::None => None,
            Found::Str(v) | Found::Coll(_, v) => Some(v),
        }
    }
}

/// One collection, open for reading (and for staging writes in
/// [`Conn::mutate`]).
pub struct Coll<'a> {
    cx: &'a Conn,
    view: View,
    key: Vec<u8>,
    /// The metadata (the new one, as staged).
    pub meta: Meta,
    /// The metadata record read (None: the collection is new).
    record: Option<Value>,
    prefix: Vec<u8>,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// While a combined job runs: what each staged write replaced in
    /// `pending`, to take the job back if it fails.
    undo: Option<Vec<Undo>>,
    /// Bytes staged so far (keys and values, overwrites counted again).
    staged: usize,
}

/// A staged write's suffix and the staged write it replaced (None: none).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

impl<'a> Coll<'a> {
    fn new(cx: &'a Conn, view: View, key: &[u8], meta: Meta, record: Option<Value>) -> Self {
        Coll {
            cx,
            view,
            prefix: keyspace::elem_prefix(key, meta.generation),
            key: key.to_vec(),
            meta,
            record,
            pending: BTreeMap::new(),
            undo: None,
            staged: 0,
        }
    }

    /// The Redis key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The connection.
    pub fn conn(&self) -> &'a Conn {
        self.cx
    }

    /// Expiry of the collection, Unix ms.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.record.as_ref().and_then(|r| r.expires_at_ms)
    }

    fn full(&self, suffix: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(suffix);
        k
    }

    /// The value of element `suffix` (staged writes included).
    pub fn get(&self, suffix: &[u8]) -> Result<Option<Vec<u8>>, Reply> {
        if let Some(w) = self.pending.get(suffix) {
            return Ok(w.clone());
        }
        Ok(self
            .cx
            .view_get(&self.view, &self.full(suffix))?
            .map(|v| v.value))
    }

    /// Stages a put of element `suffix`.
    pub fn put(&mut self, suffix: Vec<u8>, value: Vec<u8>) -> Result<(), Reply> {
        self.cx
            .shared
            .limits
            .check_value(&value)
            .map_err(error_reply)?;
        self.stage(suffix, Some(value));
        Ok(())
    }

    fn stage(&mut self, suffix: Vec<u8>, w: Option<Vec<u8>>) {
        self.staged += self.prefix.len() + suffix.len() + w.as_ref().map_or(0, |v| v.len());
        match &mut self.undo {
            Some(undo) => {
                let before = self.pending.insert(suffix.clone(), w);
                undo.push((suffix, before));
            }
            None => {
                self.pending.insert(suffix, w);
            }
        }
    }

    /// Stages a delete of element `suffix`.
    pub fn del(&mut self, suffix: Vec<u8>) {
        self.stage(suffix, None);
    }

    /// Elements with suffixes in `[lower, upper]`, in order (or reverse),
    /// at most `limit`, as (suffix, value), staged writes included.
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Element>, Reply> {
        let lo = match lower {
            Bound::Included(s) => Bound::Included(self.full(s)),
            Bound::Excluded(s) => Bound::Excluded(self.full(s)),
            Bound::Unbounded => Bound::Included(self.prefix.clone()),
        };
        let hi = match upper {
            Bound::Included(s) => Bound::Included(self.full(s)),
            Bound::Excluded(s) => Bound::Excluded(self.full(s)),
            Bound::Unbounded => match crate::shard::router::prefix_successor(&self.prefix) {
                Some(p) => Bound::Excluded(p),
                None => Bound::Unbounded,
            },
        };
        let n = self.prefix.len();
        if self.pending.is_empty() {
            return Ok(self
                .cx
                .view_scan(&self.view, &self.key, lo, hi, reverse, limit)?
                .into_iter()
                .map(|(k, v)| (k[n..].to_vec(), v.value))
                .collect());
        }
        // Staged writes of this change (and of earlier changes combined
        // into the same round) over what is stored: stored pages are
        // merged until `limit` survive the staged deletes or the range
        // ends; staged puts count only up to the last stored key seen.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let (mut from, mut to) = (lo.clone(), hi.clone());
        let page = limit.clamp(1, 256);
        let mut end_seen = false;
        while !end_seen {
            let found = self.cx.view_scan(
                &self.view,
                &self.key,
                from.clone(),
                to.clone(),
                reverse,
                page,
            )?;
            end_seen = found.len() < page;
            if let Some((last, _)) = found.last() {
                if reverse {
                    to = Bound::Excluded(last.clone());
                } else {
                    from = Bound::Excluded(last.clone());
                }
            }
            for (k, v) in found {
                let suffix = k[n..].to_vec();
                if !matches!(self.pending.get(&suffix), Some(None)) {
                    merged.insert(suffix, v.value);
                }
            }
            if merged.len() >= limit {
                break;
            }
        }
        // Staged puts within what the stored pages covered: up to the last
        // stored key seen (past it, stored keys not read yet may come
        // first), walked from the scan's start so the walk stops there.
        let seen: Option<&[u8]> = match (end_seen, reverse, &from, &to) {
            (true, ..) => None,
            (false, false, Bound::Excluded(f), _) => Some(&f[n..]),
            (false, true, _, Bound::Excluded(t)) => Some(&t[n..]),
            _ => None,
        };
        // BTreeMap::range panics on a range that ends before it starts.
        let empty = match (lower, upper) {
            (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a > b
            }
            _ => false,
        };
        if !empty {
            let staged = self
                .pending
                .range::<[u8], _>((lower, upper))
                .filter_map(|(s, w)| Some((s, w.as_ref()?)));
            if reverse {
                for (s, v) in staged.rev() {
                    if seen.is_some_and(|t| s.as_slice() < t) {
                        break;
                    }
                    merged.insert(s.clone(), v.clone());
                }
            } else {
                for (s, v) in staged {
                    if seen.is_some_and(|f| s.as_slice() > f) {
                        break;
                    }
                    merged.insert(s.clone(), v.clone());
                }
            }
        }
        Ok(if reverse {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        })
    }

    /// Elements whose suffix starts with `p`, in order (or reverse).
    pub fn scan_prefix(
        &self,
        p: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Element>, Reply> {
        let end = crate::shard::router::prefix_successor(p);
        let upper = match &end {
            Some(e) if !p.is_empty() => Bound::Excluded(e.as_slice()),
            _ => Bound::Unbounded,
        };
        let lower = if p.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Included(p)
        };
        self.scan(lower, upper, reverse, limit)
    }

    /// Every element, in order.
    pub fn all(&self) -> Result<Vec<Element>, Reply> {
        self.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
    }

    /// The batch that commits the staged change (None: nothing to write).
    fn into_batch(self) -> Result<Option<Batch>, Reply> {
        let existed = self.record.is_some();
        let unchanged = existed
            && self
                .record
                .as_ref()
                .is_some_and(|r| r.value == self.meta.encode());
        if self.pending.is_empty() && (unchanged || (!existed && self.meta.len == 0)) {
            return Ok(None);
        }
        let meta_key = keyspace::meta_key(&self.key);
        let mut ops: Vec<Op> = Vec::with_capacity(self.pending.len() + 1);
        if self.meta.len == 0 {
            if existed {
                // The whole collection goes; elements not deleted here are
                // orphans of a dead generation.
                ops.push(Op::Delete {
                    key: meta_key.clone(),
                });
            }
        } else {
            ops.push(Op::Put {
                key: meta_key.clone(),
                value: self.meta.encode(),
                expires_at_ms: self.expires_at_ms(),
            });
        }
        for (suffix, w) in &self.pending {
            let key = {
                let mut k = self.prefix.clone();
                k.extend_from_slice(suffix);
                k
            };
            ops.push(match w {
                Some(v) => Op::Put {
                    key,
                    value: v.clone(),
                    expires_at_ms: None,
                },
                None => Op::Delete { key },
            });
        }
        if ops.is_empty() {
            return Ok(None);
        }
        Ok(Some(Batch {
            ops,
            conditions: vec![
                Condition {
                    key: self.key.clone(),
                    expected_version: 0,
                },
                Condition {
                    key: meta_key,
                    expected_version: self.record.as_ref().map_or(0, |r| r.version),
                },
            ],
        }))
    }
}

/// Collections known to be gone whose elements wait for [`reclaimer`].
static ORPHANS: Mutex<Vec<(Vec<u8>, u64)>> = Mutex::new(Vec::new());
/// Wakes the reclaimers when [`ORPHANS`] gets an entry.
static ORPHANS_NOTIFY: LazyLock<tokio::sync::Notify> = LazyLock::new(tokio::sync::Notify::new);
/// Entries [`ORPHANS`] holds at most; beyond, the periodic sweep finds them.
const MAX_ORPHANS: usize = 65_536;
/// How often each shard's elements are swept for orphans (expired
/// collections, and anything a crash or a full queue left behind).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Notes that generation `generation` of collection `key` may be gone (a
/// delete, an overwrite or a rename of it was committed or attempted).
pub fn note_orphan(key: &[u8], generation: u64) {
    let mut q = ORPHANS.lock().expect("orphan queue");
    if q.len() < MAX_ORPHANS {
        q.push((key.to_vec(), generation));
    }
    drop(q);
    ORPHANS_NOTIFY.notify_one();
}

/// The background task of one shard thread that deletes the elements of
/// collections that are gone: those noted with [`note_orphan`] (any
/// shard), and every `SWEEP_EVERY` all orphans of shard `shard`.
pub async fn reclaimer(
    router: Arc<crate::shard::Router>,
    shard: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval_at(
        tokio::time::Instant::now() + std::time::Duration::from_secs(30),
        SWEEP_EVERY,
    );
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = ORPHANS_NOTIFY.notified() => {
                let noted = std::mem::take(&mut *ORPHANS.lock().expect("orphan queue"));
                for (key, generation) in noted {
                    if let Err(e) = reclaim_one(&router, &key, generation).await {
                        tracing::warn!(error = %e, "reclaiming a deleted collection's elements failed");
                    }
                }
            }
            _ = sweep.tick() => {
                match reclaim(&router, |s| s == shard, 1024).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(shard, elements = n, "reclaimed orphaned collection elements"),
                    Err(e) => tracing::warn!(shard, error = %e, "sweeping orphaned collection elements failed"),
                }
            }
        }
    }
}

/// Deletes the elements of generation `generation` of `key`, unless that
/// generation is live; in pages, each conditional on the metadata record
/// being unchanged.
async fn reclaim_one(
    router: &crate::shard::Router,
    key: &[u8],
    generation: u64,
) -> crate::Result<u64> {
    let prefix = keyspace::elem_prefix(key, generation);
    let end = crate::shard::router::prefix_successor(&prefix);
    let meta_key = keyspace::meta_key(key);
    let shard = router.shard_of(key) as usize;
    let mut deleted = 0;
    loop {
        let meta = router.get(&meta_key)?;
        if meta
            .as_ref()
            .is_some_and(|m| Meta::decode(&m.value).is_ok_and(|m| m.generation == generation))
        {
            return Ok(deleted);
        }
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let keys = router.shard(shard).reader().scan(
            Bound::Included(prefix.as_slice()),
            upper,
            false,
            1024,
            true,
        )?;
        if keys.is_empty() {
            return Ok(deleted);
        }
        let n = keys.len() as u64;
        let batch = Batch {
            ops: keys
                .into_iter()
                .map(|(key, _)| Op::Delete { key })
                .collect(),
            conditions: vec![Condition {
                key: meta_key.clone(),
                expected_version: meta.map_or(0, |m| m.version),
            }],
        };
        if let Outcome::Committed { .. } = router.write(batch).await? {
            deleted += n;
        }
    }
}

/// Reclaims the elements of collections that are gone (deleted, expired,
/// replaced) on the shards whose ids `owns` accepts, one page of up to
/// `page` element keys at a time; returns how many it deleted. An element
/// is deleted only while its collection's metadata record is absent or of
/// another generation, checked in the same atomic batch, so a live element
/// is never touched.
pub async fn reclaim(
    router: &crate::shard::Router,
    owns: impl Fn(usize) -> bool,
    page: usize,
) -> crate::Result<u64> {
    let (lo, hi) = keyspace::elem_range();
    let mut deleted = 0;
    for s in (0..router.shard_count()).filter(|s| owns(*s)) {
        let mut lower = Bound::Included(lo.clone());
        loop {
            let keys = router.shard(s).reader().scan(
                crate::storage::store::bound_ref(&lower),
                Bound::Excluded(hi.as_slice()),
                false,
                page,
                true,
            )?;
            let Some((last, _)) = keys.last() else {
                break;
            };
            lower = Bound::Excluded(last.clone());
            // Group the page by collection.
            let mut groups: BTreeMap<(Vec<u8>, u64), Vec<Vec<u8>>> = BTreeMap::new();
            for (k, _) in &keys {
                if let Some((owner, generation)) = keyspace::elem_owner(k) {
                    groups
                        .entry((owner.to_vec(), generation))
                        .or_default()
                        .push(k.clone());
                }
            }
            for ((owner, generation), elems) in groups {
                let meta_key = keyspace::meta_key(&owner);
                let meta = router.get(&meta_key)?;
                let live = meta.as_ref().is_some_and(|m| {
                    Meta::decode(&m.value).is_ok_and(|m| m.generation == generation)
                });
                if live {
                    continue;
                }
                let n = elems.len() as u64;
                let batch = Batch {
                    ops: elems.into_iter().map(|key| Op::Delete { key }).collect(),
                    conditions: vec![Condition {
                        key: meta_key,
                        expected_version: meta.map_or(0, |m| m.version),
                    }],
                };
                if let Outcome::Committed { .. } = router.write(batch).await? {
                    deleted += n;
                }
            }
            if keys.len() < page {
                break;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            kind: Kind::List,
            generation: 77,
            len: 3,
            head: -2,
            tail: 1,
        };
        assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
        assert!(Meta::decode(b"short").is_err());
        let mut bad = m.encode();
        bad[0] = 9;
        assert!(Meta::decode(&bad).is_err());
    }

    #[test]
    fn positions_and_scores_sort_as_numbers() {
        let ps = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in ps.windows(2) {
            assert!(pos_key(w[0]) < pos_key(w[1]));
        }
        for p in ps {
            assert_eq!(pos_of(&pos_key(p)), p);
        }
        let ss = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
        ];
        for w in ss.windows(2) {
            assert!(score_key(w[0]) <= score_key(w[1]), "{} {}", w[0], w[1]);
        }
        for s in ss {
            assert_eq!(score_of(&score_key(s)), if s == 0.0 { 0.0 } else { s });
        }
        assert_eq!(score_key(-0.0), score_key(0.0));
    }

    #[test]
    fn generations_differ() {
        let a: std::collections::HashSet<u64> = (0..10_000).map(|_| new_generation()).collect();
        assert_eq!(a.len(), 10_000);
    }
}
