//! Open transactions of clients that hold one across requests (the gRPC
//! `Txn` service): id -> transaction, with an idle timeout after which an
//! abandoned transaction is rolled back (it holds no lock before commit, so
//! rolling back releases its snapshot, which lets old versions go).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::txn::Txn;

struct Slot {
    txn: Arc<tokio::sync::Mutex<Option<Txn>>>,
    touched: Instant,
}

/// The open transactions; `Send + Sync`.
pub struct Registry {
    open: Mutex<HashMap<u64, Slot>>,
    idle: Duration,
}

/// A registered transaction, locked for one request (`None` once committed
/// or rolled back by a concurrent request).
pub type Handle = Arc<tokio::sync::Mutex<Option<Txn>>>;

impl Registry {
    /// An empty registry whose transactions expire after `idle`.
    pub fn new(idle: Duration) -> Self {
        Registry {
            open: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// Registers `txn`; returns its id.
    pub fn insert(&self, txn: Txn) -> u64 {
        self.expire();
        let id = txn.id();
        self.open.lock().expect("registry lock").insert(
            id,
            Slot {
                txn: Arc::new(tokio::sync::Mutex::new(Some(txn))),
                touched: Instant::now(),
            },
        );
        id
    }

    /// The transaction `id`, if open (and marks it used).
    pub fn get(&self, id: u64) -> Option<Handle> {
        let mut m = self.open.lock().expect("registry lock");
        let slot = m.get_mut(&id)?;
        slot.touched = Instant::now();
        Some(slot.txn.clone())
    }

    /// Forgets `id` (after commit or rollback).
    pub fn remove(&self, id: u64) {
        self.open.lock().expect("registry lock").remove(&id);
    }

    /// Open transactions.
    pub fn len(&self) -> usize {
        self.open.lock().expect("registry lock").len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rolls back transactions idle longer than the timeout; returns how many.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut m = self.open.lock().expect("registry lock");
        let before = m.len();
        m.retain(|_, s| now.duration_since(s.touched) < self.idle);
        let n = before - m.len();
        if n > 0 {
            tracing::info!(expired = n, "rolled back idle transactions");
        }
        n
    }
}
