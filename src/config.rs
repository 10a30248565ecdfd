//! One typed [`Config`], built from four layers, each overriding the one before:
//! built-in defaults, a TOML file, the environment (`CSS_*`), command-line flags.
//!
//! Every value remembers where it came from ([`Source`]) so that `xpod config`
//! can say why a setting has the value it has, and so that an invalid value is
//! reported under the name the operator actually used (`CSS_PORT`, `--port`, or
//! `port` in the file).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use url::Url;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/xpod/xpod.toml";

/// The environment file the packaged service gets (`EnvironmentFile=` in
/// `systemd/xpod.service`). Every command reads it when it exists, so the
/// command line sees the settings the service runs with.
pub const DEFAULT_ENV_FILE: &str = "/etc/xpod/xpod.env";

/// A configuration problem. Its message is one line that names the setting
/// and says what it accepts; `main` prints it and exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// A default computed from other settings (the text says from which).
    Derived(&'static str),
    File(PathBuf),
    /// A `NAME=value` line of an environment file (`/etc/xpod/xpod.env`).
    EnvironmentFile(String, PathBuf),
    Env(String),
    EnvFile(String, PathBuf),
    Flag(&'static str),
}

impl Source {
    /// How to name the setting in an error message.
    fn label(&self, key: &str) -> String {
        match self {
            Source::Default | Source::Derived(_) => format!("default {key}"),
            Source::File(path) => format!("{key} in {}", path.display()),
            Source::EnvironmentFile(var, path) => format!("{var} in {}", path.display()),
            Source::Env(var) => var.clone(),
            Source::EnvFile(var, _) => var.clone(),
            Source::Flag(flag) => flag.to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Derived(from) => write!(f, "default, from {from}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::EnvironmentFile(var, path) => write!(f, "{var} in {}", path.display()),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::EnvFile(var, path) => write!(f, "environment {var} (file {})", path.display()),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// One setting: its key in the TOML file, its environment variable, its flag.
struct Setting {
    key: &'static str,
    env: &'static str,
    flag: Option<&'static str>,
    secret: bool,
}

const fn setting(key: &'static str, env: &'static str, flag: Option<&'static str>) -> Setting {
    Setting {
        key,
        env,
        flag,
        secret: false,
    }
}

const fn secret(key: &'static str, env: &'static str) -> Setting {
    Setting {
        key,
        env,
        flag: None,
        secret: true,
    }
}

/// Every setting xpod reads. The order is the order `xpod config` prints.
const SETTINGS: &[Setting] = &[
    setting("host", "CSS_HOST", Some("--host")),
    setting("port", "CSS_PORT", Some("--port")),
    setting("base_url", "CSS_BASE_URL", Some("--base-url")),
    setting("https_cert", "CSS_HTTPS_CERT", None),
    setting("https_key", "CSS_HTTPS_KEY", None),
    setting("trusted_proxies", "CSS_TRUSTED_PROXIES", None),
    setting(
        "root_file_path",
        "CSS_ROOT_FILE_PATH",
        Some("--root-file-path"),
    ),
    secret("database_url", "CSS_DATABASE_URL"),
    setting("minio_endpoint", "CSS_MINIO_ENDPOINT", None),
    setting("minio_bucket_name", "CSS_MINIO_BUCKET_NAME", None),
    secret("minio_access_key", "CSS_MINIO_ACCESS_KEY"),
    secret("minio_secret_key", "CSS_MINIO_SECRET_KEY"),
    setting("minio_region", "CSS_MINIO_REGION", None),
    setting("cache_path", "CSS_CACHE_PATH", Some("--cache-path")),
    setting(
        "cache_max_size",
        "CSS_CACHE_MAX_SIZE",
        Some("--cache-max-size"),
    ),
    setting("max_body_size", "CSS_MAX_BODY_SIZE", None),
    setting("sparql_timeout", "CSS_SPARQL_TIMEOUT", None),
    setting("sparql_max_results", "CSS_SPARQL_MAX_RESULTS", None),
    setting("blob_gc_grace", "CSS_BLOB_GC_GRACE", None),
    setting("blob_gc_interval", "CSS_BLOB_GC_INTERVAL", None),
    setting("node_id", "CSS_NODE_ID", Some("--node-id")),
    secret("node_token", "CSS_NODE_TOKEN"),
    setting("signal_endpoint", "CSS_SIGNAL_ENDPOINT", None),
    setting("edge_signal_interval", "CSS_EDGE_SIGNAL_INTERVAL", None),
    setting("node_public_address", "CSS_NODE_PUBLIC_ADDRESS", None),
    setting("internal_ip", "CSS_INTERNAL_IP", None),
    setting("internal_port", "CSS_INTERNAL_PORT", None),
    setting("pod_ip", "POD_IP", None),
    setting("pod_routing_enabled", "CSS_POD_ROUTING_ENABLED", None),
    setting("heartbeat_interval", "CSS_HEARTBEAT_INTERVAL", None),
    setting("node_unreachable_after", "CSS_NODE_UNREACHABLE_AFTER", None),
    setting("auto_reassign", "CSS_AUTO_REASSIGN", None),
    setting(
        "outbound_allowed_networks",
        "CSS_OUTBOUND_ALLOWED_NETWORKS",
        None,
    ),
    setting("webhook_retry_window", "CSS_WEBHOOK_RETRY_WINDOW", None),
    setting("oidc_clock_skew", "CSS_OIDC_CLOCK_SKEW", None),
    setting("dpop_max_age", "CSS_DPOP_MAX_AGE", None),
    setting("dpop_require_ath", "CSS_DPOP_REQUIRE_ATH", None),
    setting("node_id_path", "CSS_NODE_ID_PATH", None),
    setting("pod_subdomains", "CSS_POD_SUBDOMAINS", None),
    secret("admin_token", "CSS_ADMIN_TOKEN"),
    secret("secret_key", "CSS_SECRET_KEY"),
    setting("log_level", "CSS_LOG_LEVEL", Some("--log-level")),
    setting("update_source", "CSS_UPDATE_SOURCE", Some("--source")),
    setting("update_keys_dir", "CSS_UPDATE_KEYS_DIR", None),
];

/// Every environment variable xpod reads, with its TOML key and whether it
/// is a secret (secrets also accept `<NAME>_FILE`).
pub fn known_variables() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    SETTINGS.iter().map(|s| (s.env, s.key, s.secret))
}

/// Values given on the command line, by setting key (e.g. `("port", "3001")`).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    /// The environment file to read instead of `/etc/xpod/xpod.env`.
    pub env_file: Option<PathBuf>,
    pub values: Vec<(&'static str, String)>,
}

/// Which metadata store to use, decided once from `CSS_DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// Embedded SQLite at this path (the default: `<root>/xpod.sqlite`).
    Sqlite(PathBuf),
    /// PostgreSQL; the URL may carry a password.
    Postgres(Secret),
}

/// S3 settings; present when `CSS_MINIO_ENDPOINT` is set.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Url,
    pub bucket: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub region: String,
}

/// Where `xpod self-update` finds releases (`CSS_UPDATE_SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseSource {
    /// The URL of a release manifest; its signature is at the same URL plus `.sig`.
    Manifest(Url),
    /// `s3://<bucket>/<prefix>`: `<prefix>/manifest.json` in a bucket of the
    /// S3 server configured by `CSS_MINIO_*` (the cluster's own, usually).
    S3 { bucket: String, prefix: String },
}

impl fmt::Display for ReleaseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseSource::Manifest(url) => write!(f, "{url}"),
            ReleaseSource::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            ReleaseSource::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// The release manifest this build was made to follow, if the build set one.
pub const BUILT_IN_RELEASE_SOURCE: Option<&str> = option_env!("XPOD_RELEASE_MANIFEST_URL");

/// The directory of administrator-installed release keys, by default.
pub const DEFAULT_UPDATE_KEYS_DIR: &str = "/etc/xpod/update-keys";

/// The PEM files of `CSS_HTTPS_CERT` and `CSS_HTTPS_KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub base_url: Url,
    /// Serve TLS directly: the certificate chain and private key (PEM).
    pub https: Option<Https>,
    /// Reverse proxies whose `X-Forwarded-For/Host/Proto` are believed.
    pub trusted_proxies: Vec<crate::outbound::Network>,
    pub root: PathBuf,
    pub database: DatabaseConfig,
    pub s3: Option<S3Config>,
    pub cache_path: PathBuf,
    pub cache_max_size: u64,
    pub max_body_size: u64,
    /// The longest a SPARQL query or update may run.
    pub sparql_timeout: std::time::Duration,
    /// The most rows (or triples) a SPARQL query may answer with.
    pub sparql_max_results: u64,
    /// How long a blob stays unreferenced before it may be collected.
    pub blob_gc_grace: std::time::Duration,
    /// How often the collector runs.
    pub blob_gc_interval: std::time::Duration,
    pub node_id: Option<String>,
    /// An edge's one-time enrolment token (`CSS_NODE_TOKEN`).
    pub node_token: Option<Secret>,
    /// Where an edge sends its heartbeats: the centre's signal URL. Set, it
    /// makes this node an edge.
    pub signal_endpoint: Option<Url>,
    /// On a centre: how often its edges are asked to send a heartbeat.
    pub edge_signal_interval: std::time::Duration,
    pub node_public_address: Option<String>,
    pub internal_ip: Option<IpAddr>,
    pub internal_port: Option<u16>,
    pub pod_ip: Option<IpAddr>,
    pub pod_routing_enabled: bool,
    /// How often a node records that it is alive.
    pub heartbeat_interval: std::time::Duration,
    /// A node silent for this long shows as unreachable.
    pub node_unreachable_after: std::time::Duration,
    /// Reassign the pods of an unreachable node to live nodes sharing its storage.
    pub auto_reassign: bool,
    /// Where requests made for clients (webhooks) may go.
    pub outbound: crate::outbound::Policy,
    /// A webhook receiver that keeps failing this long loses its channel.
    pub webhook_retry_window: std::time::Duration,
    /// How Solid-OIDC access tokens and DPoP proofs are checked.
    pub oidc: crate::auth::oidc::Settings,
    pub node_id_path: PathBuf,
    pub pod_subdomains: bool,
    pub admin_token: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub log_level: String,
    /// Where `xpod self-update` looks for releases; `None` when neither
    /// `CSS_UPDATE_SOURCE` nor the build names one.
    pub update_source: Option<ReleaseSource>,
    /// Release public keys an administrator trusts, besides the built-in one.
    pub update_keys_dir: PathBuf,
    /// Where each value came from, for `xpod config`.
    pub report: Vec<ReportLine>,
    /// `CSS_*` variables that name no setting.
    pub unknown_env: Vec<String>,
}

