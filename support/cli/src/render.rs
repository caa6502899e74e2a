//! Human output: tables (comfy-table) of nodes, history and the dictator's
//! report. `--json` bypasses all of it.

use comfy_table::{presets, Table};
use serde_json::Value;
use topology::records::{HistoryEntry, StatusRecord};

use topology::cluster::{clock_and_age as when, role_name, ClusterView};

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header.iter().map(|h| h.to_uppercase()));
    table
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A cluster's summary line and node table.
pub fn cluster(view: &ClusterView, now_ms: u64) -> String {
    let mut out = format!(
        "cluster {}: master {} (topology revision {}), DNS master {}{}\n",
        view.cluster,
        or_dash(view.desired_master.as_ref()),
        or_dash(view.topology_revision),
        or_dash(view.dns_master.as_ref()),
        view.paused.as_ref().map_or(String::new(), |why| format!(", automatic failover PAUSED ({why})")),
    );
    if let Some(d) = view.durability {
        out += &format!(
            "durability: writes need {} replica(s) acknowledging within {} s\n",
            d.min_replicas_to_write, d.min_replicas_max_lag
        );
    }
    if let Some(result) = &view.last_result {
        out += &format!(
            "last round: {result} at {}{}{}\n",
            view.last_finished_ms.map_or_else(|| "-".to_string(), |ms| when(ms, now_ms)),
            view.last_round.as_ref().map_or(String::new(), |r| format!(", {r}")),
            view.last_error.as_ref().map_or(String::new(), |e| format!(": {e}")),
        );
    } else {
        out += "last round: none recorded\n";
    }
    for u in &view.unreadable {
        out += &format!("UNREADABLE in etcd: {u}\n");
    }
    let mut t = table(&["node", "address", "desired", "role", "health", "offset", "lag", "dns"]);
    for row in &view.nodes {
        t.add_row(vec![
            row.node.clone(),
            or_dash(row.address.as_ref()),
            row.desired.to_string(),
            row.role.map_or("-", role_name).to_string(),
            row.healthy.map_or("-", |h| if h { "healthy" } else { "DOWN" }).to_string(),
            or_dash(row.offset),
            or_dash(row.lag_bytes),
            row.dns.to_string(),
        ]);
    }
    out + &t.to_string() + "\n"
}

/// A rebalance plan: the fair share, masters per host now and after, the moves.
pub fn plan(plan: &topology::placement::Plan) -> String {
    let hosts = plan.before.len();
    let groups: usize = plan.before.values().sum();
    let mut out = format!("fair share: {} master(s) per host ({hosts} live hosts)\n", plan.fair_share);
    let mut t = table(&["host", "masters now", "after"]);
    for (host, now) in &plan.before {
        t.add_row(vec![host.clone(), now.to_string(), or_dash(plan.after.get(host))]);
    }
    out += &(t.to_string() + "\n");
    if plan.moves.is_empty() {
        return out + &format!("nothing to move: no live host holds more than its share ({groups} masters on live hosts)\n");
    }
    out += &format!("{} move(s), one group at a time:\n", plan.moves.len());
    for (i, m) in plan.moves.iter().enumerate() {
        out += &format!("  {}. {m}\n", i + 1);
    }
    out
}

pub fn history(entries: &[HistoryEntry], now_ms: u64) -> String {
    let mut t = table(&["finished", "revision", "master", "result", "rounds", "reason", "error"]);
    for e in entries {
        t.add_row(vec![
            when(e.at_ms, now_ms),
            e.topology_revision.to_string(),
            or_dash(e.master.as_ref()),
            e.result.clone(),
            e.rounds.to_string(),
            e.reason.clone(),
            or_dash(e.error.as_ref()),
        ]);
    }
    t.to_string() + "\n"
}

/// The dictator's report of a round: who is where, members not in place, steps.
pub fn report(status: &StatusRecord) -> String {
    let mut out = format!(
        "round of topology revision {}: {}{}\n",
        status.topology_revision,
        status.result,
        status.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
    );
    if let Some(failover) = &status.failover {
        out += &format!("failover: {failover}\n");
    }
    let Some(report) = &status.report else {
        return out + "no report from the dictator\n";
    };
    let list = |field: &str| -> Vec<String> {
        report.get(field).and_then(Value::as_array).map_or_else(Vec::new, |a| a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect())
    };
    if let Some(master) = report.get("master").and_then(Value::as_str) {
        out += &format!("master: {master}   slaves: {}\n", list("slaves").join(", "));
    }
    for field in ["unreachable", "lagging", "forced", "warnings"] {
        let members = list(field);
        if !members.is_empty() {
            out += &format!("{field}: {}\n", members.join(", "));
        }
    }
    for failed in report.get("failed").and_then(Value::as_array).into_iter().flatten() {
        let field = |name: &str| failed.get(name).and_then(Value::as_str).unwrap_or("?").to_string();
        out += &format!("failed: {} ({}: {})\n", field("node"), field("action"), field("error"));
    }
    let steps = report.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
    if !steps.is_empty() {
        let mut t = table(&["step", "node", "ms", "error"]);
        for step in &steps {
            let field = |name: &str| step.get(name).map_or_else(|| "-".to_string(), |v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
            t.add_row(vec![field("action"), field("node"), field("ms"), field("error")]);
        }
        out += &(t.to_string() + "\n");
    }
    if let Some(pause) = report.get("write_pause_ms").and_then(Value::as_f64) {
        out += &format!("write pause: {pause:.2} ms, total {:.2} ms\n", report.get("total_ms").and_then(Value::as_f64).unwrap_or(0.0));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use topology::placement::{plan as make_plan, Group, Seat};

    #[test]
    fn a_plan_reads_as_hosts_now_and_after_then_the_moves() {
        let seat = |h: &str| Seat { node: format!("node-{h}"), host: Some(format!("host-{h}")), eligible: true };
        let group = |g: &str, on: [&str; 3]| Group { name: g.into(), master: seat(on[0]), slaves: on[1..].iter().map(|h| seat(h)).collect(), paused: false };
        let groups = [group("g1", ["b", "a", "c"]), group("g2", ["b", "a", "c"]), group("g3", ["c", "a", "b"])];
        let live = ["host-a", "host-b", "host-c"].iter().map(|h| h.to_string()).collect();
        let text = super::plan(&make_plan(&groups, &live).unwrap());
        println!("{text}");
        assert!(text.starts_with("fair share: 1 master(s) per host (3 live hosts)\n"), "{text}");
        assert!(text.contains(" host-b  2            1"), "{text}");
        assert!(text.contains("1 move(s), one group at a time:\n  1. g"), "{text}");
        assert!(text.contains(": node-b (host-b) -> node-a (host-a)\n"), "{text}");
        let balanced = [group("g1", ["a", "b", "c"])];
        assert!(super::plan(&make_plan(&balanced, &live).unwrap()).contains("nothing to move"));
    }
}
