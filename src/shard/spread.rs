//! Spreading each protocol's connections evenly over the shard threads.
//!
//! Every shard thread listens on the same port (SO_REUSEPORT), and the
//! kernel picks the listener by a hash of the connection's addresses. With
//! many connections that evens out; with a few it often does not: four
//! connections over two threads all land on one of them one time in eight
//! and three to one half the time, and the busier thread then does most of
//! the protocol work while the other idles. A benchmark client with four
//! gRPC connections measured the spread it happened to get as the run's
//! throughput (77k-89k unary Gets/s between runs of one build).
//!
//! So the accept loops of a protocol share a count of the connections each
//! shard serves, and a shard that accepts a connection while another shard
//! serves fewer hands the socket over to the least loaded one (ties stay
//! where they landed): a bounded channel per shard, read by that shard's
//! accept loop beside its listener. A connection lives on one thread from
//! then on; only its accept costs the hop. If the other shard's channel is
//! full or closed (it is shutting down), the connection stays.
//!
//! Counts are of open connections, not of their load, and two shards
//! accepting at the same instant may both pick the same target; both are
//! approximations a later accept corrects. The counts are published as
//! `flashkv_shard_connections{protocol, shard}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGauge;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Connections waiting in a shard's hand-over channel at most.
const HANDOFF_QUEUE: usize = 64;

/// A connection on its way to another shard.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    seat: Seat,
}

/// One protocol's connection counts and hand-over channels, shared by its
/// accept loops.
struct Spread {
    /// Connections each shard serves. Not read back from `gauges`: those
    /// are process-wide series, shared by every daemon a process runs
    /// (tests run several), while these counts are this daemon's.
    live: Box<[AtomicUsize]>,
    gauges: Box<[IntGauge]>,
    inboxes: Box<[mpsc::Sender<Handoff>]>,
}

impl Spread {
    /// The shard that should serve a connection accepted on `here`: the
    /// one serving the fewest, `here` on a tie.
    fn pick(&self, here: usize) -> usize {
        let mut best = here;
        let mut fewest = self.live[here].load(Ordering::SeqCst);
        for (i, n) in self.live.iter().enumerate() {
            let n = n.load(Ordering::SeqCst);
            if n < fewest {
                best = i;
                fewest = n;
            }
        }
        best
    }
}

/// A connection's place in its shard's count; dropping it (the connection
/// closed) frees the place.
#[must_use]
pub struct Seat(Option<(Arc<Spread>, usize)>);

impl Seat {
    fn take(spread: &Arc<Spread>, shard: usize) -> Seat {
        spread.live[shard].fetch_add(1, Ordering::SeqCst);
        spread.gauges[shard].inc();
        Seat(Some((spread.clone(), shard)))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some((spread, shard)) = self.0.take() {
            spread.live[shard].fetch_sub(1, Ordering::SeqCst);
            spread.gauges[shard].dec();
        }
    }
}

/// A shard's listener for one protocol, before its runtime starts.
pub struct Listener {
    listener: std::net::TcpListener,
    share: Option<Share>,
}

/// A shard's part of a [`Spread`].
struct Share {
    shard: usize,
    spread: Arc<Spread>,
    inbox: mpsc::Receiver<Handoff>,
}

/// The listeners of one protocol, one per shard (`listeners[i]` is shard
/// `i`'s), sharing their connections evenly.
pub fn spread(protocol: &str, listeners: Vec<std::net::TcpListener>) -> Vec<Listener> {
    let n = listeners.len();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| mpsc::channel(HANDOFF_QUEUE)).unzip();
    let spread = Arc::new(Spread {
        live: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        gauges: (0..n)
            .map(|i| crate::metrics::metrics().shard_connections(protocol, i))
            .collect(),
        inboxes: senders.into(),
    });
    listeners
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(shard, (listener, inbox))| Listener {
            listener,
            share: Some(Share {
                shard,
                spread: spread.clone(),
                inbox,
            }),
        })
        .collect()
}

impl Listener {
    /// A listener that serves whatever it accepts (no other shards).
    pub fn alone(listener: std::net::TcpListener) -> Listener {
        Listener {
            listener,
            share: None,
        }
    }