/// One line of `xpod config`.
#[derive(Debug, Clone)]
pub struct ReportLine {
    pub key: &'static str,
    pub env: &'static str,
    /// The value as shown: secrets redacted, `None` when unset.
    pub shown: Option<String>,
    pub source: Source,
}

impl Config {
    /// Builds the configuration from the real environment.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::from_parts(overrides, &env)
    }

    /// Builds the configuration from the given environment (tests pass their own).
    pub fn from_parts(
        overrides: &Overrides,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut raw: BTreeMap<&'static str, (String, Source)> = BTreeMap::new();

        // Layer 2: the TOML file.
        let file = match &overrides.config_file {
            Some(path) => Some(path.clone()),
            None => {
                let path = PathBuf::from(DEFAULT_CONFIG_FILE);
                path.exists().then_some(path)
            }
        };
        if let Some(path) = &file {
            read_file_layer(path, &mut raw)?;
        }

        // Layer 3: the environment file, for every variable the process
        // environment does not set itself (under systemd both hold the same).
        let (env_file, packaged) = match &overrides.env_file {
            Some(path) => (Some(path.clone()), false),
            // The service (the unit's StateDirectory= is set): systemd has
            // read the file already, as root, and its user may not be
            // allowed to. Other units' commands (a backup timer) read it.
            None if env.iter().any(|(n, _)| n == "STATE_DIRECTORY") => (None, false),
            None => {
                let path = PathBuf::from(DEFAULT_ENV_FILE);
                let found = path.exists();
                (found.then_some(path), found)
            }
        };
        let mut unknown_env = Vec::new();
        if let Some(path) = &env_file {
            for (name, value) in read_env_file(path)? {
                if env.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                let source = Source::EnvironmentFile(name.clone(), path.clone());
                take_variable(&mut raw, &mut unknown_env, env, &name, &value, source)?;
            }
        }

        // Layer 4: the environment, with `*_FILE` for secrets.
        for (name, value) in env {
            let source = Source::Env(name.clone());
            take_variable(&mut raw, &mut unknown_env, env, name, value, source)?;
        }
        unknown_env.sort();

        // Layer 5: flags.
        for (key, value) in &overrides.values {
            let s = SETTINGS
                .iter()
                .find(|s| s.key == *key)
                .expect("flag names a known setting");
            raw.insert(
                s.key,
                (value.clone(), Source::Flag(s.flag.unwrap_or("flag"))),
            );
        }

        Self::build(raw, unknown_env, env, packaged)
    }

    fn build(
        mut raw: BTreeMap<&'static str, (String, Source)>,
        unknown_env: Vec<String>,
        env: &[(String, String)],
        packaged: bool,
    ) -> Result<Config, ConfigError> {
        let env_get = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        // Empty values mean "unset", as an operator clearing a variable expects.
        raw.retain(|_, (v, _)| !v.trim().is_empty());

        let mut p = Parsed {
            raw: &raw,
            report: Vec::new(),
        };

        let host: IpAddr = p.value("host", "0.0.0.0", |v| {
            v.parse().map_err(|_| {
                "expected an IP address to listen on, such as 0.0.0.0 or 127.0.0.1".into()
            })
        })?;
        let port: u16 = p.value("port", "3000", parse_port)?;
        let https = match (
            p.optional("https_cert", parse_path)?,
            p.optional("https_key", parse_path)?,
        ) {
            (Some(cert), Some(key)) => Some(Https { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "CSS_HTTPS_CERT and CSS_HTTPS_KEY go together: set both (PEM files of the certificate chain and its private key) to serve HTTPS, or neither".into(),
                ));
            }
        };
        let trusted_proxies = p.value("trusted_proxies", "", |v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(crate::outbound::Network::parse)
                .collect::<Result<Vec<_>, _>>()
        })?;
        let scheme = if https.is_some() { "https" } else { "http" };
        let base_url = match p.get("base_url") {
            Some(_) => {
                let url = p.value("base_url", "", parse_base_url)?;
                // Show the normalised URL (with its trailing slash), as it is used.
                if let Some(line) = p.report.last_mut() {
                    line.shown = Some(url.to_string());
                }
                url
            }
            None => {
                let url = Url::parse(&format!("{scheme}://localhost:{port}/")).expect("valid url");
                p.derived("base_url", url.to_string(), "port");
                url
            }
        };
        let root = match p.get("root_file_path") {
            Some(_) => p.value("root_file_path", "", parse_path)?,
            None => {
                let (root, from) = default_root(&env_get, packaged);
                p.derived("root_file_path", root.display().to_string(), from);
                root
            }
        };
        let database = match p.get("database_url") {
            None => {
                let path = root.join("xpod.sqlite");
                p.derived("database_url", String::new(), "root_file_path: SQLite");
                DatabaseConfig::Sqlite(path)
            }
            Some(_) => p.value("database_url", "", parse_database_url)?,
        };

        let s3 = match p.get("minio_endpoint") {
            None => {
                for key in [
                    "minio_endpoint",
                    "minio_bucket_name",
                    "minio_access_key",
                    "minio_secret_key",
                    "minio_region",
                ] {
                    p.optional(key, |v| Ok(v.to_string()))?;
                }
                None
            }
            Some(_) => {
                let endpoint = p.value("minio_endpoint", "", |v| {
                    let url = Url::parse(v).map_err(|e| {
                        format!("expected an http:// or https:// URL of the S3 server ({e})")
                    })?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err("expected an http:// or https:// URL of the S3 server".into());
                    }
                    Ok(url)
                })?;
                let bucket = p.required("minio_bucket_name", "CSS_MINIO_ENDPOINT is set", |v| {
                    parse_bucket(v)
                })?;
                let access_key =
                    p.required("minio_access_key", "CSS_MINIO_ENDPOINT is set", |v| {
                        Ok(Secret::new(v))
                    })?;
                let secret_key =
                    p.required("minio_secret_key", "CSS_MINIO_ENDPOINT is set", |v| {
                        Ok(Secret::new(v))
                    })?;
                let region = p.value("minio_region", "us-east-1", |v| Ok(v.to_string()))?;
                Some(S3Config {
                    endpoint,
                    bucket,
                    access_key,
                    secret_key,
                    region,
                })
            }
        };

        let cache_path = match p.get("cache_path") {
            Some(_) => p.value("cache_path", "", parse_path)?,
            None => {
                let (path, from) = default_cache(&env_get, &root, packaged);
                p.derived("cache_path", path.display().to_string(), from);
                path
            }
        };
        let cache_max_size = p.value("cache_max_size", "10GiB", parse_size)?;
        let max_body_size = p.value("max_body_size", "10GiB", parse_size)?;
        let sparql_timeout = p.value("sparql_timeout", "10s", |v| {
            let d = parse_duration(v)?;
            if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(3600)
            {
                return Err("expected a duration from 10ms to 1h".into());
            }
            Ok(d)
        })?;
        let sparql_max_results = p.value("sparql_max_results", "10000", |v| {
            match v.trim().parse::<u64>() {
                Ok(n) if (1..=100_000_000).contains(&n) => Ok(n),
                _ => Err("expected a whole number from 1 to 100000000".to_string()),
            }
        })?;
        let blob_gc_grace = p.value("blob_gc_grace", "1h", parse_duration)?;
        let blob_gc_interval = p.value("blob_gc_interval", "10m", |v| {
            parse_duration(v).and_then(|d| {
                if d.is_zero() {
                    Err("expected a positive duration".into())
                } else {
                    Ok(d)
                }
            })
        })?;
        let node_id = p.optional("node_id", |v| {
            crate::node::identity::validate_node_id(v).map(|_| v.to_string())
        })?;
        let node_token = p.optional("node_token", |v| Ok(Secret::new(v)))?;
        let signal_endpoint = p.optional("signal_endpoint", parse_signal_endpoint)?;
        let edge_signal_interval = p.value("edge_signal_interval", "15s", |v| {
            let d = parse_duration(v)?;
            if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(300) {
                return Err("expected a duration from 1s to 5m".into());
            }
            Ok(d)
        })?;
        let node_public_address = p.optional("node_public_address", |v| Ok(v.to_string()))?;
        let internal_ip = p.optional("internal_ip", parse_ip)?;
        let internal_port = p.optional("internal_port", parse_port)?;
        let pod_ip = p.optional("pod_ip", parse_ip)?;
        let pod_routing_enabled = p.value("pod_routing_enabled", "true", parse_bool)?;
        let positive = |v: &str| {
            parse_duration(v).and_then(|d| {
                if d.is_zero() {
                    Err("expected a positive duration".to_string())
                } else {
                    Ok(d)
                }
            })
        };
        let heartbeat_interval = p.value("heartbeat_interval", "10s", positive)?;
        let node_unreachable_after = p.value("node_unreachable_after", "30s", positive)?;
        if node_unreachable_after <= heartbeat_interval {
            return Err(ConfigError(format!(
                "CSS_NODE_UNREACHABLE_AFTER ({node_unreachable_after:?}) must be longer than CSS_HEARTBEAT_INTERVAL ({heartbeat_interval:?}); three intervals is a good choice"
            )));
        }
        let auto_reassign = p.value("auto_reassign", "false", parse_bool)?;
        let outbound = p.value("outbound_allowed_networks", "", |v| {
            let allowed = v
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(crate::outbound::Network::parse)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(crate::outbound::Policy { allowed })
        })?;
        let webhook_retry_window = p.value("webhook_retry_window", "10m", positive)?;
        let oidc = crate::auth::oidc::Settings {
            skew: p.value("oidc_clock_skew", "120s", parse_duration)?,
            proof_max_age: p.value("dpop_max_age", "120s", positive)?,
            require_ath: p.value("dpop_require_ath", "false", parse_bool)?,
        };
        let node_id_path = match p.get("node_id_path") {
            Some(_) => p.value("node_id_path", "", parse_path)?,
            None => {
                let path = root.join(".node-id");
                p.derived("node_id_path", path.display().to_string(), "root_file_path");
                path
            }
        };
        let pod_subdomains = p.value("pod_subdomains", "false", parse_bool)?;
        let admin_token = p.optional("admin_token", |v| {
            if v.len() < 16 {
                return Err("expected a token of at least 16 characters".into());
            }
            Ok(Secret::new(v))
        })?;
        let secret_key = p.optional("secret_key", |v| {
            if v.len() < 32 {
                return Err("expected a secret of at least 32 characters (e.g. from `openssl rand -hex 32`)".into());
            }
            Ok(Secret::new(v))
        })?;
        let log_level = p.value("log_level", "info", |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| v.to_string())
                .map_err(|e| {
                    format!("expected a log filter such as info, debug or xpod=debug ({e})")
                })
        })?;

        let update_source = match (p.get("update_source"), BUILT_IN_RELEASE_SOURCE) {
            (None, Some(built_in)) => {
                Some(p.value("update_source", built_in, parse_release_source)?)
            }
            _ => p.optional("update_source", parse_release_source)?,
        };
        let update_keys_dir = p.value("update_keys_dir", DEFAULT_UPDATE_KEYS_DIR, parse_path)?;

        if https.is_some() && base_url.scheme() != "https" {
            return Err(ConfigError(format!(
                "CSS_HTTPS_CERT is set, so this node serves HTTPS, but the base URL {base_url} is not https: set CSS_BASE_URL to its https:// form"
            )));
        }
        if https.is_some() && internal_port.is_none_or(|p| p == port) {
            return Err(ConfigError(format!(
                "CSS_HTTPS_CERT is set: also set CSS_INTERNAL_PORT to a port other than {port}, where the node answers plain HTTP for the command line (on 127.0.0.1 when it runs alone) and for the other nodes of a cluster"
            )));
        }
        if pod_subdomains
            && base_url
                .host_str()
                .is_some_and(|h| h.parse::<IpAddr>().is_ok())
        {
            return Err(ConfigError(format!(
                "CSS_POD_SUBDOMAINS=true needs a base URL with a host name, but {base_url} uses an IP address; set CSS_BASE_URL to e.g. http://pods.example.com/"
            )));
        }

        if signal_endpoint.is_some() {
            const EDGE: &str = "CSS_SIGNAL_ENDPOINT is set, so this node is an edge";
            if node_id.is_none() {
                return Err(ConfigError(format!(
                    "{EDGE}: also set CSS_NODE_ID to the node id that `xpod nodes create-edge` printed on the centre"
                )));
            }
            if matches!(database, DatabaseConfig::Postgres(_)) {
                return Err(ConfigError(format!(
                    "{EDGE}, a single box on SQLite and local disk: unset CSS_DATABASE_URL (an edge keeps its metadata in <root>/xpod.sqlite), or unset CSS_SIGNAL_ENDPOINT to run as a centre node"
                )));
            }
            if s3.is_some() {
                return Err(ConfigError(format!(
                    "{EDGE}, a single box on SQLite and local disk: unset CSS_MINIO_ENDPOINT (an edge keeps its pods' bytes under the root file path), or unset CSS_SIGNAL_ENDPOINT to run as a centre node"
                )));
            }
        }

        let report = p.report;
        Ok(Config {
            host,
            port,
            base_url,
            https,
            trusted_proxies,
            root,
            database,
            s3,
            cache_path,
            cache_max_size,
            max_body_size,
            sparql_timeout,
            sparql_max_results,
            blob_gc_grace,
            blob_gc_interval,
            node_id,
            node_token,
            signal_endpoint,
            edge_signal_interval,
            node_public_address,
            internal_ip,
            internal_port,
            pod_ip,
            pod_routing_enabled,
            heartbeat_interval,
            node_unreachable_after,
            auto_reassign,
            outbound,
            webhook_retry_window,
            oidc,
            node_id_path,
            pod_subdomains,
            admin_token,
            secret_key,
            log_level,
            update_source,
            update_keys_dir,
            report,
            unknown_env,
        })
    }

    /// Warnings about `CSS_*` variables that name no setting.
    pub fn warnings(&self) -> Vec<String> {
        self.unknown_env
            .iter()
            .map(|name| match closest_setting(name) {
                Some(known) => format!(
                    "unknown environment variable {name} is ignored (did you mean {known}?)"
                ),
                None => format!("unknown environment variable {name} is ignored"),
            })
            .collect()
    }

    /// The storage description for humans: which database, which blob store.
    pub fn database_label(&self) -> String {
        match &self.database {
            DatabaseConfig::Sqlite(path) => format!("sqlite {}", path.display()),
            DatabaseConfig::Postgres(url) => format!("postgresql {}", redact_url(url.expose())),
        }
    }

    /// Where the plain-HTTP internal listener of an HTTPS node listens, for
    /// the command line and the other nodes: on loopback when the node runs
    /// alone (SQLite). `None` without HTTPS: the one port serves everyone.
    pub fn internal_listen_addr(&self) -> Option<std::net::SocketAddr> {
        let port = self.internal_port.filter(|_| self.https.is_some())?;
        let host = match self.database {
            DatabaseConfig::Sqlite(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            DatabaseConfig::Postgres(_) => self.host,
        };
        Some(std::net::SocketAddr::new(host, port))
    }

    /// Whether this node is an edge: a home box that enrols with a centre
    /// and sends it heartbeats (`CSS_SIGNAL_ENDPOINT` is set).
    pub fn is_edge(&self) -> bool {
        self.signal_endpoint.is_some()
    }

    /// The node's canonical public host (for subdomain pods).
    pub fn base_host(&self) -> &str {
        self.base_url.host_str().unwrap_or("localhost")
    }
}

