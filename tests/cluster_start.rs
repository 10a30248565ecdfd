//! Several nodes against one PostgreSQL: concurrent first start, one schema,
//! one cluster secret.

mod support;

use support::{Postgres, Server, assert_one_line_error, header, http_get, xpod};

const SECRET: &str = "4f2c9d0e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d";

#[test]
fn five_nodes_starting_at_once_share_one_schema() {
    let pg = Postgres::start();
    let url = pg.create_database("cluster");
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // Spawn all five before waiting for any, so their migrations race.
    let servers: Vec<Server> = dirs
        .iter()
        .map(|dir| {
            Server::spawn(
                "127.0.0.1",
                &[
                    ("CSS_ROOT_FILE_PATH", dir.path().to_str().unwrap()),
                    ("CSS_DATABASE_URL", &url),
                    ("CSS_SECRET_KEY", SECRET),
                    ("CSS_INTERNAL_IP", "127.0.0.1"),
                ],
                dir.path(),
            )
        })
        .collect();
    let mut served_by = Vec::new();
    for s in &servers {
        s.wait_healthy(std::time::Duration::from_secs(60));
        let (_, headers, _) = http_get(&s.host, s.port, "/.cluster/health").unwrap();
        served_by.push(header(&headers, "x-xpod-served-by").unwrap().to_string());
    }

    let latest = xpod::db::schema::LATEST;
    assert_eq!(
        pg.psql(
            "cluster",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        (1..=latest)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(","),
        "exactly one row per schema version"
    );
    assert_eq!(pg.psql("cluster", "SELECT count(*) FROM nodes"), "5");
    assert_eq!(pg.psql("cluster", "SELECT count(*) FROM admin_tokens"), "5");
    let mut ids = pg
        .psql("cluster", "SELECT node_id FROM nodes")
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    ids.sort();
    served_by.sort();
    assert_eq!(
        ids, served_by,
        "each node registered under the id it serves with"
    );
    // The node's public key is published; the private key never leaves the node.
    let key = pg.psql(
        "cluster",
        &format!("SELECT public_key FROM nodes WHERE node_id = '{}'", ids[0]),
    );
    assert_eq!(
        key.len(),
        43,
        "an unpadded base64url Ed25519 public key: {key}"
    );

    // A sixth node without the cluster secret is refused, and told what to copy.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let env = [
        ("CSS_ROOT_FILE_PATH", root),
        ("CSS_DATABASE_URL", url.as_str()),
        ("CSS_INTERNAL_IP", "127.0.0.1"),
    ];
    let out = xpod(&env, &["serve", "--port", "1"]);
    assert_one_line_error(
        &out,
        1,
        "this cluster already has a secret key and this node has none: copy",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{root}/secret.key")), "{stderr}");
    assert!(!dir.path().join("secret.key").exists());

    // One with a different secret is refused too.
    let wrong = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    let mut env_wrong = env.to_vec();
    env_wrong.push(("CSS_SECRET_KEY", wrong));
    let out = xpod(&env_wrong, &["serve", "--port", "1"]);
    assert_one_line_error(&out, 1, "differs from the cluster's");

    // With the secret copied as a file, it joins.
    std::fs::write(dir.path().join("secret.key"), format!("{SECRET}\n")).unwrap();
    let sixth = Server::start("127.0.0.1", &env, dir.path());
    drop(sixth);
    assert_eq!(pg.psql("cluster", "SELECT count(*) FROM nodes"), "6");
    drop(servers);
}

#[test]
fn the_first_node_of_a_cluster_creates_the_secret_file() {
    let pg = Postgres::start();
    let url = pg.create_database("fresh");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CSS_ROOT_FILE_PATH", dir.path().to_str().unwrap()),
        ("CSS_DATABASE_URL", url.as_str()),
        ("CSS_INTERNAL_IP", "127.0.0.1"),
    ];
    let mut server = Server::start("127.0.0.1", &env, dir.path());
    let secret = std::fs::read_to_string(dir.path().join("secret.key")).unwrap();
    assert_eq!(secret.trim().len(), 64);
    assert!(server.stop_with(libc::SIGTERM).success());
    // The check value is stored, never the secret.
    let stored = pg.psql("fresh", "SELECT value FROM cluster_settings");
    assert!(!stored.contains(secret.trim()));
    // A restart reuses it.
    let _again = Server::start("127.0.0.1", &env, dir.path());
}
