//! The open RESP connections, for CLIENT LIST, CLIENT INFO and CLIENT KILL.
//!
//! Each connection owns a [`Slot`] registered in the daemon's [`Clients`]
//! (one for every shard thread, in [`crate::resp::Server`]) while it is
//! open. The connection writes its slot (relaxed
//! atomics on a line no other thread writes: what it last ran and when,
//! its buffers, its MULTI queue; a lock only when its name, library or
//! protocol changes), and any connection can read every slot to describe
//! it as Redis 7.2's CLIENT LIST does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What other connections can see of one connection.
pub struct Slot {
    /// CLIENT ID.
    pub id: u64,
    /// Peer address.
    pub addr: String,
    /// The listen address it came in on.
    pub laddr: String,
    /// Its socket's descriptor (-1: none).
    pub fd: i32,
    since: Instant,
    /// CLIENT SETNAME, CLIENT SETINFO LIB-NAME and LIB-VER (kept here
    /// only).
    identity: Mutex<Identity>,
    resp: AtomicU8,
    /// Milliseconds from `since` to the end of the last command.
    last_ms: AtomicU64,
    /// The name of the last command run (null: none yet).
    cmd: AtomicPtr<&'static str>,
    /// Commands queued since MULTI (-1: not in MULTI) and their bytes.
    multi: AtomicI64,
    multi_mem: AtomicU64,
    /// Buffers when the last command started: input not yet parsed, the
    /// input buffer's size, replies not yet written, the reply buffer's
    /// size, the command's own argument bytes.
    qbuf: AtomicU64,
    rbs: AtomicU64,
    obl: AtomicU64,
    obuf: AtomicU64,
    argv: AtomicU64,
    /// CLIENT KILL: set, then the connection is woken to close.
    killed: AtomicBool,
    wake: tokio::sync::Notify,
    /// Whether the connection waits in a blocking pop (flag `b`).
    blocked: AtomicBool,
    /// Pub/sub subscriptions: channels, patterns, shard channels.
    sub: AtomicU64,
    psub: AtomicU64,
    ssub: AtomicU64,
    /// CLIENT UNBLOCK of that wait: 0 none, 1 as a timeout, 2 with an
    /// error; `unblock_wake` wakes it.
    unblock: AtomicU8,
    unblock_wake: tokio::sync::Notify,
}

#[derive(Default, Clone)]
struct Identity {
    name: Vec<u8>,
    lib_name: String,
    lib_ver: String,
}

