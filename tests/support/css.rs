//! Community Solid Server 7.2, installed by `scripts/css` (`XPOD_CSS_DIR`),
//! as the peer of the interoperability tests.

use std::path::PathBuf;

/// A preload that makes CSS listen on 127.0.0.1 only (it has no bind option).
pub const LOOPBACK_ONLY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/css.d/loopback-only.cjs"
);

/// Where CSS 7.2 is installed; the test fails (never skips) without it.
pub fn css_dir() -> PathBuf {
    let dir = match std::env::var("XPOD_CSS_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/xpod-ci/css-7.2.0"),
    };
    assert!(
        dir.join("node_modules/@solid/community-server/bin/server.js")
            .exists(),
        "Community Solid Server 7.2 is not installed in {}: run scripts/css (installs it once into ~/.cache/xpod-ci/css-7.2.0 and prints the directory) and set XPOD_CSS_DIR to what it prints, or run scripts/test",
        dir.display()
    );
    dir
}

/// The installed package itself (`…/@solid/community-server`).
pub fn css_package() -> PathBuf {
    css_dir().join("node_modules/@solid/community-server")
}
