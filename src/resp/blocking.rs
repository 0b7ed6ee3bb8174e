//! Blocking pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN, BZPOPMAX):
//! the registry that wakes a client blocked on keys when a write may have
//! given one of them an element, the timeout argument, and the wait.
//!
//! * A blocked client registers its keys first, then tries them, then
//!   waits for a wake-up, its deadline, a re-check tick
//!   ([`RECHECK`]) or the end of its connection (CLIENT KILL, the client
//!   hanging up, a shutdown: the connection loop marks its slot killed),
//!   and tries again. A wake-up between the registration and the wait is
//!   kept (a stored permit), so none is missed.
//! * Writes that can add elements (the pushes, LMOVE and RPOPLPUSH, ZADD,
//!   ZINCRBY, the ZUNIONSTORE family, RENAME, EXEC) wake the clients
//!   blocked on their keys once committed ([`Wakeups::notify`]: one atomic
//!   load while nobody is blocked). Anything else that makes a key
//!   non-empty is seen at the next re-check.
//! * Each write wakes the client blocked longest on the key that is not
//!   already woken (so a burst of pushes wakes as many clients, in the
//!   order they blocked, and no herd); a woken client that leaves wakes
//!   the next. A client that is not blocked can still take the element
//!   first (the woken one then waits again), so the one blocked longest is
//!   served first only among blocked clients.
//! * Inside EXEC a blocking pop does not block: it answers at once, as in
//!   Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::resp::Conn;
use crate::resp::coll::{Coll, Kind};
use crate::resp::proto::Reply;

/// How often a blocked client looks at its keys without being woken.
pub const RECHECK: Duration = Duration::from_millis(100);

/// The longest timeout taken, as Redis 7.2: its milliseconds must fit an
/// i64 (about 292 million years).
const MAX_TIMEOUT_SECS: f64 = i64::MAX as f64 / 1000.0;

/// A client blocked on a key.
struct Waiter {
    /// Its registration.
    id: u64,
    wake: std::sync::Arc<Notify>,
    /// Woken since it last started to wait (the next write wakes another).
    woken: bool,
}

/// The clients blocked on one key, in the order they blocked.
type Waiting = Vec<Waiter>;

/// Wakes the first client of `waiting` not woken yet.
fn wake_next(waiting: &mut Waiting) {
    if let Some(w) = waiting.iter_mut().find(|w| !w.woken) {
        w.woken = true;
        w.wake.notify_one();
    }
}

/// The clients blocked on keys, daemon-wide.
#[derive(Default)]
pub struct Wakeups {
    /// Clients blocked now (INFO's `blocked_clients`).
    blocked: AtomicUsize,
    next_id: AtomicU64,
    /// Key -> the wake-ups of the clients blocked on it.
    keys: Mutex<HashMap<Vec<u8>, Waiting>>,
}

impl Wakeups {
    /// Clients blocked now.
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::SeqCst)
    }

    /// Wakes the client blocked longest on `key` and not woken yet (call
    /// after the write that may have given it elements is committed).
    pub fn notify(&self, key: &[u8]) {
        // Either the blocked client's attempt, after its registration, sees
        // the write, or this sees the registration.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.blocked.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut keys = self.keys.lock().expect("wake-up registry lock");
        if let Some(waiting) = keys.get_mut(key) {
            wake_next(waiting);
        }
    }

    fn register(&self, keys: &[Vec<u8>]) -> (u64, std::sync::Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = std::sync::Arc::new(Notify::new());
        let mut map = self.keys.lock().expect("wake-up registry lock");
        for k in keys {
            map.entry(k.clone()).or_default().push(Waiter {
                id,
                wake: notify.clone(),
                woken: false,
            });
        }
        drop(map);
        self.blocked.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        (id, notify)
    }

    fn unregister(&self, id: u64, keys: &[Vec<u8>]) {
        let mut map = self.keys.lock().expect("wake-up registry lock");
        for k in keys {
            if let Some(waiting) = map.get_mut(k) {
                waiting.retain(|w| w.id != id);
                if waiting.is_empty() {
                    map.remove(k);
                } else {
                    // The next in line looks (this one may have been woken
                    // for an element it leaves).
                    wake_next(waiting);
                }
            }
        }
        drop(map);
        self.blocked.fetch_sub(1, Ordering::SeqCst);
    }

    /// Client `id` starts to wait again: the next write to its keys may
    /// wake it.
    fn rearm(&self, id: u64, keys: &[Vec<u8>]) {
        let mut map = self.keys.lock().expect("wake-up registry lock");
        for k in keys {
            if let Some(w) = map
                .get_mut(k)
                .and_then(|ws| ws.iter_mut().find(|w| w.id == id))
            {
                w.woken = false;
            }
        }
    }
}