impl Slot {
    /// A slot for connection `id` from `addr` on `laddr`, socket `fd`.
    pub fn new(id: u64, addr: String, laddr: String, fd: i32) -> Slot {
        Slot {
            id,
            addr,
            laddr,
            fd,
            since: Instant::now(),
            identity: Mutex::new(Identity::default()),
            resp: AtomicU8::new(2),
            last_ms: AtomicU64::new(0),
            cmd: AtomicPtr::new(std::ptr::null_mut()),
            multi: AtomicI64::new(-1),
            multi_mem: AtomicU64::new(0),
            qbuf: AtomicU64::new(0),
            rbs: AtomicU64::new(0),
            obl: AtomicU64::new(0),
            obuf: AtomicU64::new(0),
            argv: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            sub: AtomicU64::new(0),
            psub: AtomicU64::new(0),
            ssub: AtomicU64::new(0),
            unblock: AtomicU8::new(0),
            unblock_wake: tokio::sync::Notify::new(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Seconds since the connection was accepted.
    pub fn age_secs(&self) -> u64 {
        self.since.elapsed().as_secs()
    }

    /// Asks the connection to close (CLIENT KILL): it stops at its next
    /// read, or in the reply write it is waiting on.
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // A stored permit if the connection is not waiting yet.
        self.wake.notify_one();
    }

    /// Ends the connection's blocking command, if it runs one (the client
    /// hung up, or the daemon is stopping): as a kill, without a
    /// CLIENT KILL.
    pub fn hang_up(&self) {
        self.kill();
    }

    /// Records the connection's pub/sub subscriptions (channels, patterns,
    /// shard channels).
    pub fn set_subscriptions(&self, channels: usize, patterns: usize, shards: usize) {
        self.sub.store(channels as u64, Ordering::Relaxed);
        self.psub.store(patterns as u64, Ordering::Relaxed);
        self.ssub.store(shards as u64, Ordering::Relaxed);
    }

    /// Whether Redis would type the connection `pubsub`: in subscribed
    /// mode under RESP2.
    pub fn is_pubsub(&self) -> bool {
        self.resp.load(Ordering::Relaxed) == 2
            && self.sub.load(Ordering::Relaxed)
                + self.psub.load(Ordering::Relaxed)
                + self.ssub.load(Ordering::Relaxed)
                > 0
    }

    /// Marks the connection as waiting in a blocking pop, or no longer.
    pub fn set_blocked(&self, blocked: bool) {
        self.unblock.store(0, Ordering::SeqCst);
        self.blocked.store(blocked, Ordering::SeqCst);
    }

    /// CLIENT UNBLOCK: ends the connection's blocking pop as a timeout
    /// (or with an error); false if it is not in one.
    pub fn unblock(&self, error: bool) -> bool {
        if !self.blocked.load(Ordering::SeqCst) {
            return false;
        }
        self.unblock
            .store(if error { 2 } else { 1 }, Ordering::SeqCst);
        self.unblock_wake.notify_one();
        true
    }

    /// Resolves at a CLIENT UNBLOCK of the connection's blocking pop:
    /// whether it asked for an error.
    pub async fn unblocked(&self) -> bool {
        loop {
            match self.unblock.load(Ordering::SeqCst) {
                0 => self.unblock_wake.notified().await,
                how => return how == 2,
            }
        }
    }

    /// Whether the connection has been killed (or hung up).
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Resolves once the connection has been killed.
    pub async fn killed(&self) {
        while !self.killed.load(Ordering::SeqCst) {
            self.wake.notified().await;
        }
    }

    /// Records the name and protocol (after SETNAME, HELLO, RESET).
    pub fn set_identity(&self, name: Option<&[u8]>, resp: u8) {
        self.identity.lock().expect("client identity lock").name =
            name.unwrap_or_default().to_vec();
        self.resp.store(resp, Ordering::Relaxed);
    }

    /// CLIENT SETINFO: the library's name (`version` false) or version.
    pub fn set_lib(&self, version: bool, value: String) {
        let mut i = self.identity.lock().expect("client identity lock");
        *if version {
            &mut i.lib_ver
        } else {
            &mut i.lib_name
        } = value;
    }

    /// Records the buffers as a command starts, and its argument bytes.
    pub fn set_buffers(&self, qbuf: usize, rbs: usize, obl: usize, obuf: usize, argv: usize) {
        self.qbuf.store(qbuf as u64, Ordering::Relaxed);
        self.rbs.store(rbs as u64, Ordering::Relaxed);
        self.obl.store(obl as u64, Ordering::Relaxed);
        self.obuf.store(obuf as u64, Ordering::Relaxed);
        self.argv.store(argv as u64, Ordering::Relaxed);
    }

    /// Records a command that ran (or was queued) at `end`, and the MULTI
    /// queue after it: its length (None: not in MULTI) and bytes.
    pub fn ran(&self, name: &'static &'static str, end: Instant, multi: Option<(usize, usize)>) {
        let ms = end.saturating_duration_since(self.since).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        self.cmd.store(
            name as *const &'static str as *mut &'static str,
            Ordering::Relaxed,
        );
        let (n, mem) = multi.map_or((-1, 0), |(n, mem)| (n as i64, mem as u64));
        self.multi.store(n, Ordering::Relaxed);
        self.multi_mem.store(mem, Ordering::Relaxed);
    }

    /// The connection as a CLIENT LIST line (Redis 7.2's fields in its
    /// order, newline-terminated). `cmd` names the command for the
    /// connection that asks (`client|list`, `client|info`); for the others
    /// it is the last command's name (`container|sub` for a subcommand, as
    /// in Redis 7). One database, one user: `db` is 0, `user` is
    /// `default`; there is
    /// no reply list beyond the reply buffer, so `oll` and `omem` are 0;
    /// the input buffer never shrinks, so its size is its peak (`rbp`).
    pub fn describe(&self, cmd: Option<&str>, out: &mut String) {
        let now = Instant::now();
        let age = now.saturating_duration_since(self.since);
        let last = self.last_ms.load(Ordering::Relaxed);
        let idle = (age.as_millis() as u64).saturating_sub(last) / 1000;
        let last_cmd = match cmd {
            Some(c) => c,
            // SAFETY: only pointers to `'static` names are stored.
            None => unsafe { self.cmd.load(Ordering::Relaxed).as_ref() }.map_or("NULL", |s| *s),
        };
        let multi = self.multi.load(Ordering::Relaxed);
        let (sub, psub, ssub) = (
            self.sub.load(Ordering::Relaxed),
            self.psub.load(Ordering::Relaxed),
            self.ssub.load(Ordering::Relaxed),
        );
        let (qbuf, rbs) = (
            self.qbuf.load(Ordering::Relaxed),
            self.rbs.load(Ordering::Relaxed),
        );
        let (obl, obuf) = (
            self.obl.load(Ordering::Relaxed),
            self.obuf.load(Ordering::Relaxed),
        );
        let (argv, multi_mem) = (
            self.argv.load(Ordering::Relaxed),
            self.multi_mem.load(Ordering::Relaxed),
        );
        let id = self.identity.lock().expect("client identity lock").clone();
        let _ = writeln!(
            out,
            "id={} addr={} laddr={} fd={} name={} age={} idle={idle} flags={} db=0 sub={sub} psub={psub} ssub={ssub} \
             multi={multi} qbuf={qbuf} qbuf-free={} argv-mem={argv} multi-mem={multi_mem} rbs={rbs} \
             rbp={rbs} obl={obl} oll=0 omem=0 tot-mem={} events=r cmd={last_cmd} user=default \
             redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            String::from_utf8_lossy(&id.name),
            age.as_secs(),
            if self.blocked.load(Ordering::Relaxed) {
                "b"
            } else if multi >= 0 {
                "x"
            } else if sub + psub + ssub > 0 {
                "P"
            } else {
                "N"
            },
            rbs.saturating_sub(qbuf),
            rbs + obuf + argv + multi_mem,
            self.resp.load(Ordering::Relaxed),
            id.lib_name,
            id.lib_ver,
        );
    }
}

/// The open connections of the daemon, by id.
#[derive(Default)]
pub struct Clients {
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
}

impl Clients {
    /// Registers `slot` until the returned guard drops.
    pub fn register(self: &Arc<Self>, slot: Arc<Slot>) -> Registration {
        self.open
            .lock()
            .expect("client registry lock")
            .insert(slot.id, slot.clone());
        Registration {
            clients: self.clone(),
            id: slot.id,
        }
    }

    /// Kills every open connection `pick` chooses (CLIENT KILL): they
    /// leave the list at once and close (mid-write too). Returns how
    /// many.
    pub fn kill(&self, mut pick: impl FnMut(&Slot) -> bool) -> usize {
        let mut open = self.open.lock().expect("client registry lock");
        let ids: Vec<u64> = open.values().filter(|s| pick(s)).map(|s| s.id).collect();
        for id in &ids {
            if let Some(s) = open.remove(id) {
                s.kill();
            }
        }
        ids.len()
    }

    /// The open connection with id `id`.
    pub fn get(&self, id: u64) -> Option<Arc<Slot>> {
        self.open
            .lock()
            .expect("client registry lock")
            .get(&id)
            .cloned()
    }

    /// Every open connection, by id.
    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.open
            .lock()
            .expect("client registry lock")
            .values()
            .cloned()
            .collect()
    }
}

/// Keeps a connection in [`Clients`]; dropping it (the connection ends)
/// removes it.
pub struct Registration {
    clients: Arc<Clients>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut open) = self.clients.open.lock() {
            open.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_listed_while_registered_and_describes_what_it_ran() {
        let clients = Arc::new(Clients::default());
        let a = Arc::new(Slot::new(
            7,
            "127.0.0.1:5000".into(),
            "127.0.0.1:6380".into(),
            9,
        ));
        let b = Arc::new(Slot::new(
            8,
            "127.0.0.1:5001".into(),
            "127.0.0.1:6380".into(),
            10,
        ));
        let ra = clients.register(a.clone());
        let rb = clients.register(b.clone());
        a.set_identity(Some(b"worker"), 3);
        a.set_lib(false, "redis-py".into());
        a.set_lib(true, "5.2.1".into());
        a.set_buffers(26, 16384, 5, 16384, 10);
        let get = crate::resp::cmd::lookup("get").expect("get exists");
        a.ran(&get.name, Instant::now(), Some((2, 30)));
        let ids: Vec<u64> = clients.all().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![7, 8]);
        let mut line = String::new();
        a.describe(None, &mut line);
        for field in [
            "id=7 ",
            "addr=127.0.0.1:5000 ",
            "fd=9 ",
            "name=worker ",
            "flags=x ",
            "multi=2 ",
            "qbuf=26 ",
            "qbuf-free=16358 ",
            "argv-mem=10 ",
            "multi-mem=30 ",
            "obl=5 ",
            "tot-mem=32808 ",
            "cmd=get ",
            "resp=3 ",
            "lib-name=redis-py ",
            "lib-ver=5.2.1\n",
        ] {
            assert!(line.contains(field), "{field:?} in {line:?}");
        }
        let mut other = String::new();
        b.describe(Some("client|list"), &mut other);
        assert!(
            other.contains("cmd=client|list ")
                && other.contains("name= ")
                && other.contains("flags=N "),
            "{other}"
        );
        assert_eq!(clients.kill(|s| s.addr == "127.0.0.1:5009"), 0);
        assert_eq!(clients.kill(|s| s.id == 8), 1);
        assert!(b.killed.load(Ordering::SeqCst) && !a.killed.load(Ordering::SeqCst));
        let ids: Vec<u64> = clients.all().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![7], "a killed connection leaves the list at once");
        drop(rb);
        assert_eq!(clients.all().len(), 1);
        drop(ra);
        assert!(clients.all().is_empty());
    }

    #[tokio::test]
    async fn a_kill_wakes_a_waiting_connection_and_one_not_waiting_yet() {
        let clients = Arc::new(Clients::default());
        let a = Arc::new(Slot::new(1, "a".into(), "l".into(), -1));
        let b = Arc::new(Slot::new(2, "b".into(), "l".into(), -1));
        let (_ra, _rb) = (clients.register(a.clone()), clients.register(b.clone()));
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.killed().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(clients.kill(|_| true), 2);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting connection woke")
            .expect("task");
        // Killed before it waited: its next wait ends at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), b.killed())
            .await
            .expect("the later wait ended");
    }

    #[test]
    fn registration_drop_after_a_kill_is_harmless() {
        let clients = Arc::new(Clients::default());
        let a = Arc::new(Slot::new(1, "a".into(), "l".into(), -1));
        let ra = clients.register(a);
        clients.kill(|_| true);
        drop(ra);
        assert!(clients.all().is_empty());
        let b = Arc::new(Slot::new(2, "b".into(), "l".into(), -1));
        let _rb = clients.register(b);
        assert_eq!(clients.all().len(), 1, "a later connection stays listed");
    }
}
