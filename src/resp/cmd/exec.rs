//! `EXEC`: run the commands queued since MULTI as one serializable FlashKV
//! transaction, on any number of shards.
//!
//! The queue runs against a snapshot (each command sees the writes of the
//! earlier ones) and commits atomically; WATCHed keys are read first and
//! must still be at the versions WATCH saw, else EXEC answers nil and
//! writes nothing. A conflict with another writer at commit (something the
//! queue read changed meanwhile) runs the queue again on a fresh snapshot,
//! so the replies are always those of one serial execution. Commands that
//! list or count the whole keyspace (KEYS, SCAN, DBSIZE, RANDOMKEY, INFO)
//! read the latest committed data, not the snapshot.

use crate::resp::proto::Reply;
use crate::resp::{error_reply, execute};
use crate::txn::Commit;

/// How often EXEC runs its queue again after a conflict before giving up.
const ATTEMPTS: usize = 32;

command!(
    "exec",
    1,
    ["noscript", "loading", "stale", "skip_slowlog"],
    (0, 0, 0),
    |cx, a| {
        let Some(m) = cx.multi.take() else {
            return Err(Reply::err("EXEC without MULTI"));
        };
        let watched = std::mem::take(&mut cx.watched);
        if m.failed {
            return Err(Reply::Error(
                "EXECABORT Transaction discarded because of previous errors.".into(),
            ));
        }
        let coord = cx.shared.coord.clone();
        for _ in 0..ATTEMPTS {
            let mut t = coord.begin().await;
            for (k, v) in &watched {
                let now = coord.get(&mut t, k).map_err(error_reply)?;
                if now.map_or(0, |x| x.version) != *v {
                    return Ok(Reply::NullArray);
                }
            }
            *cx.txn.lock().expect("txn lock") = Some(t);
            let mut replies = Vec::with_capacity(m.queued.len());
            for args in &m.queued {
                replies.push(execute(cx, args).await);
            }
            let t = cx
                .txn
                .lock()
                .expect("txn lock")
                .take()
                .expect("the EXEC transaction is still set");
            match coord.commit(t).await.map_err(error_reply)? {
                Commit::Committed { .. } => {
                    // The clients blocked on keys the queue wrote.
                    if cx.shared.server.wakeups.blocked() > 0 {
                        for args in &m.queued {
                            if let Some(spec) = crate::resp::spec_of(&args[0]) {
                                crate::resp::wake_blocked(cx, spec, args);
                            }
                        }
                    }
                    return Ok(Reply::Array(replies));
                }
                Commit::Aborted(_) => continue,
            }
        }
        Err(Reply::err(
            "EXEC kept conflicting with other writers; retry the transaction",
        ))
    }
);