/// Parses a blocking command's timeout (seconds, fractions allowed; 0:
/// none), with Redis' errors.
pub fn parse_timeout(b: &[u8]) -> Result<Option<Duration>, Reply> {
    let secs = std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| !s.is_nan())
        .ok_or_else(|| Reply::err("timeout is not a float or out of range"))?;
    // (Redis 7.2's checks and order: inf is out of range.)
    if secs > MAX_TIMEOUT_SECS {
        return Err(Reply::err("timeout is out of range"));
    }
    if secs < 0.0 {
        return Err(Reply::err("timeout is negative"));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// The arguments of LMPOP and ZMPOP (and their blocking forms) from
/// `numkeys` at `args[at]` on: the keys, whether the side is the first of
/// `sides` (LEFT, or MIN), and the count (1 without COUNT), with Redis'
/// errors.
pub fn mpop_args<'a>(
    args: &'a [Vec<u8>],
    at: usize,
    sides: [&[u8]; 2],
) -> Result<(&'a [Vec<u8>], bool, u64), Reply> {
    let positive = |b: &[u8], what: &str| {
        crate::resp::proto::parse_int(b)
            .filter(|n| *n > 0)
            .ok_or_else(|| Reply::err(format!("{what} should be greater than 0")))
    };
    let n = positive(&args[at], "numkeys")? as usize;
    let side_at = at
        .checked_add(n)
        .and_then(|i| i.checked_add(1))
        .filter(|i| *i < args.len())
        .ok_or_else(crate::resp::syntax_error)?;
    let first = match &args[side_at] {
        s if s.eq_ignore_ascii_case(sides[0]) => true,
        s if s.eq_ignore_ascii_case(sides[1]) => false,
        _ => return Err(crate::resp::syntax_error()),
    };
    let mut count = None;
    let mut i = side_at + 1;
    while i < args.len() {
        if count.is_none() && args[i].eq_ignore_ascii_case(b"COUNT") && i + 1 < args.len() {
            count = Some(positive(&args[i + 1], "count")? as u64);
            i += 2;
        } else {
            return Err(crate::resp::syntax_error());
        }
    }
    Ok((&args[at + 1..side_at], first, count.unwrap_or(1)))
}

/// What LMPOP, ZMPOP and their blocking forms do, from their arguments.
pub struct Mpop<'a> {
    /// The keys, in order.
    pub keys: &'a [Vec<u8>],
    /// The side: LEFT (MIN), or RIGHT (MAX).
    pub first_side: bool,
    /// Most elements popped.
    pub count: u64,
    /// The wait (None: not a blocking form).
    pub block: Option<Block<'a>>,
}

/// LMPOP and ZMPOP, and their blocking forms (`blocking`: the timeout is
/// `args[1]`), after Redis' checks in Redis' order; `sides` are the two
/// side words.
pub fn mpop_setup<'a>(
    cx: &'a Conn,
    args: &'a [Vec<u8>],
    blocking: bool,
    sides: [&[u8]; 2],
) -> Result<Mpop<'a>, Reply> {
    let timeout = if blocking {
        parse_timeout(&args[1])?
    } else {
        None
    };
    let (keys, first, count) = mpop_args(args, if blocking { 2 } else { 1 }, sides)?;
    let block = if blocking {
        Some(Block::new(cx, keys, timeout)?)
    } else {
        for k in keys {
            cx.check_key(k)?;
        }
        None
    };
    Ok(Mpop {
        keys,
        first_side: first,
        count,
        block,
    })
}

