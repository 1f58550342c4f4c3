//! Running a [`FloodPlan`]: one task per connection slot, and a sampler of the connections open.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval};

use crate::{Behaviour, FloodError, FloodPlan, Protocol};

/// A connect that takes longer than this (the target's backlog is full) counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection closed sooner than this after it opened was refused by a connection cap (or
/// the target is down), not timed out.
const CLOSED_AT_ONCE: Duration = Duration::from_secs(1);
/// When the flood ends, how long a connection may take to show it was being closed anyway.
const STOP_GRACE: Duration = Duration::from_millis(250);
/// How often the connections open are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The moment every slot had made its first connect.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub after: Duration,
    pub open: usize,
}

/// What happened to the flood's connections.
#[derive(Debug, Default)]
pub struct FloodReport {
    pub connections: usize,
    pub sources: usize,
    /// Connections the target accepted (the TCP handshake completed).
    pub opened: u64,
    /// Connects refused or timed out.
    pub connect_failed: u64,
    /// Connections the target closed (or reset).
    pub closed_by_target: u64,
    /// Of those, closed within a second of opening: refused by a connection cap.
    pub closed_at_once: u64,
    /// Connections still open when the flood ended.
    pub held_at_end: u64,
    /// How long each connection the target closed had been open, in ms, sorted.
    pub close_after_ms: Vec<u64>,
    /// When the target first closed a connection, since the flood began.
    pub first_close: Option<Duration>,
    pub ramp: Option<Ramp>,
    /// Connections open, sampled every 100 ms from the ramp to the end.
    pub open_after_ramp: Vec<usize>,
    /// Connections open at each second of the flood.
    pub timeline: Vec<usize>,
    /// Bytes the target sent (the pool's half of the Noise handshake, Sv1 answers).
    pub bytes_received: u64,
}

impl FloodReport {
    pub fn open_min(&self) -> usize {
        self.open_after_ramp.iter().copied().min().unwrap_or(0)
    }

    pub fn open_max(&self) -> usize {
        self.open_after_ramp.iter().copied().max().unwrap_or(0)
    }

    pub fn open_mean(&self) -> f64 {
        if self.open_after_ramp.is_empty() {
            return 0.0;
        }
        self.open_after_ramp.iter().sum::<usize>() as f64 / self.open_after_ramp.len() as f64
    }

    fn add(&mut self, slot: SlotReport) {
        self.opened += slot.opened;
        self.connect_failed += slot.connect_failed;
        self.closed_by_target += slot.close_after_ms.len() as u64;
        self.closed_at_once += slot.closed_at_once;
        self.held_at_end += slot.held_at_end;
        self.close_after_ms.extend(slot.close_after_ms);
        self.first_close = match (self.first_close, slot.first_close) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.bytes_received += slot.bytes_received;
    }
}

/// One slot's part of the report.
#[derive(Debug, Default)]
struct SlotReport {
    opened: u64,
    connect_failed: u64,
    closed_at_once: u64,
    held_at_end: u64,
    close_after_ms: Vec<u64>,
    first_close: Option<Duration>,
    bytes_received: u64,
}

/// What the slots share.
struct Shared {
    plan: FloodPlan,
    started: Instant,
    deadline: Instant,
    /// Says stop before the deadline (the flood was interrupted).
    stop: watch::Receiver<bool>,
    connecting: Semaphore,
    open: AtomicUsize,
    /// Slots that have made their first connect (whatever its outcome).
    first_attempts: AtomicUsize,
}

impl Shared {
    fn over(&self) -> bool {
        Instant::now() >= self.deadline || *self.stop.borrow()
    }

    /// Resolves at the deadline or when told to stop, whichever is first.
    async fn ended(&self) {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => {}
            () = hashpool_service::stopped(&mut stop) => {}
        }
    }
}

