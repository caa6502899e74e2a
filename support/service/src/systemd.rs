//! systemd integration (`Type=notify`, `WatchdogSec=`), through `sd_notify(3)`.
//!
//! - [`ready`]: `READY=1` and a `STATUS=` line, sent once the service really serves
//!   (listeners bound, first etcd round done), never earlier;
//! - [`spawn_watchdog`]: when systemd asked for a watchdog (`WATCHDOG_USEC`, and
//!   `WATCHDOG_PID` naming this process if set), a task on the service's own runtime
//!   sends `WATCHDOG=1` every half interval, so a runtime that stops scheduling tasks
//!   stops feeding it and systemd restarts the service;
//! - [`stopping`]: `STOPPING=1` when a graceful shutdown begins;
//! - [`status`]: a free-form `STATUS=` line (`systemctl status` shows it).
//!
//! Without `NOTIFY_SOCKET` (not started by systemd, tests, fleet on an old systemd)
//! every function does nothing. A failure to notify is logged, never fatal.

use std::time::Duration;

use sd_notify::NotifyState;

/// True when a service manager listens for notifications.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|socket| !socket.is_empty())
}

fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Tells systemd the service is up and serving; `status` says what it serves.
pub fn ready(status: &str) {
    let status = one_line(status);
    if enabled() {
        tracing::info!(status = %status, "notifying systemd: ready");
    }
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))]);
}

/// Tells systemd a graceful shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for, if any (and only with `NOTIFY_SOCKET`).
pub fn watchdog_interval() -> Option<Duration> {
    if !enabled() {
        return None;
    }
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

/// Starts feeding the watchdog (every half interval) on the current tokio runtime,
/// if systemd asked for one; `None` otherwise. Call from within the runtime.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    let period = (interval / 2).max(Duration::from_millis(1));
    tracing::info!(watchdog_ms = interval.as_millis() as u64, "feeding the systemd watchdog");
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}

/// A notification is newline-separated `REDIS_TOPOLOGY_KEY=value` lines: a status must be one line.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}
