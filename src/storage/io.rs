//! The I/O layer: every write, fsync, create, rename and unlink of the
//! storage engine goes through here.
//!
//! Two backends behind one small surface:
//!
//! * `uring`: io_uring through tokio-uring (positional writes and fdatasync
//!   are submitted to the ring; the shard's runtime keeps serving while they
//!   are in flight). Needs the shard to run inside `tokio_uring::start`.
//! * `plain`: pwrite/fdatasync system calls, for kernels or containers where
//!   io_uring is off (Docker's default seccomp profile blocks it).
//!
//! [`IoEngine::detect`] probes whether the kernel allows io_uring. Reads do not
//! come through here: they use memory maps (see `segment.rs`).
//!
//! io_uring only keeps a buffered write off the shard's thread if the file
//! system accepts non-blocking buffered writes; where it does not (ext4 up
//! to at least Linux 6.18), the ring hands every write to a kernel worker
//! thread, and a small append costs a ~60 us round trip instead of a ~2 us
//! `pwrite`. So the io_uring backend probes the data directory
//! ([`nowait_buffered_writes`]) and, where the probe fails, writes with
//! `pwrite` on the shard's thread and keeps only fdatasync (always done by
//! a worker, and the long wait) on the ring. [`Io::with_ring_writes`]
//! forces either choice.
//!
//! # Log appends through a mapping
//!
//! Appends to a log segment need not be system calls at all: the store can
//! map the active segment shared and writable
//! ([`DataFile::map_appends`]) and copies each group-commit buffer into the
//! mapping. The copy lands in the same page cache a `pwrite` fills, so it
//! survives a crash of the process, and fdatasync makes it durable exactly
//! as it does a `pwrite`. A small append costs a memcpy instead of a ~1 us
//! system call through ext4's buffered write path.
//!
//! Writing through a mapping past the end of the file, or into a hole the
//! file system cannot allocate (disk full), raises SIGBUS rather than
//! returning an error. So the file is grown ahead of the writes with
//! `fallocate` in steps of [`APPEND_CHUNK`]: disk full surfaces as ENOSPC
//! from `fallocate`, an ordinary write error, before any byte is copied.
//! The file is kept at least half a step ahead of the writes. A crash
//! leaves at most one and a half steps of zeros after the last record,
//! which recovery recognises as unwritten rather than torn. Each new step's pages
//! are faulted in by a background thread (see `prefault`), so the writer's
//! copies rarely take the page fault a first write to a page costs.
//! Sealing a segment (and closing the store) cuts the file back to its
//! records. Where the file system has no `fallocate`, the file falls back
//! to `pwrite`. [`Io::maps_appends`] says when the store maps (by default
//! under `sync=none` only; `--log-append` chooses).
//!
//! Appends that are written rather than mapped get the same room ahead of
//! them under `interval` and `none` ([`Io::preallocates_appends`], which
//! says why), without the mapping and the prefault thread; the recovery and
//! sealing of the zeros beyond the last record are the same.
//!
//! A [`FaultInjector`] can be attached to either backend to fail the N-th
//! operation (EIO, ENOSPC, a torn write) or to simulate a crash (every
//! operation from the N-th on fails, so nothing more reaches the files).
//! Metadata operations (create, rename, unlink, directory fsync) are plain
//! system calls on both backends: they are rare and not on the hot path.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The step in which the room for a log segment's appends is allocated.
pub const APPEND_CHUNK: u64 = 4 << 20;
/// How far beyond an append the file is kept allocated at least.
const GROW_AHEAD: u64 = APPEND_CHUNK / 2;

/// How log appends reach the active segment (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAppend {
    /// Through the mapping under `sync=none` only: see
    /// [`Io::maps_appends`].
    Auto,
    /// Always through the mapping.
    Mmap,
    /// Always through the backend's writes.
    Write,
}

impl LogAppend {
    /// Parses `auto`, `mmap` or `write`.
    pub fn parse(s: &str) -> Option<LogAppend> {
        match s {
            "auto" => Some(LogAppend::Auto),
            "mmap" => Some(LogAppend::Mmap),
            "write" => Some(LogAppend::Write),
            _ => None,
        }
    }
}

/// Which I/O backend a shard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring via tokio-uring.
    Uring,
    /// pread/pwrite/fdatasync.
    Plain,
}

impl IoEngine {
    /// io_uring if the kernel lets this process create a ring, else plain.
    pub fn detect() -> IoEngine {
        if uring_available() {
            IoEngine::Uring
        } else {
            IoEngine::Plain
        }
    }

    /// Name as used by `--io-engine`.
    pub fn as_str(self) -> &'static str {
        match self {
            IoEngine::Uring => "io_uring",
            IoEngine::Plain => "plain",
        }
    }

    /// Parses `io_uring`/`uring`, `plain` (`auto` is resolved by the caller).
    pub fn parse(s: &str) -> Option<IoEngine> {
        match s {
            "io_uring" | "uring" => Some(IoEngine::Uring),
            "plain" => Some(IoEngine::Plain),
            _ => None,
        }
    }

    /// Runs `fut` to completion on a current-thread runtime suited to this
    /// engine (tokio-uring's for `Uring`, a plain tokio one with a `LocalSet`
    /// for `Plain`). Both allow `spawn_local`.
    pub fn block_on<F: std::future::Future>(self, fut: F) -> F::Output {
        match self {
            IoEngine::Uring => tokio_uring::start(fut),
            IoEngine::Plain => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a current-thread tokio runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, fut)
            }
        }
    }
}

/// Whether io_uring can be used by this process.
pub fn uring_available() -> bool {
    io_uring::IoUring::new(4).is_ok()
}

/// Whether the file system of `dir` accepts non-blocking buffered writes
/// (`pwritev2` with `RWF_NOWAIT`), which is what lets io_uring complete a
/// buffered write without a kernel worker thread. Probed with a one-byte
/// write to a temporary file in `dir` (removed again; a leftover `.tmp`
/// is removed at the next open). `false` if the probe cannot run.
pub fn nowait_buffered_writes(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let path = dir.join("nowait-probe.tmp");
    let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
    else {
        return false;
    };
    let byte = [0u8; 1];
    let iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: one valid iovec over a live buffer, on a descriptor we own.
    let r = unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    // EAGAIN means "supported, but this one would block": still supported.
    let ok = r == 1 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
    drop(f);
    let _ = fs::remove_file(&path);
    ok
}

