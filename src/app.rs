//! The composition root: one [`App`] owns the configuration, this node's
//! identity and the stores. Everything else gets it by reference.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use crate::auth::admin_token::{self, TokenOrigin};
use crate::blob::{self, Blobs};
use crate::cluster::secret;
use crate::config::{Config, Secret};
use crate::db::{self, Db, NodeRecord};
use crate::node::address::{self, AddressSource};
use crate::node::{identity, keys};

/// Why the node could not start: one line that says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

fn fail(e: impl std::fmt::Display) -> StartupError {
    StartupError(e.to_string())
}

/// This node as the rest of the cluster sees it.
#[derive(Debug)]
pub struct NodeIdentity {
    pub id: String,
    pub internal_ip: IpAddr,
    pub internal_port: u16,
    pub address_source: AddressSource,
    pub key: SigningKey,
}

/// Everything a running node owns.
pub struct App {
    pub config: Arc<Config>,
    pub node: Arc<NodeIdentity>,
    pub db: Db,
    pub blobs: Blobs,
    pub storage_id: String,
    pub secret_key: Secret,
    pub admin_token: TokenOrigin,
    /// Counters and histograms served at `/.cluster/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cached pod owners and node addresses.
    pub placement: crate::cluster::placement::Placement,
    /// Nonces of signed node requests seen recently (replay defence).
    pub nonces: crate::cluster::signature::NonceCache,
    /// Session keys shared with other nodes (both directions).
    pub sessions: crate::cluster::session::Sessions,
    /// The notification channels connected to this node.
    pub notify: Arc<crate::notify::Hub>,
    /// The client that forwards requests to other nodes.
    pub proxy: reqwest::Client,
    /// Serialises PATCHes of one resource on this node.
    pub patch_locks: crate::ldp::locks::Stripes,
    /// Drives the pod migrations addressed to this node.
    pub migrations: crate::cluster::migration::Driver,
    /// Checks Solid-OIDC access tokens and DPoP proofs.
    pub oidc: Arc<crate::auth::oidc::Verifier>,
    /// xpod's own identity provider.
    pub idp: Arc<crate::idp::Idp>,
    /// Parsed ACLs and group documents.
    pub access: crate::ldp::access::Cache,
    /// The tunnels edge nodes keep open to this (centre) node.
    pub tunnels: crate::edge::tunnel::Tunnels,
    /// On an edge: its pods held read-only while they move.
    pub holds: crate::edge::moving::Holds,
    /// The SPARQL sidecars' indexes and evaluation slots.
    pub sparql: crate::sparql::Sparql,
}