/// The raw values and the report being built.
struct Parsed<'a> {
    raw: &'a BTreeMap<&'static str, (String, Source)>,
    report: Vec<ReportLine>,
}

impl Parsed<'_> {
    fn get(&self, key: &str) -> Option<&(String, Source)> {
        self.raw.get(key)
    }

    fn meta(key: &str) -> &'static Setting {
        SETTINGS
            .iter()
            .find(|s| s.key == key)
            .expect("known setting")
    }

    fn record(&mut self, key: &'static str, value: Option<String>, source: Source) {
        let s = Self::meta(key);
        let shown = value.map(|v| {
            if key == "database_url" {
                redact_url(&v)
            } else if s.secret {
                "[redacted]".to_string()
            } else {
                v
            }
        });
        self.report.push(ReportLine {
            key: s.key,
            env: s.env,
            shown,
            source,
        });
    }

    fn derived(&mut self, key: &'static str, shown: String, from: &'static str) {
        let shown = (!shown.is_empty()).then_some(shown);
        self.record(key, shown, Source::Derived(from));
    }

    fn parse_with<T>(
        &self,
        key: &'static str,
        value: &str,
        source: &Source,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(value.trim()).map_err(|why| {
            let label = source.label(key);
            let shown = if Self::meta(key).secret {
                "(secret)".to_string()
            } else {
                format!("{value:?}")
            };
            ConfigError(format!("{label}={shown} is invalid: {why}"))
        })
    }

    fn value<T>(
        &mut self,
        key: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, source) = match self.raw.get(key) {
            Some((v, s)) => (v.clone(), s.clone()),
            None => (default.to_string(), Source::Default),
        };
        let parsed = self.parse_with(key, &value, &source, parse)?;
        self.record(key, Some(value), source);
        Ok(parsed)
    }

    fn optional<T>(
        &mut self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.raw.get(key) {
            None => {
                self.record(key, None, Source::Default);
                Ok(None)
            }
            Some(_) => self.value(key, "", parse).map(Some),
        }
    }

    fn required<T>(
        &mut self,
        key: &'static str,
        because: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        if self.raw.get(key).is_none() {
            let s = Self::meta(key);
            return Err(ConfigError(format!(
                "{} is required because {because}; set it (or {}_FILE)",
                s.env, s.env
            )));
        }
        self.value(key, "", parse)
    }
}