/// Kinds of operations a fault rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// A data write.
    Write,
    /// fdatasync of a file or fsync of a directory.
    Sync,
    /// Creating a file.
    Create,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
    /// Truncating a file.
    Truncate,
    /// Opening an existing file for writing.
    Open,
    /// Reading a file at start-up (segment headers, hints, segments to
    /// scan, merge commit records). Reads while serving go through the
    /// memory map and cannot be injected.
    Read,
}

/// What a fault does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail with this errno; later operations are unaffected.
    Fail(i32),
    /// Write only the first `n` bytes, then fail with EIO (writes only).
    TornWrite(usize),
    /// Fail this and every later operation (a simulated crash: nothing
    /// further reaches the files).
    Crash,
}

/// A rule: the `nth` (1-based) operation matching `op` (`None` = any)
/// triggers `action`.
#[derive(Debug, Clone, Copy)]
pub struct FaultRule {
    /// Operation kind to match, or any.
    pub op: Option<FaultOp>,
    /// Which matching operation fires (1 = the first).
    pub nth: u64,
    /// What happens.
    pub action: FaultAction,
}

#[derive(Debug, Default)]
struct FaultState {
    rules: Vec<(FaultRule, u64)>,
    crashed: bool,
    ops: u64,
    /// Disk full: every write and create fails with ENOSPC while set.
    disk_full: bool,
}

/// Fails chosen I/O operations; shared by clones of an [`Io`].
#[derive(Debug, Default)]
pub struct FaultInjector {
    state: Mutex<FaultState>,
}

impl FaultInjector {
    /// A new injector with no rules (it only counts operations).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a rule; counting for it starts now.
    pub fn add(&self, rule: FaultRule) {
        self.lock().rules.push((rule, 0));
    }

    /// Simulates a full disk (writes and creates fail with ENOSPC) or ends it.
    pub fn set_disk_full(&self, full: bool) {
        self.lock().disk_full = full;
    }

    /// Mutating operations seen so far (all kinds).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Whether a `Crash` rule has fired.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // A panic while holding this lock can only come from a test assertion;
        // the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides the fate of one operation.
    fn check(&self, op: FaultOp) -> Option<FaultAction> {
        let mut s = self.lock();
        s.ops += 1;
        if s.crashed {
            return Some(FaultAction::Crash);
        }
        if s.disk_full && matches!(op, FaultOp::Write | FaultOp::Create) {
            return Some(FaultAction::Fail(libc::ENOSPC));
        }
        let mut fired = None;
        for (rule, seen) in s.rules.iter_mut() {
            if rule.op.is_none_or(|o| o == op) {
                *seen += 1;
                if *seen == rule.nth && fired.is_none() {
                    fired = Some(rule.action);
                }
            }
        }
        if fired == Some(FaultAction::Crash) {
            s.crashed = true;
        }
        fired
    }
}