/// Runs the flood to its end, or until `stop` says stop; `on_ramped` is called once every slot
/// has made its first connect.
pub async fn run(
    plan: FloodPlan,
    stop: watch::Receiver<bool>,
    on_ramped: impl FnOnce(Ramp) + Send + 'static,
) -> Result<FloodReport, FloodError> {
    let sources = plan.sources()?;
    let started = Instant::now();
    let shared = Arc::new(Shared {
        connecting: Semaphore::new(plan.connect_concurrency),
        deadline: started + plan.duration,
        started,
        stop,
        open: AtomicUsize::new(0),
        first_attempts: AtomicUsize::new(0),
        plan,
    });
    let sampler = tokio::spawn(sample(shared.clone(), on_ramped));
    let mut slots = JoinSet::new();
    for slot in 0..shared.plan.connections {
        let source = sources[slot % sources.len()];
        slots.spawn(run_slot(slot, source, shared.clone()));
    }
    let mut report = FloodReport {
        connections: shared.plan.connections,
        sources: sources.len(),
        ..FloodReport::default()
    };
    while let Some(slot) = slots.join_next().await {
        report.add(slot.expect("a flood slot does not panic"));
    }
    let (ramp, open_after_ramp, timeline) = sampler.await.expect("the sampler does not panic");
    report.ramp = ramp;
    report.open_after_ramp = open_after_ramp;
    report.timeline = timeline;
    report.close_after_ms.sort_unstable();
    Ok(report)
}

/// Samples the connections open until the deadline; reports the ramp when it happens.
async fn sample(
    shared: Arc<Shared>,
    on_ramped: impl FnOnce(Ramp) + Send,
) -> (Option<Ramp>, Vec<usize>, Vec<usize>) {
    let mut on_ramped = Some(on_ramped);
    let mut ramp = None;
    let (mut after_ramp, mut timeline) = (Vec::new(), Vec::new());
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    let per_second = (Duration::from_secs(1).as_millis() / SAMPLE_EVERY.as_millis()) as usize;
    for tick in 0.. {
        ticks.tick().await;
        if shared.over() {
            break;
        }
        let open = shared.open.load(Ordering::SeqCst);
        if tick % per_second == 0 {
            timeline.push(open);
        }
        if ramp.is_none() && shared.first_attempts.load(Ordering::SeqCst) >= shared.plan.connections
        {
            let ramped = Ramp {
                after: shared.started.elapsed(),
                open,
            };
            ramp = Some(ramped);
            if let Some(on_ramped) = on_ramped.take() {
                on_ramped(ramped);
            }
        }
        if ramp.is_some() {
            after_ramp.push(open);
        }
    }
    (ramp, after_ramp, timeline)
}

/// One slot: a connection at a time, replaced when the target closes it, until the deadline.
async fn run_slot(slot: usize, source: Ipv4Addr, shared: Arc<Shared>) -> SlotReport {
    let plan = &shared.plan;
    let behaviour = plan.mode.behaviour(slot);
    let mut report = SlotReport::default();
    let mut first = true;
    while !shared.over() {
        let attempt = Instant::now();
        let connected = tokio::select! {
            connected = async {
                let _permit = shared.connecting.acquire().await.expect("never closed");
                tokio::time::timeout(CONNECT_TIMEOUT, connect(source, plan.target)).await
            } => connected,
            () = shared.ended() => break,
        };
        let connected = connected.ok().and_then(Result::ok);
        if connected.is_some() {
            shared.open.fetch_add(1, Ordering::SeqCst);
        }
        // Counted after the connection, so the ramp's sample includes it.
        if first {
            first = false;
            shared.first_attempts.fetch_add(1, Ordering::SeqCst);
        }
        match connected {
            Some(stream) => {
                report.opened += 1;
                let opened = Instant::now();
                let held = hold(stream, plan.protocol, behaviour, slot, &shared).await;
                shared.open.fetch_sub(1, Ordering::SeqCst);
                report.bytes_received += held.bytes_received;
                if held.closed_by_target {
                    let after = opened.elapsed();
                    report.close_after_ms.push(after.as_millis() as u64);
                    if after < CLOSED_AT_ONCE {
                        report.closed_at_once += 1;
                    }
                    let since_start = opened.duration_since(shared.started) + after;
                    report.first_close = Some(
                        report
                            .first_close
                            .map_or(since_start, |first| first.min(since_start)),
                    );
                } else {
                    report.held_at_end += 1;
                }
            }
            None => report.connect_failed += 1,
        }
        tokio::select! {
            () = tokio::time::sleep_until(attempt + plan.redial_interval) => {}
            () = shared.ended() => break,
        }
    }
    report
}

/// A connection from `source` (any free port) to `target`.
async fn connect(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // The previous flood's connections may still be in TIME_WAIT on this address's ports.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(target).await
}

struct Held {
    closed_by_target: bool,
    bytes_received: u64,
}

