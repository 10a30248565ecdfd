//! `xpod self-update` end to end: real releases published by
//! `scripts/release` (signed with a key pair made here, at run time), served
//! from a loopback HTTP server or a real S3 server (Garage), installed over
//! a copy of the built binary.
//!
//! The "newer" release is this same binary with marker bytes appended (an
//! ELF still runs with trailing bytes), published as 99.0.0, so that the
//! test can tell by digest that the installed file became exactly the
//! published one without a second release build.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use support::{XPOD, assert_one_line_error, free_port};

const CURRENT: &str = env!("CARGO_PKG_VERSION");

/// Releases published once for every test of this file.
struct Releases {
    dir: tempfile::TempDir,
    port: u16,
    /// Trusts the release key (PEM file).
    keys: PathBuf,
    /// Trusts only another key (raw base64 file).
    stranger_keys: PathBuf,
    /// Digests of the binaries published as 99.0.0 and 0.0.1.
    newer: String,
    older: String,
}

impl Releases {
    fn url(&self, channel: &str) -> String {
        format!("http://127.0.0.1:{}/{channel}/manifest.json", self.port)
    }
}

/// The tarball scripts/release makes for this machine, under the release directory.
fn tarball(version: &str) -> String {
    format!(
        "good/xpod-{version}-{}-linux.tar.gz",
        std::env::consts::ARCH
    )
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn sign(key: &SigningKey, bytes: &[u8]) -> String {
    format!("{}\n", STANDARD.encode(key.sign(bytes).to_bytes()))
}

/// Copies a channel's artifacts (hard links) and writes its own manifest,
/// signed by `key`.
fn channel(root: &Path, name: &str, manifest: &[u8], signature: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(root.join("good")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gz") {
            std::fs::hard_link(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
    std::fs::write(dir.join("manifest.json.sig"), signature).unwrap();
}

fn releases() -> &'static Releases {
    static RELEASES: OnceLock<Releases> = OnceLock::new();
    RELEASES.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("xpod-releases-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        // The release key, made as a publisher makes it.
        let key_file = root.join("release.pem");
        let out = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key_file)
            .output()
            .expect("openssl (scripts/test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
        let keys = root.join("keys");
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(
            keys.join("release.pub"),
            key.verifying_key()
                .to_public_key_pem(Default::default())
                .unwrap(),
        )
        .unwrap();
        let stranger_keys = root.join("stranger-keys");
        std::fs::create_dir(&stranger_keys).unwrap();
        let stranger = SigningKey::generate(&mut rand::rngs::OsRng);
        std::fs::write(
            stranger_keys.join("other.pub"),
            STANDARD.encode(stranger.verifying_key().as_bytes()),
        )
        .unwrap();

        // Two "builds": the binary with a marker, published by scripts/release.
        let binary = std::fs::read(XPOD).unwrap();
        let mut digests = Vec::new();
        for version in ["99.0.0", "0.0.1"] {
            let build = root.join(format!("build-{version}"));
            let mut bytes = binary.clone();
            bytes.extend_from_slice(format!("\nxpod-test-release-{version}\n").as_bytes());
            std::fs::write(&build, &bytes).unwrap();
            digests.push(hex::encode(Sha256::digest(&bytes)));
            let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/release"))
                .env("XPOD_RELEASE_GZIP_LEVEL", "1")
                .args(["--version", version, "--arch", std::env::consts::ARCH])
                .arg("--binary")
                .arg(&build)
                .arg("--key")
                .arg(&key_file)
                .arg("--out")
                .arg(root.join("good"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "scripts/release: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // It tells the publisher the key to build in.
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&STANDARD.encode(key.verifying_key().as_bytes())),
                "{stdout}"
            );
        }
        let good = std::fs::read(root.join("good/manifest.json")).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        assert!(
            text.contains("\"0.0.1\"") && text.contains("\"99.0.0\""),
            "{text}"
        );

        // The manifest altered after signing.
        let mut altered = good.clone();
        altered.extend_from_slice(b" ");
        let good_sig = std::fs::read_to_string(root.join("good/manifest.json.sig")).unwrap();
        channel(root, "altered", &altered, &good_sig);
        // A correctly signed manifest whose digest does not match the file.
        let wrong = text.replace(
            &sha256_file(&root.join(tarball("99.0.0"))),
            &hex::encode(Sha256::digest(b"something else")),
        );
        assert_ne!(wrong, text);
        channel(
            root,
            "wrong-sum",
            wrong.as_bytes(),
            &sign(&key, wrong.as_bytes()),
        );
        // A release of the running version only.
        let same = text.replace("\"99.0.0\"", &format!("\"{CURRENT}\""));
        channel(root, "same", same.as_bytes(), &sign(&key, same.as_bytes()));

        let port = free_port("127.0.0.1");
        serve_files(root.to_path_buf(), port);
        Releases {
            dir,
            port,
            keys,
            stranger_keys,
            newer: digests[0].clone(),
            older: digests[1].clone(),
        }
    })
}

/// A static file server on 127.0.0.1, in a thread of its own for the rest of the run.
fn serve_files(root: PathBuf, port: u16) {
    use axum::extract::{Request, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    async fn file(State(root): State<PathBuf>, req: Request) -> Response {
        let path = req.uri().path().trim_start_matches('/').to_string();
        if path.split('/').any(|s| s == ".." || s.is_empty()) {
            return StatusCode::BAD_REQUEST.into_response();
        }
        match tokio::fs::File::open(root.join(path)).await {
            Ok(f) => {
                axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f)).into_response()
            }
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    }

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(file).with_state(root);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
}

/// A copy of the built binary, "installed" from a tarball in a directory of its own.
struct Installed {
    dir: tempfile::TempDir,
    /// HOME of the command, away from the binary (rpm keeps a database there).
    home: tempfile::TempDir,
    exe: PathBuf,
    digest: String,
}

fn install() -> Installed {
    let dir = tempfile::Builder::new()
        .prefix("xpod-installed-")
        .tempdir()
        .unwrap();
    let exe = dir.path().join("xpod");
    std::fs::copy(XPOD, &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let digest = sha256_file(&exe);
    let home = tempfile::tempdir().unwrap();
    Installed {
        dir,
        home,
        exe,
        digest,
    }
}

impl Installed {
    fn self_update(&self, keys: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        Command::new(&self.exe)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", self.home.path())
            .env("CSS_UPDATE_KEYS_DIR", keys)
            .envs(env.iter().copied())
            .args(["--config", "/dev/null", "self-update"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The installed binary is exactly what it was, and nothing was left beside it.
    fn assert_untouched(&self) {
        assert_eq!(sha256_file(&self.exe), self.digest, "the binary changed");
        self.assert_alone();
    }

    fn assert_alone(&self) {
        let names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["xpod"], "temporary files were left behind");
    }

    fn assert_runs(&self) {
        let out = Command::new(&self.exe).arg("--version").output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("xpod "));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

#[test]
fn check_reports_the_plan_and_changes_nothing() {
    let r = releases();
    let installed = install();
    let out = installed.self_update(&r.keys, &[], &["--check", "--source", &r.url("good")]);
    let text = assert_ok(&out);
    assert!(
        text.contains(&format!("current version: {CURRENT}")),
        "{text}"
    );
    assert!(text.contains("latest release:  99.0.0"), "{text}");
    assert!(
        text.contains(&format!(
            "would update {CURRENT} -> 99.0.0: {}",
            r.url("good").replace(
                "manifest.json",
                &format!("xpod-99.0.0-{}-linux.tar.gz", std::env::consts::ARCH)
            )
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sha256 {}",
            sha256_file(&r.dir.path().join(format!(
                "good/xpod-99.0.0-{}-linux.tar.gz",
                std::env::consts::ARCH
            )))
        )),
        "{text}"
    );
    assert!(text.contains("a tarball install"), "{text}");
    assert!(text.contains("nothing was changed (--check)"), "{text}");
    installed.assert_untouched();
}

#[test]
fn an_older_build_updates_to_the_newest_release() {
    let r = releases();
    let installed = install();
    let url = r.url("good");
    let out = installed.self_update(&r.keys, &[("CSS_UPDATE_SOURCE", url.as_str())], &[]);
    let text = assert_ok(&out);
    assert!(text.contains("installed xpod 99.0.0"), "{text}");
    assert!(text.contains("restart"), "{text}");
    assert_eq!(
        sha256_file(&installed.exe),
        r.newer,
        "the binary is the published one"
    );
    let mode = std::fs::metadata(&installed.exe)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    installed.assert_runs();
    installed.assert_alone();
}

#[test]
fn the_running_version_is_up_to_date() {
    let r = releases();
    let installed = install();
    let out = installed.self_update(&r.keys, &[], &["--source", &r.url("same")]);
    let text = assert_ok(&out);
    assert!(
        text.contains(&format!("xpod {CURRENT} is up to date")),
        "{text}"
    );
    installed.assert_untouched();
}

#[test]
fn an_altered_manifest_is_refused() {
    let r = releases();
    let installed = install();
    let out = installed.self_update(&r.keys, &[], &["--source", &r.url("altered")]);
    assert_one_line_error(&out, 1, "matches none of the trusted keys");
    assert_one_line_error(&out, 1, "nothing was changed");
    installed.assert_untouched();
}

#[test]
fn a_key_that_others_could_have_planted_is_not_trusted_by_root() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        support::is_root(),
        "this test checks what root trusts and must run as root (CI does)"
    );
    let r = releases();
    let installed = install();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("update-keys");
    std::fs::create_dir(&keys).unwrap();
    for entry in std::fs::read_dir(&r.keys).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, keys.join(path.file_name().unwrap())).unwrap();
    }
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = installed.self_update(&keys, &[], &["--source", &r.url("good")]);
    assert_one_line_error(&out, 1, "must belong to root and be writable by root alone");
    installed.assert_untouched();

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = installed.self_update(&keys, &[], &["--source", &r.url("good")]);
    assert_one_line_error(&out, 1, "must belong to root and be writable by root alone");
    installed.assert_untouched();
}

#[test]
fn root_does_not_install_into_a_directory_others_may_write() {
    assert!(
        support::is_root(),
        "this test checks what root installs and must run as root (CI does)"
    );
    let r = releases();
    let installed = install();
    std::fs::set_permissions(installed.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = installed.self_update(&r.keys, &[], &["--source", &r.url("good")]);
    assert_one_line_error(&out, 1, "may be written by users other than root");
    installed.assert_untouched();
}

#[test]
fn a_manifest_signed_by_an_untrusted_key_is_refused() {
    let r = releases();
    let installed = install();
    let out = installed.self_update(&r.stranger_keys, &[], &["--source", &r.url("good")]);
    assert_one_line_error(&out, 1, "matches none of the trusted keys");
    assert_one_line_error(&out, 1, "other.pub");
    installed.assert_untouched();
}

#[test]
fn a_wrong_checksum_is_refused() {
    let r = releases();
    let installed = install();
    let out = installed.self_update(&r.keys, &[], &["--source", &r.url("wrong-sum")]);
    assert_one_line_error(
        &out,
        1,
        &format!(
            "has sha256 {}",
            sha256_file(&r.dir.path().join(format!(
                "good/xpod-99.0.0-{}-linux.tar.gz",
                std::env::consts::ARCH
            )))
        ),
    );
    assert_one_line_error(
        &out,
        1,
        "the published file is corrupt or was tampered with",
    );
    installed.assert_untouched();
}

#[test]
fn a_downgrade_needs_allow_downgrade() {
    let r = releases();
    let installed = install();
    let url = r.url("good");
    let out = installed.self_update(&r.keys, &[], &["--source", &url, "--to", "0.0.1"]);
    assert_one_line_error(&out, 1, "refusing to downgrade; pass --allow-downgrade");
    installed.assert_untouched();

    let out = installed.self_update(
        &r.keys,
        &[],
        &["--source", &url, "--to", "0.0.1", "--allow-downgrade"],
    );
    let text = assert_ok(&out);
    assert!(
        text.contains(&format!("downgrade {CURRENT} -> 0.0.1")),
        "{text}"
    );
    assert_eq!(sha256_file(&installed.exe), r.older);
    installed.assert_runs();
    installed.assert_alone();
}

#[test]
fn missing_keys_sources_and_versions_say_what_to_do() {
    let r = releases();
    let installed = install();
    let empty = tempfile::tempdir().unwrap();
    let out = installed.self_update(empty.path(), &[], &["--source", &r.url("good")]);
    assert_one_line_error(&out, 1, "no trusted release key");
    assert_one_line_error(&out, 1, &empty.path().display().to_string());

    let out = installed.self_update(&r.keys, &[], &["--source", &r.url("good"), "--to", "5.0.0"]);
    assert_one_line_error(&out, 1, "version 5.0.0 is not in the release manifest");

    let out = installed.self_update(&r.keys, &[], &["--source", &r.url("nowhere")]);
    assert_one_line_error(&out, 1, "404");

    let out = installed.self_update(&r.keys, &[], &["--source", "ftp://example/manifest.json"]);
    assert_one_line_error(&out, 2, "--source=");

    if option_env!("XPOD_RELEASE_MANIFEST_URL").is_none() {
        let out = installed.self_update(&r.keys, &[], &[]);
        assert_one_line_error(&out, 1, "set CSS_UPDATE_SOURCE");
    }
    // The service itself never updates.
    if !support::is_root() {
        let out = installed.self_update(
            &r.keys,
            &[("INVOCATION_ID", "abc")],
            &["--source", &r.url("good")],
        );
        assert_one_line_error(&out, 1, "does not update itself");
    }
    installed.assert_untouched();
}

#[test]
fn releases_in_the_clusters_s3_bucket() {
    let r = releases();
    let garage = support::Garage::start();
    // Publish the release directory into the bucket under a prefix, as `aws s3 sync` would.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = xpod::config::S3Config {
            endpoint: url::Url::parse(&garage.endpoint()).unwrap(),
            bucket: garage.bucket.clone(),
            access_key: xpod::config::Secret::new(&garage.access_key),
            secret_key: xpod::config::Secret::new(&garage.secret_key),
            region: "us-east-1".into(),
        };
        let store =
            xpod::blob::s3::S3Store::new(&config, std::sync::Arc::new(Default::default())).unwrap();
        for entry in std::fs::read_dir(r.dir.path().join("good")).unwrap() {
            let path = entry.unwrap().path();
            let key = format!(
                "releases/stable/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            let size = std::fs::metadata(&path).unwrap().len();
            store.put_file(&key, &path, size).await.unwrap();
        }
    });
    let env = garage.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let source = format!("s3://{}/releases/stable", garage.bucket);

    let installed = install();
    let out = installed.self_update(&r.keys, &env, &["--source", &source]);
    let text = assert_ok(&out);
    assert!(text.contains(&format!("from {source}")), "{text}");
    assert!(text.contains("installed xpod 99.0.0"), "{text}");
    assert_eq!(sha256_file(&installed.exe), r.newer);
    installed.assert_runs();

    // A prefix with no release says so, and changes nothing.
    let installed = install();
    let out = installed.self_update(
        &r.keys,
        &env,
        &["--source", &format!("s3://{}/nothing", garage.bucket)],
    );
    assert_one_line_error(&out, 1, "there is no s3://xpod/nothing/manifest.json");
    installed.assert_untouched();
}
