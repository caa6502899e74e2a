//! Graceful shutdown on SIGTERM (systemd, fleet, kill) or SIGINT (Ctrl-C).

use tokio::signal::unix::{signal, SignalKind};

/// Completes when the process is asked to stop. If the handlers cannot be installed
/// (which only happens when the runtime is misconfigured) it never completes, and the
/// default signal disposition still stops the process.
pub async fn signal_received() {
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot install signal handlers; relying on the default action");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}
