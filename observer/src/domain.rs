//! Does this observer's `--domain` match the zone dnsd serves (`/domain` in etcd)?
//! With a mismatch the observer cannot match topology members to registrations, and
//! failover would quietly find "no healthy slave" among reachable ones; so it is
//! logged at error and shown in `GET /status` as `domain_error` until fixed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use topology::Keys;

/// How often `/domain` is read again (an operator may fix either side at any time).
const RECHECK: Duration = Duration::from_secs(5);

/// The sentence `/status` shows when `ours` differs from what dnsd recorded. Pure.
pub fn mismatch(ours: &str, dnsd: Option<&str>, key: &str) -> Option<String> {
    let dnsd = dnsd.map(str::trim).filter(|d| !d.is_empty())?;
    let dnsd = dnsd.strip_suffix('.').unwrap_or(dnsd).to_ascii_lowercase();
    (dnsd != ours).then(|| {
        format!("--domain is {ours} but dnsd serves {dnsd} ({key} in etcd): topology members cannot be matched to registrations, so failover finds no slave; set --domain {dnsd}")
    })
}

/// The current mismatch, shared with `/status`.
pub type DomainError = Arc<Mutex<Option<String>>>;

/// Reads `/domain` every few seconds and keeps `error` up to date; runs until aborted.
pub async fn watch(mut etcd: etcd_client::Client, keys: Keys, ours: String, error: DomainError) {
    let key = keys.domain();
    loop {
        if let Ok(got) = etcd.get(key.as_str(), None).await {
            let stored = got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            let now = mismatch(&ours, stored.as_deref(), &key);
            let mut current = error.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match (&now, current.is_some()) {
                (Some(sentence), false) => tracing::error!("{sentence}"),
                (None, true) => tracing::info!(domain = ours, "--domain now matches dnsd's"),
                _ => {}
            }
            *current = now;
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_recorded_domain_is_a_mismatch() {
        assert_eq!(mismatch("cluster.local", None, "/domain"), None, "no dnsd has recorded one yet");
        assert_eq!(mismatch("cluster.local", Some("cluster.local"), "/domain"), None);
        assert_eq!(mismatch("cluster.local", Some("Cluster.Local."), "/domain"), None);
        let e = mismatch("cluster.local", Some("example.org"), "/p/domain").unwrap_or_default();
        assert!(e.contains("--domain is cluster.local but dnsd serves example.org (/p/domain in etcd)"), "{e}");
    }
}
