//! Graceful shutdown: one [`Shutdown`] handle, cloned into every task, as in
//! tokio's mini-redis. SIGTERM (systemd, fleet, kill) or SIGINT (Ctrl-C) triggers
//! it; so can a service itself when a part it cannot run without fails.
//! SIGHUP is the other signal a service answers: [`on_sighup`] re-reads a file.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// "Stop now", shared by every task of a service. Cloning is cheap; triggering any
/// clone stops them all.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that only [`Shutdown::trigger`] sets off (tests, embedded use).
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A handle triggered by SIGTERM or SIGINT, which then tells systemd
    /// `STOPPING=1`. Needs a running tokio runtime.
    pub fn on_signals() -> Shutdown {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signal_received().await;
            crate::systemd::stopping();
            trigger.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown is triggered. The future owns what it needs, so it
    /// can be handed to a server's graceful shutdown or moved into a task.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }
}

/// Completes when the process is asked to stop. If the handlers cannot be installed
/// (which only happens when the runtime is misconfigured) it never completes, and the
/// default signal disposition still stops the process.
async fn signal_received() {
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

/// Runs `reload` on every SIGHUP from now on. The handler is registered before
/// this returns, so a SIGHUP right after start never takes the default action
/// (ending the process). `what` names the file in the log; on an error, `kept`
/// says what stays in use. Needs a tokio runtime.
pub fn on_sighup<E: std::fmt::Display>(
    what: &'static str,
    kept: &'static str,
    reload: impl Fn() -> Result<(), E> + Send + 'static,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: {what} read at start only");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(e) = reload() {
                tracing::error!(error = %e, "SIGHUP: {what} cannot be used; {kept}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_clone_sees_a_trigger_from_any_other() {
        let shutdown = Shutdown::new();
        let (a, b) = (shutdown.clone(), shutdown.clone());
        let waiting = tokio::spawn(a.requested());
        assert!(!b.is_triggered());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished(), "nothing triggered it yet");
        b.trigger();
        waiting.await.unwrap();
        assert!(shutdown.is_triggered());
        // A late waiter completes at once.
        shutdown.requested().await;
    }

    #[tokio::test]
    async fn sigterm_triggers_it() {
        let shutdown = Shutdown::on_signals();
        // Let the spawned task install its handler: until then SIGTERM would end the
        // whole test process.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), shutdown.requested()).await.expect("SIGTERM triggers shutdown");
    }
}
