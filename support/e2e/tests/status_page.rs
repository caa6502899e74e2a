#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The observer's status page in a real headless Chromium: it shows the
//! cluster's master, follows it when it moves, and is screenshotted (the README's
//! docs/status-page.png is such a screenshot).

use std::process::Command;
use std::time::Duration;

use harness::stack::{Stack, StackOptions, CLUSTER};

/// The page's DOM as Chromium sees it after loading it.
fn dom(url: &str, profile: &std::path::Path) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_the_master_in_chromium() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let url = format!("http://127.0.0.1:{}/", stack.observers[0].1);
    let profile = tempfile::tempdir().unwrap();

    let shows = |master: &str| {
        let dom = dom(&url, profile.path());
        dom.contains(&format!("id=\"desired-master-{CLUSTER}\">{master}<")) && dom.contains(&format!("id=\"dns-master-{CLUSTER}\">{master}<"))
    };
    harness::wait_until("the page to show node-1 as master", Duration::from_secs(30), || shows("node-1"));
    let page = dom(&url, profile.path());
    assert!(page.contains("http-equiv=\"refresh\""), "the page refreshes itself");
    assert!(page.contains(">ok<"), "the last round: {page}");

    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("the page to show node-2 as master", Duration::from_secs(30), || shows("node-2"));

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--window-size=1100,620"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000, "a PNG screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());
}
