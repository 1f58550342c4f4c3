//! A bounded connection flood, loopback only, for the flood benchmark (`benches/flood`) and for
//! drills against a local stack: many connections that hold a server's resources without doing
//! anything useful, the way a cheap denial-of-service attempt does.
//!
//! - `idle`: connect and send nothing.
//! - `slowloris`: send a byte at a time (one a second by default): the Noise `-> e` key for Sv2,
//!   a `mining.subscribe` line that never ends for Sv1, a request header that never ends for HTTP.
//! - `half-handshake`: send the first part of the opening and then nothing: half (32 bytes) or
//!   all (64) of the Noise `-> e` for Sv2 (all of it: the pool answers, and the connection then
//!   never sends SetupConnection), an Sv1 `mining.subscribe` never followed by
//!   `mining.authorize`, an HTTP request line and headers without the blank line that ends them.
//! - `mix`: a third of the connections each.
//!
//! Each connection slot reconnects when the target closes its connection (at most once per
//! redial interval, so a target that closes everything at once is not hammered with connects),
//! and the flood stops after its duration: it is bounded in connections, rate and time.
//!
//! A server caps connections per source address; the flood spreads its slots over source
//! addresses 127.0.0.2, 127.0.0.3, ... (all loopback on Linux) by binding each socket before it
//! connects, so a single machine can hold 10,000 connections against one port, or use a single
//! address to see the per-address cap at work.
//!
//! [`probe`] times plain HTTP requests, for the honest client's view of the mint under a flood.

mod flood;
pub mod probe;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

pub use flood::{run, FloodReport, Ramp};

/// The most source addresses: 127.0.0.2 to 127.0.0.255.
pub const MAX_SOURCES: usize = 254;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FloodError {
    #[error("{0} is not a loopback address: the flood only runs against this machine")]
    NotLoopback(SocketAddr),
    #[error("{0}: the flood spreads its sources over IPv4 loopback (127.0.0.0/8); use 127.0.0.1")]
    NotIpv4(SocketAddr),
    #[error("between 1 and {MAX_SOURCES} source addresses, not {0}")]
    Sources(usize),
    #[error("a flood needs at least one connection, one second and one connect at a time")]
    Empty,
}

/// What the target speaks, which decides what a connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Stratum V2 over Noise (the pool).
    Sv2,
    /// Stratum V1 JSON lines (the translator).
    Sv1,
    /// HTTP/1.1 (the mint).
    Http,
}

/// How each connection behaves once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Idle,
    Slowloris,
    HalfHandshake,
    /// Idle, slow-loris and half-handshake connections in turn.
    Mix,
}

/// What one connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Idle,
    Slowloris,
    HalfHandshake,
}

impl Mode {
    /// The behaviour of connection slot `slot`.
    fn behaviour(self, slot: usize) -> Behaviour {
        match self {
            Mode::Idle => Behaviour::Idle,
            Mode::Slowloris => Behaviour::Slowloris,
            Mode::HalfHandshake => Behaviour::HalfHandshake,
            Mode::Mix => [
                Behaviour::Idle,
                Behaviour::Slowloris,
                Behaviour::HalfHandshake,
            ][slot % 3],
        }
    }
}

/// The Noise `-> e` message: the initiator's ephemeral key, ElligatorSwift-encoded. Every 64-byte
/// string encodes a point, so random bytes are a key the pool cannot tell from a real one.
const NOISE_E_LEN: usize = 64;
const SV1_SUBSCRIBE: &[u8] = br#"{"id":1,"method":"mining.subscribe","params":["flood/1.0"]}"#;
const HTTP_REQUEST_START: &[u8] = b"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n";

impl Protocol {
    /// What a connection sends as soon as it is open.
    fn opening(self, behaviour: Behaviour, slot: usize) -> Vec<u8> {
        match (self, behaviour) {
            (_, Behaviour::Idle) => Vec::new(),
            (Protocol::Sv2, Behaviour::Slowloris) | (Protocol::Sv1, Behaviour::Slowloris) => {
                Vec::new()
            }
            (Protocol::Http, Behaviour::Slowloris) => {
                [HTTP_REQUEST_START, b"X-Flood: ".as_slice()].concat()
            }
            // Half of `-> e` on even slots, all of it on odd ones.
            (Protocol::Sv2, Behaviour::HalfHandshake) => {
                let length = if slot % 2 == 0 {
                    NOISE_E_LEN / 2
                } else {
                    NOISE_E_LEN
                };
                (0..length).map(|_| rand::random::<u8>()).collect()
            }
            (Protocol::Sv1, Behaviour::HalfHandshake) => [SV1_SUBSCRIBE, b"\n"].concat(),
            (Protocol::Http, Behaviour::HalfHandshake) => HTTP_REQUEST_START.to_vec(),
        }
    }