/// Pops with `pop` (one change of the collection) from the first of
/// `keys` with elements of `kind`, trying them in order (a read first: an
/// empty key costs no write), and with a `block`, waiting and trying again
/// until something is popped or the wait ends. The key and what was
/// popped, or None.
pub async fn pop_first<T: Send + 'static>(
    cx: &Conn,
    keys: &[Vec<u8>],
    kind: Kind,
    block: Option<&Block<'_>>,
    pop: impl FnMut(&mut Coll<'_>) -> Result<Vec<T>, Reply> + Clone + Send + 'static,
) -> Result<Option<(Vec<u8>, Vec<T>)>, Reply> {
    loop {
        for k in keys {
            let len = cx.read_coll(k, kind).await?.map_or(0, |c| c.meta.len);
            if len == 0 {
                continue;
            }
            let popped = cx.mutate(k, kind, pop.clone()).await?;
            if !popped.is_empty() {
                return Ok(Some((k.clone(), popped)));
            }
        }
        match block {
            Some(b) if b.wait().await? => {}
            _ => return Ok(None),
        }
    }
}

/// A blocking command's wait: registered on its keys until dropped.
pub struct Block<'a> {
    cx: &'a Conn,
    /// None inside EXEC: it never waits.
    registered: Option<(u64, std::sync::Arc<Notify>)>,
    keys: &'a [Vec<u8>],
    deadline: Option<Instant>,
}