/// Takes one environment variable (from the process or the environment
/// file) into `raw`: a setting, a secret's `*_FILE`, or an unknown `CSS_*`.
fn take_variable(
    raw: &mut BTreeMap<&'static str, (String, Source)>,
    unknown_env: &mut Vec<String>,
    env: &[(String, String)],
    name: &str,
    value: &str,
    source: Source,
) -> Result<(), ConfigError> {
    if let Some(s) = SETTINGS.iter().find(|s| s.env == name) {
        raw.insert(s.key, (value.to_string(), source));
    } else if let Some(s) = name
        .strip_suffix("_FILE")
        .and_then(|base| SETTINGS.iter().find(|s| s.env == base && s.secret))
    {
        let path = PathBuf::from(value);
        let content = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError(format!(
                "{name}: cannot read {}: {e}; point it at a readable file holding the secret",
                path.display()
            ))
        })?;
        let content = content.trim_end_matches(['\n', '\r']).to_string();
        // A plain variable set at the same time wins over nothing: refuse ambiguity.
        if env.iter().any(|(n, _)| n == s.env) {
            return Err(ConfigError(format!(
                "both {} and {name} are set; set only one of them",
                s.env
            )));
        }
        let source = match source {
            Source::EnvironmentFile(_, file) => Source::EnvironmentFile(name.to_string(), file),
            _ => Source::EnvFile(name.to_string(), path),
        };
        raw.insert(s.key, (content, source));
    } else if name.starts_with("CSS_") {
        unknown_env.push(name.to_string());
    }
    Ok(())
}

