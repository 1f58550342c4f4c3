/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) from a terminal, or SIGTERM from
/// `bin/stack`, devenv or a service manager.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; stopping"),
        _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
    }
}

/// Resolves once `shutdown` says stop (`true`), or its sender is gone: the in-process stop signal
/// every role's tasks select on.
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
