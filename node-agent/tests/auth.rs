//! Redis AUTH: a password from a file (or REDIS_TOPOLOGY_REDIS_PASSWORD), and an ACL user.

mod common;

use std::time::Duration;

use common::*;
use harness::{Etcd, Redis};

// The harness waits for redis with an unauthenticated PING, so the password is
// set once redis is up; the agent only ever sees a redis that requires it.

#[tokio::test]
async fn authenticates_with_a_password_file_or_the_environment() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let expected_run_id = run_id(&redis);
    redis.cmd::<()>(&["CONFIG", "SET", "requirepass", "s3cret pass"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "s3cret pass\n").unwrap();
    let mut client = etcd.client().await;
    let prefix = prefix();

    let from_file = start_agent_named(
        &etcd,
        &redis.host_port(),
        "node-1",
        &prefix,
        &["--redis-password-file", file.to_str().unwrap()],
        &[],
    );
    let from_env = start_agent_named(&etcd, &redis.host_port(), "node-2", &prefix, &[], &[("REDIS_TOPOLOGY_REDIS_PASSWORD", "s3cret pass")]);
    for agent in [&from_file, &from_env] {
        let (stored, _) =
            wait_registration(&mut client, &agent.node_key(), "healthy with AUTH", Duration::from_secs(10), |s| s.record.healthy).await;
        assert_eq!(stored.record.run_id, expected_run_id);
    }
    for agent in [from_file, from_env] {
        assert!(!agent.service.log().contains("s3cret"), "the password leaked into the log");
    }

    // Without the password, or with a wrong one, redis refuses: unhealthy, and why.
    std::fs::write(&file, "wrong\n").unwrap();
    let wrong = start_agent_named(&etcd, &redis.host_port(), "node-3", &prefix, &["--redis-password-file", file.to_str().unwrap()], &[]);
    let none = start_agent_named(&etcd, &redis.host_port(), "node-4", &prefix, &[], &[]);
    for (agent, word) in [(&wrong, "authentication failed"), (&none, "NOAUTH")] {
        let (stored, _) =
            wait_registration(&mut client, &agent.node_key(), "registered unhealthy", Duration::from_secs(10), |_| true).await;
        assert!(!stored.record.healthy);
        let error = agent.status()["redis_error"].as_str().unwrap_or_default().to_string();
        assert!(error.to_lowercase().contains(&word.to_lowercase()), "expected {word} in {error:?}");
    }
}

#[tokio::test]
async fn authenticates_as_an_acl_user() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let expected_run_id = run_id(&redis);
    // Only what the agent needs (README: "Redis ACL users"): PING, INFO, reading
    // and setting min-replicas-*, and dropping clients when it fences itself; and
    // no anonymous access at all (disabling the default user may drop the
    // connection that asks for it, so that answer is not checked).
    redis.cmd::<()>(&["ACL", "SETUSER", "agent", "on", ">agent-pw", "-@all", "+ping", "+info", "+config|get", "+config|set", "+client|kill"]);
    let _: redis::RedisResult<()> = redis::cmd("ACL").arg("SETUSER").arg("default").arg("off").query(&mut redis.conn());
    assert!(redis::cmd("PING").query::<String>(&mut redis.conn()).is_err(), "anonymous access should be off");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "agent-pw\n").unwrap();
    let mut client = etcd.client().await;
    let agent = start_agent_named(
        &etcd,
        &redis.host_port(),
        NODE,
        &prefix(),
        &["--redis-user", "agent", "--redis-password-file", file.to_str().unwrap()],
        &[],
    );
    let (stored, _) =
        wait_registration(&mut client, &agent.node_key(), "healthy as ACL user", Duration::from_secs(10), |s| s.record.healthy).await;
    assert_eq!(stored.record.run_id, expected_run_id);
}
