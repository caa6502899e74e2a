//! Real redis-server instances.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::free_port;
use crate::process::Process;
use rustix::process::Signal;

/// What a redis-server keeps on disk across [`Redis::restart`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (`--save '' --appendonly no`): tests want speed.
    #[default]
    None,
    /// An RDB file, written by `SAVE`. It keeps the
    /// replication id and offset, which a restart shows as `master_replid2`.
    Rdb,
    /// An AOF (`--appendonly yes`), as the fleet unit runs it: every acknowledged
    /// write survives kill -9, but the replication history does not.
    Aof,
}

/// Redis with auth, as docs/architecture.md ("Least privilege in redis") deploys
/// it: clients and operators are the `default` user behind `requirepass`
/// ([`ADMIN_PASSWORD`]); the services are [`SERVICE_USER`] with only the commands
/// they send ([`SERVICE_ACL`]); replicas authenticate as [`REPLICA_USER`]
/// (`masteruser`/`masterauth`); HAProxy's health check as [`CHECK_USER`].
pub const ADMIN_PASSWORD: &str = "admin-s3cret";

/// `HARNESS_REDIS_AUTH=1`: every redis-server the harness starts, and every
/// [`crate::stack::Stack`], runs with auth, so a whole suite runs against it:
/// `HARNESS_REDIS_AUTH=1 REDIS_TOPOLOGY_REDIS_PASSWORD=<any> cargo nextest run -p e2e`.
/// `REDIS_TOPOLOGY_REDIS_PASSWORD` is then the `default` user's password: the counter, and
/// services a test starts itself, read it from the environment they inherit.
pub fn auth_from_env() -> bool {
    std::env::var("HARNESS_REDIS_AUTH").is_ok_and(|v| v == "1")
}

/// `redis://<addr>/`, with the `default` user's password when the harness runs
/// redis with auth: for a client that reaches redis through HAProxy or a name.
pub fn client_url(addr: impl std::fmt::Display) -> String {
    match auth_from_env() {
        true => format!("redis://:{}@{addr}/", admin_password()),
        false => format!("redis://{addr}/"),
    }
}

/// The `default` user's password: `REDIS_TOPOLOGY_REDIS_PASSWORD` when set, else [`ADMIN_PASSWORD`].
pub fn admin_password() -> String {
    std::env::var("REDIS_TOPOLOGY_REDIS_PASSWORD").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| ADMIN_PASSWORD.to_string())
}
pub const SERVICE_USER: &str = "redis-topology";
pub const SERVICE_PASSWORD: &str = "service-s3cret";
/// The services' ACL: their commands (the dictator's, the node-agent's and the
/// observer's; the README lists which sends what) and the verify marker's keys.
pub const SERVICE_ACL: &str = "resetchannels -@all +ping +info +config|get +config|set +config|rewrite +replicaof \
+client|pause +client|unpause +client|kill +set +get +del ~redis-topology:*";
pub const REPLICA_USER: &str = "replica";
pub const REPLICA_PASSWORD: &str = "replica-s3cret";
pub const REPLICA_ACL: &str = "resetchannels -@all +psync +replconf +ping";
pub const CHECK_USER: &str = "haproxy-check";
pub const CHECK_PASSWORD: &str = "check-s3cret";
pub const CHECK_ACL: &str = "resetchannels -@all +ping +quit";

/// The auth settings as redis.conf lines (`requirepass`, `masteruser`,
/// `masterauth`, the three users). In a config file rather than as arguments
/// where there is one: `CONFIG REWRITE` writes the users into it, and a user given
/// again as an argument at the next start would be a duplicate.
pub fn auth_config() -> String {
    let mut lines = vec![
        format!("requirepass {}", admin_password()),
        format!("masteruser {REPLICA_USER}"),
        format!("masterauth {REPLICA_PASSWORD}"),
    ];
    for (user, password, acl) in
        [(SERVICE_USER, SERVICE_PASSWORD, SERVICE_ACL), (REPLICA_USER, REPLICA_PASSWORD, REPLICA_ACL), (CHECK_USER, CHECK_PASSWORD, CHECK_ACL)]
    {
        lines.push(format!("user {user} on >{password} {acl}"));
    }
    lines.join("\n") + "\n"
}

/// The contents of the config file `options` asks for, with the auth settings.
fn config_text(options: &RedisOptions) -> Option<String> {
    let config = options.config.as_ref()?;
    Some(if options.auth { format!("{config}\n{}", auth_config()) } else { config.clone() })
}

/// How to start a redis-server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`, the users above and `masteruser`/`masterauth`.
    pub auth: bool,
    pub persistence: Persistence,
    /// Contents of a config file; when set, redis is started with it (so that
    /// `CONFIG REWRITE` works) and the harness's own settings follow as arguments.
    pub config: Option<String>,
    /// Extra `--name value` arguments.
    pub args: Vec<String>,
}

