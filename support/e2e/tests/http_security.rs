#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The HTTP APIs' defences against the running binaries: bearer tokens on every
//! write endpoint of every service, reads behind tokens on request, TLS and mutual
//! TLS, the observer authenticating to the dictator and dnsd over them, and the
//! listener's limits (slowloris, head and body size).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN};
use harness::{free_port, Etcd, Redis, Service};

/// A raw HTTP/1.1 exchange: the status (0 when none came) and the whole answer.
fn raw(port: u16, request: &[u8]) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The JSON body of a raw answer.
fn body(answer: &str) -> serde_json::Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer:?}"))
}

fn roles(stack: &Stack) -> Vec<String> {
    stack.nodes.iter().map(|n| n.redis.role()).collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a URL with a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_endpoint_of_every_service_refuses_a_missing_or_wrong_token_and_changes_nothing() {
    let stack = Stack::start(StackOptions { api_tokens: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    stack.wait_registrations_follow_roles().await;
    let (dictator, dnsd) = (port_of(&stack.dictator_url), port_of(&stack.dnsd_url));
    let (observer, agent) = (stack.observers[0].1, stack.nodes[0].agent_port);
    let before = (stack.etcd_state().await, roles(&stack));

    // Move the master to node 2: would change roles, DNS and etcd if accepted.
    let moved = stack.topology(2, &[0, 1]);
    let writes: Vec<(u16, &str, String)> = vec![
        (dictator, "PUT", "/master".into()),
        (dictator, "PUT", format!("/clusters/{CLUSTER}/master")),
        (dictator, "PUT", format!("/clusters/{CLUSTER}/master?force=true&revision={}", revision + 100)),
        (dnsd, "PUT", "/dns".into()),
        (dnsd, "PUT", format!("/clusters/{CLUSTER}/dns?revision={}", revision + 100)),
        // The observer and the node-agent have no write endpoint: any other method
        // is refused before routing, so a future one is covered too.
        (observer, "POST", "/status".into()),
        (observer, "DELETE", "/".into()),
        (agent, "PUT", "/status".into()),
        (agent, "POST", "/master".into()),
        (dictator, "DELETE", "/healthz".into()),
    ];
    let wrong = "0123456789abcdef0123456789abcdef";
    let near = format!("{}x", &stack.api_tokens[0][..stack.api_tokens[0].len() - 1]);
    for (port, method, path) in &writes {
        for token in [None, Some(wrong), Some(near.as_str()), Some("")] {
            let (status, answer) = raw(*port, &request(method, path, token, &moved));
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
            assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
            assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("token")), "{answer}");
        }
        // Not a bearer token at all.
        let basic = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic b3A6b3A=\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(raw(*port, basic.as_bytes()).0, 401, "{method} {path} with Basic");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((stack.etcd_state().await, roles(&stack)), before, "a refused request changed etcd or a role");
    let audit = harness::without_ansi(&stack.dictator_log());
    assert!(audit.contains("refused: not authenticated") && audit.contains("audit"), "no audit line:\n{audit}");
    assert!(!audit.contains(wrong) && !audit.contains(&stack.api_tokens[0]), "a token in the log");

    // Either token works: a dry run with the operator's, a publish with the observer's.
    let dry = format!("/clusters/{CLUSTER}/master?dry_run=true");
    let (status, answer) = raw(dictator, &request("PUT", &dry, Some(&stack.api_tokens[1]), &moved));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(body(&answer)["dry_run"], true);
    let (status, answer) = raw(dnsd, &request("PUT", &format!("/clusters/{CLUSTER}/dns"), Some(&stack.api_tokens[0]), &stack.topology(0, &[1, 2])));
    assert_eq!(status, 200, "{answer}");
    // Authenticated, then routed: a method the observer lacks is 405 again.
    assert_eq!(raw(observer, &request("POST", "/status", Some(&stack.api_tokens[1]), "")).0, 405);
    let audit = harness::without_ansi(&stack.dnsd_log());
    assert!(audit.contains("state-changing request") && audit.contains("token=\"observer\"") && audit.contains("cluster=\"redis-1\""),
        "no audit line naming the caller:\n{audit}");

    // A forced apply is audited at WARN with its caller and what force overrode;
    // this one finds the topology in place and changes nothing.
    let (status, answer) = raw(dictator, &request("PUT", "/master?force=true", Some(&stack.api_tokens[1]), &stack.topology(0, &[1, 2])));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(body(&answer)["changed"], false, "{answer}");
    let audit = harness::without_ansi(&stack.dictator_log());
    let forced = audit.lines().find(|l| l.contains("forced apply (force=true)")).unwrap_or_else(|| panic!("no forced-apply line:\n{audit}"));
    assert!(forced.contains("WARN") && forced.contains("token operator") && forced.contains("cluster=\"redis-1\"") && forced.contains("overrode=[]"),
        "{forced}");
    assert_eq!(roles(&stack), before.1);

    // Reads stay open without --api-auth-reads, and /healthz always.
    for (port, path) in [(dnsd, format!("/clusters/{CLUSTER}/dns")), (observer, "/status".into()), (agent, "/status".into()), (dictator, "/metrics".into())] {
        assert_eq!(raw(port, &request("GET", &path, None, "")).0, 200, "GET {path}");
    }
}

#[tokio::test]
async fn reads_need_a_token_with_api_auth_reads_but_healthz_never() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, file) = harness::stack::token_file(dir.path());
    let etcd = Etcd::start();
    let (port, dns) = (free_port(), free_port());
    let mut dnsd = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{port}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--etcd-endpoints", &etcd.endpoint(), "--api-token-file", &file, "--api-auth-reads"],
        &[],
    );
    dnsd.wait_http(port);
    for path in ["/dns", "/clusters/redis-1/dns", "/metrics", "/nowhere"] {
        let (status, answer) = raw(port, &request("GET", path, None, ""));
        assert_eq!(status, 401, "GET {path}: {answer}");
        let (status, _) = raw(port, &request("HEAD", path, Some("wrong-wrong-wrong-wrong"), ""));
        assert_eq!(status, 401, "HEAD {path}");
    }
    // With a token the read is answered (nothing is published yet: 404).
    assert_eq!(raw(port, &request("GET", "/clusters/redis-1/dns", Some(&tokens[1]), "")).0, 404);
    assert_eq!(raw(port, &request("GET", "/metrics", Some(&tokens[0]), "")).0, 200);
    assert_eq!(raw(port, &request("GET", "/healthz", None, "")).0, 200);
}

