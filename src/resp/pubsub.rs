//! Pub/sub: SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE (and their UNSUBSCRIBE
//! forms), PUBLISH, SPUBLISH and PUBSUB, across every shard thread.
//!
//! * The [`Hub`] (one per daemon) maps each channel, pattern and shard
//!   channel to the mailboxes of the connections subscribed to it. PUBLISH
//!   puts the message in each (the payload shared, not copied) and answers
//!   how many received it, a client subscribed both to the channel and to
//!   a pattern matching it counted twice, as in Redis.
//! * A connection's mailbox is drained by its own loop, between reads,
//!   into its socket (RESP2 arrays, RESP3 push frames). Messages are not
//!   kept: a client that is not subscribed when one is published never
//!   sees it, and nothing survives a restart (as in Redis).
//! * A subscriber whose undelivered messages pass [`OUTPUT_LIMIT`] bytes
//!   (it stopped reading, or reads slower than they come) is disconnected,
//!   as Redis' `client-output-buffer-limit pubsub 32mb` does.
//! * Shard channels (SSUBSCRIBE, SPUBLISH) are a namespace of their own;
//!   with no cluster, every shard channel is served by this daemon.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::resp::clients::Slot;
use crate::resp::proto::Reply;

/// Bytes of undelivered messages past which a subscriber is disconnected.
pub const OUTPUT_LIMIT: usize = 32 << 20;

/// What a subscription names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A channel (SUBSCRIBE).
    Channel,
    /// A glob pattern over channel names (PSUBSCRIBE).
    Pattern,
    /// A shard channel (SSUBSCRIBE).
    Shard,
}

impl Kind {
    /// The confirmation words: (subscribe, unsubscribe).
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Kind::Channel => ("subscribe", "unsubscribe"),
            Kind::Pattern => ("psubscribe", "punsubscribe"),
            Kind::Shard => ("ssubscribe", "sunsubscribe"),
        }
    }
}

/// A message for one subscriber.
#[derive(Debug)]
pub struct Push {
    /// The pattern it matched (PSUBSCRIBE), if any.
    pattern: Option<Arc<Vec<u8>>>,
    channel: Arc<Vec<u8>>,
    payload: Arc<Vec<u8>>,
    shard: bool,
}

impl Push {
    fn bytes(&self) -> usize {
        self.channel.len() + self.payload.len() + self.pattern.as_ref().map_or(0, |p| p.len()) + 32
    }

    /// The frame the subscriber receives.
    pub fn reply(&self) -> Reply {
        let mut items = Vec::with_capacity(4);
        match &self.pattern {
            Some(p) => {
                items.push(Reply::text("pmessage"));
                items.push(Reply::Bulk(p.to_vec()));
            }
            None if self.shard => items.push(Reply::text("smessage")),
            None => items.push(Reply::text("message")),
        }
        items.push(Reply::Bulk(self.channel.to_vec()));
        items.push(Reply::Bulk(self.payload.to_vec()));
        Reply::Push(items)
    }
}

/// Where a connection's messages go.
#[derive(Clone)]
struct Mailbox {
    tx: mpsc::UnboundedSender<Push>,
    /// Bytes queued and not yet taken by the connection.
    queued: Arc<AtomicUsize>,
    slot: Arc<Slot>,
}

impl Mailbox {
    /// Queues `p`; false (and the connection is closed) past the limit.
    fn deliver(&self, p: Push) -> bool {
        let n = p.bytes();
        if self.queued.fetch_add(n, Ordering::SeqCst) + n > OUTPUT_LIMIT {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            if !self.slot.is_killed() {
                tracing::warn!(client = self.slot.id, addr = %self.slot.addr, limit = OUTPUT_LIMIT,
                    "pub/sub client disconnected: its undelivered messages passed the output limit");
                self.slot.hang_up();
            }
            return false;
        }
        self.tx.send(p).is_ok()
    }
}

type Table = HashMap<Vec<u8>, HashMap<u64, Mailbox>>;

/// The subscriptions of every connection of the daemon.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<Table>,
    patterns: Mutex<Table>,
    shards: Mutex<Table>,
}

