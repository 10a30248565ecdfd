//! The appliance starts with zero configuration, keeps its identity, and
//! refuses wrong configuration with one clear line. Real processes only.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use support::{Server, assert_one_line_error, free_port, header, http_get, xpod};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn zero_configuration_creates_state_and_keeps_the_node_id() {
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap();
    let root = home.path().join(".local/share/xpod");
    // Only HOME: no CSS_* variable at all. The port comes as a flag so that
    // parallel tests do not fight over 3000.
    let port = free_port("127.0.0.1");
    let spawn = || {
        let log = home.path().join(format!("serve-{}.log", rand_suffix()));
        let child = std::process::Command::new(support::XPOD)
            .env_clear()
            .env("HOME", home_s)
            .args(["serve", "--port", &port.to_string()])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        (child, log.with_extension("err"))
    };
    let (mut child, log) = spawn();
    wait_up(port, &log);

    for (file, mode) in [
        ("xpod.sqlite", None),
        (".node-id", None),
        ("admin.token", Some(0o600)),
        ("node.key", Some(0o600)),
    ] {
        let meta = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Some(mode) = mode {
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file} mode");
        }
    }
    let node_id = read(&root.join(".node-id")).trim().to_string();
    let (status, headers, body) = http_get("127.0.0.1", port, "/.cluster/health").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.trim(), r#"{"status":"ok"}"#);
    assert_eq!(header(&headers, "x-xpod-served-by"), Some(node_id.as_str()));
    let unknown = http_get("127.0.0.1", port, "/no/such/thing").unwrap();
    assert_eq!(
        header(&unknown.1, "x-xpod-served-by"),
        Some(node_id.as_str()),
        "every response names its node"
    );

    // Only the token's hash is in the database.
    let token = read(&root.join("admin.token")).trim().to_string();
    let conn = rusqlite::Connection::open(root.join("xpod.sqlite")).unwrap();
    let hashes: Vec<String> = conn
        .prepare("SELECT token_hash FROM admin_tokens")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(hashes, vec![hex::encode(Sha256::digest(token.as_bytes()))]);
    let db_bytes = std::fs::read(root.join("xpod.sqlite")).unwrap();
    assert!(
        !db_bytes.windows(token.len()).any(|w| w == token.as_bytes()),
        "plain token stored"
    );
    let registered: String = conn
        .query_row("SELECT node_id FROM nodes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(registered, node_id);
    drop(conn);

    // The healthcheck command agrees, through the same flags.
    let hc = xpod(
        &[("HOME", home_s)],
        &["healthcheck", "--port", &port.to_string()],
    );
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );

    // SIGTERM stops it cleanly; a restart keeps identity and token.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let hc = xpod(
        &[("HOME", home_s)],
        &["healthcheck", "--port", &port.to_string(), "--timeout", "2"],
    );
    assert_eq!(
        hc.status.code(),
        Some(1),
        "healthcheck fails once the server is gone"
    );

    let (mut child, log) = spawn();
    wait_up(port, &log);
    assert_eq!(
        read(&root.join(".node-id")).trim(),
        node_id,
        "same node id after restart"
    );
    assert_eq!(
        read(&root.join("admin.token")).trim(),
        token,
        "same token after restart"
    );
    let (_, headers, _) = http_get("127.0.0.1", port, "/.cluster/health").unwrap();
    assert_eq!(header(&headers, "x-xpod-served-by"), Some(node_id.as_str()));
    let info = xpod(&[("HOME", home_s)], &["node", "info"]);
    let info = String::from_utf8(info.stdout).unwrap();
    assert!(info.contains(&node_id), "{info}");
    assert!(info.contains("sqlite"), "{info}");
    assert!(info.contains("local filesystem"), "{info}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success(), "SIGINT also stops cleanly");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn wait_up(port: u16, log: &Path) {
    for _ in 0..600 {
        if let Some((200, _, _)) = http_get("127.0.0.1", port, "/.cluster/health") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "server did not come up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn wrong_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root_s = root.to_str().unwrap();

    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", root_s), ("CSS_PORT", "70000")],
        &["serve"],
    );
    assert_one_line_error(
        &out,
        2,
        "CSS_PORT=\"70000\" is invalid: expected a port number from 1 to 65535",
    );

    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", root_s)],
        &["serve", "--port", "http"],
    );
    assert_one_line_error(&out, 2, "--port=\"http\" is invalid");

    let out = xpod(
        &[
            ("CSS_ROOT_FILE_PATH", root_s),
            ("CSS_CACHE_MAX_SIZE", "12XB"),
        ],
        &["serve"],
    );
    assert_one_line_error(
        &out,
        2,
        "CSS_CACHE_MAX_SIZE=\"12XB\" is invalid: expected a size",
    );

    let out = xpod(
        &[
            ("CSS_ROOT_FILE_PATH", root_s),
            ("CSS_POD_ROUTING_ENABLED", "maybe"),
        ],
        &["serve"],
    );
    assert_one_line_error(&out, 2, "CSS_POD_ROUTING_ENABLED");

    let toml = dir.path().join("xpod.toml");
    std::fs::write(&toml, "prot = 3000\n").unwrap();
    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", root_s)],
        &["serve", "--config", toml.to_str().unwrap()],
    );
    assert_one_line_error(&out, 2, "unknown key \"prot\"");

    // None of these touched the root file path.
    assert!(!root.exists(), "a refused start changes nothing");

    // An unreachable database: the password never shows.
    let port = free_port("127.0.0.1");
    let url = format!("postgres://xpod:hunter2@127.0.0.1:{port}/xpod");
    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", root_s), ("CSS_DATABASE_URL", &url)],
        &["serve"],
    );
    assert_one_line_error(
        &out,
        1,
        "cannot connect to the database at postgres://xpod:***@127.0.0.1",
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));

    // An unwritable root: below a regular file.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let below = file.join("root");
    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", below.to_str().unwrap())],
        &["serve"],
    );
    assert_one_line_error(&out, 1, "is not writable");

    // An unwritable root: a read-only file system (root can write anywhere else).
    if support::is_root() {
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(&ro)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a read-only tmpfs");
        let out = xpod(&[("CSS_ROOT_FILE_PATH", ro.to_str().unwrap())], &["serve"]);
        let _ = std::process::Command::new("umount").arg(&ro).status();
        assert_one_line_error(&out, 1, "is not writable");
    }

    // A port already in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let out = xpod(
        &[
            ("CSS_ROOT_FILE_PATH", root_s),
            ("CSS_HOST", "127.0.0.1"),
            ("CSS_PORT", &busy_port),
        ],
        &["serve"],
    );
    assert_one_line_error(&out, 1, "cannot listen on 127.0.0.1");
}

