//! Reading a release source: the manifest, its signature and artifacts,
//! over HTTP(S) or from an S3 bucket. Artifacts stream to disk, hashed on
//! the way; nothing is held whole in memory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::blob::ByteStream;
use crate::blob::s3::{S3Error, S3Store};
use crate::config::{Config, ReleaseSource};

use super::UpdateError;
use super::manifest::Artifact;

/// The manifest's file name in an S3 prefix.
const MANIFEST: &str = "manifest.json";
/// Bounds on what is read into memory: a manifest and its signature.
const MANIFEST_MAX: usize = 4 * 1024 * 1024;
const SIGNATURE_MAX: usize = 1024;
/// The most an artifact may weigh when its manifest entry gives no size
/// (`scripts/release` always gives one): a release is tens of megabytes.
const ARTIFACT_MAX: u64 = 1024 * 1024 * 1024;

/// Where a file of the release source is.
enum Location {
    Http(Url),
    S3(String),
}

pub struct Fetcher {
    source: ReleaseSource,
    http: reqwest::Client,
    s3: Option<S3Store>,
}

impl Fetcher {
    pub fn new(source: &ReleaseSource, config: &Config) -> Result<Fetcher, UpdateError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("xpod/", env!("CARGO_PKG_VERSION"), " self-update"))
            .build()
            .map_err(|e| UpdateError(format!("cannot set up the HTTP client: {e}")))?;
        let s3 = match source {
            ReleaseSource::Manifest(_) => None,
            ReleaseSource::S3 { bucket, .. } => {
                let mut s3 = config.s3.clone().ok_or_else(|| {
                    UpdateError(format!(
                        "the release source {source} is a bucket of the S3 server named by CSS_MINIO_ENDPOINT, which is not set; set CSS_MINIO_ENDPOINT, CSS_MINIO_BUCKET_NAME, CSS_MINIO_ACCESS_KEY and CSS_MINIO_SECRET_KEY as for `xpod serve`, or use a manifest URL"
                    ))
                })?;
                s3.bucket = bucket.clone();
                let metrics = Arc::new(crate::metrics::Metrics::default());
                Some(S3Store::new(&s3, metrics).map_err(UpdateError)?)
            }
        };
        Ok(Fetcher {
            source: source.clone(),
            http,
            s3,
        })
    }

    /// The manifest and its detached signature, both as published.
    pub async fn manifest(&self) -> Result<(Vec<u8>, Vec<u8>), UpdateError> {
        let (manifest, signature) = match &self.source {
            ReleaseSource::Manifest(url) => {
                let mut sig = url.clone();
                sig.set_path(&format!("{}.sig", url.path()));
                (Location::Http(url.clone()), Location::Http(sig))
            }
            ReleaseSource::S3 { prefix, .. } => {
                let key = join_key(prefix, MANIFEST);
                (
                    Location::S3(key.clone()),
                    Location::S3(format!("{key}.sig")),
                )
            }
        };
        let manifest_bytes = self.read_small(&manifest, MANIFEST_MAX).await?;
        let signature_bytes = match self.read_small(&signature, SIGNATURE_MAX).await {
            Err(Missing::NotFound(_)) => {
                return Err(UpdateError(format!(
                    "the release manifest {} has no signature beside it ({} is missing): publish releases with scripts/release, which signs them; nothing was changed",
                    self.label(&manifest),
                    self.label(&signature)
                )));
            }
            other => other?,
        };
        Ok((manifest_bytes, signature_bytes))
    }

    /// Where an artifact comes from, for messages.
    pub fn artifact_label(&self, artifact: &Artifact) -> String {
        self.label(&self.locate(artifact))
    }

    /// Streams an artifact into `dest`, checking its size and SHA-256 as
    /// the manifest states them. On any error `dest` may hold a partial
    /// file, which the caller's temporary directory removes.
    pub async fn download(&self, artifact: &Artifact, dest: &Path) -> Result<(), UpdateError> {
        let location = self.locate(artifact);
        let label = self.label(&location);
        let mut stream = self.open(&location).await?;
        let mut file = tokio::fs::File::create(dest).await.map_err(|e| {
            UpdateError(format!(
                "cannot create {} ({e}); check the free space of the temporary directory",
                dest.display()
            ))
        })?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                UpdateError(format!(
                    "downloading {label} failed ({e}); try again; nothing was changed"
                ))
            })?;
            size += chunk.len() as u64;
            if let Some(limit) = artifact.size.filter(|limit| size > *limit) {
                return Err(UpdateError(format!(
                    "{label} is larger than the {limit} bytes the signed manifest states: the published file is not the released one; nothing was changed"
                )));
            }
            if artifact.size.is_none() && size > ARTIFACT_MAX {
                return Err(UpdateError(format!(
                    "{label} is larger than {ARTIFACT_MAX} bytes and the manifest states no size: refusing it; ask the publisher to list sizes (scripts/release does); nothing was changed"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| {
                UpdateError(format!(
                    "cannot write {} ({e}); check the free space of the temporary directory",
                    dest.display()
                ))
            })?;
        }
        file.sync_all()
            .await
            .map_err(|e| UpdateError(format!("cannot write {} ({e})", dest.display())))?;
        let digest = hex::encode(hasher.finalize());
        if !digest.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(UpdateError(format!(
                "{label} has sha256 {digest}, but the signed manifest says {}: the published file is corrupt or was tampered with; nothing was changed",
                artifact.sha256.to_ascii_lowercase()
            )));
        }
        Ok(())
    }

    fn locate(&self, artifact: &Artifact) -> Location {
        if let Some(url) = artifact.url.as_deref().and_then(|u| Url::parse(u).ok()) {
            return Location::Http(url);
        }
        let name = artifact.name.as_deref().unwrap_or_default();
        match &self.source {
            ReleaseSource::Manifest(url) => {
                Location::Http(url.join(name).unwrap_or_else(|_| url.clone()))
            }
            ReleaseSource::S3 { prefix, .. } => Location::S3(join_key(prefix, name)),
        }
    }

    fn label(&self, location: &Location) -> String {
        match (location, &self.source) {
            (Location::Http(url), _) => url.to_string(),
            (Location::S3(key), ReleaseSource::S3 { bucket, .. }) => format!("s3://{bucket}/{key}"),
            (Location::S3(key), _) => key.clone(),
        }
    }

    async fn open(&self, location: &Location) -> Result<ByteStream, Missing> {
        let label = self.label(location);
        match location {
            Location::Http(url) => {
                let resp = self.http.get(url.clone()).send().await.map_err(|e| {
                    Missing::Other(UpdateError(format!(
                        "cannot reach the release server for {label} ({}); check the network and CSS_UPDATE_SOURCE",
                        crate::walk::remote::error_chain(&e)
                    )))
                })?;
                let status = resp.status();
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Err(Missing::NotFound(UpdateError(format!(
                        "the release server has no {label} (404); check CSS_UPDATE_SOURCE or --source"
                    ))));
                }
                if !status.is_success() {
                    return Err(Missing::Other(UpdateError(format!(
                        "the release server answered {status} for {label}; try again later, or check CSS_UPDATE_SOURCE"
                    ))));
                }
                Ok(resp
                    .bytes_stream()
                    .map(|r| r.map_err(std::io::Error::other))
                    .boxed())
            }
            Location::S3(key) => {
                let store = self.s3.as_ref().expect("an S3 source has a store");
                match store.get(key, None).await {
                    Ok((stream, _)) => Ok(stream),
                    Err(S3Error::NotFound) => Err(Missing::NotFound(UpdateError(format!(
                        "there is no {label} in the bucket; publish the release there (scripts/release writes manifest.json, its .sig and the artifacts) or fix CSS_UPDATE_SOURCE"
                    )))),
                    Err(S3Error::Denied(why)) => Err(Missing::Other(UpdateError(format!(
                        "S3 refused to read {label} ({why}); grant CSS_MINIO_ACCESS_KEY read access to the bucket"
                    )))),
                    Err(e) => Err(Missing::Other(UpdateError(format!(
                        "cannot read {label} from S3 at {} ({e}); check CSS_MINIO_ENDPOINT and that the S3 server is running",
                        store.label()
                    )))),
                }
            }
        }
    }

    async fn read_small(&self, location: &Location, max: usize) -> Result<Vec<u8>, Missing> {
        let label = self.label(location);
        let mut stream = self.open(location).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Missing::Other(UpdateError(format!(
                    "reading {label} failed ({e}); try again"
                )))
            })?;
            if bytes.len() + chunk.len() > max {
                return Err(Missing::Other(UpdateError(format!(
                    "{label} is larger than {max} bytes, too large for a release manifest or signature; check CSS_UPDATE_SOURCE"
                ))));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// A failed read, telling "not there" apart (a missing signature has its own message).
enum Missing {
    NotFound(UpdateError),
    Other(UpdateError),
}

impl From<Missing> for UpdateError {
    fn from(m: Missing) -> Self {
        match m {
            Missing::NotFound(e) | Missing::Other(e) => e,
        }
    }
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_join_under_the_prefix() {
        assert_eq!(super::join_key("", "manifest.json"), "manifest.json");
        assert_eq!(super::join_key("stable/xpod", "a.deb"), "stable/xpod/a.deb");
    }
}
