//! The release manifest: which releases exist and the SHA-256 of each of
//! their artifacts. It is parsed only after its signature checked out
//! ([`super::keys::verify`]), so everything in it is the publisher's word.

use semver::Version;
use serde::Deserialize;

use super::UpdateError;

/// `manifest.json`, as `scripts/release` writes it.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub releases: Vec<Release>,
}

#[derive(Debug, Deserialize)]
pub struct Release {
    pub version: String,
    pub artifacts: Vec<Artifact>,
}

/// One downloadable file of a release.
#[derive(Debug, Clone, Deserialize)]
pub struct Artifact {
    /// `tarball`, `deb` or `rpm`; other kinds are ignored.
    pub kind: String,
    /// In the naming of its kind: `x86_64` (tarball, rpm), `amd64` (deb).
    pub arch: String,
    /// The file name, resolved against the manifest's URL (or S3 prefix).
    #[serde(default)]
    pub name: Option<String>,
    /// An absolute http(s) URL, instead of a name beside the manifest.
    #[serde(default)]
    pub url: Option<String>,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// The size in bytes, when the publisher gave it: bounds the download.
    #[serde(default)]
    pub size: Option<u64>,
}

/// How this binary was installed, hence which artifact replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tarball,
    Deb,
    Rpm,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tarball => "tarball",
            Kind::Deb => "deb",
            Kind::Rpm => "rpm",
        }
    }

    /// This machine's architecture as artifacts of this kind name it.
    pub fn arch(self) -> &'static str {
        arch_name(self, std::env::consts::ARCH)
    }
}

/// Debian names architectures its own way; tarballs and RPMs use the
/// kernel's (`uname -m`) names, as Rust's `ARCH` does.
fn arch_name(kind: Kind, rust_arch: &'static str) -> &'static str {
    match (kind, rust_arch) {
        (Kind::Deb, "x86_64") => "amd64",
        (Kind::Deb, "aarch64") => "arm64",
        (Kind::Deb, "x86") => "i386",
        (Kind::Deb, "arm") => "armhf",
        (Kind::Deb, "powerpc64") => "ppc64el",
        (Kind::Deb, "riscv64") => "riscv64",
        (Kind::Rpm, "x86") => "i686",
        (_, arch) => arch,
    }
}

/// Parses a version as the manifest and `--to` write it (`1.2.3`, `v1.2.3`).
/// Build metadata (`+…`) is dropped: it does not make a release newer.
pub fn parse_version(v: &str) -> Result<Version, String> {
    let mut version = Version::parse(v.trim().trim_start_matches('v'))
        .map_err(|e| format!("{v:?} is not a version such as 1.2.3 ({e})"))?;
    version.build = semver::BuildMetadata::EMPTY;
    Ok(version)
}

impl Manifest {
    pub fn parse(bytes: &[u8], source: &str) -> Result<Manifest, UpdateError> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            UpdateError(format!(
                "the release manifest at {source} is signed but not valid ({e}); ask its publisher to regenerate it with scripts/release"
            ))
        })?;
        for release in &manifest.releases {
            parse_version(&release.version).map_err(|e| {
                UpdateError(format!(
                    "the release manifest at {source} lists a bad version: {e}"
                ))
            })?;
            for a in &release.artifacts {
                a.check().map_err(|e| {
                    UpdateError(format!(
                        "the release manifest at {source}: release {} has a bad {} artifact: {e}",
                        release.version, a.kind
                    ))
                })?;
            }
        }
        Ok(manifest)
    }

    /// The release `--to` names, else the highest version; pre-releases
    /// (`1.2.0-rc.1`) only when `--to` names one or `current` is one.
    pub fn pick(
        &self,
        to: Option<&Version>,
        current: &Version,
        source: &str,
    ) -> Result<(&Release, Version), UpdateError> {
        let mut versions: Vec<(&Release, Version)> = self
            .releases
            .iter()
            .map(|r| (r, parse_version(&r.version).expect("checked in parse")))
            .collect();
        versions.sort_by(|a, b| a.1.cmp(&b.1));
        match to {
            None => versions
                .into_iter()
                .rev()
                .find(|(_, v)| v.pre.is_empty() || !current.pre.is_empty())
                .ok_or_else(|| {
                    UpdateError(format!(
                        "the release manifest at {source} lists no release; nothing to update to"
                    ))
                }),
            Some(want) => {
                let listed: Vec<String> = versions.iter().map(|(_, v)| v.to_string()).collect();
                versions.into_iter().find(|(_, v)| v == want).ok_or_else(|| {
                    UpdateError(format!(
                        "version {want} is not in the release manifest at {source}; it lists {}",
                        if listed.is_empty() { "none".to_string() } else { listed.join(", ") }
                    ))
                })
            }
        }
    }
}

