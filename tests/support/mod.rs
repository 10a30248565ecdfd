//! Shared test support: real PostgreSQL clusters and real `xpod` processes.
//! Nothing here is a mock; everything started is stopped on drop.

#![allow(dead_code)]

pub mod account;
pub mod cluster;
pub mod css;
pub mod dpop;
pub mod webid;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const XPOD: &str = env!("CARGO_BIN_EXE_xpod");

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A port that was free a moment ago on `host`.
///
/// Ports come from below the kernel's ephemeral range (32768 and up), so an
/// outgoing connection's local port never takes one between this call and
/// the server's bind, and a process-wide counter never hands the same port
/// to two tests running at once.
pub fn free_port(host: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; each starts somewhere else.
    let _ = NEXT.compare_exchange(
        0,
        1 + rand::random::<u32>() % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind((host, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {} on {host}", LOW + SPAN)
}

/// A throwaway PostgreSQL cluster: initdb + pg_ctl in a temp dir, on a free
/// loopback port, run as the `postgres` user when the tests run as root.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("XPOD_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: install the `postgresql` package (scripts/test does)",
    )
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("xpod-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let uid = id_of("-u");
            let gid = id_of("-g");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let port = free_port("127.0.0.1");
        let out = as_postgres(&bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        let out = as_postgres(&bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-o", &opts, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        Postgres { dir, bin, port }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.path().join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no `postgres` user: install the postgresql package"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `xpod` with exactly the given environment (plus PATH) and arguments.
pub fn xpod(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(XPOD)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `s` encoded as a value of an `application/x-www-form-urlencoded` body.
pub fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An owned environment as `xpod` and `Server` take it.
pub fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A running `xpod serve`.
pub struct Server {
    child: Option<Child>,
    pub host: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts `xpod serve` on `host` with the environment given (plus PATH)
    /// and waits until it answers its health check.
    pub fn start(host: &str, env: &[(&str, &str)], log_dir: &Path) -> Server {
        let server = Self::spawn(host, env, log_dir);
        server.wait_healthy(Duration::from_secs(30));
        server
    }

    /// Starts `xpod serve` without waiting.
    pub fn spawn(host: &str, env: &[(&str, &str)], log_dir: &Path) -> Server {
        let port = env
            .iter()
            .find(|(k, _)| *k == "CSS_PORT")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| free_port(host));
        let log = log_dir.join(format!("xpod-{host}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(XPOD)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("CSS_HOST", host)
            .env("CSS_PORT", port.to_string())
            .envs(env.iter().copied())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Server {
            child: Some(child),
            host: host.to_string(),
            port,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _, _)) = http_get(&self.host, self.port, "/.cluster/health") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "xpod on {}:{} never became healthy; log:\n{}",
                self.host,
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal and waits (bounded) for the process to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("xpod did not exit within 20 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Response headers, names lowercased.
pub type Headers = Vec<(String, String)>;

/// A minimal blocking HTTP GET: (status, headers, body).
pub fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, Headers, String)> {
    raw_request(host, port, "GET", path, &[], b"")
}

/// A blocking HTTP/1.0 request that sends the path exactly as given (no
/// normalisation of `..` or percent-encoding, unlike URL-based clients).
/// HTTP/1.0 keeps the response unchunked, so the body reads as is.
pub fn raw_request(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Headers, String)> {
    let mut stream = TcpStream::connect_timeout(
        &format!("{host}:{port}").parse().ok()?,
        Duration::from_secs(2),
    )
    .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: localhost:{port}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, body.to_string()))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The stderr of a failed command: asserts it ends in one `xpod:` line
/// containing `needle`, and that nothing panicked.
pub fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("xpod:")).collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error line expected:\n{stderr}"
    );
    assert!(
        errors[0].contains(needle),
        "error line lacks {needle:?}: {}",
        errors[0]
    );
}

/// Creates a pod through the CLI, as an operator would.
pub fn create_pod(root: &Path, port: u16, name: &str, extra_env: &[(&str, &str)]) {
    let mut env = vec![
        ("CSS_ROOT_FILE_PATH", root.to_str().unwrap()),
        ("CSS_HOST", "127.0.0.1"),
    ];
    let port_s = port.to_string();
    env.push(("CSS_PORT", &port_s));
    env.extend_from_slice(extra_env);
    let out = xpod(&env, &["pods", "create", name, "--public-write"]);
    assert!(
        out.status.success(),
        "pods create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (at most 5 s) until every thread of a process that was sent
/// SIGSTOP has stopped: on a loaded machine a thread may run on for a while.
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all_stopped = tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // The state follows the command name, which is in parentheses.
                    let after = &stat[stat.rfind(')')? + 1..];
                    after
                        .split_whitespace()
                        .next()
                        .map(|s| s == "T" || s == "t")
                })
                .unwrap_or(true)
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Peak resident memory of a process, from /proc/<pid>/status, in bytes.
pub fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A throwaway single-node Garage (a real S3 server) on free loopback ports,
/// with a default bucket and key. The binary comes from `XPOD_GARAGE_BIN`
/// or the cache `scripts/garage` builds into.
pub struct Garage {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    rpc_port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

pub fn garage_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("XPOD_GARAGE_BIN") {
        return PathBuf::from(bin);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let bin = PathBuf::from(home).join(".cache/xpod-ci/garage-2.5.0/bin/garage");
    assert!(
        bin.exists(),
        "the S3 server for these tests is not built: run scripts/garage (builds Garage once, ~12 min) or set XPOD_GARAGE_BIN"
    );
    bin
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("xpod-garage-")
            .tempdir()
            .unwrap();
        let port = free_port("127.0.0.1");
        let rpc_port = free_port("127.0.0.1");
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{}\"\n\n\
                 [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                random_hex(32)
            ),
        )
        .unwrap();
        let mut garage = Garage {
            dir,
            child: None,
            port,
            rpc_port,
            access_key: format!("GK{}", random_hex(12)),
            secret_key: random_hex(32),
            bucket: "xpod".into(),
        };
        garage.resume();
        garage
    }

    /// Starts (again) on the same data and ports.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready when the S3 port answers HTTP (any status).
        while http_get("127.0.0.1", self.port, "/").is_none() {
            assert!(
                Instant::now() < deadline,
                "Garage did not start; log:\n{}",
                std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (its data stays), as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `CSS_MINIO_*` settings for xpod.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CSS_MINIO_ENDPOINT", self.endpoint()),
            ("CSS_MINIO_BUCKET_NAME", self.bucket.clone()),
            ("CSS_MINIO_ACCESS_KEY", self.access_key.clone()),
            ("CSS_MINIO_SECRET_KEY", self.secret_key.clone()),
        ]
    }

    /// Creates an access key with no permissions at all (not even to create
    /// buckets), through Garage's own CLI: (key id, secret).
    pub fn create_key(&self, name: &str) -> (String, String) {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["key", "create", name])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "garage key create: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .unwrap_or_else(|| panic!("no {label} in {text}"))
                .trim()
                .to_string()
        };
        (field("Key ID:"), field("Secret key:"))
    }

    /// Garage's data directory (objects are stored under it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