fn injected(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The I/O handle of a shard: backend plus optional fault injection.
#[derive(Debug, Clone)]
pub struct Io {
    engine: IoEngine,
    faults: Option<Arc<FaultInjector>>,
    /// io_uring backend: data writes go through the ring (`Some(true)`),
    /// or are `pwrite`s on the calling thread (`Some(false)`); `None`:
    /// not decided yet, [`Io::fit_to_dir`] probes (through the ring until).
    ring_writes: Option<bool>,
    /// How log appends are made (see the module docs).
    log_append: LogAppend,
}

impl Io {
    /// An I/O handle on `engine`.
    pub fn new(engine: IoEngine) -> Self {
        Io {
            engine,
            faults: None,
            ring_writes: None,
            log_append: LogAppend::Auto,
        }
    }

    /// The same with a fault injector attached.
    pub fn with_faults(engine: IoEngine, faults: Arc<FaultInjector>) -> Self {
        Io {
            engine,
            faults: Some(faults),
            ring_writes: None,
            log_append: LogAppend::Auto,
        }
    }

    /// Decides whether io_uring data writes go through the ring (`true`)
    /// or are `pwrite`s on the shard's thread (`false`), instead of
    /// probing the data directory (see the module documentation).
    pub fn with_ring_writes(mut self, ring: bool) -> Self {
        self.ring_writes = Some(ring);
        self
    }

    /// How log appends are made (default [`LogAppend::Auto`]).
    pub fn with_log_append(mut self, how: LogAppend) -> Self {
        self.log_append = how;
        self
    }

    /// Whether log appends under `sync` are copies into a mapped segment.
    ///
    /// `Auto` maps only under `sync=none`. Every fdatasync of a mapped
    /// segment must write-protect the pages it cleans, which shoots down
    /// TLB entries on the other cores (an inter-processor interrupt, a VM
    /// exit here), and the next append takes a write fault. Under
    /// `always`, measured in-process with 64 concurrent durable writers:
    /// 95-104k puts/s mapped against 137-151k/s with `pwrite`, while one
    /// writer gains nothing either way. Under `interval` the daemon's
    /// groups are large enough that a `pwrite` each costs little, while
    /// each interval fdatasync of mapped pages held the shard thread:
    /// redis-benchmark GET -P 16 right after SETs had p99 3.7-4.3 ms
    /// mapped against 1.2-1.6 ms with `pwrite` (four alternating rounds),
    /// SET rates the same. Without any fdatasync the mapping wins (a
    /// one-at-a-time put drops from ~1.8 us to ~0.9 us).
    pub fn maps_appends(&self, sync: crate::storage::SyncPolicy) -> bool {
        match self.log_append {
            LogAppend::Auto => sync == crate::storage::SyncPolicy::None,
            LogAppend::Mmap => true,
            LogAppend::Write => false,
        }
    }

    /// Whether log appends under `sync` that are not mapped are written
    /// into room allocated ahead of them: under `interval` and `none`,
    /// where the background fdatasync's writeback allocates the blocks of
    /// earlier appends while the writer goes on. On ext4 a write into a
    /// hole takes the inode's `i_data_sem` to reserve its block, which the
    /// writeback holds while it allocates: the shard thread waited up to
    /// 10 ms in `pwrite` (seen in `perf` as `ext4_da_get_block_prep` ->
    /// `down_write`, under pipelined SETs with `interval:1000`). A write
    /// into allocated (unwritten) blocks finds them in the extent cache and
    /// takes no such lock. Not under `always`, where no write overlaps an
    /// fdatasync, and turning the blocks from unwritten to written costs
    /// each fdatasync more than allocating them did.
    pub fn preallocates_appends(&self, sync: crate::storage::SyncPolicy) -> bool {
        sync != crate::storage::SyncPolicy::Always
    }

    /// How log appends under `sync` are made: `"mmap"` or as
    /// [`Io::write_path`] says.
    pub fn append_path(&self, sync: crate::storage::SyncPolicy) -> &'static str {
        if self.maps_appends(sync) {
            "mmap"
        } else {
            self.write_path()
        }
    }

    /// Resolves an undecided write path by probing `dir`'s file system
    /// ([`nowait_buffered_writes`]). Files opened afterwards use it.
    pub fn fit_to_dir(&mut self, dir: &Path) {
        if self.engine == IoEngine::Uring && self.ring_writes.is_none() {
            self.ring_writes = Some(nowait_buffered_writes(dir));
        }
    }

    /// The backend in use.
    pub fn engine(&self) -> IoEngine {
        self.engine
    }

    /// How the backend writes data: `"io_uring"` or `"pwrite"`.
    pub fn write_path(&self) -> &'static str {
        match (self.engine, self.ring_writes) {
            (IoEngine::Uring, Some(false)) | (IoEngine::Plain, _) => "pwrite",
            (IoEngine::Uring, _) => "io_uring",
        }
    }

    fn fault(&self, op: FaultOp) -> Option<FaultAction> {
        self.faults.as_ref().and_then(|f| f.check(op))
    }

    /// A fault point: fails (or "crashes") here if a fault rule says so.
    pub(crate) fn gate(&self, op: FaultOp, what: &'static str, path: &Path) -> Result<()> {
        match self.fault(op) {
            None => Ok(()),
            Some(FaultAction::Fail(errno)) => Err(Error::io(what, path, injected(errno))),
            Some(FaultAction::TornWrite(_)) | Some(FaultAction::Crash) => {
                Err(Error::io(what, path, injected(libc::EIO)))
            }
        }
    }

    /// Creates a new file for reading and writing (owner-only permissions);
    /// fails if it exists.
    pub fn create(&self, path: &Path) -> Result<DataFile> {
        self.gate(FaultOp::Create, "create", path)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("create", path, e))?;
        Ok(self.wrap(f, path))
    }

    /// Opens an existing file for reading and writing.
    pub fn open_rw(&self, path: &Path) -> Result<DataFile> {
        self.gate(FaultOp::Open, "open", path)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(self.wrap(f, path))
    }

    fn wrap(&self, f: File, path: &Path) -> DataFile {
        let inner = match self.engine {
            IoEngine::Uring => FileImpl::Uring(tokio_uring::fs::File::from_std(f)),
            IoEngine::Plain => FileImpl::Plain(f),
        };
        DataFile {
            inner,
            path: path.to_path_buf(),
            io: self.clone(),
            appender: None,
        }
    }

    /// Renames `from` to `to` (atomic within a directory).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.gate(FaultOp::Rename, "rename", from)?;
        fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
    }

    /// Removes a file; a missing file is not an error.
    pub fn remove(&self, path: &Path) -> Result<()> {
        self.gate(FaultOp::Remove, "remove", path)?;
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// fsyncs a directory so that creates, renames and unlinks in it are durable.
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.gate(FaultOp::Sync, "fsync directory", dir)?;
        let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
        d.sync_all()
            .map_err(|e| Error::io("fsync directory", dir, e))
    }

    /// Writes a whole small file durably: temp name, write, fdatasync, rename,
    /// directory fsync. Used for hints, merge commit records and manifests.
    pub async fn write_file_atomic(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        let tmp = tmp_path(path);
        let _ = fs::remove_file(&tmp);
        let f = self.create(&tmp)?;
        f.write_all_at(bytes, 0).await.0?;
        f.sync_data().await?;
        drop(f);
        self.rename(&tmp, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.sync_dir(dir)
    }
}

/// `<path>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

enum FileImpl {
    Uring(tokio_uring::fs::File),
    Plain(File),
}

/// A file open for positional writes and fdatasync.
pub struct DataFile {
    inner: FileImpl,
    path: PathBuf,
    io: Io,
    appender: Option<Appender>,
}

/// An fdatasync for the sync helpers: the file (a duplicate descriptor,
/// closed once synced), its path for errors, and where the result goes.
type SyncJob = (File, PathBuf, oneshot::Sender<Result<()>>);

/// The fdatasync helper threads of [`DataFile::sync_data_in_background`],
/// started on first use and shared by every shard: one per core, so each
/// shard's tick can have its sync in flight at once, fed from one queue.
/// `None` if not even one could be started.
///
/// Until session 14 every background sync started a thread of its own
/// (once a second per shard under `interval:1000`). A thread's start is
/// more than a `clone`: jemalloc gives a new thread an arena, and while
/// the process has fewer than its limit it makes a new one, whose first
/// block is a huge page (`thp:always`) zeroed on the spot. Profiled right
/// after a redis-benchmark SET burst, those threads spent 3.6% of the
/// process's samples zeroing pages, on the cores that serve requests.
fn sync_helpers() -> Option<&'static std::sync::mpsc::Sender<SyncJob>> {
    static HELPERS: std::sync::OnceLock<Option<std::sync::mpsc::Sender<SyncJob>>> =
        std::sync::OnceLock::new();
    HELPERS
        .get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            job_threads("flashkv-sync", n, false, |(file, path, reply): SyncJob| {
                let r = file
                    .sync_data()
                    .map_err(|e| Error::io("fdatasync", &path, e));
                drop(file);
                let _ = reply.send(r);
            })
        })
        .as_ref()
}

