//! The status page (`GET /` on the observer): every cluster with its nodes,
//! roles, health, lag, the master DNS publishes, the last round and recent
//! failovers. One self-contained HTML document: inline CSS, no script, no
//! external asset; it reloads itself every [`REFRESH_SECS`] (meta refresh).
//! The data is what `redis-topology list` shows (`topology::cluster`, read by `service::clusters`), read from
//! etcd on each load; [`render`] is pure.

use std::fmt::Write;

use topology::cluster::{clock_and_age, role_name, ClusterView};
use topology::records::HistoryEntry;

pub const REFRESH_SECS: u32 = 2;

/// How long the page waits for one redis's offset.
const OFFSET_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// Reads every cluster from etcd and renders the page; etcd unreachable is a
/// page that says so.
pub async fn load(
    etcd: etcd_client::Client,
    keys: topology::Keys,
    names: &topology::Names,
    credentials: &service::redis_auth::Credentials,
    leader: bool,
) -> String {
    let mut store = service::clusters::Store { etcd, keys };
    let now = topology::records::now_ms();
    match store.clusters(None).await {
        Ok(mut states) => {
            // Registrations carry no current offset: the lag column asks redis.
            service::clusters::read_offsets(&mut states, credentials, OFFSET_TIMEOUT).await;
            let clusters: Vec<ClusterPage> = states
                .iter()
                .map(|s| ClusterPage { view: s.view(names), history: s.status.as_ref().map(|st| st.history.clone()).unwrap_or_default() })
                .collect();
            render(&clusters, leader, now)
        }
        Err(e) => format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"><title>redis-topology</title></head>\
             <body><h1>redis-topology</h1><p>{}</p></body></html>",
            esc(&e.to_string())
        ),
    }
}

/// One cluster for the page: its view and its history.
pub struct ClusterPage {
    pub view: ClusterView,
    pub history: Vec<HistoryEntry>,
}