impl<'a> Block<'a> {
    /// Registers on `keys` (checked against the key limits) for up to
    /// `timeout` ([`parse_timeout`]; None: no limit), unless the command
    /// runs inside EXEC.
    pub fn new(
        cx: &'a Conn,
        keys: &'a [Vec<u8>],
        timeout: Option<Duration>,
    ) -> Result<Block<'a>, Reply> {
        for k in keys {
            cx.check_key(k)?;
        }
        let in_exec = cx.txn.lock().expect("txn lock").is_some();
        let registered = (!in_exec).then(|| cx.shared.server.wakeups.register(keys));
        if registered.is_some() {
            cx.slot.set_blocked(true);
        }
        Ok(Block {
            cx,
            registered,
            keys,
            // (A deadline past what the clock can hold: none.)
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
        })
    }

    /// Waits for a reason to try again: true, or false once the timeout
    /// has passed, the connection is ending, at a CLIENT UNBLOCK, or
    /// inside EXEC; the error of a CLIENT UNBLOCK ... ERROR.
    pub async fn wait(&self) -> Result<bool, Reply> {
        let Some((_, notify)) = &self.registered else {
            return Ok(false);
        };
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Ok(false);
        }
        let nap = self
            .deadline
            .map_or(RECHECK, |d| d.saturating_duration_since(now).min(RECHECK));
        let again = tokio::select! {
            _ = notify.notified() => Ok(true),
            _ = tokio::time::sleep(nap) => Ok(self.deadline.is_none_or(|d| Instant::now() < d)),
            _ = self.cx.slot.killed() => Ok(false),
            error = self.cx.slot.unblocked() => match error {
                true => Err(Reply::Error(
                    "UNBLOCKED client unblocked via CLIENT UNBLOCK".into(),
                )),
                false => Ok(false),
            },
        };
        let waited = now.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
        self.cx.blocked_ns.fetch_add(waited, Ordering::Relaxed);
        if let (Ok(true), Some((id, _))) = (&again, &self.registered) {
            // Before the next attempt: a write after it wakes this client
            // again rather than pass it by.
            self.cx.shared.server.wakeups.rearm(*id, self.keys);
        }
        again
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        if let Some((id, _)) = self.registered {
            self.cx.shared.server.wakeups.unregister(id, self.keys);
            self.cx.slot.set_blocked(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_redis_does() {
        assert_eq!(parse_timeout(b"0").unwrap(), None);
        assert_eq!(parse_timeout(b"0.0").unwrap(), None);
        assert_eq!(
            parse_timeout(b"1.5").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_timeout(b"2").unwrap(), Some(Duration::from_secs(2)));
        let err = |b: &[u8]| match parse_timeout(b) {
            Err(Reply::Error(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(b"-1"), "ERR timeout is negative");
        assert_eq!(err(b"abc"), "ERR timeout is not a float or out of range");
        assert_eq!(err(b"nan"), "ERR timeout is not a float or out of range");
        assert_eq!(err(b"inf"), "ERR timeout is out of range");
        assert_eq!(err(b"-inf"), "ERR timeout is negative");
        assert_eq!(err(b"1e300"), "ERR timeout is out of range");
        // Within Redis' range, if past what the clock can hold.
        assert!(parse_timeout(b"1e15").unwrap().is_some());
    }

    #[test]
    fn mpop_arguments_parse_as_redis_does() {
        let args =
            |s: &str| -> Vec<Vec<u8>> { s.split(' ').map(|a| a.as_bytes().to_vec()).collect() };
        let sides = [&b"LEFT"[..], &b"RIGHT"[..]];
        let a = args("LMPOP 2 k1 k2 left COUNT 3");
        let (keys, left, count) = mpop_args(&a, 1, sides).unwrap();
        assert_eq!(keys, &a[2..4]);
        assert!(left && count == 3);
        let a = args("BLMPOP 0 1 k RIGHT");
        assert_eq!(mpop_args(&a, 2, sides).unwrap(), (&a[3..4], false, 1));
        let err = |s: &str| match mpop_args(&args(s), 1, sides) {
            Err(Reply::Error(e)) => e,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(
            err("LMPOP 0 k LEFT"),
            "ERR numkeys should be greater than 0"
        );
        assert_eq!(
            err("LMPOP x k LEFT"),
            "ERR numkeys should be greater than 0"
        );
        assert_eq!(err("LMPOP 3 k LEFT"), "ERR syntax error");
        assert_eq!(err("LMPOP 1 k UP"), "ERR syntax error");
        assert_eq!(
            err("LMPOP 1 k LEFT COUNT 0"),
            "ERR count should be greater than 0"
        );
        assert_eq!(err("LMPOP 1 k LEFT COUNT 1 COUNT 2"), "ERR syntax error");
        assert_eq!(err("LMPOP 1 k LEFT COUNT"), "ERR syntax error");
        assert_eq!(err("LMPOP 1 k LEFT LIMIT 2"), "ERR syntax error");
    }

    #[tokio::test]
    async fn a_notify_wakes_the_first_client_blocked_on_that_key_and_is_kept() {
        let w = Wakeups::default();
        let soon = |n: std::sync::Arc<Notify>| async move {
            tokio::time::timeout(Duration::from_millis(50), n.notified())
                .await
                .is_ok()
        };
        w.notify(b"nobody"); // nothing registered: a no-op
        let (a, na) = w.register(&[b"q1".to_vec(), b"q2".to_vec()]);
        let (b, nb) = w.register(&[b"q3".to_vec()]);
        let (c, nc) = w.register(&[b"q2".to_vec()]);
        assert_eq!(w.blocked(), 3);
        // Before the wait: kept as a permit. The first blocked on q2 only.
        w.notify(b"q2");
        assert!(
            soon(na.clone()).await,
            "the first client blocked on q2 is woken"
        );
        assert!(
            !soon(nb.clone()).await,
            "the client blocked on q3 only is not"
        );
        assert!(
            !soon(nc.clone()).await,
            "the second client on q2 waits its turn"
        );
        // A second write wakes the next not woken yet; a third finds none.
        w.notify(b"q2");
        assert!(
            soon(nc.clone()).await,
            "the second client on q2 is woken by a second write"
        );
        w.notify(b"q2");
        assert!(!soon(na.clone()).await && !soon(nc.clone()).await);
        // Re-armed, the first is woken by the next write again.
        w.rearm(a, &[b"q1".to_vec(), b"q2".to_vec()]);
        w.notify(b"q2");
        assert!(soon(na.clone()).await, "a re-armed client is woken again");
        // The first leaves: the next in line on q2 (re-armed) looks.
        w.rearm(c, &[b"q2".to_vec()]);
        w.unregister(a, &[b"q1".to_vec(), b"q2".to_vec()]);
        assert!(soon(nc.clone()).await, "the next client on q2 is woken");
        w.unregister(c, &[b"q2".to_vec()]);
        w.unregister(b, &[b"q3".to_vec()]);
        assert_eq!(w.blocked(), 0);
        assert!(w.keys.lock().unwrap().is_empty(), "no key left registered");
    }
}