    /// The accept loop's end of it; call on the runtime that will serve the
    /// connections.
    pub fn acceptor(self) -> std::io::Result<Acceptor> {
        Ok(Acceptor {
            listener: tokio::net::TcpListener::from_std(self.listener)?,
            share: self.share,
        })
    }
}

/// Accepts the connections a shard serves for one protocol.
pub struct Acceptor {
    listener: tokio::net::TcpListener,
    share: Option<Share>,
}

impl Acceptor {
    /// The next connection this shard serves: one accepted here and kept,
    /// or one another shard handed over. The seat goes with the connection.
    /// An error is the listener's (out of descriptors and the like).
    pub async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr, Seat)> {
        let Some(share) = &mut self.share else {
            let (stream, peer) = self.listener.accept().await?;
            return Ok((stream, peer, Seat(None)));
        };
        loop {
            let (stream, peer) = tokio::select! {
                // Handed-over connections first: they are already counted here.
                biased;
                Some(h) = share.inbox.recv() => match TcpStream::from_std(h.stream) {
                    Ok(stream) => return Ok((stream, h.peer, h.seat)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a connection handed over by another shard was lost");
                        continue;
                    }
                },
                accepted = self.listener.accept() => accepted?,
            };
            let to = share.spread.pick(share.shard);
            let seat = Seat::take(&share.spread, to);
            if to == share.shard {
                return Ok((stream, peer, seat));
            }
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "connection closed before its hand-over");
                    continue;
                }
            };
            match share.spread.inboxes[to].try_send(Handoff { stream, peer, seat }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(h) | mpsc::error::TrySendError::Closed(h)) => {
                    // Busy or shutting down: serve it here after all.
                    drop(h.seat);
                    let seat = Seat::take(&share.spread, share.shard);
                    return Ok((TcpStream::from_std(h.stream)?, h.peer, seat));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    fn listeners(n: usize) -> (SocketAddr, Vec<std::net::TcpListener>) {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = first.local_addr().expect("addr");
        let mut all = vec![first];
        // Plain listeners on other ports stand in for the reuseport group:
        // what matters is which acceptor a connection arrives at.
        for _ in 1..n {
            all.push(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
        }
        for l in &all {
            l.set_nonblocking(true).expect("nonblocking");
        }
        (addr, all)
    }

    #[test]
    fn connections_landing_on_one_shard_are_spread_over_all() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (addr, ls) = listeners(3);
            let mut acceptors: Vec<Acceptor> = spread("test-spread", ls)
                .into_iter()
                .map(|l| l.acceptor().expect("acceptor"))
                .collect();
            let live = |a: &Acceptor| {
                let s = a.share.as_ref().expect("shared");
                let n = s.spread.live.iter().map(|n| n.load(Ordering::SeqCst));
                n.collect::<Vec<_>>()
            };
            let idle = Duration::from_millis(200);
            // Six connections, all arriving at shard 0's listener.
            let mut clients = Vec::new();
            for _ in 0..6 {
                clients.push(TcpStream::connect(addr).await.expect("connect"));
            }
            let mut served: Vec<Vec<(TcpStream, Seat)>> = (0..3).map(|_| Vec::new()).collect();
            // Shard 0 keeps the 1st and the 4th (ties), hands the rest on,
            // then waits for more.
            for _ in 0..2 {
                let (s, _, seat) = acceptors[0].accept().await.expect("accept");
                served[0].push((s, seat));
            }
            assert!(timeout(idle, acceptors[0].accept()).await.is_err());
            for (i, a) in acceptors.iter_mut().enumerate().skip(1) {
                for _ in 0..2 {
                    let (s, _, seat) = timeout(idle, a.accept())
                        .await
                        .expect("handed over")
                        .expect("accept");
                    served[i].push((s, seat));
                }
                assert!(timeout(idle, a.accept()).await.is_err());
            }
            assert_eq!(live(&acceptors[0]), vec![2, 2, 2]);
            // A closed connection frees its seat: the next one goes there.
            served[2].pop();
            assert_eq!(live(&acceptors[0]), vec![2, 2, 1]);
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            assert!(timeout(idle, acceptors[0].accept()).await.is_err());
            let (s, _, seat) = timeout(idle, acceptors[2].accept())
                .await
                .expect("handed over")
                .expect("accept");
            served[2].push((s, seat));
            assert_eq!(live(&acceptors[0]), vec![2, 2, 2]);
        });
    }
}