/// Reads an environment file as systemd's `EnvironmentFile=` does: one
/// `NAME=value` a line, `#` and `;` start comments, a value may be quoted.
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read environment file {}: {e}; run the command as root or as the xpod user, or fix the file",
            path.display()
        ))
    })?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(ConfigError(format!(
                // The line itself is not shown: it may be a stray secret.
                "environment file {} line {}: expected NAME=value",
                path.display(),
                n + 1
            )));
        };
        let name = name.trim();
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ConfigError(format!(
                "environment file {} line {}: what comes before = is not a variable name (letters, digits and _, not starting with a digit)",
                path.display(),
                n + 1
            )));
        }
        let value = env_file_value(value.trim()).ok_or_else(|| {
            ConfigError(format!(
                "environment file {} line {}: the value of {name} has a backslash or a quote that does not enclose it, which systemd and xpod could read differently; write the value plainly or wholly in quotes (a secret with such characters can go in a file named by {name}_FILE)",
                path.display(),
                n + 1
            ))
        })?;
        vars.push((name.to_string(), value.to_string()));
    }
    Ok(vars)
}

/// A value as systemd reads it, when that reading is plain: wholly in
/// single or double quotes, or unquoted, and without backslashes (systemd
/// unescapes those, differently inside and outside quotes). `None` for
/// anything else, so that the service and the command line never disagree.
fn env_file_value(value: &str) -> Option<&str> {
    if value.contains('\\') {
        return None;
    }
    for quote in ['"', '\''] {
        if value.starts_with(quote) {
            let inner = value.strip_prefix(quote)?.strip_suffix(quote)?;
            return (!inner.contains(quote)).then_some(inner);
        }
    }
    Some(value)
}

fn read_file_layer(
    path: &Path,
    raw: &mut BTreeMap<&'static str, (String, Source)>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read configuration file {}: {e}; fix the path given to --config",
            path.display()
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start].lines().count().max(1))
            .unwrap_or(0);
        ConfigError(format!(
            "configuration file {} is not valid TOML (line {line}): {msg}",
            path.display()
        ))
    })?;
    for (key, value) in table {
        let Some(s) = SETTINGS.iter().find(|s| s.key == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
            return Err(ConfigError(format!(
                "configuration file {}: unknown key {key:?}; known keys are {}",
                path.display(),
                known.join(", ")
            )));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return Err(ConfigError(format!(
                    "configuration file {}: {key} must be a string, number or boolean, not {}",
                    path.display(),
                    other.type_str()
                )));
            }
        };
        raw.insert(s.key, (text, Source::File(path.to_path_buf())));
    }
    Ok(())
}

