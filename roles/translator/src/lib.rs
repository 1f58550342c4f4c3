//! The hashpool translator: an Sv1 -> Sv2 proxy that opens one upstream channel per Sv1 miner,
//! so each miner's shares are credited to its own key.
//!
//! - [`downstream`]: one task per Sv1 connection (subscribe, configure, authorize, submit).
//! - [`upstream`]: the one Sv2 connection to the pool (`hashpool-sv2-client`: Noise, authority key
//!   checked), one extended channel per authorized miner, reconnecting with backoff while miners
//!   stay connected.
//! - [`reject`]: why a share is not credited, as a metric label and an Sv1 error.
//! - [`job`]: Sv2 jobs as Sv1 notifies and Sv1 shares as Sv2 shares (the extranonce layout).
//! - [`sv1`]: the capped line reader and JSON-RPC classification on top of `sv1_api`.

pub mod config;
pub mod downstream;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod job;
pub mod metrics;
pub mod reject;
pub mod sv1;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use hashpool_service::{accept_until_stopped, listen, ConnectionLimits, ListenError, OnStop};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::TranslatorConfig;
use downstream::{Downstream, DownstreamContext};
use metrics::TranslatorMetrics;
use upstream::Upstream;

/// Commands from miners waiting for the upstream task.
const COMMAND_QUEUE: usize = 4096;

#[derive(Debug, Error)]
pub enum TranslatorError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("extranonce1 ({extranonce1} bytes) + extranonce2 ({extranonce2} bytes) is more than the 32 an extranonce can have")]
    ExtranonceTooLong { extranonce1: u8, extranonce2: u8 },
    #[error("extranonce2_size must be 1..=8 for cgminer-style firmware, not {0}")]
    Extranonce2Size(u8),
}

/// A running translator.
pub struct Translator {
    sv1_address: SocketAddr,
    metrics_address: SocketAddr,
    metrics: Arc<TranslatorMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Translator {
    /// Binds the Sv1 and metrics listeners and starts connecting to the pool. Miners may connect
    /// at once; their channels open when the pool is reachable.
    pub async fn start(config: TranslatorConfig) -> Result<Self, TranslatorError> {
        let downstream_config = config.downstream.clone();
        check_extranonce_sizes(&downstream_config)?;
        let (sv1_listener, sv1_address) = listen(config.listen_address).await?;
        let (metrics_listener, metrics_address) = listen(config.metrics_address).await?;

        let metrics = Arc::new(TranslatorMetrics::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let upstream = Upstream::new(config.upstream.clone(), commands_rx, metrics.clone());
        let context = Arc::new(DownstreamContext {
            config: downstream_config,
            commands,
            metrics: metrics.clone(),
        });
        let tasks = vec![
            tokio::spawn(upstream.run(shutdown_rx.clone())),
            tokio::spawn(accept_loop(
                sv1_listener,
                context,
                config.connections,
                shutdown_rx.clone(),
            )),
            tokio::spawn(metrics::serve(
                metrics_listener,
                metrics.clone(),
                shutdown_rx,
            )),
        ];
        tracing::info!(%sv1_address, %metrics_address, pool = %config.upstream.address, "translator listening");
        Ok(Self {
            sv1_address,
            metrics_address,
            metrics,
            shutdown,
            tasks,
        })
    }

    pub fn sv1_address(&self) -> SocketAddr {
        self.sv1_address
    }

    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    pub fn metrics(&self) -> &Arc<TranslatorMetrics> {
        &self.metrics
    }

    /// Closes every miner connection and the pool connection.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for (index, task) in self.tasks.into_iter().enumerate() {
            let _ = task.await;
            tracing::debug!(index, "translator task stopped");
        }
    }
}

/// Extranonce sizes every miner's firmware and every upstream channel can take.
fn check_extranonce_sizes(config: &config::DownstreamConfig) -> Result<(), TranslatorError> {
    if config.extranonce2_size == 0 || config.extranonce2_size > config::MAX_EXTRANONCE2_SIZE {
        return Err(TranslatorError::Extranonce2Size(config.extranonce2_size));
    }
    if u16::from(config.extranonce1_size) + u16::from(config.extranonce2_size) > 32 {
        return Err(TranslatorError::ExtranonceTooLong {
            extranonce1: config.extranonce1_size,
            extranonce2: config.extranonce2_size,
        });
    }
    Ok(())
}

/// Serves every Sv1 connection until shutdown, each with an id of its own.
async fn accept_loop(
    listener: TcpListener,
    context: Arc<DownstreamContext>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) {
    let mut next_id: upstream::MinerId = 0;
    let connection_shutdown = shutdown.clone();
    accept_until_stopped(
        listener,
        shutdown,
        OnStop::Finish,
        limits,
        move |stream, _| {
            let _ = stream.set_nodelay(true);
            next_id += 1;
            Downstream::serve(
                next_id,
                stream,
                context.clone(),
                connection_shutdown.clone(),
            )
        },
    )
    .await
}
