//! The command line: `serve`, `config`, `healthcheck`, `node info`,
//! `self-update` and the administrator commands.
//!
//! Configuration flags are global, so `xpod --port 4000 config` and
//! `xpod serve --port 4000` mean the same. Exit status: 0 on success, 1 when
//! something fails, 2 for invalid configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, StartupError};
use crate::config::{Config, ConfigError, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "xpod",
    version,
    about = "A Solid pod server: one box on SQLite, or a cluster on PostgreSQL and S3"
)]
pub struct Cli {
    #[command(flatten)]
    pub flags: ConfigFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that override the file and the environment.
#[derive(Args, Debug, Default)]
pub struct ConfigFlags {
    /// TOML configuration file [default: /etc/xpod/xpod.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Environment file of NAME=value lines, as systemd reads it [default: /etc/xpod/xpod.env when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Address to listen on (CSS_HOST)
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// Port to listen on (CSS_PORT)
    #[arg(long, global = true)]
    pub port: Option<String>,
    /// Public base URL shared by all nodes (CSS_BASE_URL)
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,
    /// Where pods, keys and the SQLite database live (CSS_ROOT_FILE_PATH)
    #[arg(long, global = true, value_name = "DIR")]
    pub root_file_path: Option<String>,
    /// This node's id (CSS_NODE_ID)
    #[arg(long, global = true)]
    pub node_id: Option<String>,
    /// Local cache directory for S3 content (CSS_CACHE_PATH)
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_path: Option<String>,
    /// Cache size cap such as 50GB or 512MiB (CSS_CACHE_MAX_SIZE)
    #[arg(long, global = true, value_name = "SIZE")]
    pub cache_max_size: Option<String>,
    /// Log filter such as info or xpod=debug (CSS_LOG_LEVEL)
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl ConfigFlags {
    fn overrides(&self) -> Overrides {
        let mut values = Vec::new();
        let flags: [(&'static str, &Option<String>); 8] = [
            ("host", &self.host),
            ("port", &self.port),
            ("base_url", &self.base_url),
            ("root_file_path", &self.root_file_path),
            ("node_id", &self.node_id),
            ("cache_path", &self.cache_path),
            ("cache_max_size", &self.cache_max_size),
            ("log_level", &self.log_level),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                values.push((key, v.clone()));
            }
        }
        Overrides {
            config_file: self.config.clone(),
            env_file: self.env_file.clone(),
            values,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the pod server
    Serve,
    /// Print the effective configuration, secrets redacted, and where each value came from
    Config,
    /// Exit 0 when the local server answers its health check
    Healthcheck {
        /// Seconds to wait for an answer
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// This node
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Pods (through the running local node, with the administrator token)
    Pods {
        #[command(subcommand)]
        command: PodsCommand,
    },
    /// The cluster's nodes (through the running local node, with the administrator token)
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Joining a cluster
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Install the latest signed release (as root, from a shell; the service
    /// never updates itself). Packaged installs upgrade through dpkg or rpm.
    SelfUpdate {
        /// Only say what would be installed, and how; change nothing
        #[arg(long)]
        check: bool,
        /// Install this version instead of the latest
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Allow installing a version older than this one
        #[arg(long)]
        allow_downgrade: bool,
        /// The release manifest URL or s3://<bucket>/<prefix> (CSS_UPDATE_SOURCE)
        #[arg(long, value_name = "URL")]
        source: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// OFFLINE (stop `xpod serve` first): bring the pods of a box that ran
    /// alone on SQLite into the cluster named by CSS_DATABASE_URL (and its
    /// S3 bucket, if set). Nothing on the box is deleted.
    Join {
        /// Import this box's pods (rows, and bytes where the cluster's storage differs)
        #[arg(long)]
        import: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List every registered node, with its reachability and pod count
    List,
    /// Move a live node's pods to other nodes with the same storage (maintenance)
    Drain { id: String },
    /// Move the pods of a node that stopped sending heartbeats to live nodes with the same storage
    Reassign {
        id: String,
        /// Even though the node still sends heartbeats
        #[arg(long)]
        force: bool,
    },
    /// Forget a node that is gone and owns no pods
    Remove { id: String },
    /// On a centre: create an edge node (a home box behind it) and print
    /// the settings that make the box enrol; its token is shown only once
    CreateEdge {
        /// A name for the box: 1-63 characters of a-z, 0-9 and '-'
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PodsCommand {
    /// Create a pod on this node
    Create {
        /// 1-63 characters of a-z, 0-9 and '-'
        name: String,
        /// Let anyone read and write it (for tests and public data)
        #[arg(long)]
        public_write: bool,
        /// The owner: the e-mail of an account (the pod joins that account,
        /// with a WebID profile at /profile/card#me), or a WebID
        #[arg(long)]
        owner: Option<String>,
    },
    /// List every pod of the cluster
    List,
    /// Rename a pod of this node (its URL changes; IRIs in its RDF follow):
    /// for instance one whose name the centre has when an edge enrols
    Rename {
        /// The pod's name now
        pod: String,
        /// Its new name
        new_name: String,
        /// Give up a rename that was interrupted: the pod keeps its name
        #[arg(long)]
        cancel: bool,
    },
    /// Copy a pod of this cluster into a container on any Solid server, then
    /// verify the copy (rerun after an interruption to resume)
    Export {
        pod: String,
        /// The target container, such as https://other.example/alice/ (ends in /)
        #[arg(long, value_name = "URL")]
        to: String,
        /// Where to record progress for resuming [default: a file under the temp directory, named after both URLs]
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// Copy a container of any Solid server into a pod of this node (created
    /// when missing), then verify the copy (rerun after an interruption to resume)
    Import {
        /// The source container, such as https://other.example/alice/ (ends in /)
        url: String,
        /// The pod to copy into
        #[arg(long = "as", value_name = "POD")]
        pod: String,
        /// When the pod is created: let anyone read and write it
        #[arg(long)]
        public_write: bool,
        /// Where to record progress for resuming [default: a file under the temp directory, named after both URLs]
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// Move a pod to another node of the cluster while it stays in use;
    /// shows the progress and exits non-zero if the migration fails
    Migrate {
        /// The pod's name
        pod: String,
        /// The node id to move it to (`xpod nodes list` shows them)
        #[arg(long = "to")]
        to: String,
        /// Start the migration and return without waiting for it
        #[arg(long)]
        no_wait: bool,
        /// Give up the pod's migration (or its move between an edge and the
        /// centre) that is under way: the pod stays whole where it was
        #[arg(long)]
        cancel: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Print the node id, internal address, database backend and storage
    Info,
}

/// How a command ended.
enum Failure {
    Config(ConfigError),
    Other(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<StartupError> for Failure {
    fn from(e: StartupError) -> Self {
        Failure::Other(e.0)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(format!("{e:#}"))
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("xpod: invalid configuration: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Other(msg)) => {
            eprintln!("xpod: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let mut overrides = cli.flags.overrides();
    if let Command::SelfUpdate {
        source: Some(source),
        ..
    } = &cli.command
    {
        overrides.values.push(("update_source", source.clone()));
    }
    if cli.command.only_prints() {
        quiet_when_the_reader_leaves();
    }
    let config = Config::load(&overrides)?;
    init_logging(&config);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    match cli.command {
        Command::Serve => serve(config),
        Command::Config => {
            print_config(&config);
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { timeout } => healthcheck(&config, timeout),
        Command::Node {
            command: NodeCommand::Info,
        } => {
            node_info(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pods { command } => pods(&config, command),
        Command::Nodes { command } => nodes(&config, command),
        Command::Cluster {
            command: ClusterCommand::Join { import },
        } => cluster_join(&config, import),
        Command::SelfUpdate {
            check,
            to,
            allow_downgrade,
            source: _,
        } => {
            let options = crate::update::Options {
                check,
                to,
                allow_downgrade,
            };
            runtime()?
                .block_on(crate::update::run(&config, &options))
                .map_err(|e| Failure::Other(e.0))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl Command {
    /// Commands that only read local state and print: cut short by a
    /// reader that stops reading (`xpod config | grep -q …`), they may
    /// simply end. (Not those that talk to a server: a reset connection
    /// would end them silently too, instead of with its error.)
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Config
                | Command::Node {
                    command: NodeCommand::Info
                }
        )
    }
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader has gone panics
/// ("failed printing to stdout: Broken pipe"). For a command that only
/// prints local state, end silently instead, as `ls | head` does. Other
/// commands keep Rust's way, so a closed pipe or socket never cuts one
/// short without a word.
fn quiet_when_the_reader_leaves() {
    // SAFETY: called before any thread is started; restoring a signal's
    // default disposition has no other effect on this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("cannot start the async runtime: {e}")))
}

/// Refuses to let root write into a root file path that belongs to another
/// user (the packaged service's `xpod`): files root made there would stop
/// the service from opening them.
fn refuse_root_in_a_service_directory(config: &Config, command: &str) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    if !crate::update::install::is_root() {
        return Ok(());
    }
    for dir in [&config.root, &config.cache_path] {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.uid() == 0 {
            continue;
        }
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| meta.uid().to_string());
        return Err(Failure::Other(format!(
            "{} belongs to the user {owner}, and files that root made there would lock that user's server out; run it as that user: runuser -u {owner} -- xpod {command}",
            dir.display()
        )));
    }
    Ok(())
}

fn serve(config: Config) -> Result<ExitCode, Failure> {
    refuse_root_in_a_service_directory(&config, "serve")?;
    runtime()?.block_on(async {
        let app = Arc::new(App::start(config).await?);
        crate::http::serve(app).await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn print_config(config: &Config) {
    let width = config.report.iter().map(|l| l.env.len()).max().unwrap_or(0);
    for line in &config.report {
        let value = line.shown.as_deref().unwrap_or("(unset)");
        println!("{:width$}  {value}  [{}]", line.env, line.source);
    }
}

/// The address the CLI uses to reach the local server.
pub fn local_url(config: &Config, path: &str) -> String {
    // With HTTPS, the node answers the command line in plain HTTP on its
    // internal listener.
    let addr = config
        .internal_listen_addr()
        .unwrap_or_else(|| std::net::SocketAddr::new(config.host, config.port));
    let port = addr.port();
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{port}{path}")
}

fn healthcheck(config: &Config, timeout: u64) -> Result<ExitCode, Failure> {
    let url = local_url(config, crate::http::HEALTH_PATH);
    runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout))
            .build()
            .map_err(anyhow::Error::from)?;
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => {
                println!("ok: {url} answered {}", resp.status());
                Ok(ExitCode::SUCCESS)
            }
            Ok(resp) => Err(Failure::Other(format!(
                "unhealthy: {url} answered {}",
                resp.status()
            ))),
            Err(e) => Err(Failure::Other(format!(
                "no server answers at {url} ({}); is `xpod serve` running with the same CSS_HOST and CSS_PORT?",
                error_chain(&e)
            ))),
        }
    })
}

use crate::walk::remote::error_chain;

fn node_info(config: &Config) -> Result<(), Failure> {
    use crate::node::{address, identity};
    let id = match &config.node_id {
        Some(id) => format!("{id} (CSS_NODE_ID)"),
        None => {
            match identity::read(&config.node_id_path).map_err(|e| Failure::Other(e.to_string()))? {
                Some(id) => format!("{id} ({})", config.node_id_path.display()),
                None => format!(
                    "not assigned yet: `xpod serve` creates {}",
                    config.node_id_path.display()
                ),
            }
        }
    };
    let (ip, source) = address::detect(config.internal_ip, config.pod_ip);
    let port = config.internal_port.unwrap_or(config.port);
    let storage = match &config.s3 {
        Some(s3) => format!("s3 {} bucket {}", s3.endpoint, s3.bucket),
        None => {
            let dir = crate::blob::fs::blob_dir(&config.root);
            let id = crate::blob::fs::read_storage_id(&dir)
                .map_err(|e| Failure::Other(e.to_string()))?
                .unwrap_or_else(|| "not created yet".into());
            format!("local filesystem {} (storage id {id})", dir.display())
        }
    };
    println!("node id:          {id}");
    println!(
        "internal address: {} ({source})",
        std::net::SocketAddr::new(ip, port)
    );
    println!("database:         {}", config.database_label());
    println!("storage:          {storage}");
    println!("root file path:   {}", config.root.display());
    Ok(())
}

/// Calls the local node's administrator API.
async fn admin_call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(reqwest::StatusCode, serde_json::Value), Failure> {
    let token = crate::auth::admin_token::for_cli(config)
        .map_err(|e| Failure::Other(e.to_string()))?
        .ok_or_else(|| {
            Failure::Other(format!(
                "no administrator token: {} does not exist; start the node once with `xpod serve`, or set CSS_ADMIN_TOKEN",
                config.root.join(crate::auth::admin_token::FILE_NAME).display()
            ))
        })?;
    let url = local_url(config, path);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(anyhow::Error::from)?;
    let mut req = client.request(method, &url).bearer_auth(token.expose());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.map_err(|e| {
        Failure::Other(format!(
            "no server answers at {url} ({}); start it with `xpod serve`",
            error_chain(&e)
        ))
    })?;
    let status = resp.status();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

fn cluster_join(config: &Config, import: bool) -> Result<ExitCode, Failure> {
    use std::sync::Arc;
    if !import {
        return Err(Failure::Other(
            "`xpod cluster join` needs --import: it copies this box's pods into the cluster".into(),
        ));
    }
    if !matches!(config.database, crate::config::DatabaseConfig::Postgres(_)) {
        return Err(Failure::Other(
            "set CSS_DATABASE_URL to the cluster's PostgreSQL database (and the CSS_MINIO_* settings of its bucket, if it has one)".into(),
        ));
    }
    refuse_root_in_a_service_directory(config, "cluster join --import")?;
    runtime()?.block_on(async {
        // Offline only: a running node would keep writing to the old database.
        let health = local_url(config, crate::http::HEALTH_PATH);
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(anyhow::Error::from)?;
        if probe.get(&health).send().await.is_ok() {
            return Err(Failure::Other(format!(
                "a server answers at {health}: stop `xpod serve` on this box before importing"
            )));
        }
        let (node_id, _) = crate::node::identity::resolve(config.node_id.as_deref(), &config.node_id_path)
            .map_err(|e| Failure::Other(e.to_string()))?;
        let db = crate::db::open(&config.database)
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
        let blobs: crate::blob::Blobs = if config.s3.is_some() {
            Arc::new(
                crate::blob::tiered::TieredStore::open(config, &db, Default::default())
                    .await
                    .map_err(Failure::Other)?,
            )
        } else {
            Arc::new(
                crate::blob::fs::FsBlobStore::open(&crate::blob::fs::blob_dir(&config.root))
                    .map_err(|e| Failure::Other(e.to_string()))?,
            )
        };
        let done = crate::cluster::join::import(config, &db, &blobs, &node_id)
            .await
            .map_err(Failure::Other)?;
        println!(
            "imported {} pod(s) ({}), {} resource(s), {} bytes copied to the cluster's storage; start the node with `xpod serve`",
            done.pods.len(),
            done.pods.join(", "),
            done.resources,
            done.bytes_copied
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn nodes(config: &Config, command: NodesCommand) -> Result<ExitCode, Failure> {
    use reqwest::Method;
    runtime()?.block_on(async {
        let fail = |what: &str, status: reqwest::StatusCode, json: &serde_json::Value| {
            Failure::Other(format!(
                "{what}: {}",
                json["error"].as_str().unwrap_or(status.as_str())
            ))
        };
        match command {
            NodesCommand::List => {
                let (status, json) =
                    admin_call(config, Method::GET, "/.cluster/nodes", None).await?;
                if !status.is_success() {
                    return Err(fail("cannot list nodes", status, &json));
                }
                // The version shows how far a rolling upgrade has come.
                println!(
                    "{:<38} {:<22} {:<10} {:<10} {:>5}  STORAGE",
                    "NODE", "INTERNAL ADDRESS", "STATE", "VERSION", "PODS"
                );
                for n in json.as_array().into_iter().flatten() {
                    println!(
                        "{:<38} {:<22} {:<10} {:<10} {:>5}  {}",
                        n["nodeId"].as_str().unwrap_or_default(),
                        n["internalAddress"]
                            .as_str()
                            .unwrap_or(if n["kind"] == "edge" { "(edge)" } else { "-" }),
                        if n["reachable"].as_bool() == Some(true) {
                            "up"
                        } else {
                            "unreachable"
                        },
                        n["version"].as_str().unwrap_or("-"),
                        n["pods"].as_u64().unwrap_or(0),
                        n["storageId"].as_str().unwrap_or("-"),
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            NodesCommand::CreateEdge { name } => create_edge(config, &name).await,
            NodesCommand::Drain { id } => move_pods(config, &id, "drain", false).await,
            NodesCommand::Reassign { id, force } => move_pods(config, &id, "reassign", force).await,
            NodesCommand::Remove { id } => {
                let (status, json) = admin_call(
                    config,
                    Method::DELETE,
                    &format!("/.cluster/nodes/{id}"),
                    None,
                )
                .await?;
                if !status.is_success() {
                    return Err(fail(&format!("cannot remove node {id}"), status, &json));
                }
                println!("removed node {id}");
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// `xpod nodes create-edge`: the node id, the one-time token and the
/// settings for the home box.
async fn create_edge(config: &Config, name: &str) -> Result<ExitCode, Failure> {
    if config.is_edge() {
        return Err(Failure::Other(
            "this node is itself an edge (CSS_SIGNAL_ENDPOINT is set); create edges on its centre"
                .into(),
        ));
    }
    let (status, json) = admin_call(
        config,
        reqwest::Method::POST,
        "/.cluster/edges",
        Some(serde_json::json!({ "name": name })),
    )
    .await?;
    if status != reqwest::StatusCode::CREATED {
        return Err(Failure::Other(format!(
            "cannot create edge {name}: {}",
            json["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    let field = |key: &str| json[key].as_str().unwrap_or_default().to_string();
    println!("created edge node {name}: {}", field("nodeId"));
    println!("its enrolment token is shown only now, and works once:");
    println!("  {}", field("token"));
    println!("on the home box, set these and start xpod (it enrols at once):");
    println!("CSS_NODE_ID={}", field("nodeId"));
    println!("CSS_NODE_TOKEN={}", field("token"));
    println!("CSS_SIGNAL_ENDPOINT={}", field("signalEndpoint"));
    println!("CSS_BASE_URL={}", field("baseUrl"));
    Ok(ExitCode::SUCCESS)
}

async fn move_pods(
    config: &Config,
    id: &str,
    action: &str,
    force: bool,
) -> Result<ExitCode, Failure> {
    let (status, json) = admin_call(
        config,
        reqwest::Method::POST,
        &format!("/.cluster/nodes/{id}/{action}"),
        Some(serde_json::json!({ "force": force })),
    )
    .await?;
    if !status.is_success() {
        return Err(Failure::Other(format!(
            "cannot {action} node {id}: {}",
            json["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    for m in json["moved"].as_array().into_iter().flatten() {
        println!(
            "moved pod {} to node {}",
            m["podId"].as_str().unwrap_or_default(),
            m["to"].as_str().unwrap_or_default()
        );
    }
    let left: Vec<&str> = json["leftBehind"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    if !left.is_empty() {
        return Err(Failure::Other(format!(
            "{} pod(s) stay on node {id} ({}): no live node shares their storage; they need a migration",
            left.len(),
            left.join(", ")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// The base URL of a pod, from the administrator API; with `create`, a
/// missing pod is created first (`Some(public_write)`).
async fn pod_base_url(config: &Config, pod: &str, create: Option<bool>) -> Result<String, Failure> {
    use reqwest::{Method, StatusCode};
    let (status, json) =
        admin_call(config, Method::GET, &format!("/.cluster/pods/{pod}"), None).await?;
    let json = match (status, create) {
        (StatusCode::OK, _) => json,
        (StatusCode::NOT_FOUND, Some(public_write)) => {
            let body = serde_json::json!({ "name": pod, "publicWrite": public_write });
            let (status, json) =
                admin_call(config, Method::POST, "/.cluster/pods", Some(body)).await?;
            if status != StatusCode::CREATED {
                return Err(Failure::Other(format!(
                    "cannot create pod {pod}: {}",
                    json["error"].as_str().unwrap_or(status.as_str())
                )));
            }
            eprintln!("created pod {pod}");
            json
        }
        (StatusCode::NOT_FOUND, None) => {
            return Err(Failure::Other(format!(
                "there is no pod {pod}; `xpod pods list` shows the pods of the cluster"
            )));
        }
        (status, _) => {
            return Err(Failure::Other(format!(
                "cannot look up pod {pod}: {}",
                json["error"].as_str().unwrap_or(status.as_str())
            )));
        }
    };
    json["baseUrl"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::Other(format!("the node gave no base URL for pod {pod}")))
}

/// A pod of the local node: its canonical URL, reached at this node's own
/// address when the URL's port is the one it listens on (so the local node
/// serves the copy, as with `curl --resolve`).
fn local_endpoint(config: &Config, base: &str) -> Result<crate::walk::Endpoint, Failure> {
    Ok(crate::walk::Endpoint {
        base: base.to_string(),
        client: local_client(config, base)?
            .build()
            .map_err(anyhow::Error::from)?,
    })
}

/// A client that reaches the canonical host of `base` at this node's own
/// address (see [`local_endpoint`]).
fn local_client(config: &Config, base: &str) -> Result<reqwest::ClientBuilder, Failure> {
    let url = url::Url::parse(base)
        .map_err(|e| Failure::Other(format!("the pod's base URL {base} is invalid: {e}")))?;
    let mut builder = crate::walk::client_builder();
    if url.port_or_known_default() == Some(config.port)
        && let Some(host) = url.host_str()
    {
        let ip = match config.host {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        builder = builder.resolve(host, std::net::SocketAddr::new(ip, config.port));
    }
    Ok(builder)
}

/// A container on another server, named by the operator.
fn remote_endpoint(base: &str) -> Result<crate::walk::Endpoint, Failure> {
    match url::Url::parse(base) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && base.ends_with('/') => {}
        _ => {
            return Err(Failure::Other(format!(
                "{base} is not a container URL: give an absolute http(s) URL ending in /, such as https://other.example/alice/"
            )));
        }
    }
    Ok(crate::walk::Endpoint {
        base: base.to_string(),
        client: crate::walk::client_builder()
            .build()
            .map_err(anyhow::Error::from)?,
    })
}

async fn copy_pod(
    source: crate::walk::Endpoint,
    target: crate::walk::Endpoint,
    state: Option<PathBuf>,
    what: &str,
) -> Result<ExitCode, Failure> {
    let (from, to) = (source.base.clone(), target.base.clone());
    let report = crate::walk::copy(crate::walk::Options {
        source,
        target,
        state,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })
    .await
    .map_err(|e| Failure::Other(e.to_string()))?;
    println!(
        "{what}: {from} -> {to}: {} container(s), {} document(s) ({} copied, {} unchanged), {} auxiliary resource(s); verified (state in {})",
        report.containers,
        report.documents,
        report.copied,
        report.skipped,
        report.auxiliary,
        report.state_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn pods(config: &Config, command: PodsCommand) -> Result<ExitCode, Failure> {
    runtime()?.block_on(async {
        match command {
            PodsCommand::Export { pod, to, state } => {
                let base = pod_base_url(config, &pod, None).await?;
                let source = local_endpoint(config, &base)?;
                let target = remote_endpoint(&to)?;
                copy_pod(source, target, state, &format!("exported pod {pod}")).await
            }
            PodsCommand::Import {
                url,
                pod,
                public_write,
                state,
            } => {
                let source = remote_endpoint(&url)?;
                let base = pod_base_url(config, &pod, Some(public_write)).await?;
                let target = local_endpoint(config, &base)?;
                copy_pod(
                    source,
                    target,
                    state,
                    &format!("imported {url} as pod {pod}"),
                )
                .await
            }
            PodsCommand::Create {
                name,
                public_write,
                owner,
            } => {
                let body = serde_json::json!({
                    "name": name,
                    "publicWrite": public_write,
                    "owner": owner,
                });
                let (status, json) =
                    admin_call(config, reqwest::Method::POST, "/.cluster/pods", Some(body)).await?;
                if status == reqwest::StatusCode::CREATED {
                    println!(
                        "created pod {name} at {}",
                        json["baseUrl"].as_str().unwrap_or("?")
                    );
                    if let Some(webid) = json["webId"].as_str() {
                        println!("its WebID is {webid}");
                    }
                    Ok(ExitCode::SUCCESS)
                } else {
                    Err(Failure::Other(format!(
                        "cannot create pod {name}: {}",
                        json["error"].as_str().unwrap_or(status.as_str())
                    )))
                }
            }
            PodsCommand::List => {
                let (status, json) =
                    admin_call(config, reqwest::Method::GET, "/.cluster/pods", None).await?;
                if !status.is_success() {
                    return Err(Failure::Other(format!(
                        "cannot list pods: {}",
                        json["error"].as_str().unwrap_or(status.as_str())
                    )));
                }
                println!("{:<24} {:<38} BASE URL", "POD", "NODE");
                for pod in json.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<38} {}",
                        pod["podId"].as_str().unwrap_or_default(),
                        pod["nodeId"].as_str().unwrap_or_default(),
                        pod["baseUrl"].as_str().unwrap_or_default()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            PodsCommand::Rename {
                pod,
                new_name,
                cancel,
            } => rename_pod(config, &pod, &new_name, cancel).await,
            PodsCommand::Migrate {
                pod,
                to,
                no_wait,
                cancel,
            } => {
                if edge_move(config, &pod, &to).await? {
                    if cancel {
                        end_edge_move(config, &pod, "cancel").await
                    } else {
                        move_edge_pod(config, &pod, &to).await
                    }
                } else if cancel {
                    cancel_migration(config, &pod).await
                } else {
                    migrate(config, &pod, &to, no_wait).await
                }
            }
        }
    })
}

/// Starts a migration and follows it with a progress bar until it ends.
async fn migrate(config: &Config, pod: &str, to: &str, no_wait: bool) -> Result<ExitCode, Failure> {
    let (status, json) = admin_call(
        config,
        reqwest::Method::POST,
        &format!("/.cluster/pods/{pod}/migrate"),
        Some(serde_json::json!({ "targetNode": to })),
    )
    .await?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(Failure::Other(format!(
            "cannot migrate pod {pod}: {}",
            json["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    if no_wait {
        println!(
            "migration of pod {pod} to node {to} started; follow it at GET /.cluster/pods/{pod}/migration"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let id = json["id"].as_i64();
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:<28} [{bar:40}] {pos:>3}% ({elapsed})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let path = format!("/.cluster/pods/{pod}/migration");
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        let (m, s) = match admin_call(config, reqwest::Method::GET, &path, None).await {
            Ok((status, json)) if status.is_success() => {
                unreachable_since = None;
                (
                    json.clone(),
                    json["status"].as_str().unwrap_or("?").to_string(),
                )
            }
            Ok((status, json)) => {
                bar.abandon();
                return Err(Failure::Other(format!(
                    "cannot follow the migration: {}",
                    json["error"].as_str().unwrap_or(status.as_str())
                )));
            }
            Err(e) => {
                // The local node may be restarting; the migration goes on.
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    bar.abandon();
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if id.is_some() && m["id"].as_i64() != id {
            bar.abandon();
            return Err(Failure::Other(
                "another migration of this pod replaced ours".into(),
            ));
        }
        bar.set_position(m["progress"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "{s} {}/{}",
            m["copied"].as_i64().unwrap_or(0),
            m["total"].as_i64().unwrap_or(0)
        ));
        match s.as_str() {
            "done" => {
                bar.finish_with_message("done");
                println!(
                    "pod {pod} moved to node {to} (writes waited {} ms)",
                    m["fenceMs"].as_i64().unwrap_or(0)
                );
                return Ok(ExitCode::SUCCESS);
            }
            "failed" | "cancelled" => {
                bar.abandon_with_message(s.clone());
                return Err(Failure::Other(format!(
                    "the migration of pod {pod} {s}: {}; the pod stays on node {}",
                    m["error"].as_str().unwrap_or("no reason given"),
                    m["sourceNode"].as_str().unwrap_or("?")
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `xpod pods migrate` when the pod is on an edge or goes to one: the local
/// centre node starts the move, this command walks the pod across (the
/// container-walking migrator, under the pod's one canonical URL on both
/// sides), then the node ends it.
async fn move_edge_pod(config: &Config, pod: &str, to: &str) -> Result<ExitCode, Failure> {
    let (status, json) = admin_call(
        config,
        reqwest::Method::POST,
        &format!("/.cluster/pods/{pod}/move"),
        Some(serde_json::json!({ "targetNode": to })),
    )
    .await?;
    if status != reqwest::StatusCode::CREATED {
        return Err(Failure::Other(format!(
            "cannot move pod {pod}: {}",
            json["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    let from = json["from"].as_str().unwrap_or("?").to_string();
    if json["finishing"] == true {
        // Copied and verified before: only its end was missing.
        end_edge_move(config, pod, "finish").await?;
        println!("moved pod {pod} from node {from} to node {to}: finished the move begun before");
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(secret), Some(base)) = (json["secret"].as_str(), json["baseUrl"].as_str()) else {
        return Err(Failure::Other(format!(
            "the node's answer to the move of pod {pod} lacks its secret or URL: {json}"
        )));
    };
    let state = std::env::temp_dir().join(format!("xpod-move-{pod}-{from}-{to}.state"));
    let copied = crate::walk::copy(crate::walk::Options {
        source: mover_endpoint(config, base, secret, "source")?,
        target: mover_endpoint(config, base, secret, "target")?,
        state: Some(state.clone()),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })
    .await;
    let report = match copied {
        Ok(r) => r,
        Err(e) => {
            return Err(Failure::Other(format!(
                "moving pod {pod} stopped: {e}; the pod stays on node {from}, read-only; run the same command again to resume, or `xpod pods migrate {pod} --to {to} --cancel` to give up"
            )));
        }
    };
    end_edge_move(config, pod, "finish").await?;
    let _ = std::fs::remove_file(&state);
    println!(
        "moved pod {pod} from node {from} to node {to}: {} container(s), {} document(s), {} auxiliary resource(s), {} bytes; verified",
        report.containers, report.documents, report.auxiliary, report.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `xpod pods migrate <pod> --to <node>` is a move between an edge
/// and the centre: the pod is on an edge, goes to one, or is moving.
async fn edge_move(config: &Config, pod: &str, to: &str) -> Result<bool, Failure> {
    let (status, record) = admin_call(
        config,
        reqwest::Method::GET,
        &format!("/.cluster/pods/{pod}"),
        None,
    )
    .await?;
    if !status.is_success() {
        return Err(Failure::Other(format!(
            "cannot look up pod {pod}: {}",
            record["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    if !record["moving"].is_null() {
        return Ok(true);
    }
    let (status, nodes) = admin_call(config, reqwest::Method::GET, "/.cluster/nodes", None).await?;
    if !status.is_success() {
        return Err(Failure::Other(format!(
            "cannot list the nodes: {}",
            nodes["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    let kind = |id: &str| {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["nodeId"] == id)
            .and_then(|n| n["kind"].as_str())
            .map(str::to_string)
    };
    let owner = record["nodeId"].as_str().unwrap_or_default();
    Ok(kind(owner).as_deref() == Some("edge") || kind(to).as_deref() == Some("edge"))
}

/// Finishes or cancels a move between an edge and the centre.
async fn end_edge_move(config: &Config, pod: &str, action: &str) -> Result<ExitCode, Failure> {
    let (status, json) = admin_call(
        config,
        reqwest::Method::POST,
        &format!("/.cluster/pods/{pod}/move/{action}"),
        None,
    )
    .await?;
    if status != reqwest::StatusCode::NO_CONTENT {
        return Err(Failure::Other(format!(
            "the move of pod {pod} could not {action}: {}{}",
            json["error"].as_str().unwrap_or(status.as_str()),
            again(status)
        )));
    }
    if action == "cancel" {
        println!("cancelled the move of pod {pod}: it stays whole where it was");
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancels a pod's migration between centre nodes.
async fn cancel_migration(config: &Config, pod: &str) -> Result<ExitCode, Failure> {
    let (status, json) = admin_call(
        config,
        reqwest::Method::DELETE,
        &format!("/.cluster/pods/{pod}/migration"),
        None,
    )
    .await?;
    if !status.is_success() {
        return Err(Failure::Other(format!(
            "cannot cancel the migration of pod {pod}: {}",
            json["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    println!("cancelled the migration of pod {pod}: it stays whole on its node");
    Ok(ExitCode::SUCCESS)
}

/// `xpod pods rename`: the node makes the new pod and marks both; this
/// command walks the old one into the new one (rebasing its IRIs), then the
/// node deletes the old one.
async fn rename_pod(
    config: &Config,
    pod: &str,
    new_name: &str,
    cancel: bool,
) -> Result<ExitCode, Failure> {
    let body = serde_json::json!({ "to": new_name });
    let end = |action: &'static str| {
        let body = body.clone();
        async move {
            let (status, json) = admin_call(
                config,
                reqwest::Method::POST,
                &format!("/.cluster/pods/{pod}/rename/{action}"),
                Some(body),
            )
            .await?;
            if status != reqwest::StatusCode::NO_CONTENT {
                return Err(Failure::Other(format!(
                    "the rename of pod {pod} could not {action}: {}{}",
                    json["error"].as_str().unwrap_or(status.as_str()),
                    again(status)
                )));
            }
            Ok(())
        }
    };
    if cancel {
        end("cancel").await?;
        println!("cancelled the rename: pod {pod} keeps its name");
        return Ok(ExitCode::SUCCESS);
    }
    let (status, json) = admin_call(
        config,
        reqwest::Method::POST,
        &format!("/.cluster/pods/{pod}/rename"),
        Some(body.clone()),
    )
    .await?;
    if status != reqwest::StatusCode::CREATED {
        return Err(Failure::Other(format!(
            "cannot rename pod {pod}: {}",
            json["error"].as_str().unwrap_or(status.as_str())
        )));
    }
    let (Some(secret), Some(from), Some(to)) = (
        json["secret"].as_str(),
        json["from"].as_str(),
        json["to"].as_str(),
    ) else {
        return Err(Failure::Other(format!(
            "the node's answer to the rename of pod {pod} lacks its secret or URLs: {json}"
        )));
    };
    let state = std::env::temp_dir().join(format!("xpod-rename-{pod}-{new_name}.state"));
    let report = crate::walk::copy(crate::walk::Options {
        source: mover_endpoint(config, from, secret, "source")?,
        target: mover_endpoint(config, to, secret, "target")?,
        state: Some(state.clone()),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })
    .await
    .map_err(|e| {
        Failure::Other(format!(
            "renaming pod {pod} stopped: {e}; it keeps its name and takes no writes until you run the same command again to resume, or add --cancel to give up"
        ))
    })?;
    end("finish").await?;
    let _ = std::fs::remove_file(&state);
    println!(
        "renamed pod {pod} to {new_name} ({to}): {} container(s), {} document(s), {} auxiliary resource(s); verified",
        report.containers, report.documents, report.auxiliary
    );
    Ok(ExitCode::SUCCESS)
}

/// A walk endpoint on the local node that presents a move's secret.
fn mover_endpoint(
    config: &Config,
    base: &str,
    secret: &str,
    side: &str,
) -> Result<crate::walk::Endpoint, Failure> {
    let value = |v: &str| {
        reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| Failure::Other("the move's secret is not a header value".into()))
    };
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(crate::edge::moving::MOVE, value(secret)?);
    headers.insert(crate::edge::moving::SIDE, value(side)?);
    Ok(crate::walk::Endpoint {
        base: base.to_string(),
        client: local_client(config, base)?
            .default_headers(headers)
            .build()
            .map_err(anyhow::Error::from)?,
    })
}

/// What to add to a failed step of a move or rename: a failure the node
/// could not help (it or the edge unavailable) passes when the same
/// command runs again; a refusal says itself what to do.
fn again(status: reqwest::StatusCode) -> &'static str {
    if status.is_server_error() {
        "; run the same command again"
    } else {
        ""
    }
}