#[test]
fn a_service_without_a_token_file_says_its_write_api_is_open_and_a_bad_file_stops_it() {
    let port = free_port();
    let mut open = Service::start("dictator", &["--listen", &format!("127.0.0.1:{port}")], &[]);
    open.wait_http(port);
    assert!(harness::without_ansi(&open.log()).contains("no --api-token-file"), "{}", open.log());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let secret = "short-secret";
    std::fs::write(&file, format!("ops:{secret}\n")).unwrap();
    let out = std::process::Command::new(harness::binary("dictator"))
        .args(["--listen", "127.0.0.1:0", "--api-token-file", &file.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1") && stderr.contains("shorter than 16"), "{stderr}");
    assert!(!stderr.contains(secret), "the token is in the error: {stderr}");
    let help = harness::assert_documents_flags("dictator", &[
        ("--api-token-file", "REDIS_TOPOLOGY_API_TOKEN_FILE"), ("--api-auth-reads", "REDIS_TOPOLOGY_API_AUTH_READS"),
        ("--tls-cert", "REDIS_TOPOLOGY_TLS_CERT"), ("--tls-key", "REDIS_TOPOLOGY_TLS_KEY"), ("--tls-client-ca", "REDIS_TOPOLOGY_TLS_CLIENT_CA"),
        ("--http-max-connections", "REDIS_TOPOLOGY_HTTP_MAX_CONNECTIONS"), ("--http-header-timeout-ms", "REDIS_TOPOLOGY_HTTP_HEADER_TIMEOUT_MS"),
        ("--http-request-timeout-ms", "REDIS_TOPOLOGY_HTTP_REQUEST_TIMEOUT_MS"),
    ]);
    assert!(!help.contains(secret));
    for service in ["dnsd", "node-agent"] {
        harness::assert_documents_flags(service, &[("--api-token-file", "REDIS_TOPOLOGY_API_TOKEN_FILE"), ("--tls-cert", "REDIS_TOPOLOGY_TLS_CERT")]);
    }
    harness::assert_documents_flags("observer", &[
        ("--api-token-file", "REDIS_TOPOLOGY_API_TOKEN_FILE"), ("--tls-ca", "REDIS_TOPOLOGY_TLS_CA"),
        ("--tls-client-cert", "REDIS_TOPOLOGY_TLS_CLIENT_CERT"), ("--tls-client-key", "REDIS_TOPOLOGY_TLS_CLIENT_KEY"),
    ]);
}

#[test]
fn a_slow_or_oversized_request_head_is_cut_and_the_service_keeps_answering() {
    let port = free_port();
    let mut dictator = Service::start(
        "dictator",
        &["--listen", &format!("127.0.0.1:{port}"), "--http-header-timeout-ms", "300", "--http-max-connections", "4",
          "--http-request-timeout-ms", "300"],
        &[],
    );
    dictator.wait_http(port);
    // Slowloris: four connections (the whole limit) send a head a byte at a time.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                for (sent, byte) in head.iter().enumerate() {
                    if stream.write_all(&[*byte]).is_err() {
                        return Some(sent);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // The head was whole: was it answered, or was the connection cut?
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.1 200") { None } else { Some(head.len()) }
            })
        })
        .collect();
    for slow in slow {
        assert!(slow.join().unwrap().is_some(), "a head sent a byte every 50 ms was answered, not cut");
    }
    // Whatever the slow ones held is free again.
    assert_eq!(raw(port, &request("GET", "/healthz", None, "")).0, 200);

    // A head over 16 KiB, or with too many lines: 431; a body over 64 KiB: 413.
    let long = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(raw(port, long.as_bytes()).0, 431);
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(raw(port, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).0, 431);
    let big = "x".repeat(70 * 1024);
    assert_eq!(raw(port, &request("PUT", "/master", None, &big)).0, 413);
    // A body that never comes: the head timeout does not cover it, the request
    // timeout does (408).
    let (status, answer) = raw(port, b"PUT /master HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mas");
    assert_eq!(status, 408, "{answer}");
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("not answered within 300 ms")), "{answer}");
    assert_eq!(raw(port, &request("GET", "/healthz", None, "")).0, 200);
    assert!(dictator.process().is_running());
}