/// The root file path when none is configured.
fn default_root(env: &dyn Fn(&str) -> Option<String>, packaged: bool) -> (PathBuf, &'static str) {
    // systemd's StateDirectory= sets STATE_DIRECTORY (colon-separated if several).
    if let Some(dirs) = env("STATE_DIRECTORY") {
        let first = dirs.split(':').next().unwrap_or_default();
        return (PathBuf::from(first), "$STATE_DIRECTORY");
    }
    if env("INVOCATION_ID").is_some() {
        // Under systemd without StateDirectory=.
        return (PathBuf::from("/var/lib/xpod"), "systemd service");
    }
    if packaged {
        // The command line on a packaged box: the service's StateDirectory.
        return (PathBuf::from("/var/lib/xpod"), "packaged install");
    }
    if let Some(home) = env("HOME") {
        // The `directories` crate's data directory, computed from the environment we were given.
        let data = env("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| PathBuf::from(home).join(".local/share"));
        return (data.join("xpod"), "user data directory");
    }
    match directories::ProjectDirs::from("", "", "xpod") {
        Some(dirs) => (dirs.data_dir().to_path_buf(), "user data directory"),
        None => (PathBuf::from("/var/lib/xpod"), "no home directory"),
    }
}

fn default_cache(
    env: &dyn Fn(&str) -> Option<String>,
    root: &Path,
    packaged: bool,
) -> (PathBuf, &'static str) {
    if let Some(dirs) = env("CACHE_DIRECTORY") {
        let first = dirs.split(':').next().unwrap_or_default();
        return (PathBuf::from(first), "$CACHE_DIRECTORY");
    }
    if packaged && env("STATE_DIRECTORY").is_none() {
        // The command line on a packaged box: the service's CacheDirectory.
        return (PathBuf::from("/var/cache/xpod"), "packaged install");
    }
    (root.join("cache"), "root_file_path")
}

fn parse_port(v: &str) -> Result<u16, String> {
    match v.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err("expected a port number from 1 to 65535".into()),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_ip(v: &str) -> Result<IpAddr, String> {
    v.parse()
        .map_err(|_| "expected an IP address such as 10.0.0.5".into())
}

fn parse_path(v: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(v);
    if !path.is_absolute() {
        return Err("expected an absolute path".into());
    }
    Ok(path)
}

fn parse_base_url(v: &str) -> Result<Url, String> {
    let mut url = Url::parse(v).map_err(|e| {
        format!("expected an absolute http(s) URL such as https://pods.example.com/ ({e})")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an absolute http(s) URL such as https://pods.example.com/".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn parse_signal_endpoint(v: &str) -> Result<Url, String> {
    const HELP: &str = "expected the centre's signal URL, such as https://pods.example.com/api/v1/signal (as `xpod nodes create-edge` prints it)";
    let url = Url::parse(v).map_err(|e| format!("{HELP} ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(HELP.into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.path().ends_with("/api/v1/signal")
    {
        return Err(HELP.into());
    }
    Ok(url)
}

fn parse_database_url(v: &str) -> Result<DatabaseConfig, String> {
    if let Some(path) = v.strip_prefix("sqlite://") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err("expected sqlite:///absolute/path.sqlite".into());
        }
        return Ok(DatabaseConfig::Sqlite(path));
    }
    if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        v.parse::<tokio_postgres::Config>()
            .map_err(|e| format!("not a valid PostgreSQL URL ({e})"))?;
        return Ok(DatabaseConfig::Postgres(Secret::new(v)));
    }
    Err("expected empty (embedded SQLite), sqlite:///path or postgres://user:password@host:port/database".into())
}

fn parse_bucket(v: &str) -> Result<String, String> {
    let ok = (3..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !v.starts_with(['-', '.'])
        && !v.ends_with(['-', '.']);
    if ok {
        Ok(v.to_string())
    } else {
        Err("expected an S3 bucket name: 3-63 characters of a-z, 0-9, '-' and '.'".into())
    }
}

fn parse_release_source(v: &str) -> Result<ReleaseSource, String> {
    const HELP: &str = "expected the URL of a release manifest (https://…/manifest.json) or s3://<bucket>/<prefix>";
    if let Some(rest) = v.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = parse_bucket(bucket).map_err(|e| format!("{HELP}: {e}"))?;
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
            return Err(format!("{HELP}: the prefix has an empty, . or .. segment"));
        }
        return Ok(ReleaseSource::S3 {
            bucket,
            prefix: prefix.to_string(),
        });
    }
    let url = Url::parse(v).map_err(|e| format!("{HELP} ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(HELP.into());
    }
    if url.path().ends_with('/') {
        return Err(format!(
            "{HELP}: this URL names a directory; add the manifest's file name, such as manifest.json"
        ));
    }
    Ok(ReleaseSource::Manifest(url))
}

/// Parses a size such as `50GB`, `512MiB`, `1024` (bytes) or `1.5G`.
/// Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB,
/// GiB, TiB, and the bare K, M, G, T) powers of 1024.
pub fn parse_size(v: &str) -> Result<u64, String> {
    const HELP: &str = "expected a size such as 512MiB, 50GB or 1073741824 (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)";
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().map_err(|_| HELP.to_string())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(HELP.into()),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(HELP.into());
    }
    Ok(bytes as u64)
}

/// Parses a duration such as `90s`, `10m`, `1h`, `250ms` or `30` (seconds).
pub fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    const HELP: &str = "expected a duration such as 30s, 10m, 1h or 250ms";
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number.parse().map_err(|_| HELP.to_string())?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(HELP.into()),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Hides the password of a URL such as `postgres://user:pw@host/db`.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // Query parameters may carry a password too.
            if parsed.query().is_some_and(|q| q.contains("password")) {
                parsed.set_query(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparseable URL)".to_string(),
    }
}

/// The known variable nearest to an unknown one, for a "did you mean" hint.
fn closest_setting(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|s| (edit_distance(name, s.env), s.env))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, env)| env)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_file() -> Overrides {
        Overrides {
            config_file: Some(PathBuf::from("/dev/null")),
            env_file: Some(PathBuf::from("/dev/null")),
            values: vec![],
        }
    }

    #[test]
    fn defaults_need_no_configuration() {
        let c = Config::from_parts(&no_file(), &env(&[("HOME", "/home/ann")])).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.base_url.as_str(), "http://localhost:3000/");
        assert_eq!(c.root, PathBuf::from("/home/ann/.local/share/xpod"));
        assert_eq!(
            c.database,
            DatabaseConfig::Sqlite(PathBuf::from("/home/ann/.local/share/xpod/xpod.sqlite"))
        );
        assert!(c.pod_routing_enabled);
        assert!(!c.pod_subdomains);
    }

    #[test]
    fn the_environment_file_sits_between_the_toml_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("xpod.toml");
        std::fs::write(&toml, "port = 4000\nhost = \"127.0.0.1\"\n").unwrap();
        let secret = dir.path().join("admin.secret");
        std::fs::write(&secret, "from-a-file-0123456789\n").unwrap();
        let file = dir.path().join("xpod.env");
        std::fs::write(
            &file,
            format!(
                "# comment\n; another\n\nCSS_PORT=4100\nCSS_BASE_URL=\"https://pods.example/\"\n\
                 CSS_LOG_LEVEL='debug'\nCSS_ADMIN_TOKEN_FILE={}\nRUST_BACKTRACE=1\n",
                secret.display()
            ),
        )
        .unwrap();
        let o = Overrides {
            config_file: Some(toml),
            env_file: Some(file.clone()),
            values: vec![],
        };
        let c = Config::from_parts(&o, &env(&[("HOME", "/h"), ("CSS_LOG_LEVEL", "warn")])).unwrap();
        assert_eq!(c.port, 4100, "the environment file beats the TOML file");
        assert_eq!(
            c.host.to_string(),
            "127.0.0.1",
            "the TOML file still counts"
        );
        assert_eq!(
            c.base_url.as_str(),
            "https://pods.example/",
            "quotes removed"
        );
        assert_eq!(c.log_level, "warn", "the environment beats the file");
        assert_eq!(
            c.admin_token.as_ref().map(Secret::expose),
            Some("from-a-file-0123456789")
        );
        let port = c.report.iter().find(|l| l.env == "CSS_PORT").unwrap();
        assert_eq!(
            port.source.to_string(),
            format!("CSS_PORT in {}", file.display())
        );
        // Not the default file: no packaged-install defaults.
        assert_eq!(c.root, PathBuf::from("/h/.local/share/xpod"));

        std::fs::write(&file, "CSS_PORT=1\nthis line is wrong\n").unwrap();
        let e = Config::from_parts(&o, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("line 2: expected NAME=value"), "{e}");
        for bad in [
            "CSS_DATABASE_URL=postgres://u:p\\w@db/x",
            "CSS_BASE_URL=\"https://pods.example/\" # comment",
            "CSS_BASE_URL=\"https://pods.example/",
            "CSS_BASE_URL='it's'",
        ] {
            std::fs::write(&file, format!("{bad}\n")).unwrap();
            let e = Config::from_parts(&o, &env(&[])).unwrap_err().to_string();
            assert!(e.contains("line 1: the value of CSS_"), "{bad}: {e}");
        }
        std::fs::write(&file, "CSS_LOG_LEVEL=xpod=debug,it's\n").unwrap();
        let c = Config::from_parts(&o, &env(&[("HOME", "/h")])).unwrap();
        assert_eq!(
            c.log_level, "xpod=debug,it's",
            "a quote inside a value is kept"
        );
        std::fs::write(&file, "CSS PORT=1\n").unwrap();
        let e = Config::from_parts(&o, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("is not a variable name"), "{e}");
        // A stray secret on a line of its own is never repeated.
        for stray in ["c2VjcmV0LXRva2Vu+/x==", "hunter2-password"] {
            std::fs::write(&file, format!("{stray}\n")).unwrap();
            let e = Config::from_parts(&o, &env(&[])).unwrap_err().to_string();
            assert!(e.contains("line 1"), "{e}");
            assert!(!e.contains(&stray[..6]), "the error shows the line: {e}");
        }
        std::fs::write(&file, "CSS_PROT=1\n").unwrap();
        let c = Config::from_parts(&o, &env(&[("HOME", "/h")])).unwrap();
        assert!(
            c.warnings().iter().any(|w| w.contains("CSS_PROT")),
            "an unknown variable in the file is reported like one in the environment"
        );
        let missing = Overrides {
            env_file: Some(dir.path().join("absent.env")),
            ..o
        };
        let e = Config::from_parts(&missing, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read environment file"), "{e}");
    }

    #[test]
    fn state_directory_wins_under_systemd() {
        let c = Config::from_parts(
            &no_file(),
            &env(&[("HOME", "/root"), ("STATE_DIRECTORY", "/var/lib/xpod:/x")]),
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/var/lib/xpod"));
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("xpod.toml");
        std::fs::write(
            &file,
            "port = 4000\nhost = \"127.0.0.1\"\nbase_url = \"https://pods.example\"\n",
        )
        .unwrap();
        let mut o = Overrides {
            config_file: Some(file.clone()),
            env_file: Some(PathBuf::from("/dev/null")),
            values: vec![],
        };
        let c = Config::from_parts(&o, &env(&[("HOME", "/h"), ("CSS_PORT", "5000")])).unwrap();
        assert_eq!(c.port, 5000, "environment beats file");
        assert_eq!(c.host.to_string(), "127.0.0.1", "file beats default");
        assert_eq!(
            c.base_url.as_str(),
            "https://pods.example/",
            "a slash is added"
        );
        o.values.push(("port", "6000".into()));
        let c = Config::from_parts(&o, &env(&[("HOME", "/h"), ("CSS_PORT", "5000")])).unwrap();
        assert_eq!(c.port, 6000, "flag beats environment");
        let port = c.report.iter().find(|l| l.key == "port").unwrap();
        assert_eq!(port.source, Source::Flag("--port"));
        let host = c.report.iter().find(|l| l.key == "host").unwrap();
        assert_eq!(host.source, Source::File(file));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = Config::from_parts(&no_file(), &env(&[("CSS_PORT", "70000")])).unwrap_err();
        assert!(
            err.0.starts_with("CSS_PORT=\"70000\" is invalid"),
            "{}",
            err.0
        );
        let err =
            Config::from_parts(&no_file(), &env(&[("CSS_CACHE_MAX_SIZE", "12XB")])).unwrap_err();
        assert!(err.0.contains("CSS_CACHE_MAX_SIZE"), "{}", err.0);
        let err = Config::from_parts(
            &no_file(),
            &env(&[("CSS_DATABASE_URL", "mysql://secretpw@h/db")]),
        )
        .unwrap_err();
        assert!(
            !err.0.contains("secretpw"),
            "secrets stay out of errors: {}",
            err.0
        );
    }

    #[test]
    fn sizes_parse_in_both_unit_families() {
        assert_eq!(parse_size("50GB").unwrap(), 50_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-5MB").is_err());
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secrets_come_from_files_and_stay_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let c = Config::from_parts(
            &no_file(),
            &env(&[("CSS_ADMIN_TOKEN_FILE", file.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(
            c.admin_token.as_ref().unwrap().expose(),
            "abcdefghijklmnopqrstuvwxyz"
        );
        assert!(!format!("{c:?}").contains("abcdefghij"));
        let line = c.report.iter().find(|l| l.key == "admin_token").unwrap();
        assert_eq!(line.shown.as_deref(), Some("[redacted]"));
    }

    #[test]
    fn release_sources_are_manifest_urls_or_s3_prefixes() {
        let parsed = |v: &str| {
            Config::from_parts(&no_file(), &env(&[("CSS_UPDATE_SOURCE", v)]))
                .map(|c| c.update_source.unwrap())
        };
        assert_eq!(
            parsed("https://releases.example/xpod/manifest.json").unwrap(),
            ReleaseSource::Manifest(
                Url::parse("https://releases.example/xpod/manifest.json").unwrap()
            )
        );
        assert_eq!(
            parsed("s3://xpod-releases/stable/").unwrap(),
            ReleaseSource::S3 {
                bucket: "xpod-releases".into(),
                prefix: "stable".into()
            }
        );
        assert_eq!(
            parsed("s3://xpod-releases").unwrap().to_string(),
            "s3://xpod-releases"
        );
        for bad in [
            "ftp://x/manifest.json",
            "https://releases.example/",
            "s3://B/x",
            "s3://ok-bucket/a/../b",
        ] {
            let err = parsed(bad).unwrap_err();
            assert!(err.0.starts_with("CSS_UPDATE_SOURCE="), "{bad}: {}", err.0);
        }
        let c = Config::from_parts(&no_file(), &env(&[])).unwrap();
        assert_eq!(c.update_keys_dir, PathBuf::from("/etc/xpod/update-keys"));
        if BUILT_IN_RELEASE_SOURCE.is_none() {
            assert_eq!(c.update_source, None);
        }
    }

    #[test]
    fn an_edge_is_one_box_that_knows_its_node_id() {
        let signal = "https://pods.example/api/v1/signal";
        assert!(signal.ends_with(crate::edge::SIGNAL_PATH));
        let load = |pairs: &[(&str, &str)]| Config::from_parts(&no_file(), &env(pairs));
        let c = load(&[("CSS_SIGNAL_ENDPOINT", signal), ("CSS_NODE_ID", "edge-1")]).unwrap();
        assert!(c.is_edge());
        assert_eq!(c.signal_endpoint.as_ref().unwrap().as_str(), signal);
        assert_eq!(c.edge_signal_interval, std::time::Duration::from_secs(15));
        assert!(!load(&[]).unwrap().is_edge());

        let e = load(&[("CSS_SIGNAL_ENDPOINT", signal)]).unwrap_err().0;
        assert!(e.contains("set CSS_NODE_ID"), "{e}");
        let e = load(&[
            ("CSS_SIGNAL_ENDPOINT", signal),
            ("CSS_NODE_ID", "edge-1"),
            ("CSS_DATABASE_URL", "postgres://u:hunter2@db/x"),
        ])
        .unwrap_err()
        .0;
        assert!(e.contains("unset CSS_DATABASE_URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = load(&[
            ("CSS_SIGNAL_ENDPOINT", signal),
            ("CSS_NODE_ID", "edge-1"),
            ("CSS_MINIO_ENDPOINT", "http://s3.example"),
            ("CSS_MINIO_BUCKET_NAME", "pods"),
            ("CSS_MINIO_ACCESS_KEY", "a"),
            ("CSS_MINIO_SECRET_KEY", "b"),
        ])
        .unwrap_err()
        .0;
        assert!(e.contains("unset CSS_MINIO_ENDPOINT"), "{e}");
        for bad in [
            "https://pods.example/",
            "ftp://pods.example/api/v1/signal",
            "https://pods.example/api/v1/signal?x=1",
            "/api/v1/signal",
        ] {
            let e = load(&[("CSS_SIGNAL_ENDPOINT", bad), ("CSS_NODE_ID", "edge-1")])
                .unwrap_err()
                .0;
            assert!(e.starts_with("CSS_SIGNAL_ENDPOINT="), "{bad}: {e}");
        }
        let c = load(&[("CSS_EDGE_SIGNAL_INTERVAL", "2s")]).unwrap();
        assert_eq!(c.edge_signal_interval, std::time::Duration::from_secs(2));
        for bad in ["0s", "500ms", "6m"] {
            assert!(load(&[("CSS_EDGE_SIGNAL_INTERVAL", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn sparql_limits() {
        let load = |pairs: &[(&str, &str)]| Config::from_parts(&no_file(), &env(pairs));
        let c = load(&[]).unwrap();
        assert_eq!(c.sparql_timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.sparql_max_results, 10_000);
        let c = load(&[
            ("CSS_SPARQL_TIMEOUT", "250ms"),
            ("CSS_SPARQL_MAX_RESULTS", "5"),
        ])
        .unwrap();
        assert_eq!(c.sparql_timeout, std::time::Duration::from_millis(250));
        assert_eq!(c.sparql_max_results, 5);
        for (name, bad) in [
            ("CSS_SPARQL_TIMEOUT", "0s"),
            ("CSS_SPARQL_TIMEOUT", "2h"),
            ("CSS_SPARQL_MAX_RESULTS", "0"),
            ("CSS_SPARQL_MAX_RESULTS", "many"),
        ] {
            let e = load(&[(name, bad)]).unwrap_err().0;
            assert!(e.starts_with(&format!("{name}=")), "{bad}: {e}");
        }
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://xpod:hunter2@db:5432/xpod"),
            "postgres://xpod:***@db:5432/xpod"
        );
    }

    #[test]
    fn unknown_variables_warn_with_a_hint() {
        let c = Config::from_parts(&no_file(), &env(&[("CSS_PROT", "1")])).unwrap();
        assert_eq!(
            c.warnings(),
            vec!["unknown environment variable CSS_PROT is ignored (did you mean CSS_PORT?)"]
        );
    }
}

#[cfg(test)]
mod docs_tests {
    /// docs/configuration.md lists every variable, and nothing that does not exist.
    #[test]
    fn the_configuration_reference_matches_the_code() {
        let doc = include_str!("../docs/configuration.md");
        for (env, key, _) in super::known_variables() {
            let row = format!("| `{env}` | `{key}` |");
            assert!(
                doc.contains(&row),
                "docs/configuration.md lacks the row {row}"
            );
        }
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let var = line.split('`').nth(1).unwrap();
            if var.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    super::known_variables().any(|(env, _, _)| env == var),
                    "docs/configuration.md documents unknown variable {var}"
                );
            }
        }
    }

    /// packaging/xpod.env (installed as /etc/xpod/xpod.env) lists every
    /// variable as a commented line, and names no variable that does not
    /// exist: a new setting must be documented there too.
    #[test]
    fn the_packaged_environment_file_lists_every_variable() {
        let file = include_str!("../packaging/xpod.env");
        let known = |name: &str| {
            super::known_variables().any(|(env, _, secret)| {
                env == name || (secret && name.strip_suffix("_FILE") == Some(env))
            })
        };
        for (env, _, _) in super::known_variables() {
            let line = format!("\n#{env}=");
            assert!(
                file.contains(&line),
                "packaging/xpod.env lacks the commented line #{env}= (with a comment above it from docs/configuration.md)"
            );
            let at = file.find(&line).unwrap();
            let before = file[..at].lines().last().unwrap_or_default();
            assert!(
                before.starts_with("# "),
                "packaging/xpod.env: #{env}= needs a one-line explanation above it"
            );
        }
        for line in file.lines() {
            // Nothing is set: the package's defaults are xpod's own.
            assert!(
                line.is_empty() || line.starts_with('#'),
                "packaging/xpod.env sets a value: {line}"
            );
            let mut rest = line;
            while let Some(at) = rest.find("CSS_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                assert!(
                    known(&name),
                    "packaging/xpod.env names unknown variable {name}"
                );
                rest = &rest[at + name.len()..];
            }
        }
    }

    /// Uncommenting the variables of packaging/xpod.env as shipped (their
    /// defaults) gives the same configuration as the empty file.
    #[test]
    fn the_packaged_environment_file_loads_with_its_lines_uncommented() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = include_str!("../packaging/xpod.env")
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(v) if v.starts_with("CSS_") || v.starts_with("POD_IP") => v,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let file = dir.path().join("xpod.env");
        std::fs::write(&file, &text).unwrap();
        let load = |env_file: &std::path::Path| {
            let overrides = super::Overrides {
                config_file: Some(std::path::PathBuf::from("/dev/null")),
                env_file: Some(env_file.to_path_buf()),
                values: vec![],
            };
            let env = [("HOME", "/home/ann")].map(|(k, v)| (k.to_string(), v.to_string()));
            super::Config::from_parts(&overrides, &env)
        };
        let uncommented = load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let empty = load(std::path::Path::new("/dev/null")).unwrap();
        let shown = |c: &super::Config| -> Vec<(String, Option<String>)> {
            c.report
                .iter()
                // Shown only when set while S3 is off; used only with S3.
                .filter(|l| l.env != "CSS_MINIO_REGION")
                .map(|l| (l.env.to_string(), l.shown.clone()))
                .collect()
        };
        assert_eq!(shown(&uncommented), shown(&empty));
        assert!(
            uncommented.warnings().is_empty(),
            "{:?}",
            uncommented.warnings()
        );
    }

    /// packaging/xpod.toml (installed as /etc/xpod/xpod.toml) loads as it is,
    /// all comments, and its commented examples are valid keys and values.
    #[test]
    fn the_packaged_configuration_file_loads_with_and_without_its_examples() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let file = dir.path().join("xpod.toml");
            std::fs::write(&file, text).unwrap();
            let overrides = super::Overrides {
                config_file: Some(file),
                env_file: Some(std::path::PathBuf::from("/dev/null")),
                values: vec![],
            };
            let env = [
                ("HOME", "/home/ann"),
                ("CSS_MINIO_ACCESS_KEY", "access"),
                ("CSS_MINIO_SECRET_KEY", "secret-key"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()));
            super::Config::from_parts(&overrides, &env)
        };
        let file = include_str!("../packaging/xpod.toml");
        let c = load(file).expect("the packaged xpod.toml loads");
        assert!(
            c.report
                .iter()
                .all(|l| !matches!(l.source, super::Source::File(_))),
            "the packaged xpod.toml sets nothing"
        );
        let examples: String = file
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(examples.lines().count() >= 10, "{examples}");
        let c = load(&examples)
            .unwrap_or_else(|e| panic!("packaging/xpod.toml's examples, uncommented: {e}"));
        let from_file = c
            .report
            .iter()
            .filter(|l| matches!(l.source, super::Source::File(_)))
            .count();
        assert_eq!(from_file, examples.lines().count(), "{examples}");
    }
}