/// Starts `n` threads named `name` that take jobs from one queue and run
/// `work` on each, in the idle scheduling class if `idle`; the queue, or
/// `None` if not one thread could be started. The threads live as long as
/// the process: the queue's sender sits in a static.
pub(crate) fn job_threads<J: Send + 'static>(
    name: &str,
    n: usize,
    idle: bool,
    work: fn(J),
) -> Option<std::sync::mpsc::Sender<J>> {
    let (tx, rx) = std::sync::mpsc::channel::<J>();
    let rx = Arc::new(Mutex::new(rx));
    let started = (0..n)
        .filter(|_| {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    if idle {
                        run_at_idle_priority();
                    }
                    loop {
                        // One thread waits in recv, holding the lock; the
                        // others wait for the lock.
                        let job = rx.lock().expect("job queue lock").recv();
                        match job {
                            Ok(job) => work(job),
                            Err(_) => return,
                        }
                    }
                })
                .is_ok()
        })
        .count();
    (started > 0).then_some(tx)
}

/// Asks the prefault thread to fault in `map`'s pages over `start..end`
/// (allocated in the file), so that the copies of later appends find them
/// present: a first write to a page of a shared file mapping costs a page
/// fault (allocation, zeroing, the file system's write notification),
/// which took 17% of a single writer's time in one-at-a-time puts. The
/// thread populates with `MADV_POPULATE_WRITE`, which changes no byte; a
/// page the writer reaches first it faults itself, as before. The thread
/// holds the mapping while it works, so a sealed segment's unmapping
/// waits for it. Best effort: without the thread (or on a kernel without
/// the advice) appends fault as they go.
///
/// The thread runs at idle priority (`SCHED_IDLE`): its work is only ever
/// ahead of need, and at normal priority it took the shard thread's core
/// for milliseconds at a time (scheduler traces under pipelined SETs).
/// Four alternating rounds of redis-benchmark SET -P 16 (400k requests,
/// one shard): p95 2.2-2.8 ms and p99 3.1-5.7 ms against 2.4-3.3 ms and
/// 3.8-6.0 ms at normal priority, better in every round.
fn prefault(map: &Arc<MmapRaw>, start: u64, end: u64) {
    type Job = (Arc<MmapRaw>, usize, usize);
    static PREFAULT: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let tx = PREFAULT.get_or_init(|| {
        job_threads("flashkv-prefault", 1, true, |(map, start, len): Job| {
            // SAFETY: the range lies inside the mapping, which `map` keeps
            // alive; populating writes nothing.
            unsafe {
                libc::madvise(
                    map.as_mut_ptr().add(start).cast(),
                    len,
                    libc::MADV_POPULATE_WRITE,
                )
            };
        })
    });
    let end = end.min(map.len() as u64);
    if let Some(tx) = tx
        && start < end
    {
        let _ = tx.send((map.clone(), start as usize, (end - start) as usize));
    }
}

/// Moves the calling thread to the idle scheduling class: it runs only
/// when nothing else wants its core. Best effort (a failure is logged).
fn run_at_idle_priority() {
    // SAFETY: a zeroed sched_param is valid for SCHED_IDLE (priority 0);
    // pid 0 is the calling thread.
    let r = unsafe {
        let param: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "could not lower a helper thread's priority");
    }
}

/// Whether `cond` holds within about 5 s (polled every 10 ms).
#[cfg(test)]
pub(crate) fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    (0..500).any(|_| {
        let held = cond();
        if !held {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        held
    })
}