/// A private CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, written as PEM files into `dir`.
struct Pki {
    ca: String,
    cert: String,
    key: String,
    client_cert: String,
    client_key: String,
    /// A CA that signed nothing here.
    other_ca: String,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_of = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (ca, other) = (ca_of("redis-topology test CA"), ca_of("another CA"));
    let leaf = |names: Vec<String>, usage| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
    };
    let (cert, key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(vec!["observer".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        cert: write("server.pem", &cert),
        key: write("server-key.pem", &key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        other_ca: write("other-ca.pem", &other.pem()),
    }
}

fn https_client(ca: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Waits until `url`/healthz answers through `client`.
async fn wait_https(service: &mut Service, client: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        assert!(service.process().is_running(), "exited:\n{}", service.log());
        if client.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never answered over TLS:\n{}", service.log());
}

#[tokio::test]
async fn tls_and_mutual_tls_serve_https_and_refuse_who_cannot_prove_itself() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (tokens, token_file) = harness::stack::token_file(dir.path());

    // TLS: the dictator over https://localhost, certificate checked against the CA.
    let port = free_port();
    let mut tls = Service::start(
        "dictator",
        &["--listen", &format!("127.0.0.1:{port}"), "--tls-cert", &pki.cert, "--tls-key", &pki.key, "--api-token-file", &token_file],
        &[],
    );
    let url = format!("https://localhost:{port}");
    let client = https_client(&pki.ca, None);
    wait_https(&mut tls, &client, &url).await;
    let put = client.put(format!("{url}/master")).body("{}").send().await.unwrap();
    assert_eq!(put.status(), 401);
    let put = client.put(format!("{url}/master")).bearer_auth(&tokens[0]).body("{}").send().await.unwrap();
    assert_eq!(put.status(), 422, "authenticated over TLS, then the topology is checked");
    // A client that trusts another CA refuses the server; plain HTTP gets no answer.
    assert!(https_client(&pki.other_ca, None).get(format!("{url}/healthz")).send().await.is_err());
    assert_eq!(raw(port, &request("GET", "/healthz", None, "")).0, 0);
    assert!(tls.process().is_running());

    // mTLS: dnsd requires a client certificate of the CA.
    let etcd = Etcd::start();
    let (port, dns) = (free_port(), free_port());
    let mut mtls = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{port}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--etcd-endpoints", &etcd.endpoint(), "--tls-cert", &pki.cert, "--tls-key", &pki.key, "--tls-client-ca", &pki.ca],
        &[],
    );
    let url = format!("https://127.0.0.1:{port}");
    let with_cert = https_client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    wait_https(&mut mtls, &with_cert, &url).await;
    let refused = client.get(format!("{url}/healthz")).send().await;
    assert!(refused.is_err(), "answered a client without a certificate: {refused:?}");
    // A certificate of another CA is refused too.
    let self_signed = {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["observer".to_string()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.path().join("self.pem"), dir.path().join("self-key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    };
    assert!(https_client(&pki.ca, Some((&self_signed.0, &self_signed.1))).get(format!("{url}/healthz")).send().await.is_err());
    assert_eq!(with_cert.get(format!("{url}/clusters/redis-1/dns")).send().await.unwrap().status(), 404);
    assert!(mtls.process().is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_switches_over_through_mutual_tls_with_its_token_and_one_without_it_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_, token_file) = harness::stack::token_file(dir.path());
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let redis: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let secured = ["--api-token-file", &token_file, "--tls-cert", &pki.cert, "--tls-key", &pki.key, "--tls-client-ca", &pki.ca];
    let client = https_client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));

    let (dnsd_port, dns) = (free_port(), free_port());
    let (dnsd_listen, dns_listen) = (format!("127.0.0.1:{dnsd_port}"), format!("127.0.0.1:{dns}"));
    let mut args = vec!["--listen", &dnsd_listen, "--dns-listen", &dns_listen, "--etcd-endpoints", &endpoint, "--cluster", CLUSTER, "--domain", DOMAIN];
    args.extend(secured);
    let mut dnsd = Service::start("dnsd", &args, &[]);
    let dnsd_url = format!("https://localhost:{dnsd_port}");
    wait_https(&mut dnsd, &client, &dnsd_url).await;

    let dictator_port = free_port();
    let dictator_listen = format!("127.0.0.1:{dictator_port}");
    let mut args = vec!["--listen", &dictator_listen, "--nameserver", &dns_listen, "--etcd-endpoints", &endpoint, "--cluster", CLUSTER];
    args.extend(secured);
    let mut dictator = Service::start("dictator", &args, &[]);
    let dictator_url = format!("https://localhost:{dictator_port}");
    wait_https(&mut dictator, &client, &dictator_url).await;

    let start_observer = |tokens: &str| {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut observer = Service::start(
            "observer",
            &["--listen", &listen, "--etcd-endpoints", &endpoint, "--dictator", &dictator_url, "--dnsd", &dnsd_url,
              "--nameserver", &dns_listen, "--retry-min-ms", "100", "--retry-max-ms", "500", "--failover-after-ms", "0",
              "--election-ttl-secs", "2", "--api-token-file", tokens, "--tls-ca", &pki.ca,
              "--tls-client-cert", &pki.client_cert, "--tls-client-key", &pki.client_key],
            &[],
        );
        observer.wait_http(port);
        observer
    };
    let member = |r: &Redis| serde_json::json!({ "address": "127.0.0.1", "port": r.port() });
    let mut etcd_client = etcd.client().await;
    let status = || async {
        let got = etcd.client().await.get(format!("/status/{CLUSTER}"), None).await.ok();
        got.and_then(|g| g.kvs().first().and_then(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).ok()))
    };

    // An observer whose token the services do not know gets 401 and moves nothing,
    // though its TLS client certificate is good.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_tokens) = harness::stack::token_file(other_dir.path());
    let intruder = start_observer(&other_tokens);
    let topology = serde_json::json!({ "master": member(&redis[1]), "slaves": [member(&redis[0])] });
    etcd_client.put(format!("/config/{CLUSTER}/topology"), topology.to_string(), None).await.unwrap();
    harness::wait_until_async("the intruder's round refused", Duration::from_secs(20), || async {
        status().await.is_some_and(|s| s["result"] == "dictator" && s["error"].as_str().is_some_and(|e| e.contains("401")))
    })
    .await;
    assert_eq!((redis[0].role(), redis[1].role()), ("master".to_string(), "master".to_string()), "nothing moved");
    drop(intruder);

    // The observer with the token: define, then switch over; each move goes
    // observer -> dictator -> dnsd over mTLS.
    let _observer = start_observer(&token_file);
    for (master, slave) in [(0, 1), (1, 0)] {
        let topology = serde_json::json!({ "master": member(&redis[master]), "slaves": [member(&redis[slave])] });
        let put = etcd_client.put(format!("/config/{CLUSTER}/topology"), topology.to_string(), None).await.unwrap();
        let revision = put.header().map_or(0, |h| h.revision());
        harness::wait_until_async(&format!("revision {revision} applied"), Duration::from_secs(30), || async {
            status().await.is_some_and(|s| s["result"] == "ok" && s["topology_revision"].as_i64().is_some_and(|r| r >= revision))
        })
        .await;
        assert_eq!(redis[master].role(), "master");
        assert_eq!(redis[slave].role(), "slave");
        let published: serde_json::Value =
            client.get(format!("{dnsd_url}/clusters/{CLUSTER}/dns")).send().await.unwrap().json().await.unwrap();
        assert_eq!(published["master"]["port"], redis[master].port(), "{published}");
    }
    for (name, log) in [("dictator", harness::without_ansi(&dictator.log())), ("dnsd", harness::without_ansi(&dnsd.log()))] {
        assert!(log.contains("token=\"observer\"") && log.contains("status=200"), "{name} has no audit line of the observer:\n{log}");
    }
}

#[test]
fn sighup_rereads_the_token_file_so_tokens_rotate_without_a_restart() {
    const SIGHUP: i32 = 1;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let [old, kept, new] = ["old-token-0123456789abcdef", "kept-token-0123456789abcdef", "new-token-0123456789abcdef"];
    std::fs::write(&file, format!("old:{old}\nkept:{kept}\n")).unwrap();
    let port = free_port();
    let mut dictator = Service::start(
        "dictator",
        &["--listen", &format!("127.0.0.1:{port}"), "--api-token-file", &file.display().to_string()],
        &[],
    );
    dictator.wait_http(port);
    // Past the token check, the malformed body is a 400; before it, a 401.
    let status = |token: &str| raw(port, &request("PUT", "/master", Some(token), "not json")).0;
    assert_eq!((status(old), status(kept), status(new)), (400, 400, 401));

    std::fs::write(&file, format!("kept:{kept}\nnew:{new}\n")).unwrap();
    assert!(dictator.process().signal(SIGHUP));
    harness::wait_until("the new token accepted", Duration::from_secs(10), || status(new) == 400);
    assert_eq!((status(old), status(kept)), (401, 400));

    // A broken file on the next SIGHUP: the tokens read before stay, and it is said.
    std::fs::write(&file, "new:short\n").unwrap();
    assert!(dictator.process().signal(SIGHUP));
    harness::wait_until("the broken file reported", Duration::from_secs(10), || {
        harness::without_ansi(&dictator.log()).contains("the tokens read before stay")
    });
    assert_eq!((status(new), status(kept), status(old)), (400, 400, 401));
    assert!(!dictator.log().contains("short\n") && !dictator.log().contains(new), "a token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_with_tokens_switches_over_and_follows_a_dead_master() {
    let mut stack = Stack::start(StackOptions { api_tokens: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    // An operator's switchover, applied by the observer with its token.
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    assert_eq!(roles(&stack), ["slave", "master", "slave"]);
    // The observer's own failover writes a topology and applies it the same way.
    stack.nodes[1].redis.kill();
    harness::wait_until_async("a failover away from node-2", Duration::from_secs(30), || async {
        // Partial: the dead master is skipped as unreachable.
        stack.status().await.is_some_and(|s| {
            s["result"] == "partial"
                && s["report"]["master"].as_str().is_some_and(|m| !m.ends_with(&format!(":{}", stack.nodes[1].redis.port())))
        })
    })
    .await;
    let masters = [0, 2].into_iter().filter(|&i| stack.nodes[i].redis.role() == "master").count();
    assert_eq!(masters, 1, "one master after the failover");
    let log = harness::without_ansi(&stack.dictator_log());
    let applied = log.lines().filter(|l| l.contains("state-changing request") && l.contains("token=\"observer\"") && l.contains("status=200")).count();
    assert!(applied >= 3, "{applied} authenticated applies in the dictator's audit log:\n{log}");
    assert!(!log.contains(&stack.api_tokens[0]) && !log.contains(&stack.api_tokens[1]), "a token in the log");
    assert!(stack.exited().is_empty());
}

#[tokio::test]
async fn sighup_rereads_the_tls_files_so_a_renewed_certificate_is_served_without_a_restart() {
    const SIGHUP: i32 = 1;
    let dir = tempfile::tempdir().unwrap();
    let (first, renewed) = (dir.path().join("first"), dir.path().join("renewed"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&renewed).unwrap();
    // The renewal comes from another CA, so which certificate is served shows.
    let (pki, next) = (pki(&first), pki(&renewed));
    let port = free_port();
    let mut dictator = Service::start(
        "dictator",
        &["--listen", &format!("127.0.0.1:{port}"), "--tls-cert", &pki.cert, "--tls-key", &pki.key],
        &[],
    );
    let url = format!("https://localhost:{port}");
    wait_https(&mut dictator, &https_client(&pki.ca, None), &url).await;
    // A fresh client each time: a pooled connection would keep its handshake.
    let trusts = |ca: &str| {
        let client = https_client(ca, None);
        let url = format!("{url}/healthz");
        async move { client.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    };
    assert!(!trusts(&next.ca).await, "the renewed certificate is not served yet");

    for (from, to) in [(&next.cert, &pki.cert), (&next.key, &pki.key)] {
        std::fs::copy(from, to).unwrap();
    }
    assert!(dictator.process().signal(SIGHUP));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !trusts(&next.ca).await {
        assert!(std::time::Instant::now() < deadline, "the renewed certificate never served:\n{}", dictator.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!trusts(&pki.ca).await, "the old certificate is still served");

    // A broken file on the next SIGHUP: the certificate read before stays, and it is said.
    std::fs::write(&pki.cert, "not a certificate\n").unwrap();
    assert!(dictator.process().signal(SIGHUP));
    harness::wait_until("the broken file reported", Duration::from_secs(10), || {
        harness::without_ansi(&dictator.log()).contains("the certificate read before stays")
    });
    assert!(trusts(&next.ca).await, "a broken file replaced the certificate in service");
    assert!(dictator.process().is_running());
}

#[test]
fn sighup_without_anything_to_reread_is_logged_not_fatal() {
    const SIGHUP: i32 = 1;
    let port = free_port();
    let mut dictator = Service::start("dictator", &["--listen", &format!("127.0.0.1:{port}")], &[]);
    dictator.wait_http(port);
    assert!(dictator.process().signal(SIGHUP));
    harness::wait_until("the SIGHUP logged", Duration::from_secs(10), || {
        harness::without_ansi(&dictator.log()).contains("SIGHUP: no token file and no TLS files to re-read")
    });
    assert!(dictator.process().is_running(), "SIGHUP ended the dictator:\n{}", dictator.log());
    assert_eq!(raw(port, &request("GET", "/healthz", None, "")).0, 200);
}
