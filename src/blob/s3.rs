//! The S3 side of tiered storage, through the `minio` crate.
//!
//! Objects are keyed by the lowercase hex SHA-256 of their bytes, so they are
//! immutable and any copy of them (the local cache) can never be stale. Every
//! call has a bounded time and is retried with backoff on transient failures
//! (connection refused, timeouts, 5xx); "not found" and "access denied" are
//! answers, not failures, and are never retried.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::StreamExt;
use minio::s3::MinioClient;
use minio::s3::builders::ObjectContent;
use minio::s3::creds::StaticProvider;
use minio::s3::error::{Error as MinioError, NetworkError, S3ServerError};
use minio::s3::http::BaseUrl;
use minio::s3::minio_error_response::MinioErrorCode;
use minio::s3::types::{Region, S3Api};

use crate::config::S3Config;
use crate::metrics::Metrics;

use super::ByteStream;

/// The object holding the bucket's storage id.
pub const MARKER_KEY: &str = "xpod-storage-id";

/// Uploads larger than this go in parts of this size; the client buffers one
/// part per upload, so this bounds an upload's memory.
const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Attempts per operation (the first try and two retries).
const ATTEMPTS: u32 = 3;
/// Bound on a small request (HEAD, DELETE, the marker, the first byte of a GET).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the wait for the next chunk of a GET body.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("no such object")]
    NotFound,
    /// The server refused the credentials or the action.
    #[error("{0}")]
    Denied(String),
    /// Transient: unreachable, timed out, 5xx. Already retried.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

impl S3Error {
    fn transient(&self) -> bool {
        matches!(self, S3Error::Unreachable(_))
    }
}

fn classify(e: MinioError) -> S3Error {
    match e {
        MinioError::S3Server(S3ServerError::S3Error(resp)) => {
            let message = resp.message().clone().unwrap_or_default();
            match resp.code() {
                MinioErrorCode::NoSuchKey | MinioErrorCode::ResourceNotFound => S3Error::NotFound,
                MinioErrorCode::NoSuchBucket => {
                    S3Error::Other(format!("the bucket does not exist ({message})"))
                }
                MinioErrorCode::AccessDenied => S3Error::Denied(format!("AccessDenied: {message}")),
                MinioErrorCode::OtherError(code) => match code.as_str() {
                    "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidSignature" => {
                        S3Error::Denied(format!("{code}: {message}"))
                    }
                    "InternalError" | "ServiceUnavailable" | "SlowDown" | "RequestTimeout" => {
                        S3Error::Unreachable(format!("{code}: {message}"))
                    }
                    _ => S3Error::Other(format!("{code}: {message}")),
                },
                other => S3Error::Other(format!("{other:?}: {message}")),
            }
        }
        MinioError::S3Server(S3ServerError::HttpError(status, body)) => match status {
            404 => S3Error::NotFound,
            401 | 403 => S3Error::Denied(format!("HTTP {status}: {body}")),
            s if s >= 500 => S3Error::Unreachable(format!("HTTP {status}: {body}")),
            _ => S3Error::Other(format!("HTTP {status}: {body}")),
        },
        MinioError::S3Server(other) => S3Error::Other(other.to_string()),
        MinioError::Network(NetworkError::ServerError(status)) if status >= 500 => {
            S3Error::Unreachable(format!("HTTP {status}"))
        }
        MinioError::Network(e) => S3Error::Unreachable(network_text(&e)),
        other => {
            let text = error_chain(&other);
            // The crate reports some transport failures as validation errors.
            if text.contains("error sending request") || text.contains("connect") {
                S3Error::Unreachable(text)
            } else {
                S3Error::Other(text)
            }
        }
    }
}

fn network_text(e: &NetworkError) -> String {
    error_chain(e)
}

/// The error with its sources, "a: b: c".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A bucket on an S3 server.
pub struct S3Store {
    client: MinioClient,
    bucket: String,
    region: Region,
    /// `host:port/bucket`, for messages and the database record.
    label: String,
    metrics: Arc<Metrics>,
}

