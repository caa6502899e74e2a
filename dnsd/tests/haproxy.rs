#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The runtime-API client and the push against a real HAProxy running the shipped
//! config: what HAProxy refuses is reported, never taken as done.

use std::time::Duration;

use dnsd::haproxy::plan::Command;
use dnsd::haproxy::push::{run_all, sync, PushError};
use dnsd::haproxy::runtime::{Runtime, RuntimeError, Target};
use dnsd::haproxy::{HaproxyConfig, Wanted};
use harness::stack::{slots, Haproxy};

fn runtime(haproxy: &Haproxy) -> Runtime {
    Runtime::new(Target::Unix(haproxy.runtime.clone().unwrap()), Duration::from_secs(2))
}

fn config(write_backend: &str) -> HaproxyConfig {
    HaproxyConfig {
        targets: vec![],
        cluster: "redis-1".into(),
        write_backend: write_backend.into(),
        write_server: "master".into(),
        read_backend: "redis_slaves".into(),
        read_server: "slave".into(),
    }
}

#[tokio::test]
async fn refusals_are_errors_naming_the_command_and_answer() {
    let haproxy = Haproxy::start(&[harness::silent_nameserver()], true);
    let api = runtime(&haproxy);
    let missing = Command::Ready { backend: "redis_master".into(), server: "nope".into() };
    match api.run(&missing).await {
        Err(RuntimeError::Refused { command, response, .. }) => {
            assert_eq!(command, "set server redis_master/nope state ready");
            assert!(response.contains("No such server"), "{response}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A slot that never resolved has no address family: HAProxy 2.6 refuses an address.
    let never_resolved = Command::Addr { backend: "redis_master".into(), server: "master1".into(), address: ([127, 0, 0, 1], 1).into() };
    assert!(matches!(api.run(&never_resolved).await, Err(RuntimeError::Refused { .. })));
    // What HAProxy does accept is not an error.
    api.run(&Command::Maint { backend: "redis_master".into(), server: "master1".into() }).await.unwrap();
    assert!(!slots(haproxy.runtime.as_ref().unwrap(), "redis_master")[0].1, "held out of service");
    api.run(&Command::Ready { backend: "redis_master".into(), server: "master1".into() }).await.unwrap();

    // The same through one interactive session, as a push runs them.
    let mut session = api.session().await.unwrap();
    assert!(matches!(session.run(&missing).await, Err(RuntimeError::Refused { .. })));
    session.run(&Command::Maint { backend: "redis_master".into(), server: "master1".into() }).await.unwrap();
    let state = session.send("show servers state redis_master").await.unwrap();
    assert!(state.starts_with("1\n# be_id"), "{state}");
    session.run(&Command::Ready { backend: "redis_master".into(), server: "master1".into() }).await.unwrap();
}

#[tokio::test]
async fn a_push_to_an_unknown_backend_or_an_absent_haproxy_fails() {
    let haproxy = Haproxy::start(&[harness::silent_nameserver()], true);
    let want = Wanted { master: Some(([127, 0, 0, 1], 6379).into()), slaves: vec![], hold: None };
    match sync(&runtime(&haproxy), &config("no_such_backend"), &want).await {
        Err(PushError::State { backend, .. }) => assert_eq!(backend, "no_such_backend"),
        other => panic!("expected the unknown backend reported, got {other:?}"),
    }
    // The slot never resolved (silent nameserver): the plan leaves it to DNS...
    assert!(sync(&runtime(&haproxy), &config("redis_master"), &want).await.unwrap().is_empty());
    // ...and a switch HAProxy refuses midway (the address) is reported, and the
    // commands after it are not sent: the slot is not readied at the address it had.
    let (backend, server) = ("redis_master".to_string(), "master1".to_string());
    let switch = [
        Command::Maint { backend: backend.clone(), server: server.clone() },
        Command::ShutdownSessions { backend: backend.clone(), server: server.clone() },
        Command::Addr { backend: backend.clone(), server: server.clone(), address: ([127, 0, 0, 1], 6379).into() },
        Command::HealthUp { backend: backend.clone(), server: server.clone() },
        Command::Ready { backend, server },
    ];
    let mut session = runtime(&haproxy).session().await.unwrap();
    assert!(matches!(run_all(&mut session, &switch).await, Err(RuntimeError::Refused { .. })));
    assert!(!slots(haproxy.runtime.as_ref().unwrap(), "redis_master")[0].1, "not readied after a refused address");
    let dir = tempfile::tempdir().unwrap();
    let absent = Runtime::new(Target::Unix(dir.path().join("absent.sock")), Duration::from_secs(2));
    assert!(matches!(sync(&absent, &config("redis_master"), &want).await, Err(PushError::Runtime(RuntimeError::Io { .. }))));
}
