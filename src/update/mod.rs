//! `xpod self-update`: replaces this binary with a signed release.
//!
//! 1. Read the release manifest and its detached Ed25519 signature from the
//!    release source (`CSS_UPDATE_SOURCE`: a manifest URL or an S3 prefix),
//!    and accept it only if a trusted key ([`keys`]) signed those exact bytes.
//! 2. Pick the release (`--to`, else the highest version, pre-releases only
//!    when one runs already); refuse a downgrade unless asked.
//! 3. Pick the artifact for how this binary was installed ([`install::detect`]:
//!    dpkg, rpm, or a tarball) and this machine's architecture.
//! 4. Download it to a temporary file, hashing on the way, and compare with
//!    the manifest's SHA-256 before anything is replaced.
//! 5. Install: the package manager for packages (whose scripts restart the
//!    service), an atomic rename for a tarball install (then restart the
//!    service if systemd runs it from this binary).
//!
//! Every failure before step 5 leaves the installed binary untouched. The
//! service never updates itself: an administrator runs this as root.

pub mod fetch;
pub mod install;
pub mod keys;
pub mod manifest;

use std::cmp::Ordering;
use std::path::PathBuf;

use crate::config::Config;

use install::Method;
use manifest::{Manifest, parse_version};

/// Why an update did not happen: one line saying what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpdateError(pub String);

/// The flags of `xpod self-update` (`--source` arrives through the configuration).
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Only report what would happen.
    pub check: bool,
    /// This version instead of the latest.
    pub to: Option<String>,
    pub allow_downgrade: bool,
}

/// Runs `xpod self-update`; what it did is printed on stdout.
pub async fn run(config: &Config, options: &Options) -> Result<(), UpdateError> {
    if std::env::var_os("INVOCATION_ID").is_some() && !install::is_root() {
        return Err(UpdateError(
            "xpod does not update itself from inside its service: an administrator runs `sudo xpod self-update` from a shell".into(),
        ));
    }
    let current = parse_version(env!("CARGO_PKG_VERSION")).expect("the crate version is semver");
    let to = options
        .to
        .as_deref()
        .map(parse_version)
        .transpose()
        .map_err(|e| UpdateError(format!("--to {e}")))?;
    let source = config.update_source.clone().ok_or_else(|| {
        UpdateError(
            "no release source: set CSS_UPDATE_SOURCE (or pass --source) to the release manifest URL (https://…/manifest.json) or to s3://<bucket>/<prefix>".into(),
        )
    })?;
    let source_label = source.to_string();
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| UpdateError(format!("cannot tell where this xpod binary is ({e})")))?;
    // Before any network traffic: without a trusted key nothing can be verified.
    let trusted = keys::trusted(&config.update_keys_dir)?;

    let fetcher = fetch::Fetcher::new(&source, config)?;
    let (manifest_bytes, signature) = fetcher.manifest().await?;
    let signer = keys::verify(&trusted, &manifest_bytes, &signature, &source_label)?;
    let manifest = Manifest::parse(&manifest_bytes, &source_label)?;
    let (_, latest) = manifest.pick(None, &current, &source_label)?;
    let (release, target) = manifest.pick(to.as_ref(), &current, &source_label)?;

    println!("current version: {current} ({})", exe.display());
    println!(
        "latest release:  {latest} (from {source_label}, signed by {})",
        signer.origin
    );
    let downgrade = match target.cmp(&current) {
        Ordering::Equal => {
            println!("xpod {current} is up to date; nothing to do");
            return Ok(());
        }
        Ordering::Less if !options.allow_downgrade => {
            return Err(UpdateError(format!(
                "{target} is older than the installed {current}: refusing to downgrade; pass --allow-downgrade to install it anyway"
            )));
        }
        Ordering::Less => true,
        Ordering::Greater => false,
    };

    let method = install::detect(&exe);
    let kind = method.kind();
    let artifact = release.artifact(kind, kind.arch())?;
    let plan = format!(
        "{} {current} -> {target}: {} (sha256 {}), installed {}",
        if downgrade { "downgrade" } else { "update" },
        fetcher.artifact_label(artifact),
        artifact.sha256.to_ascii_lowercase(),
        method.describe(&exe)
    );
    if options.check {
        println!("would {plan}");
        println!("nothing was changed (--check)");
        return Ok(());
    }
    install::preflight(&method, &exe)?;
    println!("{plan}");

    let work = tempfile::Builder::new()
        .prefix("xpod-update-")
        .tempdir()
        .map_err(|e| {
            UpdateError(format!(
                "cannot create a temporary directory ({e}); check TMPDIR"
            ))
        })?;
    let file: PathBuf = work.path().join(artifact.file_name());
    fetcher.download(artifact, &file).await?;

    let version = release.version.clone();
    let exe_for_install = exe.clone();
    let packaged = !matches!(method, Method::Tarball);
    tokio::task::spawn_blocking(move || match &method {
        Method::Tarball => install::replace_from_tarball(&file, &version, &exe_for_install),
        package => install::install_package(package, &file, downgrade),
    })
    .await
    .map_err(|e| UpdateError(format!("the install step failed: {e}")))??;
    drop(work);
    println!("installed xpod {target} at {}", exe.display());
    if packaged {
        // The package's own scripts restart the service after an upgrade.
        println!(
            "the package's scripts restarted {}, if it runs",
            install::SERVICE
        );
    } else {
        println!("{}", install::restart_service(&exe, &target.to_string())?);
    }
    Ok(())
}