/// Text made safe inside HTML elements and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#eee}\
.ok{color:#176b2c;font-weight:bold}.bad{color:#b00020;font-weight:bold}.warn{color:#a35f00;font-weight:bold}\
.master{font-weight:bold}.meta{color:#555}";

fn result_class(result: &str) -> &'static str {
    match result {
        "ok" => "ok",
        "partial" => "warn",
        _ => "bad",
    }
}

/// The whole page. `now_ms` dates it; `leader` says whether this observer leads.
pub fn render(clusters: &[ClusterPage], leader: bool, now_ms: u64) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>redis-topology</title><style>{STYLE}</style></head><body><h1>redis-topology</h1>\
         <p class=\"meta\">This observer {}. Refreshes every {REFRESH_SECS} s; as of {}.</p>",
        if leader { "leads" } else { "does not lead" },
        clock_and_age(now_ms, now_ms).split(' ').next().unwrap_or(""),
    );
    if clusters.is_empty() {
        html.push_str("<p>No clusters in etcd.</p>");
    }
    for cluster in clusters {
        let view = &cluster.view;
        let _ = write!(
            html,
            "<section id=\"cluster-{name}\"><h2>{name}</h2><p>desired master <span class=\"master\" id=\"desired-master-{name}\">{desired}</span> \
             (revision {revision}) &middot; DNS master <span class=\"master\" id=\"dns-master-{name}\">{dns}</span>{durability}{paused}</p>",
            name = esc(&view.cluster),
            desired = esc(&or_dash(view.desired_master.as_ref())),
            revision = or_dash(view.topology_revision),
            dns = esc(&or_dash(view.dns_master.as_ref())),
            durability = view.durability.map_or(String::new(), |d| format!(
                " &middot; writes need {} replica(s) within {} s",
                d.min_replicas_to_write, d.min_replicas_max_lag
            )),
            paused = view.paused.as_ref().map_or(String::new(), |why| format!(" &middot; <span class=\"warn\">automatic failover paused: {}</span>", esc(why))),
        );
        for u in &view.unreadable {
            let _ = write!(html, "<p class=\"warn\">unreadable in etcd: {}</p>", esc(u));
        }
        match &view.last_result {
            Some(result) => {
                let _ = write!(
                    html,
                    "<p>last round: <span class=\"{}\">{}</span> at {}{}{}</p>",
                    result_class(result),
                    esc(result),
                    view.last_finished_ms.map_or_else(|| "-".to_string(), |ms| clock_and_age(ms, now_ms)),
                    view.last_round.as_ref().map_or(String::new(), |r| format!(", {}", esc(r))),
                    view.last_error.as_ref().map_or(String::new(), |e| format!(": {}", esc(e))),
                );
            }
            None => html.push_str("<p>last round: none recorded</p>"),
        }
        html.push_str("<table><tr><th>node</th><th>address</th><th>desired</th><th>role</th><th>health</th><th>offset</th><th>lag (bytes)</th><th>DNS</th></tr>");
        for row in &view.nodes {
            let health = match row.healthy {
                Some(true) => "<span class=\"ok\">healthy</span>",
                Some(false) => "<span class=\"bad\">DOWN</span>",
                None => "<span class=\"bad\">not registered</span>",
            };
            let role = row.role.map_or("-", role_name);
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{role}</td><td>{health}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&row.node),
                esc(&or_dash(row.address.as_ref())),
                row.desired,
                if role == "master" { "master" } else { "" },
                or_dash(row.offset),
                or_dash(row.lag_bytes),
                row.dns,
            );
        }
        html.push_str("</table>");
        let failovers: Vec<&HistoryEntry> = cluster.history.iter().rev().filter(|e| e.reason.starts_with("failover: ")).take(5).collect();
        if failovers.is_empty() {
            html.push_str("<p>recent failovers: none</p>");
        } else {
            html.push_str("<p>recent failovers:</p><ul>");
            for e in failovers {
                let _ = write!(html, "<li>{}: {}</li>", clock_and_age(e.at_ms, now_ms), esc(&e.reason));
            }
            html.push_str("</ul>");
        }
        html.push_str("</section>");
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use topology::cluster::NodeRow;
    use topology::records::Role;

    fn page(result: &str) -> ClusterPage {
        let view = ClusterView {
            cluster: "redis-1".into(),
            desired_master: Some("node-1".into()),
            durability: Some(topology::Durability { min_replicas_to_write: 1, min_replicas_max_lag: 2 }),
            topology_revision: Some(7),
            dns_master: Some("node-1".into()),
            paused: Some("<upgrade>".into()),
            last_round: Some("topology revision 7".into()),
            last_result: Some(result.into()),
            last_error: None,
            last_finished_ms: Some(1000),
            unreadable: vec!["/nodes/redis-1/node-9: <not json>".into()],
            nodes: vec![NodeRow {
                node: "node-1".into(),
                address: Some("10.0.0.1:6379".into()),
                desired: "master",
                role: Some(Role::Master),
                healthy: Some(true),
                offset: Some(42),
                lag_bytes: None,
                dns: "master",
            }],
        };
        let history = vec![HistoryEntry {
            at_ms: 500,
            topology_revision: 6,
            master: None,
            result: "ok".into(),
            reason: "failover: master a promoting b".into(),
            error: None,
            rounds: 1,
        }];
        ClusterPage { view, history }
    }

    #[test]
    fn the_page_shows_each_cluster_escaped_and_self_refreshing() {
        let html = render(&[page("partial")], true, 2000);
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(html.contains("id=\"desired-master-redis-1\">node-1<"));
        assert!(html.contains("id=\"dns-master-redis-1\">node-1<"));
        assert!(html.contains("<span class=\"warn\">partial</span>"));
        assert!(html.contains("automatic failover paused: &lt;upgrade&gt;"), "operator text is escaped");
        assert!(html.contains("unreadable in etcd: /nodes/redis-1/node-9: &lt;not json&gt;"), "a value etcd holds is escaped");
        assert!(html.contains("writes need 1 replica(s) within 2 s"), "the durability setting");
        assert!(html.contains("failover: master a promoting b"));
        assert!(!html.contains("src=") && !html.contains("href="), "no external assets");
        assert!(render(&[], false, 0).contains("No clusters in etcd."));
    }
}
