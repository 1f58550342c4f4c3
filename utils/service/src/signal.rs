use tokio::signal::unix::{signal, Signal, SignalKind};

/// The process's stop signals: Ctrl-C (SIGINT) from a terminal, or SIGTERM from `bin/stack`,
/// devenv or a service manager.
///
/// The handlers are installed by [`ShutdownSignal::install`], before a process starts its work:
/// a signal that arrives while it starts (say, right after it first connects somewhere) is then
/// held for [`ShutdownSignal::received`] instead of killing the process uncleanly.
pub struct ShutdownSignal {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignal {
    pub fn install() -> Self {
        Self {
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT can be handled"),
            terminate: signal(SignalKind::terminate()).expect("SIGTERM can be handled"),
        }
    }

    /// Resolves when the process is asked to stop.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received; stopping"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received; stopping"),
        }
    }
}

/// Resolves once `shutdown` says stop (`true`), or its sender is gone: the in-process stop signal
/// every role's tasks select on.
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