impl Hub {
    fn table(&self, kind: Kind) -> std::sync::MutexGuard<'_, Table> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shards,
        }
        .lock()
        .expect("pub/sub table lock")
    }

    /// PUBLISH (or SPUBLISH with `shard`): how many subscriptions received
    /// `payload`.
    pub fn publish(&self, channel: &[u8], payload: &[u8], shard: bool) -> i64 {
        let channel = Arc::new(channel.to_vec());
        let payload = Arc::new(payload.to_vec());
        let mut n = 0;
        let push = |pattern: Option<Arc<Vec<u8>>>| Push {
            pattern,
            channel: channel.clone(),
            payload: payload.clone(),
            shard,
        };
        let kind = if shard { Kind::Shard } else { Kind::Channel };
        if let Some(subs) = self.table(kind).get(channel.as_slice()) {
            for m in subs.values() {
                n += i64::from(m.deliver(push(None)));
            }
        }
        if !shard {
            for (pattern, subs) in self.table(Kind::Pattern).iter() {
                if crate::resp::glob::matches(pattern, &channel) {
                    let pattern = Arc::new(pattern.clone());
                    for m in subs.values() {
                        n += i64::from(m.deliver(push(Some(pattern.clone()))));
                    }
                }
            }
        }
        n
    }

    /// The channels (shard channels) with a subscriber, matching `pattern`
    /// if given (PUBSUB CHANNELS, SHARDCHANNELS).
    pub fn active(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self
            .table(kind)
            .keys()
            .filter(|c| pattern.is_none_or(|p| crate::resp::glob::matches(p, c)))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Subscribers of `name` (PUBSUB NUMSUB, SHARDNUMSUB).
    pub fn count(&self, kind: Kind, name: &[u8]) -> usize {
        self.table(kind).get(name).map_or(0, HashMap::len)
    }

    /// Patterns with a subscriber (PUBSUB NUMPAT).
    pub fn patterns(&self) -> usize {
        self.table(Kind::Pattern).len()
    }

    fn add(&self, kind: Kind, name: &[u8], id: u64, m: &Mailbox) {
        self.table(kind)
            .entry(name.to_vec())
            .or_default()
            .insert(id, m.clone());
    }

    fn remove(&self, kind: Kind, name: &[u8], id: u64) {
        let mut t = self.table(kind);
        if let Some(subs) = t.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                t.remove(name);
            }
        }
    }
}

/// One connection's subscriptions and its mailbox; dropping it (the
/// connection ends) unsubscribes from everything.
pub struct Subscriptions {
    server: Arc<crate::resp::Server>,
    mailbox: Mailbox,
    rx: mpsc::UnboundedReceiver<Push>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    shards: BTreeSet<Vec<u8>>,
}

impl Subscriptions {
    /// A connection's (empty) subscriptions.
    pub fn new(server: Arc<crate::resp::Server>, slot: Arc<Slot>) -> Subscriptions {
        let (tx, rx) = mpsc::unbounded_channel();
        Subscriptions {
            server,
            mailbox: Mailbox {
                tx,
                queued: Arc::new(AtomicUsize::new(0)),
                slot,
            },
            rx,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shards: BTreeSet::new(),
        }
    }

    fn set(&mut self, kind: Kind) -> &mut BTreeSet<Vec<u8>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shards,
        }
    }

    /// Channels and patterns subscribed (what the confirmations count;
    /// shard channels are counted apart, as in Redis).
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// Subscriptions of every kind: the connection is in subscribed mode
    /// while this is not 0.
    pub fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shards.len()
    }

    /// (channels, patterns) for CLIENT LIST's `sub` and `psub`, and shard
    /// channels (`ssub`).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.channels.len(), self.patterns.len(), self.shards.len())
    }

    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: a confirmation for each name.
    pub fn subscribe(&mut self, kind: Kind, names: &[Vec<u8>]) -> Vec<Reply> {
        let id = self.mailbox.slot.id;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if self.set(kind).insert(n.clone()) {
                self.server.pubsub.add(kind, n, id, &self.mailbox);
            }
            out.push(Reply::Push(vec![
                Reply::text(kind.words().0),
                Reply::Bulk(n.clone()),
                Reply::Int(self.count(kind) as i64),
            ]));
        }
        out
    }

    /// UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE: a confirmation for each
    /// name (every one subscribed if none is given; one with a nil name
    /// if there is none).
    pub fn unsubscribe(&mut self, kind: Kind, names: &[Vec<u8>]) -> Vec<Reply> {
        let id = self.mailbox.slot.id;
        let names: Vec<Vec<u8>> = if names.is_empty() {
            self.set(kind).iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            return vec![Reply::Push(vec![
                Reply::text(kind.words().1),
                Reply::Null,
                Reply::Int(self.count(kind) as i64),
            ])];
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if self.set(kind).remove(&n) {
                self.server.pubsub.remove(kind, &n, id);
            }
            out.push(Reply::Push(vec![
                Reply::text(kind.words().1),
                Reply::Bulk(n),
                Reply::Int(self.count(kind) as i64),
            ]));
        }
        out
    }

    /// Unsubscribes from everything, with no confirmation (RESET).
    pub fn clear(&mut self) {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            let id = self.mailbox.slot.id;
            for n in std::mem::take(self.set(kind)) {
                self.server.pubsub.remove(kind, &n, id);
            }
        }
    }

    /// The next message (waits for one).
    pub async fn next(&mut self) -> Option<Push> {
        let p = self.rx.recv().await?;
        self.mailbox.queued.fetch_sub(p.bytes(), Ordering::SeqCst);
        Some(p)
    }

    /// A message already queued, if any.
    pub fn try_next(&mut self) -> Option<Push> {
        let p = self.rx.try_recv().ok()?;
        self.mailbox.queued.fetch_sub(p.bytes(), Ordering::SeqCst);
        Some(p)
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.clear();
    }
}

/// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE (`args` = name name [name ...]).
pub fn subscribe_command(cx: &mut crate::resp::Conn, args: &[Vec<u8>], kind: Kind) -> Reply {
    let confirms = cx.subscriptions().subscribe(kind, &args[1..]);
    cx.publish_subscriptions();
    Reply::Many(confirms)
}

/// UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE (`args` = name [name ...]).
pub fn unsubscribe_command(cx: &mut crate::resp::Conn, args: &[Vec<u8>], kind: Kind) -> Reply {
    let confirms = cx.subscriptions().unsubscribe(kind, &args[1..]);
    cx.publish_subscriptions();
    Reply::Many(confirms)
}

/// Whether a command may run on a RESP2 connection in subscribed mode.
pub fn allowed_when_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

/// Whether a command changes subscriptions (refused inside MULTI, as Redis
/// 7.2 does: its confirmations are not one reply).
pub fn is_subscription(name: &str) -> bool {
    matches!(
        name,
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u64) -> Arc<Slot> {
        Arc::new(Slot::new(id, format!("127.0.0.1:{id}"), String::new(), -1))
    }

    #[tokio::test]
    async fn publish_reaches_channel_and_pattern_subscribers_and_drop_leaves() {
        let server = crate::resp::Server::new(1);
        let mut a = Subscriptions::new(server.clone(), slot(1));
        let mut b = Subscriptions::new(server.clone(), slot(2));
        let confirm = a.subscribe(Kind::Channel, &[b"news".to_vec(), b"news".to_vec()]);
        assert_eq!(
            confirm[1],
            Reply::Push(vec![
                Reply::text("subscribe"),
                Reply::Bulk(b"news".to_vec()),
                Reply::Int(1)
            ]),
            "a repeated subscription counts once"
        );
        b.subscribe(Kind::Pattern, &[b"n*".to_vec()]);
        b.subscribe(Kind::Channel, &[b"news".to_vec()]);
        // a once, b by the channel and by the pattern.
        assert_eq!(server.pubsub.publish(b"news", b"hi", false), 3);
        assert_eq!(server.pubsub.publish(b"other", b"x", false), 0);
        assert_eq!(
            server.pubsub.publish(b"news", b"s", true),
            0,
            "shard channels apart"
        );
        let m = a.next().await.unwrap().reply();
        assert_eq!(
            m,
            Reply::Push(vec![
                Reply::text("message"),
                Reply::Bulk(b"news".to_vec()),
                Reply::Bulk(b"hi".to_vec())
            ])
        );
        let got: Vec<Reply> = [b.next().await.unwrap(), b.next().await.unwrap()]
            .iter()
            .map(Push::reply)
            .collect();
        assert!(got.contains(&Reply::Push(vec![
            Reply::text("pmessage"),
            Reply::Bulk(b"n*".to_vec()),
            Reply::Bulk(b"news".to_vec()),
            Reply::Bulk(b"hi".to_vec())
        ])));
        assert_eq!(
            server.pubsub.active(Kind::Channel, None),
            vec![b"news".to_vec()]
        );
        assert_eq!(server.pubsub.count(Kind::Channel, b"news"), 2);
        assert_eq!(server.pubsub.patterns(), 1);
        drop(b);
        assert_eq!(server.pubsub.count(Kind::Channel, b"news"), 1);
        assert_eq!(server.pubsub.patterns(), 0);
        let left = a.unsubscribe(Kind::Channel, &[]);
        assert_eq!(left.len(), 1);
        assert_eq!(a.total(), 0);
        assert!(server.pubsub.active(Kind::Channel, None).is_empty());
        assert_eq!(
            a.unsubscribe(Kind::Pattern, &[]),
            vec![Reply::Push(vec![
                Reply::text("punsubscribe"),
                Reply::Null,
                Reply::Int(0)
            ])]
        );
    }

    #[test]
    fn a_subscriber_past_the_output_limit_is_disconnected() {
        let server = crate::resp::Server::new(1);
        let s = slot(7);
        let mut a = Subscriptions::new(server.clone(), s.clone());
        a.subscribe(Kind::Channel, &[b"big".to_vec()]);
        let payload = vec![b'x'; 1 << 20];
        let mut delivered = 0;
        while server.pubsub.publish(b"big", &payload, false) == 1 {
            delivered += 1;
            assert!(delivered < 64, "the limit never applied");
        }
        assert_eq!(delivered, 31, "32 MiB of 1 MiB messages, less the framing");
        assert!(s.is_killed(), "the connection is closed");
        assert!(a.try_next().is_some());
    }
}
