//! `service::cli::EtcdArgs` against a real etcd with client TLS (certificates made
//! in the test) and auth on: a service user whose role may read and write only
//! under the installation's prefix. A wrong CA, certificate, password or prefix
//! is an error naming the endpoint, never a hang.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;
use harness::tls::TestCa;
use harness::Etcd;
use service::cli::EtcdArgs;
use service::etcd::{follow, FollowPolicy, Follower, KeptLease};

const PREFIX: &str = "/redis-topology";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// The flags a service gets, with `replace` swapping one flag's value.
fn args(etcd: &Etcd, replace: &[(&str, &str)]) -> EtcdArgs {
    let mut args = etcd.service_args();
    for (flag, value) in replace {
        let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[at + 1] = value.to_string();
    }
    Cli::try_parse_from(std::iter::once("test".to_string()).chain(args)).unwrap().etcd
}

/// The error `connect` gives; panics if it connects.
async fn refused(args: &EtcdArgs) -> String {
    match connect(args).await {
        Ok(_) => panic!("connected with {args:?}"),
        Err(e) => {
            eprintln!("refused: {e}");
            e
        }
    }
}

/// Connects, bounded: a hang fails the test instead of stalling it.
async fn connect(args: &EtcdArgs) -> Result<etcd_client::Client, String> {
    tokio::time::timeout(Duration::from_secs(30), args.connect())
        .await
        .expect("connect hung instead of failing")
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_service_user_works_under_its_prefix_over_tls_and_nowhere_else() {
    let etcd = Etcd::start_secure(PREFIX);
    let args = args(&etcd, &[]);
    assert!(args.secured());
    let mut client = connect(&args).await.unwrap();
    let key = args.keys().domain();
    assert!(key.starts_with(PREFIX), "{key}");
    client.put(key.as_str(), "cluster.local", None).await.unwrap();
    let got = client.get(key.as_str(), None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"cluster.local");

    // A lease, and the list-then-watch every service runs.
    let lease = KeptLease::grant(&mut client, Duration::from_secs(5)).await.unwrap();
    let node = args.keys().node("redis-1", "node-1");
    client.put(node.as_str(), "{}", Some(etcd_client::PutOptions::new().with_lease(lease.id()))).await.unwrap();
    struct Seen(tokio::sync::mpsc::UnboundedSender<Vec<String>>);
    impl Follower for Seen {
        fn listed(&mut self, _revision: i64, kvs: &[etcd_client::KeyValue]) {
            let _ = self.0.send(kvs.iter().map(|kv| kv.key_str().unwrap().to_string()).collect());
        }
        fn changed(&mut self, events: &[etcd_client::Event]) {
            let _ = self.0.send(events.iter().map(|e| e.kv().unwrap().key_str().unwrap().to_string()).collect());
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let prefixes = vec![args.keys().nodes_prefix()];
    let follow_args = args.clone();
    let follower = tokio::spawn(async move {
        follow(|| follow_args.connect(), &prefixes, &FollowPolicy::default(), &mut Seen(tx)).await;
    });
    assert_eq!(rx.recv().await.unwrap(), vec![node.clone()], "the list");
    let other = args.keys().node("redis-1", "node-2");
    client.put(other.as_str(), "{}", None).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), vec![other], "the watch");
    follower.abort();

    // Outside the prefix, etcd refuses the role.
    let outside = client.put("/elsewhere", "x", None).await.unwrap_err().to_string();
    assert!(outside.contains("permission denied"), "{outside}");
    let outside = client.get("/config/redis-1/topology", None).await.unwrap_err().to_string();
    assert!(outside.contains("permission denied"), "{outside}");
}

#[tokio::test]
async fn etcdctls_user_colon_password_form_works_and_is_never_shown() {
    let etcd = Etcd::start_secure(PREFIX);
    let mut args = args(&etcd, &[]);
    args.etcd_user = Some("redis-topology:service-s3cret".into());
    args.etcd_password_file = None;
    let mut client = connect(&args).await.unwrap();
    client.get(args.keys().domain(), None).await.unwrap();
    let shown = format!("{args:?}");
    assert!(!shown.contains("service-s3cret") && shown.contains("redis-topology"), "{shown}");
}

#[tokio::test]
async fn a_wrong_ca_is_an_error_naming_the_endpoint() {
    let etcd = Etcd::start_secure(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new(dir.path(), "other");
    let err = refused(&args(&etcd, &[("--etcd-cacert", &other.cert.display().to_string())])).await;
    assert!(err.contains(&etcd.endpoint()), "{err}");
    assert!(err.contains("UnknownIssuer") || err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_an_error_naming_the_endpoint() {
    let etcd = Etcd::start_secure(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new(dir.path(), "other").client("client", "redis-topology");
    let (cert, key) = (other.cert.display().to_string(), other.key.display().to_string());
    let err = refused(&args(&etcd, &[("--etcd-cert", &cert), ("--etcd-key", &key)])).await;
    assert!(err.contains(&etcd.endpoint()) && err.contains("--etcd-cert"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_an_error_naming_the_endpoint_and_not_the_password() {
    let etcd = Etcd::start_secure(PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let err = refused(&args(&etcd, &[("--etcd-password-file", &wrong.display().to_string())])).await;
    assert!(err.contains(&etcd.endpoint()) && err.contains("authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let missing = dir.path().join("missing");
    let err = refused(&args(&etcd, &[("--etcd-password-file", &missing.display().to_string())])).await;
    assert!(err.contains(&missing.display().to_string()) && err.contains("etcd password"), "{err}");
}

#[tokio::test]
async fn a_prefix_outside_the_role_is_refused_at_connect() {
    let etcd = Etcd::start_secure(PREFIX);
    let err = refused(&args(&etcd, &[("--etcd-prefix", "/other")])).await;
    assert!(err.contains(&etcd.endpoint()) && err.contains("permission denied") && err.contains("/other/domain"), "{err}");
}

#[tokio::test]
async fn plain_http_with_tls_files_is_refused_before_connecting() {
    let etcd = Etcd::start_secure(PREFIX);
    let plain = etcd.endpoint().replace("https://", "http://");
    let err = refused(&args(&etcd, &[("--etcd-endpoints", &plain)])).await;
    assert!(err.contains(&plain) && err.contains("https://"), "{err}");
}

#[tokio::test]
async fn a_long_lived_client_outlives_its_auth_token() {
    // etcd's simple tokens expire (--auth-token-ttl); services hold one client,
    // a watch and a lease for days.
    let etcd = Etcd::start_secure_with_token_ttl(PREFIX, 1);
    let args = args(&etcd, &[]);
    let mut client = connect(&args).await.unwrap();
    let mut lease = KeptLease::grant(&mut client, Duration::from_secs(3)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    struct Keys(tokio::sync::mpsc::UnboundedSender<Vec<String>>);
    impl Follower for Keys {
        fn listed(&mut self, _revision: i64, kvs: &[etcd_client::KeyValue]) {
            let _ = self.0.send(kvs.iter().map(|kv| kv.key_str().unwrap().to_string()).collect());
        }
        fn changed(&mut self, events: &[etcd_client::Event]) {
            let _ = self.0.send(events.iter().map(|e| e.kv().unwrap().key_str().unwrap().to_string()).collect());
        }
    }
    let prefixes = vec![args.keys().nodes_prefix()];
    let follow_args = args.clone();
    let follower = tokio::spawn(async move {
        follow(|| follow_args.connect(), &prefixes, &FollowPolicy::default(), &mut Keys(tx)).await;
    });
    assert_eq!(rx.recv().await.unwrap(), Vec::<String>::new(), "the first list");

    tokio::time::sleep(Duration::from_secs(4)).await;
    // The token has expired: requests, the watch and the lease go on.
    let node = args.keys().node("redis-1", "node-1");
    client.put(node.as_str(), "{}", None).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the watch saw the put").unwrap();
    assert_eq!(seen, vec![node]);
    tokio::select! {
        lost = lease.lost() => panic!("the lease was lost: {lost}"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    follower.abort();
}