impl Release {
    /// The artifact of this kind for this machine.
    pub fn artifact(&self, kind: Kind, arch: &str) -> Result<&Artifact, UpdateError> {
        self.artifacts
            .iter()
            .find(|a| a.kind == kind.as_str() && a.arch == arch)
            .ok_or_else(|| {
                let offered: Vec<String> = self
                    .artifacts
                    .iter()
                    .map(|a| format!("{} {}", a.kind, a.arch))
                    .collect();
                UpdateError(format!(
                    "release {} has no {} for {arch} (it offers {}); this install needs one, so nothing was changed",
                    self.version,
                    kind.as_str(),
                    if offered.is_empty() { "nothing".to_string() } else { offered.join(", ") }
                ))
            })
    }
}

impl Artifact {
    fn check(&self) -> Result<(), String> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("sha256 is not 64 hex digits".into());
        }
        match (&self.name, &self.url) {
            (_, Some(url)) => match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
                _ => Err(format!("url {url:?} is not an absolute http(s) URL")),
            },
            (Some(name), None) => {
                let plain = !name.is_empty()
                    && !name.starts_with('/')
                    && !name.contains(['?', '#', '\\'])
                    && name
                        .split('/')
                        .all(|s| !s.is_empty() && s != "." && s != "..");
                if plain {
                    Ok(())
                } else {
                    Err(format!("name {name:?} is not a plain relative file name"))
                }
            }
            (None, None) => Err("it has neither a name nor a url".into()),
        }
    }

    /// The file name, for messages and the download.
    pub fn file_name(&self) -> &str {
        match (&self.name, &self.url) {
            (Some(name), _) => name.rsplit('/').next().unwrap_or(name),
            (None, Some(url)) => url.rsplit('/').next().unwrap_or(url),
            (None, None) => "artifact",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92";

    fn manifest(json: &str) -> Result<Manifest, UpdateError> {
        Manifest::parse(json.as_bytes(), "test")
    }

    #[test]
    fn latest_is_the_highest_version_not_the_last_listed() {
        let m = manifest(&format!(
            r#"{{"releases":[
                {{"version":"0.10.0","artifacts":[]}},
                {{"version":"0.9.1","artifacts":[{{"kind":"tarball","arch":"x86_64","name":"a.tar.gz","sha256":"{DIGEST}"}}]}},
                {{"version":"0.10.0-rc.1","artifacts":[]}}
            ]}}"#
        ))
        .unwrap();
        let stable = parse_version("0.9.0").unwrap();
        assert_eq!(m.pick(None, &stable, "t").unwrap().1.to_string(), "0.10.0");
        let v = parse_version("v0.9.1").unwrap();
        assert_eq!(m.pick(Some(&v), &stable, "t").unwrap().0.version, "0.9.1");
        let err = m
            .pick(Some(&parse_version("2.0.0").unwrap()), &stable, "t")
            .unwrap_err();
        assert!(
            err.0.contains("it lists 0.9.1, 0.10.0-rc.1, 0.10.0"),
            "{}",
            err.0
        );
    }

    #[test]
    fn pre_releases_are_picked_only_when_asked_for_or_already_run() {
        let m = manifest(
            r#"{"releases":[
                {"version":"0.9.0","artifacts":[]},
                {"version":"0.10.0-rc.1","artifacts":[]},
                {"version":"0.9.1+build.7","artifacts":[]}
            ]}"#,
        )
        .unwrap();
        let stable = parse_version("0.9.0").unwrap();
        assert_eq!(m.pick(None, &stable, "t").unwrap().1.to_string(), "0.9.1");
        let rc = parse_version("0.10.0-rc.1").unwrap();
        assert_eq!(m.pick(Some(&rc), &stable, "t").unwrap().1, rc);
        let beta = parse_version("0.10.0-beta.2").unwrap();
        assert_eq!(m.pick(None, &beta, "t").unwrap().1, rc);
        // Build metadata does not make a release newer, nor hide it from --to.
        assert_eq!(
            parse_version("0.9.1+other").unwrap(),
            parse_version("0.9.1").unwrap()
        );
        let built = parse_version("0.9.1").unwrap();
        assert_eq!(
            m.pick(Some(&built), &stable, "t").unwrap().0.version,
            "0.9.1+build.7"
        );
    }

    #[test]
    fn artifacts_are_chosen_by_kind_and_architecture() {
        let m = manifest(&format!(
            r#"{{"releases":[{{"version":"1.0.0","artifacts":[
                {{"kind":"tarball","arch":"x86_64","name":"t.tar.gz","sha256":"{DIGEST}"}},
                {{"kind":"deb","arch":"amd64","name":"sub/x.deb","sha256":"{DIGEST}","size":5}},
                {{"kind":"signature-bundle","arch":"any","url":"https://x.example/b","sha256":"{DIGEST}"}}
            ]}}]}}"#
        ))
        .unwrap();
        let r = &m.releases[0];
        assert_eq!(r.artifact(Kind::Deb, "amd64").unwrap().file_name(), "x.deb");
        assert_eq!(r.artifact(Kind::Deb, "amd64").unwrap().size, Some(5));
        let err = r.artifact(Kind::Rpm, "x86_64").unwrap_err();
        assert!(
            err.0
                .contains("has no rpm for x86_64 (it offers tarball x86_64, deb amd64"),
            "{}",
            err.0
        );
        assert_eq!(arch_name(Kind::Deb, "x86_64"), "amd64");
        assert_eq!(arch_name(Kind::Deb, "aarch64"), "arm64");
        assert_eq!(arch_name(Kind::Rpm, "aarch64"), "aarch64");
        assert_eq!(arch_name(Kind::Tarball, "x86_64"), "x86_64");
    }

    #[test]
    fn bad_entries_are_refused() {
        for artifact in [
            r#"{"kind":"deb","arch":"amd64","name":"x.deb","sha256":"abc"}"#.to_string(),
            format!(r#"{{"kind":"deb","arch":"amd64","name":"../x.deb","sha256":"{DIGEST}"}}"#),
            format!(r#"{{"kind":"deb","arch":"amd64","name":"/etc/x.deb","sha256":"{DIGEST}"}}"#),
            format!(
                r#"{{"kind":"deb","arch":"amd64","url":"file:///etc/passwd","sha256":"{DIGEST}"}}"#
            ),
            format!(r#"{{"kind":"deb","arch":"amd64","sha256":"{DIGEST}"}}"#),
        ] {
            let json =
                format!(r#"{{"releases":[{{"version":"1.0.0","artifacts":[{artifact}]}}]}}"#);
            assert!(manifest(&json).is_err(), "{artifact}");
        }
        assert!(manifest(r#"{"releases":[{"version":"one","artifacts":[]}]}"#).is_err());
        assert!(
            manifest("not json")
                .unwrap_err()
                .0
                .contains("signed but not valid")
        );
    }
}