/// Makes sure the root file path exists and is writable, before anything is put there.
pub fn prepare_root(root: &Path) -> Result<(), StartupError> {
    let unwritable = |e: std::io::Error| {
        StartupError(format!(
            "root file path {} is not writable ({e}); set CSS_ROOT_FILE_PATH to a writable directory or fix its permissions",
            root.display()
        ))
    };
    // Only the service account may read pods, keys and tokens.
    let created =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(root);
    if let Err(e) = created {
        return Err(unwritable(e));
    }
    let probe = root.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(unwritable)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl App {
    /// Brings the node up: identity, keys, database, storage, credentials,
    /// registration. Each step fails with a message naming what to fix.
    pub async fn start(config: Config) -> Result<App, StartupError> {
        let config = Arc::new(config);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        prepare_root(&config.root)?;
        let (node_id, id_source) =
            identity::resolve(config.node_id.as_deref(), &config.node_id_path).map_err(fail)?;
        let key = keys::load_or_create(&config.root.join("node.key")).map_err(fail)?;
        refuse_unimported_box(&config)?;
        let db = db::open(&config.database).await.map_err(fail)?;
        let blobs: Blobs = if config.s3.is_some() {
            Arc::new(
                blob::tiered::TieredStore::open(&config, &db, metrics.clone())
                    .await
                    .map_err(StartupError)?,
            )
        } else {
            Arc::new(blob::fs::FsBlobStore::open(&blob::fs::blob_dir(&config.root)).map_err(fail)?)
        };
        let storage_id = blobs.storage_id().to_string();
        check_pods_storage(&db, &node_id, &storage_id).await?;
        let secret_key = secret::ensure(&config, &db, &node_id).await.map_err(fail)?;

        let (internal_ip, address_source) = address::detect(config.internal_ip, config.pod_ip);
        if address_source == AddressSource::Loopback && db.backend() != "sqlite" {
            return Err(StartupError(
                "cannot detect this node's internal IP address (no usable network interface); set CSS_INTERNAL_IP".into(),
            ));
        }
        let internal_port = config.internal_port.unwrap_or(config.port);
        let now = db::now_ms();
        db.node_upsert(&NodeRecord {
            node_id: node_id.clone(),
            kind: if config.is_edge() { "edge" } else { "centre" }.into(),
            internal_ip: internal_ip.to_string(),
            internal_port,
            public_address: config.node_public_address.clone(),
            storage_id: Some(storage_id.clone()),
            version: env!("CARGO_PKG_VERSION").into(),
            public_key: Some(keys::public_key_text(&key)),
            started_at: now,
            last_heartbeat: now,
        })
        .await
        .map_err(fail)?;
        let admin_token = admin_token::ensure(&config, &db, &node_id)
            .await
            .map_err(fail)?;

        tracing::info!(
            node_id = %node_id,
            node_id_source = ?id_source,
            internal_address = %format!("{internal_ip}:{internal_port}"),
            address_source = %address_source,
            database = %config.database_label(),
            storage_id = %storage_id,
            "node ready"
        );
        if let TokenOrigin::File {
            path,
            created: true,
        } = &admin_token
        {
            tracing::info!(path = %path.display(), "created the administrator token");
        }

        let idp = Arc::new(crate::idp::Idp::new(&config, &secret_key));
        let listen = if config.host.is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            config.host
        };
        let oidc = Arc::new(crate::auth::oidc::Verifier::new(
            config.oidc.clone(),
            config.outbound.clone(),
            // An edge shares its base URL with its centre, whose identity
            // provider issues the tokens: nothing there is local.
            (!config.is_edge()).then(|| crate::auth::oidc::Local {
                base: config.base_url.clone(),
                pod_subdomains: config.pod_subdomains,
                addr: std::net::SocketAddr::new(listen, config.port),
                idp: idp.clone(),
            }),
        ));
        let holds = crate::edge::moving::Holds::open(&config.root);
        Ok(App {
            config,
            node: Arc::new(NodeIdentity {
                id: node_id,
                internal_ip,
                internal_port,
                address_source,
                key,
            }),
            db,
            blobs,
            storage_id,
            secret_key,
            admin_token,
            metrics,
            placement: Default::default(),
            access: Default::default(),
            tunnels: Default::default(),
            holds,
            sparql: Default::default(),
            nonces: Default::default(),
            sessions: Default::default(),
            notify: Default::default(),
            proxy: crate::http::proxy::client(),
            patch_locks: Default::default(),
            migrations: Default::default(),
            oidc,
            idp,
        })
    }
}

/// A box that ran alone on SQLite and is now pointed at a cluster database
/// must bring its pods along first, or they would silently disappear.
fn refuse_unimported_box(config: &Config) -> Result<(), StartupError> {
    let local = crate::cluster::join::standalone_db(&config.root);
    if matches!(config.database, crate::config::DatabaseConfig::Postgres(_)) && local.exists() {
        return Err(StartupError(format!(
            "this node ran alone on SQLite ({}) and CSS_DATABASE_URL now names a cluster database: stop here and run `xpod cluster join --import` with the same settings to bring its pods into the cluster (nothing on this box is deleted), then start again",
            local.display()
        )));
    }
    Ok(())
}

/// Refuses to start when this node owns pods whose bytes live in another
/// storage than the one it is configured with: serving them would answer 404
/// (or 500) for every resource.
async fn check_pods_storage(db: &Db, node_id: &str, storage_id: &str) -> Result<(), StartupError> {
    let pods = db.pod_list().await.map_err(fail)?;
    let elsewhere: Vec<_> = pods
        .iter()
        .filter(|p| p.node_id == node_id && p.storage_id != storage_id)
        .collect();
    if let Some(first) = elsewhere.first() {
        return Err(StartupError(format!(
            "this node owns {} pod(s) (e.g. {}) stored in storage {}, but its configured storage is {storage_id}; restore the previous storage settings (CSS_MINIO_ENDPOINT, CSS_MINIO_BUCKET_NAME, or the blobs under the root file path)",
            elsewhere.len(),
            first.base_url,
            first.storage_id
        )));
    }
    Ok(())
}