impl S3Store {
    pub fn new(config: &S3Config, metrics: Arc<Metrics>) -> Result<S3Store, String> {
        let mut base: BaseUrl =
            config.endpoint.as_str().parse().map_err(|e| {
                format!("CSS_MINIO_ENDPOINT {} is not usable: {e}", config.endpoint)
            })?;
        let region = Region::new(config.region.clone())
            .map_err(|e| format!("CSS_MINIO_REGION is not usable: {e}"))?;
        base.region = region.clone();
        // Path-style addressing works with every S3 server; virtual hosts need DNS.
        base.virtual_style = false;
        let provider =
            StaticProvider::new(config.access_key.expose(), config.secret_key.expose(), None);
        let client = minio::s3::MinioClientBuilder::new(base)
            .provider(Some(provider))
            .build()
            .map_err(|e| format!("cannot set up the S3 client: {e}"))?;
        let host = config.endpoint.host_str().unwrap_or("");
        let label = match config.endpoint.port_or_known_default() {
            Some(port) => format!("{host}:{port}/{}", config.bucket),
            None => format!("{host}/{}", config.bucket),
        };
        Ok(S3Store {
            client,
            bucket: config.bucket.clone(),
            region,
            label,
            metrics,
        })
    }

    /// `host:port/bucket`.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Runs `op` with a time bound per attempt, retrying transient failures
    /// with exponential backoff (100 ms, then 400 ms).
    async fn retry<T, F, Fut>(&self, what: &str, timeout: Duration, mut op: F) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, S3Error>>,
    {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            self.metrics.s3.requests.fetch_add(1, Relaxed);
            let result = match tokio::time::timeout(timeout, op()).await {
                Ok(r) => r,
                Err(_) => Err(S3Error::Unreachable(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                ))),
            };
            match result {
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    tracing::debug!(operation = what, attempt, error = %e, "S3 call failed; retrying");
                    self.metrics.s3.retries.fetch_add(1, Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                Err(e) => {
                    if e.transient() {
                        self.metrics.s3.failures.fetch_add(1, Relaxed);
                    }
                    return Err(e);
                }
                ok => return ok,
            }
        }
    }

    /// Makes sure the bucket exists, creating it if it does not. The error
    /// says whether S3 was merely unreachable (`true`) and what to fix.
    pub async fn ensure_bucket(&self) -> Result<(), (bool, String)> {
        let exists = self
            .retry("bucket_exists", CALL_TIMEOUT, || async {
                let req = self
                    .client
                    .bucket_exists(self.bucket.as_str())
                    .map_err(|e| S3Error::Other(e.to_string()))?
                    .region(Some(self.region.clone()))
                    .build();
                req.send().await.map(|r| r.exists()).map_err(classify)
            })
            .await
            .map_err(|e| match e {
                S3Error::Denied(why) => (false, format!(
                    "S3 at {} refused to say whether bucket {} exists ({why}); check CSS_MINIO_ACCESS_KEY and CSS_MINIO_SECRET_KEY, and grant the key s3:ListBucket on the bucket",
                    self.label, self.bucket
                )),
                other => (other.transient(), self.unreachable_text("check the bucket", &other)),
            })?;
        if exists {
            return Ok(());
        }
        tracing::info!(bucket = %self.bucket, "creating the S3 bucket");
        self.retry("create_bucket", CALL_TIMEOUT, || async {
            let req = self
                .client
                .create_bucket(self.bucket.as_str())
                .map_err(|e| S3Error::Other(e.to_string()))?
                .region(Some(self.region.clone()))
                .build();
            match req.send().await.map_err(classify) {
                Ok(_) => Ok(()),
                // Another node created it first.
                Err(S3Error::Other(t)) if t.contains("BucketAlready") => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| match e {
            S3Error::Denied(why) => (false, format!(
                "bucket {} does not exist and S3 at {} refused to create it ({why}); grant the access key s3:CreateBucket, or create the bucket yourself",
                self.bucket, self.label
            )),
            other => (other.transient(), format!(
                "bucket {} does not exist and creating it failed: {other}; create the bucket yourself or fix CSS_MINIO_BUCKET_NAME",
                self.bucket
            )),
        })
    }

    fn unreachable_text(&self, action: &str, e: &S3Error) -> String {
        format!(
            "cannot {action} at S3 {} ({e}); check CSS_MINIO_ENDPOINT and that the S3 server is running",
            self.label
        )
    }

    /// Reads a small object whole (the storage marker).
    pub async fn get_small(&self, key: &str) -> Result<Option<bytes::Bytes>, S3Error> {
        let result = self
            .retry("get_object", CALL_TIMEOUT, || async {
                let req = self
                    .client
                    .get_object(self.bucket.as_str(), key)
                    .map_err(|e| S3Error::Other(e.to_string()))?
                    .region(Some(self.region.clone()))
                    .build();
                let resp = req.send().await.map_err(classify)?;
                resp.into_bytes().await.map_err(classify)
            })
            .await;
        match result {
            Ok(b) => Ok(Some(b)),
            Err(S3Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a small object whole (the storage marker).
    pub async fn put_small(&self, key: &str, bytes: bytes::Bytes) -> Result<(), S3Error> {
        self.retry("put_object", CALL_TIMEOUT, || async {
            let content = ObjectContent::from(bytes.clone());
            let req = self
                .client
                .put_object_content(self.bucket.as_str(), key, content)
                .map_err(|e| S3Error::Other(e.to_string()))?
                .region(Some(self.region.clone()))
                .build();
            req.send().await.map(|_| ()).map_err(classify)
        })
        .await
    }

    /// Uploads a file under `hash`, streaming it with its known size.
    pub async fn put_file(
        &self,
        hash: &str,
        path: &std::path::Path,
        size: u64,
    ) -> Result<(), S3Error> {
        // Generous for slow links, bounded for dead ones: 60 s plus 1 s per MiB.
        let timeout = Duration::from_secs(60 + size / (1024 * 1024));
        self.retry("put_object", timeout, || async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| S3Error::Other(format!("cannot read the spool file: {e}")))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
            let content = ObjectContent::new_from_stream(stream, Some(size));
            let req = self
                .client
                .put_object_content(self.bucket.as_str(), hash, content)
                .map_err(|e| S3Error::Other(e.to_string()))?
                .region(Some(self.region.clone()))
                .part_size(Some(PART_SIZE))
                .build();
            req.send().await.map(|_| ()).map_err(classify)
        })
        .await
    }

    /// Streams an object, or the inclusive byte range `start..=end` of it.
    /// Returns the stream and its length.
    pub async fn get(
        &self,
        hash: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(ByteStream, u64), S3Error> {
        let (stream, len) = self
            .retry("get_object", CALL_TIMEOUT, || async {
                let (offset, length) = match range {
                    Some((start, end)) => (Some(start), Some(end - start + 1)),
                    None => (None, None),
                };
                let req = self
                    .client
                    .get_object(self.bucket.as_str(), hash)
                    .map_err(|e| S3Error::Other(e.to_string()))?
                    .region(Some(self.region.clone()))
                    .offset(offset)
                    .length(length)
                    .build();
                let resp = req.send().await.map_err(classify)?;
                resp.into_boxed_stream().map_err(classify)
            })
            .await?;
        // A stalled body must not hold a client forever.
        let bounded = futures::stream::unfold(stream, |mut s| async move {
            match tokio::time::timeout(CHUNK_TIMEOUT, s.next()).await {
                Ok(Some(item)) => Some((item, s)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "S3 stopped sending the object",
                    )),
                    s,
                )),
            }
        });
        Ok((bounded.boxed(), len))
    }

    pub async fn exists(&self, hash: &str) -> Result<bool, S3Error> {
        let result = self
            .retry("stat_object", CALL_TIMEOUT, || async {
                let req = self
                    .client
                    .stat_object(self.bucket.as_str(), hash)
                    .map_err(|e| S3Error::Other(e.to_string()))?
                    .region(Some(self.region.clone()))
                    .build();
                req.send().await.map(|_| ()).map_err(classify)
            })
            .await;
        match result {
            Ok(()) => Ok(true),
            Err(S3Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, hash: &str) -> Result<(), S3Error> {
        let result = self
            .retry("delete_object", CALL_TIMEOUT, || async {
                let req = self
                    .client
                    .delete_object(self.bucket.as_str(), hash)
                    .map_err(|e| S3Error::Other(e.to_string()))?
                    .region(Some(self.region.clone()))
                    .build();
                req.send().await.map(|_| ()).map_err(classify)
            })
            .await;
        match result {
            Ok(()) | Err(S3Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