/// Holds `stream` open, behaving as `behaviour`, until the target closes it or the flood ends.
async fn hold(
    stream: TcpStream,
    protocol: Protocol,
    behaviour: Behaviour,
    slot: usize,
    shared: &Shared,
) -> Held {
    let (mut reader, mut writer) = stream.into_split();
    let mut held = Held {
        closed_by_target: true,
        bytes_received: 0,
    };
    let opening = protocol.opening(behaviour, slot);
    if !opening.is_empty() && writer.write_all(&opening).await.is_err() {
        return held;
    }
    let mut trickle = (behaviour == Behaviour::Slowloris)
        .then(|| tokio::time::interval(shared.plan.byte_interval));
    let mut trickled = 0usize;
    let mut buffer = [0u8; 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return held,
                Ok(read) => held.bytes_received += read as u64,
            },
            () = next_tick(&mut trickle) => {
                if writer.write_all(&[protocol.trickle(trickled)]).await.is_err() {
                    return held;
                }
                trickled += 1;
            }
            () = shared.ended() => {
                // A connection the target is closing right now (one over a cap, accepted and
                // dropped) is not one it held: give its close a moment to arrive.
                held.closed_by_target = matches!(
                    tokio::time::timeout(STOP_GRACE, reader.read(&mut buffer)).await,
                    Ok(Ok(0) | Err(_))
                );
                return held;
            }
        }
    }
}

/// The next tick of `interval`; never, without one.
async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;
    use tokio::net::TcpListener;

    fn plan(target: SocketAddr, mode: Mode, connections: usize, sources: usize) -> FloodPlan {
        FloodPlan {
            target,
            protocol: Protocol::Http,
            mode,
            connections,
            duration: Duration::from_secs(1),
            sources,
            byte_interval: Duration::from_millis(50),
            redial_interval: Duration::from_millis(200),
            connect_concurrency: 8,
        }
    }

    /// A target that holds every connection open and reads what it is sent: the flood holds its
    /// connections to the end, from every source address, and a slow-loris trickles bytes.
    #[tokio::test]
    async fn holds_its_connections_from_every_source_until_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (peers, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, peer) = listener.accept().await.unwrap();
                let peers = peers.clone();
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    let _ = stream.read_to_end(&mut received).await;
                    let _ = peers.send((peer.ip(), received));
                });
            }
        });
        let (_stop, stopping) = watch::channel(false);
        let report = run(plan(target, Mode::Mix, 6, 3), stopping, |_| {})
            .await
            .unwrap();
        assert_eq!(report.opened, 6);
        assert_eq!(report.held_at_end, 6);
        assert_eq!(report.closed_by_target, 0);
        assert_eq!(report.ramp.map(|ramp| ramp.open), Some(6));
        assert_eq!(report.open_max(), 6);
        // The flood closes its connections when it ends: each peer reports what it received.
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(accepted.recv().await.unwrap());
        }
        let mut sources: Vec<_> = seen.iter().map(|(ip, _)| ip.to_string()).collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
        let slow = seen
            .iter()
            .find(|(_, received)| received.ends_with(b"aa"))
            .expect("a slow-loris connection trickled its header");
        assert!(slow.1.starts_with(crate::HTTP_REQUEST_START));
    }

    /// A target that closes every connection at once: each is counted as closed by the target,
    /// at once, and the slot redials no more often than its interval.
    #[tokio::test]
    async fn counts_connections_the_target_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                drop(listener.accept().await.unwrap());
            }
        });
        let (_stop, stopping) = watch::channel(false);
        let report = run(plan(target, Mode::Idle, 2, 1), stopping, |_| {})
            .await
            .unwrap();
        assert!(report.closed_by_target >= 2, "{report:?}");
        assert_eq!(report.closed_by_target, report.closed_at_once);
        assert_eq!(report.opened, report.closed_by_target + report.held_at_end);
        // 1 s at one connect per 200 ms: at most 5 (and a boundary one) per slot.
        assert!(report.opened <= 2 * 6, "{report:?}");
        assert!(report.first_close.is_some());
    }

    /// Told to stop, a flood planned for an hour ends at once and reports what it held.
    #[tokio::test]
    async fn stops_when_told() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap());
            }
        });
        let (stop, stopping) = watch::channel(false);
        let (ramped, on_ramp) = tokio::sync::oneshot::channel();
        let flood = tokio::spawn(run(
            FloodPlan {
                duration: Duration::from_secs(3600),
                ..plan(target, Mode::Idle, 3, 1)
            },
            stopping,
            move |ramp| {
                let _ = ramped.send(ramp);
            },
        ));
        assert_eq!(on_ramp.await.unwrap().open, 3);
        stop.send(true).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(5), flood)
            .await
            .expect("stopped at once")
            .unwrap()
            .unwrap();
        assert_eq!((report.opened, report.held_at_end), (3, 3));
    }
}
