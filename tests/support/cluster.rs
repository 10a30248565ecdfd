//! A cluster of real nodes for tests: one PostgreSQL, Garage for storage,
//! nodes on 127.0.0.1, .2, … sharing one base URL and port.

use std::path::PathBuf;

use reqwest::Client;

use super::{Garage, Postgres, Server, borrowed, xpod};

const SECRET: &str = "4f2c9d0e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d";

pub struct Node {
    pub server: Server,
    pub root: PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub id: String,
    /// A client that reaches the canonical host through this node.
    pub client: Client,
}

pub struct Cluster {
    pub pg: Postgres,
    _garages: Vec<Garage>,
    _dir: tempfile::TempDir,
    pub port: u16,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// Three nodes sharing one bucket, each with `extra` settings too.
    pub fn start_with(extra: &[(&'static str, &str)]) -> Cluster {
        Self::start_layout(&[0, 0, 0], extra)
    }

    /// One node per entry of `buckets` (on 127.0.0.1, .2, …), each storing
    /// its bytes in the Garage server of that index: nodes with the same
    /// index share storage, others have storage of their own.
    pub fn start_layout(buckets: &[usize], extra: &[(&'static str, &str)]) -> Cluster {
        let pg = Postgres::start();
        let url = pg.create_database("cluster");
        let garages: Vec<Garage> = (0..=buckets.iter().copied().max().unwrap_or(0))
            .map(|_| Garage::start())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port("127.0.0.1");
        let mut nodes = Vec::new();
        for (i, bucket) in (1..).zip(buckets) {
            let garage = &garages[*bucket];
            let host = format!("127.0.0.{i}");
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let root = node_dir.join("root");
            let mut env: Vec<(&'static str, String)> = vec![
                ("CSS_ROOT_FILE_PATH", root.display().to_string()),
                ("CSS_HOST", host.clone()),
                ("CSS_PORT", port.to_string()),
                ("CSS_BASE_URL", format!("http://pods.test:{port}/")),
                ("CSS_DATABASE_URL", url.clone()),
                ("CSS_SECRET_KEY", SECRET.into()),
                ("CSS_INTERNAL_IP", host.clone()),
                (
                    "CSS_CACHE_PATH",
                    node_dir.join("cache").display().to_string(),
                ),
                ("CSS_HEARTBEAT_INTERVAL", "500ms".into()),
                ("CSS_NODE_UNREACHABLE_AFTER", "2s".into()),
            ];
            env.extend(garage.env());
            env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            let server = Server::start(&host, &borrowed(&env), &node_dir);
            let id = std::fs::read_to_string(root.join(".node-id"))
                .unwrap()
                .trim()
                .to_string();
            let client = Client::builder()
                .resolve("pods.test", format!("{host}:{port}").parse().unwrap())
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            nodes.push(Node {
                server,
                root,
                env,
                id,
                client,
            });
        }
        Cluster {
            pg,
            _garages: garages,
            _dir: dir,
            port,
            nodes,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://pods.test:{}/{path}", self.port)
    }

    /// Creates a pod through node `i`'s CLI (it is placed on that node).
    pub fn create_pod(&self, i: usize, name: &str) {
        let out = xpod(
            &borrowed(&self.nodes[i].env),
            &["pods", "create", name, "--public-write"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn cli(&self, i: usize, args: &[&str]) -> std::process::Output {
        xpod(&borrowed(&self.nodes[i].env), args)
    }
}

pub fn served_by(resp: &reqwest::Response) -> String {
    resp.headers()["x-xpod-served-by"]
        .to_str()
        .unwrap()
        .to_string()
}

pub fn token(node: &Node) -> String {
    std::fs::read_to_string(node.root.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}