    /// The `index`-th byte a slow-loris connection trickles after its opening: a message that
    /// never ends.
    fn trickle(self, index: usize) -> u8 {
        match self {
            // The `-> e` key, then more random bytes (as a garbled frame would be).
            Protocol::Sv2 => rand::random(),
            // The subscribe line, then spaces: never the newline that ends it.
            Protocol::Sv1 => SV1_SUBSCRIBE.get(index).copied().unwrap_or(b' '),
            // One header value that never ends.
            Protocol::Http => b'a',
        }
    }
}

/// What to flood, how, and for how long.
#[derive(Debug, Clone)]
pub struct FloodPlan {
    pub target: SocketAddr,
    pub protocol: Protocol,
    pub mode: Mode,
    /// Connection slots: connections held open at once, at most.
    pub connections: usize,
    pub duration: Duration,
    /// Source addresses to spread the slots over, from 127.0.0.2 up.
    pub sources: usize,
    /// How often a slow-loris connection sends its next byte.
    pub byte_interval: Duration,
    /// A slot connects at most once per this long: a closed connection is replaced at once if
    /// it lived this long, otherwise when this long has passed since it was opened.
    pub redial_interval: Duration,
    /// Connects in flight at once (the target's accept backlog is finite).
    pub connect_concurrency: usize,
}

impl FloodPlan {
    /// Checks the plan; returns the source addresses to use.
    pub fn sources(&self) -> Result<Vec<Ipv4Addr>, FloodError> {
        if !self.target.ip().is_loopback() {
            return Err(FloodError::NotLoopback(self.target));
        }
        if !self.target.is_ipv4() {
            return Err(FloodError::NotIpv4(self.target));
        }
        if self.sources == 0 || self.sources > MAX_SOURCES {
            return Err(FloodError::Sources(self.sources));
        }
        if self.connections == 0 || self.duration < Duration::from_secs(1) {
            return Err(FloodError::Empty);
        }
        if self.connect_concurrency == 0 {
            return Err(FloodError::Empty);
        }
        Ok((0..self.sources)
            .map(|index| Ipv4Addr::new(127, 0, 0, 2 + index as u8))
            .collect())
    }
}

/// The value below which fraction `p` of the sorted `values` lie (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(target: &str) -> FloodPlan {
        FloodPlan {
            target: target.parse().unwrap(),
            protocol: Protocol::Sv2,
            mode: Mode::Mix,
            connections: 10,
            duration: Duration::from_secs(1),
            sources: 3,
            byte_interval: Duration::from_secs(1),
            redial_interval: Duration::from_secs(1),
            connect_concurrency: 4,
        }
    }

    #[test]
    fn only_loopback_targets_are_flooded() {
        assert_eq!(
            plan("10.0.0.1:34254").sources(),
            Err(FloodError::NotLoopback("10.0.0.1:34254".parse().unwrap()))
        );
        assert_eq!(
            plan("[::1]:34254").sources(),
            Err(FloodError::NotIpv4("[::1]:34254".parse().unwrap()))
        );
        let sources = plan("127.0.0.1:34254").sources().unwrap();
        assert_eq!(
            sources,
            ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(|ip| ip.parse::<Ipv4Addr>().unwrap())
        );
        let too_many = FloodPlan {
            sources: MAX_SOURCES + 1,
            ..plan("127.0.0.1:1")
        };
        assert_eq!(
            too_many.sources(),
            Err(FloodError::Sources(MAX_SOURCES + 1))
        );
        let last = FloodPlan {
            sources: MAX_SOURCES,
            ..plan("127.0.0.1:1")
        };
        assert_eq!(
            last.sources().unwrap().last(),
            Some(&Ipv4Addr::new(127, 0, 0, 255))
        );
    }

    #[test]
    fn no_opening_ever_completes_its_protocols_first_step() {
        for slot in 0..6 {
            for mode in [Mode::Idle, Mode::Slowloris, Mode::HalfHandshake, Mode::Mix] {
                let behaviour = mode.behaviour(slot);
                let sv2 = Protocol::Sv2.opening(behaviour, slot);
                assert!(sv2.len() <= NOISE_E_LEN);
                let http = Protocol::Http.opening(behaviour, slot);
                assert!(!http.windows(4).any(|window| window == b"\r\n\r\n"));
                // Sv1: at most the subscribe line; never an authorize.
                let sv1 = Protocol::Sv1.opening(behaviour, slot);
                assert!(!String::from_utf8_lossy(&sv1).contains("authorize"));
            }
        }
        assert_eq!(Protocol::Sv2.opening(Behaviour::HalfHandshake, 0).len(), 32);
        assert_eq!(Protocol::Sv2.opening(Behaviour::HalfHandshake, 1).len(), 64);
        assert!((0..10_000).all(|index| Protocol::Sv1.trickle(index) != b'\n'));
    }

    #[test]
    fn percentiles_of_sorted_values() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 51);
        assert_eq!(percentile(&values, 0.99), 100);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
