#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! `GET /metrics` on every service gives valid Prometheus text (checked by
//! `promtool check metrics`, which also lints the naming conventions) with the
//! metrics the README lists, and deploy/monitoring's alert rules load in promtool.

use std::io::Write;
use std::process::{Command, Stdio};

use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN};

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// The service's /metrics, after promtool found nothing wrong with it.
fn scrape(what: &str, port: u16) -> String {
    let text = harness::etcd::http_get(port, "/metrics").unwrap_or_else(|| panic!("{what}: no /metrics"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps.sh installs it)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The value of the sample of metric `name` whose labels are exactly `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, mut got) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}').split(',').map(str::to_string).collect::<Vec<_>>()),
            None => (series, Vec::new()),
        };
        got.sort();
        (metric == name && got == wanted).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_valid_prometheus_metrics() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let dig = Command::new("dig")
        .args(["+short", "-p", &stack.dns.port().to_string(), &format!("@{}", stack.dns.ip()), "SRV"])
        .arg(format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}"))
        .output()
        .unwrap();
    assert!(dig.status.success());

    let observer = scrape("observer", stack.observers[0].1);
    assert_eq!(sample(&observer, "redis_topology_observer_leader", &[]), Some(1.0), "{observer}");
    assert!(sample(&observer, "redis_topology_observer_rounds_total", &[("cluster", CLUSTER), ("result", "ok")]).unwrap_or(0.0) >= 1.0, "{observer}");
    assert!(sample(&observer, "redis_topology_observer_last_good_round_age_seconds", &[("cluster", CLUSTER)]).is_some(), "{observer}");

    let dictator = scrape("dictator", port_of(&stack.dictator_url));
    assert!(sample(&dictator, "redis_topology_dictator_applies_total", &[("cluster", CLUSTER), ("result", "ok")]).unwrap_or(0.0) >= 1.0, "{dictator}");
    assert!(dictator.contains("redis_topology_dictator_apply_duration_seconds_bucket{"), "{dictator}");
    assert!(dictator.contains("redis_topology_dictator_write_pause_seconds_count{"), "{dictator}");

    let dnsd = scrape("dnsd", port_of(&stack.dnsd_url));
    assert!(sample(&dnsd, "redis_topology_dnsd_zone_revision", &[]).unwrap_or(0.0) >= revision as f64, "{dnsd}");
    assert!(dnsd.contains("hickory_response_codes_total{"), "queries by response code: {dnsd}");
    assert_eq!(sample(&dnsd, "redis_topology_dnsd_etcd_connected", &[]), Some(1.0), "{dnsd}");
    assert!(sample(&dnsd, "redis_topology_dnsd_queries_total", &[("type", "SRV"), ("rcode", "No Error")]).unwrap_or(0.0) >= 1.0, "queries by type and rcode: {dnsd}");

    let agent = scrape("node-agent", stack.nodes[0].agent_port);
    let node = [("cluster", CLUSTER), ("node", "node-1")];
    assert_eq!(sample(&agent, "redis_topology_node_agent_redis_up", &node), Some(1.0), "{agent}");
    assert_eq!(sample(&agent, "redis_topology_node_agent_redis_role", &[node[0], node[1], ("role", "master")]), Some(1.0), "{agent}");
    assert_eq!(sample(&agent, "redis_topology_node_agent_redis_role", &[node[0], node[1], ("role", "slave")]), Some(0.0), "{agent}");
    assert_eq!(sample(&agent, "redis_topology_node_agent_registered", &node), Some(1.0), "{agent}");
    assert!(sample(&agent, "redis_topology_node_agent_replication_offset_bytes", &node).is_some(), "{agent}");
}

#[test]
fn the_shipped_alert_rules_load_in_promtool_and_the_dashboard_is_json() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring");
    let out = Command::new("promtool").arg("check").arg("rules").arg(dir.join("alerts.yml")).output().expect("promtool");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    for alert in ["RedisTopologyNoMaster", "RedisTopologyFailover", "RedisTopologyRoundFailing", "RedisTopologyReplicationLag", "RedisTopologyEtcdUnreachable"] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert} missing");
    }
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"].as_array().unwrap().iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for metric in ["redis_topology_observer_leader", "redis_topology_dictator_applies_total", "redis_topology_node_agent_redis_role", "hickory_response_codes_total"] {
        assert!(exprs.iter().any(|e| e.contains(metric)), "no panel shows {metric}");
    }
}