/// One redis-server on 127.0.0.1 with its own directory. `--save ''
/// --appendonly no` by default: tests want speed, not durability.
pub struct Redis {
    process: Process,
    port: u16,
    options: RedisOptions,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Self::with_options(RedisOptions::default())
    }

    /// With `persistence` and a config file, so that `CONFIG REWRITE` can keep the
    /// role across a restart as a deployed instance's does.
    pub fn start_with(persistence: Persistence) -> Redis {
        Self::with_options(RedisOptions { persistence, config: Some("# redis-topology test\n".into()), ..RedisOptions::default() })
    }

    pub fn with_options(mut options: RedisOptions) -> Redis {
        options.auth |= auth_from_env();
        let dir = tempfile::tempdir().expect("create redis temp dir");
        let port = free_port();
        if let Some(config) = config_text(&options) {
            std::fs::write(dir.path().join("redis.conf"), config).expect("write redis.conf");
        }
        let process = spawn(dir.path(), port, &options);
        let redis = Redis { process, port, options, dir };
        redis.wait_ready();
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:<port>`.
    pub fn host_port(&self) -> String {
        self.addr().to_string()
    }

    /// With auth: as the `default` user, who may do anything.
    pub fn url(&self) -> String {
        match self.options.auth {
            true => format!("redis://:{}@127.0.0.1:{}/", admin_password(), self.port),
            false => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The config file path, when started with one.
    pub fn config_path(&self) -> Option<std::path::PathBuf> {
        self.options.config.as_ref().map(|_| self.dir.path().join("redis.conf"))
    }

    /// A new synchronous connection (with a 5 s I/O timeout).
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("redis url");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to redis {}: {e}", self.port));
        conn.set_read_timeout(Some(Duration::from_secs(5))).expect("set timeout");
        conn
    }

    /// Runs one command, e.g. `redis.cmd::<String>(&["GET", "k"])`.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.conn()).unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.port))
    }

    /// A field of `INFO replication`, e.g. `role` or `master_repl_offset`; `None`
    /// also when redis cannot be asked (so it can be polled while it restarts).
    pub fn info_field(&self, field: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let info: String = redis::cmd("INFO").arg("replication").query(&mut conn).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// `master` or `slave` (empty when redis cannot be asked).
    pub fn role(&self) -> String {
        self.info_field("role").unwrap_or_default()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// kill -9, then starts again on the same port with the same directory: what
    /// its persistence kept (and its config file, as `CONFIG REWRITE` left it).
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(self.dir.path(), self.port, &self.options);
        self.wait_ready();
    }

    /// Replaces the instance with a fresh, empty one on the same port, like a
    /// machine whose disk was replaced: everything in its directory but the config
    /// file and the log goes, including the RDB file and Redis 7's AOF directory.
    /// Panics if anything cannot be removed, or if the new instance has keys.
    pub fn restart_empty(&mut self) {
        self.process.kill();
        empty_dir(self.dir.path());
        if let Some(config) = config_text(&self.options) {
            std::fs::write(self.dir.path().join("redis.conf"), config).expect("write redis.conf");
        }
        self.process = spawn(self.dir.path(), self.port, &self.options);
        self.wait_ready();
        // Callers' dictators may make it a replica as soon as it answers, and its
        // keys then come from its master: only a master is checked, atomically.
        let (replication, keys): (String, i64) = redis::pipe()
            .atomic()
            .cmd("INFO")
            .arg("replication")
            .cmd("DBSIZE")
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("INFO and DBSIZE on redis {}: {e}", self.port));
        if replication.lines().any(|l| l.trim() == "role:master") {
            assert_eq!(keys, 0, "redis {} restarted with data: it was not emptied", self.port);
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a hung, not a dead, redis.
    pub fn freeze(&self, frozen: bool) {
        let sent = self.process.send(if frozen { Signal::STOP } else { Signal::CONT });
        assert!(sent, "cannot freeze or thaw redis on port {}: it was killed or has exited", self.port);
    }

    fn wait_ready(&self) {
        crate::wait_until(&format!("redis on port {}", self.port), Duration::from_secs(20), || {
            ping(self.port, self.options.auth)
        });
    }
}

fn spawn(dir: &std::path::Path, port: u16, options: &RedisOptions) -> Process {
    let mut cmd = Command::new("redis-server");
    if options.config.is_some() {
        cmd.arg(dir.join("redis.conf"));
    }
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "no"])
        .arg("--dir").arg(dir)
        .args(match options.persistence {
            Persistence::None => ["--save", "", "--appendonly", "no"],
            // A save point no test lasts long enough to reach: the test says when
            // with SAVE, so what is on disk is known (SHUTDOWN would save too).
            Persistence::Rdb => ["--save", "3600 1", "--appendonly", "no"],
            Persistence::Aof => ["--save", "", "--appendonly", "yes"],
        })
        .args(["--daemonize", "no"])
        // Full syncs start at once instead of waiting 5 s for more replicas.
        .args(["--repl-diskless-sync-delay", "0"])
        .args(&options.args);
    if options.auth && options.config.is_none() {
        cmd.args(["--requirepass", &admin_password(), "--masteruser", REPLICA_USER, "--masterauth", REPLICA_PASSWORD]);
        for (user, password, acl) in
            [(SERVICE_USER, SERVICE_PASSWORD, SERVICE_ACL), (REPLICA_USER, REPLICA_PASSWORD, REPLICA_ACL), (CHECK_USER, CHECK_PASSWORD, CHECK_ACL)]
        {
            cmd.args(["--user", user, "on", &format!(">{password}")]).args(acl.split_whitespace());
        }
    }
    Process::spawn(&format!("redis:{port}"), cmd, &dir.join("redis.log"))
}

/// Removes everything in a redis directory but `redis.conf` and `redis.log`.
fn empty_dir(dir: &std::path::Path) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        let name = entry.file_name();
        if name == "redis.conf" || name == "redis.log" {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).is_dir();
        let removed = if is_dir { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove {}: {e}", path.display()),
            _ => {}
        }
    }
}

fn ping(port: u16, auth: bool) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    if auth {
        let sent = s.write_all(format!("AUTH {}\r\n", admin_password()).as_bytes()).is_ok();
        if !(sent && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+OK"))) {
            return false;
        }
    }
    s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicates_a_key_between_two_instances() {
        let master = Redis::start();
        let replica = Redis::start();
        replica.cmd::<()>(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
        master.cmd::<()>(&["SET", "greeting", "hello"]);
        crate::wait_until("replica to catch up", Duration::from_secs(10), || {
            replica.cmd::<Option<String>>(&["GET", "greeting"]).as_deref() == Some("hello")
        });
        assert_eq!(replica.role(), "slave");
        assert_eq!(master.role(), "master");
    }

    #[test]
    fn with_auth_a_replica_syncs_as_the_replica_user_and_the_service_user_is_confined() {
        let auth = || Redis::with_options(RedisOptions { auth: true, ..RedisOptions::default() });
        let (master, replica) = (auth(), auth());
        master.cmd::<()>(&["SET", "greeting", "hello"]);
        replica.cmd::<()>(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
        crate::wait_until("the replica to sync with auth", Duration::from_secs(10), || {
            replica.cmd::<Option<String>>(&["GET", "greeting"]).as_deref() == Some("hello")
        });
        // Without AUTH nothing is allowed; the service user only its own commands.
        assert!(!ping(master.port(), false));
        let service = redis::Client::open(format!("redis://{SERVICE_USER}:{SERVICE_PASSWORD}@127.0.0.1:{}/", master.port())).unwrap();
        let mut conn = service.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        let _: String = redis::cmd("INFO").arg("replication").query(&mut conn).unwrap();
        let denied = redis::cmd("GET").arg("greeting").query::<Option<String>>(&mut conn).unwrap_err();
        assert!(denied.to_string().to_lowercase().contains("noperm"), "{denied}");
        let denied = redis::cmd("FLUSHALL").query::<()>(&mut conn).unwrap_err();
        assert!(denied.to_string().to_lowercase().contains("noperm"), "{denied}");
    }

    #[test]
    fn kill_and_restart_empty() {
        let mut redis = Redis::with_options(RedisOptions {
            config: Some("maxmemory-policy noeviction\n".into()),
            ..RedisOptions::default()
        });
        assert!(redis.config_path().unwrap().exists());
        redis.cmd::<()>(&["SET", "k", "v"]);
        let run_id = redis.info_server_run_id();
        redis.kill();
        assert!(!ping(redis.port(), false));
        redis.restart_empty();
        assert_eq!(redis.cmd::<Option<String>>(&["GET", "k"]), None);
        assert_ne!(redis.info_server_run_id(), run_id);
    }

    /// Writes a key that `restart` keeps (so it is on disk), then checks that
    /// `restart_empty` does not.
    fn restart_empty_drops_what_is_on_disk(options: RedisOptions, persist: Option<&str>) {
        let mut redis = Redis::with_options(options);
        redis.cmd::<()>(&["SET", "k", "v"]);
        if let Some(persist) = persist {
            redis.cmd::<()>(&[persist]);
        }
        redis.restart();
        assert_eq!(redis.cmd::<Option<String>>(&["GET", "k"]).as_deref(), Some("v"), "the key is on disk");
        redis.restart_empty();
        assert_eq!(redis.cmd::<i64>(&["DBSIZE"]), 0);
    }

    #[test]
    fn restart_empty_removes_the_rdb_file() {
        restart_empty_drops_what_is_on_disk(RedisOptions::default(), Some("SAVE"));
    }

    #[test]
    fn restart_empty_removes_the_aof_directory() {
        // Redis 7 keeps the AOF as a directory of files (appenddirname); each write
        // reaches the file before its reply, so kill -9 keeps it.
        let options = RedisOptions { persistence: Persistence::Aof, ..RedisOptions::default() };
        restart_empty_drops_what_is_on_disk(options, None);
    }

    impl Redis {
        fn info_server_run_id(&self) -> String {
            let info: String = self.cmd(&["INFO", "server"]);
            info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap().trim().to_string()
        }
    }
}