/// The ids of this process's threads named `comm`.
#[cfg(test)]
pub(crate) fn threads_named(comm: &str) -> Vec<libc::pid_t> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let t = t.unwrap().path();
            let name = std::fs::read_to_string(t.join("comm")).ok()?;
            (name.trim() == comm)
                .then(|| t.file_name()?.to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Waits (up to 5 s) for a thread of this process named `comm` to exist
/// and to run at idle priority (set as the thread starts), and fails the
/// test if it does not.
#[cfg(test)]
pub(crate) fn assert_thread_runs_at_idle_priority(comm: &str) {
    let mut tid = None;
    assert!(
        eventually(|| {
            tid = threads_named(comm).first().copied();
            tid.is_some()
        }),
        "no thread named {comm}"
    );
    let tid = tid.expect("found above");
    // SAFETY: a plain query of another thread's policy.
    let idle = eventually(|| unsafe { libc::sched_getscheduler(tid) } == libc::SCHED_IDLE);
    assert!(idle, "thread {comm} ({tid}) is not in SCHED_IDLE");
}

/// Room for a log segment's appends, allocated ahead of them, and the
/// shared writable mapping they are copied into if they are mapped.
struct Appender {
    /// The mapping; shared with the prefault thread while it works on it.
    /// `None`: appends are written with the backend's write calls.
    map: Option<Arc<MmapRaw>>,
    /// The segment's capacity: the file is never grown beyond it.
    cap: u64,
    /// The file's length: every byte below it is allocated.
    end: AtomicU64,
    /// Set when `fallocate` is not supported: writes go through the
    /// backend into a file that grows with them.
    off: AtomicBool,
}

/// Drops `map` on a helper thread at idle priority: unmapping a full
/// segment's append mapping tears down some 32k page-table entries and
/// shoots down the other cores' TLBs, 4.5-6 ms that sealing a segment spent
/// on the storage task, serving nothing meanwhile (timed inside `rotate`
/// under sustained pipelined SETs). Dropped here if there is no helper.
fn unmap_in_background(map: Arc<MmapRaw>) {
    static UNMAP: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Arc<MmapRaw>>>> =
        std::sync::OnceLock::new();
    if let Some(tx) = UNMAP.get_or_init(|| job_threads("flashkv-unmap", 1, true, drop)) {
        // A failed send hands the map back, to be dropped here.
        let _ = tx.send(map);
    }
}

impl DataFile {
    /// Closes the file, leaving the unmapping of its append mapping (if
    /// any) to a helper thread (see `unmap_in_background`).
    pub fn close_in_background(mut self) {
        if let Some(map) = self.appender.take().and_then(|a| a.map) {
            unmap_in_background(map);
        }
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.inner {
            FileImpl::Uring(f) => f.as_raw_fd(),
            FileImpl::Plain(f) => f.as_raw_fd(),
        }
    }

    /// Prepares a log segment for appends below `capacity` under `sync`:
    /// copied into a mapping where [`Io::maps_appends`] says so, else
    /// written into room allocated ahead where [`Io::preallocates_appends`]
    /// says so, else written into a file that grows with them.
    pub fn prepare_appends(
        &mut self,
        sync: crate::storage::SyncPolicy,
        capacity: u64,
    ) -> Result<()> {
        if self.io.maps_appends(sync) {
            self.map_appends(capacity)
        } else if self.io.preallocates_appends(sync) {
            self.preallocate_appends(capacity)
        } else {
            Ok(())
        }
    }

    /// Makes writes below `capacity` copies into a shared writable mapping
    /// of the file, grown ahead of them (see the module documentation).
    pub fn map_appends(&mut self, capacity: u64) -> Result<()> {
        let mut a = self.room_for_appends(capacity)?;
        let len = usize::try_from(a.cap).map_err(|_| {
            Error::Config(format!("segment size {capacity} does not fit in memory"))
        })?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(self.raw_fd())
            .map_err(|e| Error::io("mmap", &self.path, e))?;
        a.map = Some(Arc::new(map));
        self.appender = Some(a);
        Ok(())
    }

    /// Makes writes below `capacity` land in room allocated ahead of them
    /// (see the module documentation), without a mapping: they stay
    /// `pwrite`s (or ring writes), but into blocks the file system has
    /// already allocated.
    pub fn preallocate_appends(&mut self, capacity: u64) -> Result<()> {
        self.appender = Some(self.room_for_appends(capacity)?);
        Ok(())
    }

    /// The room for appends below `capacity` (or the file's length, if
    /// longer), from the file's length on; no mapping yet.
    fn room_for_appends(&self, capacity: u64) -> Result<Appender> {
        let len = std::fs::metadata(&self.path)
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        Ok(Appender {
            map: None,
            cap: capacity.max(len),
            end: AtomicU64::new(len),
            off: AtomicBool::new(false),
        })
    }

    /// Whether the next write at `pos..pos + n` goes through the mapping.
    fn mapped(&self, pos: u64, n: usize) -> Option<(&Appender, &MmapRaw)> {
        let a = self.appender.as_ref()?;
        let map = a.map.as_deref()?;
        (!a.off.load(Ordering::Relaxed) && pos + n as u64 <= a.cap).then_some((a, map))
    }

    /// Allocates room ahead of a write at `pos..pos + n` that the backend
    /// makes, where the file preallocates its appends. Best effort: if
    /// `fallocate` fails (disk full), the write goes on and reports what
    /// it meets itself.
    fn grow_for_write(&self, pos: u64, n: usize) {
        if let Some(a) = &self.appender
            && !a.off.load(Ordering::Relaxed)
            && pos + n as u64 <= a.cap
        {
            let _ = self.grow(a, pos + n as u64);
        }
    }

    /// Records that the backend wrote `pos..end`: a write the room did not
    /// cover (`fallocate` failed) grew the file itself, and a later failed
    /// `fallocate` must not cut the file back below it. Only a write that
    /// starts within the room moves its end: one beyond it leaves a hole,
    /// and every byte below the end must be allocated (a mapped copy into
    /// a hole on a full disk would raise SIGBUS).
    fn wrote(&self, pos: u64, end: u64) {
        if let Some(a) = &self.appender
            && pos <= a.end.load(Ordering::Relaxed)
        {
            a.end.fetch_max(end, Ordering::Relaxed);
        }
    }

    /// Grows the file (allocated, not sparse) to cover `upto`, in steps,
    /// and at least [`GROW_AHEAD`] beyond it, so that the prefault thread
    /// works on pages the writer reaches only later (grown just in time,
    /// the writer took the page faults of each step's first pages itself:
    /// 14% of a single writer's time). Growing ahead of need is best
    /// effort: if it fails while the write fits, the write goes on and the
    /// first one that needs the room reports the error. `Ok(false)`: the
    /// file system cannot preallocate.
    fn grow(&self, a: &Appender, upto: u64) -> Result<bool> {
        let end = a.end.load(Ordering::Relaxed);
        let want = upto.saturating_add(GROW_AHEAD);
        if want <= end {
            return Ok(true);
        }
        let cap = a.cap;
        let new_end = want
            .div_ceil(APPEND_CHUNK)
            .saturating_mul(APPEND_CHUNK)
            .min(cap)
            .max(upto);
        if new_end <= end {
            return Ok(true);
        }
        let (start, n) = (
            libc::off_t::try_from(end)
                .map_err(|_| Error::io("fallocate", &self.path, injected(libc::EFBIG)))?,
            libc::off_t::try_from(new_end - end)
                .map_err(|_| Error::io("fallocate", &self.path, injected(libc::EFBIG)))?,
        );
        // SAFETY: fallocate on a descriptor this file owns.
        if unsafe { libc::fallocate(self.raw_fd(), 0, start, n) } != 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) {
                tracing::info!(path = %self.path.display(), "no fallocate here: appending with write calls");
                a.off.store(true, Ordering::Relaxed);
                return Ok(false);
            }
            // A failed fallocate may leave part of the range allocated and
            // the size moved: put the size back.
            // SAFETY: ftruncate on a descriptor this file owns.
            unsafe { libc::ftruncate(self.raw_fd(), start) };
            if upto <= end {
                return Ok(true);
            }
            return Err(Error::io("fallocate", &self.path, e));
        }
        a.end.store(new_end, Ordering::Relaxed);
        if let Some(map) = &a.map {
            prefault(map, end & !4095, new_end);
        }
        Ok(true)
    }

    /// Copies `buf` into the mapping at `pos` (the file grown first).
    /// `Ok(false)`: the mapping is off, write through the backend.
    fn copy_in(&self, a: &Appender, map: &MmapRaw, buf: &[u8], pos: u64) -> Result<bool> {
        if !self.grow(a, pos + buf.len() as u64)? {
            return Ok(false);
        }
        // SAFETY: pos + len is within the mapping (checked by `mapped`) and
        // within the file (grown above); the file is only written by its
        // owner, and readers only read published records, never this range.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr(),
                map.as_mut_ptr().add(pos as usize),
                buf.len(),
            );
        }
        Ok(true)
    }

    /// Cuts preallocated space beyond `len` off the file (when sealing or
    /// closing a segment); true if it did (the caller syncs the new size).
    pub fn release_preallocated(&self, len: u64) -> Result<bool> {
        match &self.appender {
            Some(a) if a.end.load(Ordering::Relaxed) > len => {
                self.set_len(len)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The same file after a rename to `path`.
    pub fn renamed(mut self, path: &Path) -> DataFile {
        self.path = path.to_path_buf();
        self
    }

    /// Writes all of `buf` at `pos`; returns the buffer for reuse.
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (Result<()>, Vec<u8>) {
        match self.io.fault(FaultOp::Write) {
            None => {}
            Some(FaultAction::TornWrite(n)) => {
                let n = n.min(buf.len());
                let (r, buf) = self.raw_write(buf, pos, Some(n)).await;
                if let Err(e) = r {
                    return (Err(e), buf);
                }
                return (
                    Err(Error::io("write", &self.path, injected(libc::EIO))),
                    buf,
                );
            }
            Some(FaultAction::Fail(errno)) => {
                return (Err(Error::io("write", &self.path, injected(errno))), buf);
            }
            Some(FaultAction::Crash) => {
                return (
                    Err(Error::io("write", &self.path, injected(libc::EIO))),
                    buf,
                );
            }
        }
        self.raw_write(buf, pos, None).await
    }

    async fn raw_write(
        &self,
        buf: Vec<u8>,
        pos: u64,
        limit: Option<usize>,
    ) -> (Result<()>, Vec<u8>) {
        let n = limit.unwrap_or(buf.len());
        if let Some((a, map)) = self.mapped(pos, n) {
            match self.copy_in(a, map, &buf[..n], pos) {
                Ok(true) => return (Ok(()), buf),
                Ok(false) => {}
                Err(e) => return (Err(e), buf),
            }
        } else {
            self.grow_for_write(pos, n);
        }
        let (r, buf) = self.backend_write(buf, pos, n).await;
        if r.is_ok() {
            self.wrote(pos, pos + n as u64);
        }
        (r, buf)
    }

    /// Writes `buf[..n]` at `pos` with the backend's write call.
    async fn backend_write(&self, buf: Vec<u8>, pos: u64, n: usize) -> (Result<()>, Vec<u8>) {
        match &self.inner {
            FileImpl::Uring(f) if self.io.ring_writes == Some(false) => {
                use std::os::fd::{AsRawFd, FromRawFd};
                // SAFETY: a borrowed view of the descriptor `f` owns; never
                // closed here (ManuallyDrop), and `f` outlives this call.
                let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(f.as_raw_fd()) });
                let r = file
                    .write_all_at(&buf[..n], pos)
                    .map_err(|e| Error::io("write", &self.path, e));
                (r, buf)
            }
            FileImpl::Uring(f) => {
                use tokio_uring::buf::BoundedBuf;
                let (r, slice) = f.write_all_at(buf.slice(0..n), pos).await;
                (
                    r.map_err(|e| Error::io("write", &self.path, e)),
                    slice.into_inner(),
                )
            }
            FileImpl::Plain(f) => {
                let r = f
                    .write_all_at(&buf[..n], pos)
                    .map_err(|e| Error::io("write", &self.path, e));
                (r, buf)
            }
        }
    }

    /// Whether the file still has a name (its link count is not 0). A file
    /// deleted while open stays writable and syncable, but what is written
    /// to it is gone once the last descriptor closes.
    pub fn linked(&self) -> Result<bool> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat on a descriptor owned by `self`, into a buffer of
        // the type it fills.
        if unsafe { libc::fstat(self.raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(Error::io("fstat", &self.path, io::Error::last_os_error()));
        }
        // SAFETY: fstat succeeded, so it filled `st`.
        Ok(unsafe { st.assume_init() }.st_nlink > 0)
    }

    /// fdatasync: the written data (and the size) are durable when it returns.
    pub async fn sync_data(&self) -> Result<()> {
        self.io.gate(FaultOp::Sync, "fdatasync", &self.path)?;
        match &self.inner {
            FileImpl::Uring(f) => f.sync_data().await,
            FileImpl::Plain(f) => f.sync_data(),
        }
        .map_err(|e| Error::io("fdatasync", &self.path, e))
    }

    /// Starts an fdatasync on a helper thread, through a duplicate of the
    /// descriptor (the same open file, so the same error state): the
    /// caller goes on while the disk works. The returned receiver gets its
    /// result (a fault injected for `Sync` is that result). An error here
    /// means no fdatasync was started (no descriptor or thread to spare).
    pub fn sync_data_in_background(&self) -> Result<oneshot::Receiver<Result<()>>> {
        use std::os::fd::BorrowedFd;
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.io.gate(FaultOp::Sync, "fdatasync", &self.path) {
            let _ = tx.send(Err(e));
            return Ok(rx);
        }
        // SAFETY: the descriptor is open for as long as `self` is, and only
        // borrowed here to duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
            .try_clone_to_owned()
            .map_err(|e| Error::io("dup", &self.path, e))?;
        let helpers = sync_helpers().ok_or_else(|| {
            Error::Unavailable("no fdatasync helper thread could be started".into())
        })?;
        helpers
            .send((File::from(fd), self.path.clone(), tx))
            .map_err(|_| Error::Unavailable("the fdatasync helper threads are gone".into()))?;
        Ok(rx)
    }

    /// Starts writing back `len` bytes at `offset` without waiting for
    /// them (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`): a later
    /// fdatasync then finds them written or on their way, rather than all
    /// of a large file at once. Not a durability point; best effort.
    pub fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let fd = match &self.inner {
            FileImpl::Uring(f) => f.as_raw_fd(),
            FileImpl::Plain(f) => f.as_raw_fd(),
        };
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: sync_file_range on a descriptor owned by this file; it
        // takes no pointers.
        unsafe { libc::sync_file_range(fd, off, n, libc::SYNC_FILE_RANGE_WRITE) };
    }

    /// Truncates (or extends) the file to `len` bytes.
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.io.gate(FaultOp::Truncate, "truncate", &self.path)?;
        let r = match &self.inner {
            FileImpl::Uring(f) => {
                use std::os::fd::AsRawFd;
                let len = libc::off_t::try_from(len)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG));
                len.and_then(|len| {
                    // SAFETY: ftruncate on a descriptor owned by `f`.
                    if unsafe { libc::ftruncate(f.as_raw_fd(), len) } == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                })
            }
            FileImpl::Plain(f) => f.set_len(len),
        };
        if r.is_ok()
            && let Some(a) = &self.appender
        {
            a.end.store(len, Ordering::Relaxed);
        }
        r.map_err(|e| Error::io("truncate", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_on_the_nth_matching_operation_and_crash_is_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        faults.add(FaultRule {
            op: Some(FaultOp::Write),
            nth: 2,
            action: FaultAction::Fail(libc::ENOSPC),
        });
        faults.add(FaultRule {
            op: Some(FaultOp::Rename),
            nth: 1,
            action: FaultAction::Crash,
        });
        let io = Io::with_faults(IoEngine::Plain, faults.clone());
        IoEngine::Plain.block_on(async {
            let f = io.create(&dir.path().join("a")).unwrap();
            assert!(f.write_all_at(vec![1; 10], 0).await.0.is_ok());
            let err = f.write_all_at(vec![2; 10], 10).await.0.unwrap_err();
            assert!(err.is_disk_full(), "{err}");
            assert!(f.write_all_at(vec![3; 10], 10).await.0.is_ok());
            assert!(
                io.rename(&dir.path().join("a"), &dir.path().join("b"))
                    .is_err()
            );
            assert!(faults.crashed());
            assert!(f.sync_data().await.is_err());
            assert!(f.write_all_at(vec![4; 10], 20).await.0.is_err());
        });
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap().len(), 20);
    }

    #[test]
    fn torn_write_leaves_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        faults.add(FaultRule {
            op: Some(FaultOp::Write),
            nth: 1,
            action: FaultAction::TornWrite(3),
        });
        let io = Io::with_faults(IoEngine::Plain, faults);
        IoEngine::Plain.block_on(async {
            let f = io.create(&dir.path().join("a")).unwrap();
            assert!(f.write_all_at(vec![7; 10], 0).await.0.is_err());
        });
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), vec![7; 3]);
    }

    #[test]
    fn uring_backend_writes_and_syncs_when_available() {
        if !uring_available() {
            eprintln!("io_uring not available here; plain backend covers this test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Both write paths of the backend, whatever the probe would pick.
        for ring in [true, false] {
            let io = Io::new(IoEngine::Uring).with_ring_writes(ring);
            assert_eq!(io.write_path(), if ring { "io_uring" } else { "pwrite" });
            let name = format!("u{ring}");
            IoEngine::Uring.block_on(async {
                let f = io.create(&dir.path().join(&name)).unwrap();
                f.write_all_at(b"hello".to_vec(), 0).await.0.unwrap();
                f.write_all_at(b" world".to_vec(), 5).await.0.unwrap();
                f.sync_data().await.unwrap();
                f.set_len(8).unwrap();
            });
            assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"hello wo");
        }
    }

    #[test]
    fn nowait_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let _ = nowait_buffered_writes(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut io = Io::new(IoEngine::Uring);
        io.fit_to_dir(dir.path());
        assert_eq!(
            io.write_path(),
            if nowait_buffered_writes(dir.path()) {
                "io_uring"
            } else {
                "pwrite"
            }
        );
        let mut plain = Io::new(IoEngine::Plain);
        plain.fit_to_dir(dir.path());
        assert_eq!(plain.write_path(), "pwrite");
        use crate::storage::SyncPolicy;
        assert_eq!(plain.append_path(SyncPolicy::None), "mmap");
        assert_eq!(plain.append_path(SyncPolicy::Always), "pwrite");
        let plain = plain.with_log_append(LogAppend::Mmap);
        assert_eq!(plain.append_path(SyncPolicy::Always), "mmap");
        let plain = plain.with_log_append(LogAppend::Write);
        assert_eq!(plain.append_path(SyncPolicy::None), "pwrite");
    }

    /// Background fdatasyncs run on long-lived helper threads: the same
    /// threads serve every sync, none is started per sync.
    #[test]
    fn background_syncs_reuse_the_helper_threads() {
        let helpers = || -> std::collections::BTreeSet<libc::pid_t> {
            threads_named("flashkv-sync").into_iter().collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let io = Io::new(IoEngine::Plain);
        IoEngine::Plain.block_on(async {
            let f = io.create(&dir.path().join("seg")).unwrap();
            f.sync_data_in_background().unwrap().await.unwrap().unwrap();
            // One per core, started together; each names itself once it
            // runs, so a busy machine may show fewer for a moment.
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert!(eventually(|| helpers().len() == n), "{:?}", helpers());
            let first = helpers();
            for i in 0..5u8 {
                let f = io.create(&dir.path().join(format!("f{i}"))).unwrap();
                f.write_all_at(vec![i; 4096], 0).await.0.unwrap();
                f.sync_data_in_background().unwrap().await.unwrap().unwrap();
            }
            assert_eq!(helpers(), first);
        });
    }

    /// The prefault thread, started by a mapped append, runs in the idle
    /// scheduling class.
    #[test]
    fn the_prefault_thread_runs_at_idle_priority() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::new(IoEngine::Plain);
        IoEngine::Plain.block_on(async {
            let mut f = io.create(&dir.path().join("seg")).unwrap();
            f.map_appends(3 * APPEND_CHUNK).unwrap();
            f.write_all_at(vec![1; 4096], 0).await.0.unwrap();
        });
        assert_thread_runs_at_idle_priority("flashkv-prefaul");
    }

    /// A closed file's append mapping is unmapped on the idle-priority
    /// unmap thread, not by the caller, and it does go away.
    #[test]
    fn a_closed_files_mapping_is_unmapped_on_the_unmap_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unmapped-seg");
        let mapped = || {
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .any(|l| l.ends_with(path.to_str().unwrap()))
        };
        let io = Io::new(IoEngine::Plain);
        IoEngine::Plain.block_on(async {
            let mut f = io.create(&path).unwrap();
            f.map_appends(3 * APPEND_CHUNK).unwrap();
            f.write_all_at(vec![1; 4096], 0).await.0.unwrap();
            assert!(mapped());
            f.close_in_background();
        });
        assert_thread_runs_at_idle_priority("flashkv-unmap");
        assert!(
            eventually(|| !mapped()),
            "the mapping of {} is still there",
            path.display()
        );
    }

    /// Written (not mapped) appends get the same room ahead of them:
    /// allocated blocks, the bytes in place, no mapping, cut back to the
    /// records when asked; past the capacity the file grows with writes.
    #[test]
    fn written_appends_land_in_room_allocated_ahead() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("written-seg");
        let cap = 3 * APPEND_CHUNK;
        for engine in [IoEngine::Plain, IoEngine::detect()] {
            let _ = std::fs::remove_file(&path);
            let io = Io::new(engine);
            engine.block_on(async {
                let mut f = io.create(&path).unwrap();
                f.write_all_at(b"head".to_vec(), 0).await.0.unwrap();
                f.preallocate_appends(cap).unwrap();
                f.write_all_at(b"abc".to_vec(), 4).await.0.unwrap();
                let meta = std::fs::metadata(&path).unwrap();
                assert_eq!(meta.len(), APPEND_CHUNK, "{engine:?}");
                assert!(
                    meta.blocks() * 512 >= APPEND_CHUNK,
                    "{} blocks",
                    meta.blocks()
                );
                assert_eq!(&std::fs::read(&path).unwrap()[..7], b"headabc");
                let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
                assert!(!maps.lines().any(|l| l.ends_with(path.to_str().unwrap())));
                // Across a step boundary: grown again, a step ahead.
                f.write_all_at(vec![9u8; APPEND_CHUNK as usize], 7)
                    .await
                    .0
                    .unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * APPEND_CHUNK);
                f.sync_data().await.unwrap();
                assert!(f.release_preallocated(7 + APPEND_CHUNK).unwrap());
                assert!(!f.release_preallocated(7 + APPEND_CHUNK).unwrap());
                assert_eq!(std::fs::metadata(&path).unwrap().len(), 7 + APPEND_CHUNK);
                // Past the capacity: no room is allocated, the write grows the file.
                f.write_all_at(b"tail".to_vec(), cap).await.0.unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().len(), cap + 4);
            });
            assert_appended(&path, cap);
        }
    }

    /// What both append tests leave in `path`: "headabc", a step of 9s,
    /// zeros up to `cap`, then "tail".
    fn assert_appended(path: &Path, cap: u64) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len() as u64, cap + 4);
        assert_eq!(&bytes[..7], b"headabc");
        assert!(bytes[7..7 + APPEND_CHUNK as usize].iter().all(|&b| b == 9));
        assert!(
            bytes[7 + APPEND_CHUNK as usize..cap as usize]
                .iter()
                .all(|&b| b == 0)
        );
        assert_eq!(&bytes[cap as usize..], b"tail");
    }

    #[test]
    fn mapped_appends_grow_the_file_ahead_and_give_the_room_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let cap = 3 * APPEND_CHUNK;
        let faults = FaultInjector::new();
        faults.add(FaultRule {
            op: Some(FaultOp::Write),
            nth: 3,
            action: FaultAction::TornWrite(2),
        });
        let io = Io::with_faults(IoEngine::Plain, faults.clone());
        IoEngine::Plain.block_on(async {
            let mut f = io.create(&path).unwrap();
            f.write_all_at(b"head".to_vec(), 0).await.0.unwrap();
            f.map_appends(cap).unwrap();
            f.write_all_at(b"abc".to_vec(), 4).await.0.unwrap();
            // Grown one step ahead, allocated (not a hole), bytes in place.
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.len(), APPEND_CHUNK);
            use std::os::unix::fs::MetadataExt;
            assert!(
                meta.blocks() * 512 >= APPEND_CHUNK,
                "{} blocks",
                meta.blocks()
            );
            assert_eq!(&std::fs::read(&path).unwrap()[..7], b"headabc");
            // A torn write through the mapping leaves its prefix, as pwrite would.
            assert!(f.write_all_at(b"xyz".to_vec(), 7).await.0.is_err());
            assert_eq!(&std::fs::read(&path).unwrap()[..10], b"headabcxy\0");
            // Across a step boundary: grown again, never past the capacity.
            let big = vec![9u8; APPEND_CHUNK as usize];
            f.write_all_at(big, 7).await.0.unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * APPEND_CHUNK);
            // Half a step before the end: grown a step ahead of need.
            let pos = 2 * APPEND_CHUNK - APPEND_CHUNK / 2;
            f.write_all_at(vec![0; 1], pos - 1).await.0.unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * APPEND_CHUNK);
            f.write_all_at(vec![0; 1], pos).await.0.unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), cap);
            // Disk full: an error, nothing copied, and the file as it was.
            faults.set_disk_full(true);
            assert!(
                f.write_all_at(vec![1; 10], cap - 10)
                    .await
                    .0
                    .unwrap_err()
                    .is_disk_full()
            );
            faults.set_disk_full(false);
            f.sync_data().await.unwrap();
            assert!(f.release_preallocated(7 + APPEND_CHUNK).unwrap());
            assert!(!f.release_preallocated(7 + APPEND_CHUNK).unwrap());
            // Past the mapping, writes go through the backend.
            f.write_all_at(b"tail".to_vec(), cap).await.0.unwrap();
        });
        assert_appended(&path, cap);
    }

    #[test]
    fn by_default_only_sync_none_maps_log_appends() {
        use crate::storage::SyncPolicy;
        let policies = [
            SyncPolicy::None,
            SyncPolicy::Interval(std::time::Duration::from_secs(1)),
            SyncPolicy::Always,
        ];
        let maps = |how| {
            policies.map(|p| {
                Io::new(IoEngine::Plain)
                    .with_log_append(how)
                    .maps_appends(p)
            })
        };
        assert_eq!(maps(LogAppend::Auto), [true, false, false]);
        assert_eq!(maps(LogAppend::Mmap), [true, true, true]);
        assert_eq!(maps(LogAppend::Write), [false, false, false]);
        let io = Io::new(IoEngine::Plain);
        assert_eq!(io.append_path(SyncPolicy::None), "mmap");
        assert_ne!(io.append_path(policies[1]), "mmap");
    }
}
