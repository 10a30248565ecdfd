//! xpod under systemd: the unit file passes `systemd-analyze verify` and
//! asks for what the service needs, and the server speaks the readiness
//! protocol of `Type=notify` (tested with a `NOTIFY_SOCKET` the test owns,
//! since systemd is not PID 1 here).

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use support::{Server, free_port, http_get};

const UNIT: &str = include_str!("../systemd/xpod.service");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    // The unit as shipped, except that it runs the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("xpod.service");
    assert!(UNIT.contains("ExecStart=/usr/bin/xpod serve\n"));
    std::fs::write(
        &unit,
        UNIT.replace("/usr/bin/xpod", env!("CARGO_BIN_EXE_xpod")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd; scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

#[test]
fn the_unit_runs_a_hardened_notify_service_as_xpod() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for wanted in [
        "Type=notify",
        "User=xpod",
        "Group=xpod",
        "StateDirectory=xpod",
        "CacheDirectory=xpod",
        "ConfigurationDirectory=xpod",
        "EnvironmentFile=-/etc/xpod/xpod.env",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(&wanted), "the unit lacks {wanted}");
    }
}

#[test]
fn the_server_says_ready_once_it_listens_and_stopping_when_told_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let root = dir.path().join("root");
    let port = free_port("127.0.0.1");
    let env = [
        ("CSS_ROOT_FILE_PATH", root.to_str().unwrap().to_string()),
        ("CSS_PORT", port.to_string()),
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::spawn("127.0.0.1", &env, dir.path());

    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}); log:\n{}", server.log_text()));
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    let fields: Vec<&str> = message.lines().collect();
    assert!(fields.contains(&"READY=1"), "{message}");
    assert!(
        fields.iter().any(|f| f.starts_with("STATUS=serving ")),
        "{message}"
    );
    // Ready means serving: the first request after it is answered.
    let (status, _, body) = http_get("127.0.0.1", port, "/.cluster/health").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let status = server.stop_with(libc::SIGTERM);
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    assert!(status.success(), "{status:?}");
}