#[test]
fn root_does_not_write_into_a_directory_that_belongs_to_the_service_user() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        support::is_root(),
        "this test runs the server as root and must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    std::fs::create_dir(&root).unwrap();
    // `nobody` stands for the packaged service's `xpod` user.
    let chowned = std::process::Command::new("chown")
        .args(["65534:65534"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(chowned.success());
    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", root.to_str().unwrap())],
        &["serve", "--port", "1"],
    );
    assert_one_line_error(
        &out,
        1,
        "run it as that user: runuser -u nobody -- xpod serve",
    );
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "nothing was created"
    );
    assert_eq!(std::fs::metadata(&root).unwrap().uid(), 65534);
}

#[test]
fn a_corrupt_node_id_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join(".node-id"), "not a valid id!\n").unwrap();
    let out = xpod(
        &[("CSS_ROOT_FILE_PATH", root.to_str().unwrap())],
        &["serve", "--port", "1"],
    );
    assert_one_line_error(&out, 1, "is corrupt");
    assert_eq!(
        read(&root.join(".node-id")),
        "not a valid id!\n",
        "left untouched"
    );
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_unless_declared_compatible() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let env = [("CSS_ROOT_FILE_PATH", root), ("CSS_HOST", "127.0.0.1")];
    let mut server = Server::start("127.0.0.1", &env, dir.path());
    assert!(server.stop_with(libc::SIGTERM).success());

    // A newer xpod applied an additive migration that older binaries can run with.
    let conn = rusqlite::Connection::open(dir.path().join("xpod.sqlite")).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, compatible_from, applied_at) VALUES (900, '0900_additive', 1, 0)",
        [],
    )
    .unwrap();
    let mut server = Server::start("127.0.0.1", &env, dir.path());
    assert!(server.stop_with(libc::SIGTERM).success());

    // Then one that is not.
    conn.execute(
        "INSERT INTO schema_migrations (version, name, compatible_from, applied_at) VALUES (901, '0901_breaking', 901, 0)",
        [],
    )
    .unwrap();
    let out = xpod(&env, &["serve", "--port", "1"]);
    assert_one_line_error(&out, 1, "the database schema is at version 901");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upgrade xpod"), "{stderr}");
}

#[test]
fn config_names_each_source_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("xpod.toml");
    std::fs::write(&toml, "host = \"127.0.0.1\"\nport = 4000\n").unwrap();
    let secret_file = dir.path().join("admin");
    std::fs::write(&secret_file, "0123456789abcdef-admin\n").unwrap();
    let out = xpod(
        &[
            ("HOME", dir.path().to_str().unwrap()),
            ("CSS_PORT", "4500"),
            ("CSS_ADMIN_TOKEN_FILE", secret_file.to_str().unwrap()),
            (
                "CSS_DATABASE_URL",
                "postgres://xpod:hunter2@db.internal:5432/xpod",
            ),
            ("CSS_PORTT", "1"),
        ],
        &[
            "--config",
            toml.to_str().unwrap(),
            "config",
            "--base-url",
            "https://pods.example",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |var: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(var))
            .unwrap_or_else(|| panic!("no {var} in:\n{text}"))
            .to_string()
    };
    assert!(line("CSS_HOST").contains(&format!("127.0.0.1  [file {}]", toml.display())));
    assert!(line("CSS_PORT").contains("4500  [environment CSS_PORT]"));
    assert!(line("CSS_BASE_URL").contains("https://pods.example/  [flag --base-url]"));
    assert!(line("CSS_ADMIN_TOKEN").contains("[redacted]  [environment CSS_ADMIN_TOKEN_FILE"));
    assert!(line("CSS_DATABASE_URL").contains("postgres://xpod:***@db.internal:5432/xpod"));
    assert!(line("CSS_CACHE_MAX_SIZE").contains("[default]"));
    assert!(
        !text.contains("hunter2") && !text.contains("0123456789abcdef"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("unknown environment variable CSS_PORTT is ignored (did you mean CSS_PORT?)"),
        "{stderr}"
    );
}

/// `xpod config | grep -q …`: grep stops reading at its first match. The
/// command then ends quietly, as any Unix tool does, instead of panicking
/// with "failed printing to stdout" (which failed a package test).
#[test]
fn a_reader_that_stops_reading_ends_a_printing_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    // A pipe whose reader is already gone: the first line printed meets it.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(support::XPOD)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", dir.path())
        .arg("config")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}
