//! One contract suite for the metadata store, run against SQLite and against a
//! real PostgreSQL started by the test support. Both must behave the same.

mod support;

use std::sync::Arc;

use xpod::config::{DatabaseConfig, Secret};
use xpod::db::{
    self, Condition, Db, DbError, MigrationStatus, NodeRecord, PodRecord, PutRequest,
    SubscriptionRecord, schema,
};

fn node(id: &str, ip: &str) -> NodeRecord {
    NodeRecord {
        node_id: id.into(),
        kind: "centre".into(),
        internal_ip: ip.into(),
        internal_port: 3000,
        public_address: None,
        storage_id: Some("s-1".into()),
        version: "0.1.0".into(),
        public_key: Some("pk".into()),
        started_at: 1,
        last_heartbeat: 2,
    }
}

fn pod(name: &str, owner_node: &str) -> PodRecord {
    PodRecord {
        pod_id: name.into(),
        base_url: format!("http://localhost:3000/{name}/"),
        node_id: owner_node.into(),
        storage_id: "s-1".into(),
        owner: None,
        created_at: db::now_ms(),
        moving: None,
    }
}

async fn contract(db: Db) {
    db.ping().await.unwrap();

    // The schema is applied once, every version recorded once.
    let applied = db.applied_migrations().await.unwrap();
    let versions: Vec<i64> = applied.iter().map(|m| m.version).collect();
    assert_eq!(versions, (1..=schema::LATEST).collect::<Vec<_>>());

    // Settings: first writer wins, also under concurrency.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.setting_init("race", &format!("v{i}")).await.unwrap()
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.push(t.await.unwrap());
    }
    winners.dedup();
    assert_eq!(winners.len(), 1, "every caller sees the one stored value");
    assert_eq!(
        db.setting_get("race").await.unwrap(),
        Some(winners[0].clone())
    );
    assert_eq!(db.setting_get("absent").await.unwrap(), None);

    // Nodes: insert, update in place, list in id order.
    db.node_upsert(&node("b", "10.0.0.2")).await.unwrap();
    db.node_upsert(&node("a", "10.0.0.1")).await.unwrap();
    let mut moved = node("a", "10.0.0.9");
    moved.internal_port = 4000;
    moved.last_heartbeat = 99;
    db.node_upsert(&moved).await.unwrap();
    assert_eq!(db.node_get("a").await.unwrap(), Some(moved.clone()));
    assert_eq!(db.node_get("zz").await.unwrap(), None);
    let ids: Vec<String> = db
        .node_list()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);

    // Admin tokens: idempotent add, lookup by hash only.
    db.admin_token_add("hash-1", "a").await.unwrap();
    db.admin_token_add("hash-1", "b").await.unwrap();
    assert!(db.admin_token_exists("hash-1").await.unwrap());
    assert!(!db.admin_token_exists("hash-2").await.unwrap());

    // DPoP proofs: the first claim wins, even among racing callers; a
    // replay is refused until the record expires; pruning drops only
    // expired records.
    let claims: Vec<bool> =
        futures::future::join_all((0..8).map(|_| db.dpop_proof_claim("proof-1", 2_000, 1_000)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
    assert!(!db.dpop_proof_claim("proof-1", 3_000, 1_999).await.unwrap());
    assert!(db.dpop_proof_claim("proof-2", 5_000, 1_000).await.unwrap());
    assert!(db.dpop_proof_claim("proof-1", 4_000, 2_001).await.unwrap());
    assert!(!db.dpop_proof_claim("proof-1", 4_000, 3_000).await.unwrap());
    assert_eq!(db.dpop_proofs_prune(4_500).await.unwrap(), 1);
    assert!(!db.dpop_proof_claim("proof-2", 6_000, 4_500).await.unwrap());

    // Identity-provider records: by id, by unique key, by account; unique
    // keys are unique per kind; expired records are invisible, then pruned.
    let rec = |kind: &str, id: &str, account: Option<&str>, key: Option<&str>, exp: Option<i64>| {
        xpod::db::IdpRecord {
            kind: kind.into(),
            id: id.into(),
            account_id: account.map(Into::into),
            unique_key: key.map(Into::into),
            data: format!("{{\"id\":\"{id}\"}}"),
            expires_at: exp,
            created_at: 10,
        }
    };
    db.record_insert(&rec("password", "p1", Some("acc1"), Some("a@x.org"), None))
        .await
        .unwrap();
    assert!(matches!(
        db.record_insert(&rec("password", "p2", Some("acc2"), Some("a@x.org"), None))
            .await,
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.record_insert(&rec("password", "p1", Some("acc2"), None, None))
            .await,
        Err(DbError::Conflict(_))
    ));
    // Another kind may use the same key and id.
    db.record_insert(&rec("webid", "p1", Some("acc1"), Some("a@x.org"), None))
        .await
        .unwrap();
    db.record_insert(&rec("password", "p3", Some("acc1"), None, Some(100)))
        .await
        .unwrap();
    let found = db
        .record_find("password", "a@x.org", 50)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found,
        rec("password", "p1", Some("acc1"), Some("a@x.org"), None)
    );
    assert!(db.record_get("password", "p3", 99).await.unwrap().is_some());
    assert!(
        db.record_get("password", "p3", 100)
            .await
            .unwrap()
            .is_none()
    );
    let ids = |v: Vec<xpod::db::IdpRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.record_list("password", Some("acc1"), 50).await.unwrap()),
        ["p1", "p3"]
    );
    assert_eq!(
        ids(db.record_list("password", Some("acc1"), 150).await.unwrap()),
        ["p1"]
    );
    assert_eq!(
        ids(db.record_list("password", None, 50).await.unwrap()),
        ["p1", "p3"]
    );
    let mut changed = rec("password", "p1", Some("acc1"), Some("a@x.org"), Some(500));
    changed.data = "{}".into();
    assert!(db.record_update(&changed).await.unwrap());
    assert_eq!(
        db.record_get("password", "p1", 50)
            .await
            .unwrap()
            .unwrap()
            .data,
        "{}"
    );
    assert!(
        !db.record_update(&rec("password", "nope", None, None, None))
            .await
            .unwrap()
    );
    assert_eq!(db.records_prune(200).await.unwrap(), 1);
    assert!(db.record_delete("password", "p1").await.unwrap());
    assert!(!db.record_delete("password", "p1").await.unwrap());
    assert!(
        db.record_find("password", "a@x.org", 50)
            .await
            .unwrap()
            .is_none()
    );
    assert!(db.record_get("webid", "p1", 50).await.unwrap().is_some());

    // Pods: unique name and base URL, listed in name order.
    db.pod_create(&pod("bob", "b")).await.unwrap();
    db.pod_create(&pod("alice", "a")).await.unwrap();
    assert!(matches!(
        db.pod_create(&pod("alice", "b")).await,
        Err(DbError::Conflict(_))
    ));
    let mut same_url = pod("carol", "a");
    same_url.base_url = "http://localhost:3000/alice/".into();
    assert!(matches!(
        db.pod_create(&same_url).await,
        Err(DbError::Conflict(_))
    ));
    let alice = db.pod_get("alice").await.unwrap().unwrap();
    assert_eq!(
        (alice.node_id.as_str(), alice.base_url.as_str()),
        ("a", "http://localhost:3000/alice/")
    );
    assert_eq!(db.pod_get("nobody").await.unwrap(), None);
    let names: Vec<String> = db
        .pod_list()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.pod_id)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // Migrations: at most one active per pod; a finished one frees the pod.
    assert!(matches!(
        db.migration_start("nobody", "a", "b").await,
        Err(DbError::NotFound)
    ));
    let m = db.migration_start("alice", "a", "b").await.unwrap();
    assert_eq!(
        (m.status, m.progress, m.finished_at),
        (MigrationStatus::Pending, 0, None)
    );
    match db.migration_start("alice", "a", "b").await {
        Err(DbError::Conflict(why)) => assert!(why.contains("already running"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Another pod migrates independently.
    db.migration_start("bob", "b", "a").await.unwrap();
    assert_eq!(
        db.migration_active("alice").await.unwrap().map(|m| m.id),
        Some(m.id)
    );
    let copying = db
        .migration_progress(m.id, MigrationStatus::Copying, 0, 0, None)
        .await
        .unwrap();
    assert_eq!(copying.status, MigrationStatus::Copying);
    let failed = db
        .migration_fail(m.id, MigrationStatus::Failed, "target unreachable")
        .await
        .unwrap();
    assert_eq!(failed.error.as_deref(), Some("target unreachable"));
    assert!(failed.finished_at.is_some());
    assert_eq!(db.migration_active("alice").await.unwrap(), None);
    let alices = |all: Vec<xpod::db::MigrationRecord>| -> Vec<xpod::db::MigrationRecord> {
        all.into_iter().filter(|m| m.pod_id == "alice").collect()
    };
    assert_eq!(alices(db.migrations_active().await.unwrap()), vec![]);
    let again = db.migration_start("alice", "a", "b").await.unwrap();
    assert_eq!(
        alices(db.migrations_active().await.unwrap()),
        vec![again.clone()]
    );
    assert!(
        db.migrations_active()
            .await
            .unwrap()
            .iter()
            .any(|m| m.pod_id == "bob"),
        "other pods' active migrations are listed too"
    );
    assert!(again.id > m.id);
    assert!(matches!(
        db.migration_fail(i64::MAX, MigrationStatus::Failed, "gone")
            .await,
        Err(DbError::NotFound)
    ));

    resources(&db).await;
    followers(&db).await;
    subscriptions(&db).await;
    moves(&db).await;
    edge_moves(&db).await;
    edges(&db).await;
}

/// Edge nodes: creation and its clashes, single-use enrolment (also when
/// enrolments race), heartbeats that register pods without resources and
/// refuse names or base URLs of other nodes, the tunnel's centre node.
async fn edges(db: &Db) {
    let now = db::now_ms();
    db.node_upsert(&node("centre-e", "10.0.0.5")).await.unwrap();
    db.edge_create("edge-1", "home-box", "hash-1", now)
        .await
        .unwrap();
    db.edge_create("edge-0", "attic", "hash-0", now)
        .await
        .unwrap();
    for (id, name, clash) in [
        ("edge-2", "home-box", "home-box"),
        ("edge-1", "cellar", "edge-1"),
        ("centre-e", "cellar", "centre-e"),
    ] {
        match db.edge_create(id, name, "h", now).await {
            Err(DbError::Conflict(why)) => assert!(why.contains(clash), "{why}"),
            other => panic!("{id}/{name}: expected a conflict, got {other:?}"),
        }
    }
    let created = db.edge_get("edge-1").await.unwrap().unwrap();
    assert_eq!(
        created,
        db::EdgeRecord {
            node_id: "edge-1".into(),
            name: "home-box".into(),
            token_hash: Some("hash-1".into()),
            created_at: now,
            enrolled_at: None,
            last_signal: None,
            tunnel_node: None,
        }
    );
    assert_eq!(db.edge_get("edge-9").await.unwrap(), None);
    let names: Vec<String> = db
        .edge_list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["attic", "home-box"]);

    // Not enrolled: no heartbeat, and a wrong token registers nothing.
    assert!(matches!(
        db.edge_signal("edge-1", "0.1.0", &[], now).await,
        Err(DbError::NotFound)
    ));
    assert!(
        !db.edge_enrol("edge-1", "wrong", "pk", "0.1.0", now)
            .await
            .unwrap()
    );
    assert!(
        !db.edge_enrol("edge-9", "hash-1", "pk", "0.1.0", now)
            .await
            .unwrap()
    );
    assert_eq!(db.node_get("edge-1").await.unwrap(), None);

    // Racing enrolments with the one token: exactly one wins.
    let mut racers = Vec::new();
    for i in 0..6 {
        let db = db.clone();
        racers.push(tokio::spawn(async move {
            db.edge_enrol("edge-1", "hash-1", &format!("pk-{i}"), "0.1.0", now + 1)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1, "a token enrols once");
    let registered = db.node_get("edge-1").await.unwrap().unwrap();
    assert_eq!(registered.kind, "edge");
    assert_eq!(
        (registered.internal_ip.as_str(), registered.internal_port),
        ("", 0)
    );
    assert_eq!(registered.storage_id.as_deref(), Some("edge:edge-1"));
    assert!(registered.public_key.as_deref().unwrap().starts_with("pk-"));
    assert_eq!(registered.last_heartbeat, now + 1);
    let enrolled = db.edge_get("edge-1").await.unwrap().unwrap();
    assert_eq!(enrolled.token_hash, None);
    assert_eq!(enrolled.enrolled_at, Some(now + 1));
    assert!(
        !db.edge_enrol("edge-1", "hash-1", "pk-x", "0.1.0", now + 2)
            .await
            .unwrap()
    );
    assert_eq!(
        db.node_get("edge-1").await.unwrap().unwrap().public_key,
        registered.public_key,
        "a used token changes nothing"
    );

    // Heartbeats register new pods and refuse other nodes' names and URLs.
    db.pod_create(&pod("taken", "centre-e")).await.unwrap();
    let listed = |names: &[(&str, &str)]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|(pod, base)| (pod.to_string(), format!("http://localhost:3000/{base}/")))
            .collect()
    };
    let refused = db
        .edge_signal(
            "edge-1",
            "0.2.0",
            &listed(&[("eve", "eve"), ("taken", "taken"), ("alias", "taken")]),
            now + 10,
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        vec![
            ("taken".to_string(), "taken by node centre-e".to_string()),
            (
                "alias".to_string(),
                "its base URL is taken by pod taken of node centre-e".to_string()
            ),
        ]
    );
    let eve = db.pod_get("eve").await.unwrap().unwrap();
    assert_eq!(
        (
            eve.node_id.as_str(),
            eve.storage_id.as_str(),
            eve.owner.as_deref()
        ),
        ("edge-1", "edge:edge-1", None)
    );
    assert_eq!(eve.base_url, "http://localhost:3000/eve/");
    assert_eq!(
        db.resource_get("eve", "/").await.unwrap(),
        None,
        "the centre holds no data of an edge's pod"
    );
    assert_eq!(db.pod_get("alias").await.unwrap(), None);
    assert_eq!(
        db.pod_get("taken").await.unwrap().unwrap().node_id,
        "centre-e"
    );
    let beat = db.node_get("edge-1").await.unwrap().unwrap();
    assert_eq!(
        (beat.version.as_str(), beat.last_heartbeat),
        ("0.2.0", now + 10)
    );
    assert_eq!(
        db.edge_get("edge-1").await.unwrap().unwrap().last_signal,
        Some(now + 10)
    );
    let of = |pods: Vec<PodRecord>| pods.into_iter().map(|p| p.pod_id).collect::<Vec<_>>();
    assert_eq!(of(db.pods_of_node("edge-1").await.unwrap()), ["eve"]);
    assert!(of(db.pods_of_node("centre-e").await.unwrap()).contains(&"taken".to_string()));
    // Known pods are left alone; a pod no longer listed is deregistered
    // (its name is free again) unless it is moving.
    assert_eq!(
        db.edge_signal("edge-1", "0.2.0", &listed(&[("eve", "eve")]), now + 20)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(db.pod_get("eve").await.unwrap().unwrap(), eve);
    db.pod_create(&pod("ida", "edge-1")).await.unwrap();
    db.pod_move_in(
        "ida",
        "edge-1",
        "centre-e",
        "s-1",
        None,
        r#"{"from":"edge-1","to":"centre-e","secretHash":"x","startedAt":1}"#,
    )
    .await
    .unwrap();
    db.pod_create(&pod("jo", "edge-1")).await.unwrap();
    db.pod_move_out(
        "jo",
        "edge-1",
        r#"{"from":"edge-1","to":"edge-2","secretHash":"x","startedAt":1}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        db.edge_signal("edge-1", "0.2.0", &[], now + 30)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(of(db.pods_of_node("edge-1").await.unwrap()), ["jo"]);
    assert!(
        db.pod_get("eve").await.unwrap().is_none(),
        "eve's name is free"
    );
    assert_eq!(
        db.pod_get("ida").await.unwrap().unwrap().node_id,
        "centre-e"
    );

    // The centre node that holds the tunnel.
    db.edge_tunnel_set("edge-1", Some("centre-e"))
        .await
        .unwrap();
    assert_eq!(
        db.edge_get("edge-1")
            .await
            .unwrap()
            .unwrap()
            .tunnel_node
            .as_deref(),
        Some("centre-e")
    );
    db.edge_tunnel_set("edge-1", None).await.unwrap();
    assert_eq!(
        db.edge_get("edge-1").await.unwrap().unwrap().tunnel_node,
        None
    );
    assert!(matches!(
        db.edge_tunnel_set("edge-9", None).await,
        Err(DbError::NotFound)
    ));

    // A centre node that took an edge's id afterwards: the enrolment is
    // refused and the token stays unused.
    db.edge_create("edge-c", "clash-box", "hash-c", now)
        .await
        .unwrap();
    db.node_upsert(&node("edge-c", "10.0.0.6")).await.unwrap();
    assert!(matches!(
        db.edge_enrol("edge-c", "hash-c", "pk", "0.1.0", now).await,
        Err(DbError::Conflict(_))
    ));
    let still = db.edge_get("edge-c").await.unwrap().unwrap();
    assert_eq!(still.token_hash.as_deref(), Some("hash-c"));
    assert_eq!(db.node_get("edge-c").await.unwrap().unwrap().kind, "centre");
    assert!(matches!(
        db.edge_signal("edge-c", "0.1.0", &[], now).await,
        Err(DbError::NotFound)
    ));
}

/// Moves between an edge and the centre: the pod's record, its fence, its
/// data and the blob references.
async fn edge_moves(db: &Db) {
    let moving = |from: &str, to: &str, secret: &str| {
        format!(r#"{{"from":"{from}","to":"{to}","secretHash":"{secret}","startedAt":1}}"#)
    };
    let write = |pod: &str, node: &str, storage: &str| PutRequest {
        pod_id: pod.into(),
        writer_node: node.into(),
        storage_id: storage.into(),
        ..put("/doc", Some(H2))
    };
    let refs = |storage: &'static str| async move {
        db.blob_get(storage, H2).await.unwrap().map(|b| b.refcount)
    };

    // Edge to centre: the centre node takes the pod, empty, at once.
    db.pod_create(&pod("emma", "edge-e")).await.unwrap();
    db.pod_move_in(
        "emma",
        "edge-e",
        "a",
        "s-9",
        Some("https://o.example/#me"),
        &moving("edge-e", "a", "1"),
    )
    .await
    .unwrap();
    let emma = db.pod_get("emma").await.unwrap().unwrap();
    assert_eq!(
        (emma.node_id.as_str(), emma.storage_id.as_str()),
        ("a", "s-9")
    );
    assert_eq!(emma.owner.as_deref(), Some("https://o.example/#me"));
    assert!(
        emma.moving
            .as_deref()
            .unwrap()
            .contains("\"secretHash\":\"1\"")
    );
    db.resource_put(&write("emma", "a", "s-9")).await.unwrap();
    assert_eq!(refs("s-9").await, Some(1));
    // Taken up again between the same ends: a new secret; other ends: no.
    db.pod_move_in(
        "emma",
        "edge-e",
        "a",
        "s-9",
        None,
        &moving("edge-e", "a", "2"),
    )
    .await
    .unwrap();
    assert!(
        db.pod_get("emma")
            .await
            .unwrap()
            .unwrap()
            .moving
            .unwrap()
            .contains("\"secretHash\":\"2\"")
    );
    assert!(matches!(
        db.pod_move_in(
            "emma",
            "edge-x",
            "a",
            "s-9",
            None,
            &moving("edge-x", "a", "3")
        )
        .await,
        Err(DbError::Conflict(_))
    ));
    // Cancelled: back to the edge; the centre's partial copy is gone and
    // its blob unreferenced.
    db.pod_move_end("emma", Some(("edge-e", "edge:edge-e")))
        .await
        .unwrap();
    let emma = db.pod_get("emma").await.unwrap().unwrap();
    assert_eq!(
        (emma.node_id.as_str(), emma.storage_id.as_str(), emma.moving),
        ("edge-e", "edge:edge-e", None)
    );
    assert!(db.resource_get("emma", "/doc").await.unwrap().is_none());
    assert!(db.resource_get("emma", "/").await.unwrap().is_none());
    assert_eq!(refs("s-9").await, Some(0));
    assert!(
        db.blob_get("s-9", H2)
            .await
            .unwrap()
            .unwrap()
            .zero_since
            .is_some()
    );
    // Ending again is done already; ending a pod that is not moving is not.
    db.pod_move_end("emma", Some(("edge-e", "edge:edge-e")))
        .await
        .unwrap();
    assert!(matches!(
        db.pod_move_end("emma", None).await,
        Err(DbError::Conflict(_))
    ));
    // Only the owner may start a move.
    assert!(matches!(
        db.pod_move_in(
            "emma",
            "edge-x",
            "a",
            "s-9",
            None,
            &moving("edge-x", "a", "4")
        )
        .await,
        Err(DbError::Conflict(_))
    ));

    // Centre to edge: fenced while it moves, then handed over without data.
    db.pod_create(&pod("fay", "a")).await.unwrap();
    db.resource_put(&write("fay", "a", "s-1")).await.unwrap();
    let before = refs("s-1").await.unwrap();
    assert!(matches!(
        db.pod_move_out("fay", "b", &moving("b", "edge-f", "5"))
            .await,
        Err(DbError::Conflict(_))
    ));
    db.pod_move_out("fay", "a", &moving("a", "edge-f", "5"))
        .await
        .unwrap();
    assert!(matches!(
        db.resource_put(&write("fay", "a", "s-1")).await,
        Err(DbError::Fenced)
    ));
    db.pod_move_end("fay", Some(("edge-f", "edge:edge-f")))
        .await
        .unwrap();
    let fay = db.pod_get("fay").await.unwrap().unwrap();
    assert_eq!((fay.node_id.as_str(), fay.moving), ("edge-f", None));
    assert!(db.resource_get("fay", "/doc").await.unwrap().is_none());
    assert_eq!(refs("s-1").await, Some(before - 1));
    // Ended without handing over: the fence is lifted, the data stays.
    db.pod_create(&pod("gil", "a")).await.unwrap();
    db.pod_move_out("gil", "a", &moving("a", "edge-g", "6"))
        .await
        .unwrap();
    db.pod_move_end("gil", None).await.unwrap();
    db.resource_put(&write("gil", "a", "s-1")).await.unwrap();

    // A fence by itself, and deleting a pod with its data.
    db.pod_fence("gil", true).await.unwrap();
    assert!(matches!(
        db.resource_put(&write("gil", "a", "s-1")).await,
        Err(DbError::Fenced)
    ));
    db.pod_fence("gil", false).await.unwrap();
    db.resource_put(&write("gil", "a", "s-1")).await.unwrap();
    let before = refs("s-1").await.unwrap();
    assert!(db.pod_delete("gil").await.unwrap());
    assert!(db.pod_get("gil").await.unwrap().is_none());
    assert!(db.resource_get("gil", "/doc").await.unwrap().is_none());
    assert_eq!(refs("s-1").await, Some(before - 1));
    assert!(!db.pod_delete("gil").await.unwrap());
}

/// A pod's move to another node and storage: progress, the fence, the
/// switch of owner and blob references, failure and cancellation.
async fn moves(db: &Db) {
    const H3: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    const H4: &str = "4444444444444444444444444444444444444444444444444444444444444444";
    db.pod_create(&pod("dora", "a")).await.unwrap();
    let write = |path: &str, hash: &str, node: &str| PutRequest {
        pod_id: "dora".into(),
        writer_node: node.into(),
        ..put(path, Some(hash))
    };
    for (path, hash) in [("/x", H3), ("/y", H3), ("/d/z", H4), ("/s", H1)] {
        db.resource_put(&write(path, hash, "a")).await.unwrap();
    }
    assert_eq!(db.pod_blob_count("dora").await.unwrap(), 3);
    assert_eq!(
        db.pod_blobs("dora", None, 1).await.unwrap(),
        vec![(H1.to_string(), 5)]
    );
    assert_eq!(
        db.pod_blobs("dora", Some(H1), 10).await.unwrap(),
        vec![(H3.to_string(), 5), (H4.to_string(), 5)],
        "pages go on after the cursor"
    );
    let mut missing = db.pod_blobs_missing("dora", "s-2", 10).await.unwrap();
    missing.sort();
    assert_eq!(
        missing,
        vec![H1.to_string(), H3.to_string(), H4.to_string()]
    );

    let m = db.migration_start("dora", "a", "b").await.unwrap();
    let m = db
        .migration_progress(m.id, MigrationStatus::Copying, 1, 2, Some(H3))
        .await
        .unwrap();
    assert_eq!(
        (m.status, m.progress, m.cursor.as_deref()),
        (MigrationStatus::Copying, 50, Some(H3))
    );
    // Fenced: writes and deletes wait; cancelling is too late.
    let f = db.migration_fence(m.id).await.unwrap();
    assert_eq!(f.status, MigrationStatus::Switching);
    assert!(f.fenced_at.is_some());
    assert_eq!(
        db.migration_fence(m.id).await.unwrap().id,
        m.id,
        "idempotent"
    );
    assert!(matches!(
        db.resource_put(&write("/w", H3, "a")).await,
        Err(DbError::Fenced)
    ));
    assert!(matches!(
        db.resource_delete("dora", "/x", &Condition::default(), "a")
            .await,
        Err(DbError::Fenced)
    ));
    assert!(matches!(
        db.migration_cancel("dora").await,
        Err(DbError::Conflict(_))
    ));
    let still = db
        .migration_progress(m.id, MigrationStatus::Copying, 2, 2, None)
        .await
        .unwrap();
    assert_eq!(still.status, MigrationStatus::Switching, "no going back");
    // The switch refuses while the target storage lacks a hash.
    db.blob_orphan("s-2", H1, 5).await.unwrap();
    db.blob_orphan("s-2", H3, 5).await.unwrap();
    assert_eq!(
        db.migration_switch(m.id, "s-2").await.unwrap(),
        Err(vec![H4.to_string()])
    );
    assert_eq!(db.pod_get("dora").await.unwrap().unwrap().node_id, "a");
    db.blob_orphan("s-2", H4, 5).await.unwrap();
    let done = db.migration_switch(m.id, "s-2").await.unwrap().unwrap();
    assert_eq!((done.status, done.progress), (MigrationStatus::Done, 100));
    assert!(done.finished_at.is_some());
    let moved = db.pod_get("dora").await.unwrap().unwrap();
    assert_eq!(
        (moved.node_id.as_str(), moved.storage_id.as_str()),
        ("b", "s-2")
    );
    // References moved: the target's rows count the pod's documents, the
    // source's are released for the collector.
    let target = db.blob_get("s-2", H3).await.unwrap().unwrap();
    assert_eq!((target.refcount, target.zero_since), (2, None));
    assert_eq!(db.blob_get("s-2", H4).await.unwrap().unwrap().refcount, 1);
    let source = db.blob_get("s-1", H4).await.unwrap().unwrap();
    assert_eq!(source.refcount, 0);
    assert!(source.zero_since.is_some());
    assert!(
        db.blob_get("s-1", H1).await.unwrap().unwrap().refcount > 0,
        "bytes another pod shares stay referenced"
    );
    // The new owner writes; the old one is refused.
    db.resource_put(&write("/after", H4, "b")).await.unwrap();
    assert!(matches!(
        db.resource_put(&write("/late", H4, "a")).await,
        Err(DbError::NotOwner(owner)) if owner == "b"
    ));
    let events = db.events_after(0, 100_000).await.unwrap();
    let mine: Vec<_> = events.iter().filter(|e| e.pod_id == "dora").collect();
    assert!(mine.iter().any(|e| e.kind == "owner"));
    let last = mine.iter().rev().find(|e| e.kind == "migration").unwrap();
    let detail: serde_json::Value = serde_json::from_str(last.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["status"], "done");
    assert_eq!(detail["targetNode"], "b");

    // A failed migration lifts its fence; the pod stays where it was.
    let m = db.migration_start("dora", "b", "a").await.unwrap();
    db.migration_fence(m.id).await.unwrap();
    let failed = db
        .migration_fail(m.id, MigrationStatus::Failed, "target unreachable")
        .await
        .unwrap();
    assert_eq!(failed.status, MigrationStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("target unreachable"));
    db.resource_put(&write("/after", H3, "b")).await.unwrap();
    assert_eq!(db.pod_get("dora").await.unwrap().unwrap().node_id, "b");

    // Cancelled before the fence: the fence is then refused.
    let m = db.migration_start("dora", "b", "a").await.unwrap();
    let cancelled = db.migration_cancel("dora").await.unwrap();
    assert_eq!(cancelled.status, MigrationStatus::Cancelled);
    assert!(matches!(
        db.migration_cancel("dora").await,
        Err(DbError::NotFound)
    ));
    assert!(matches!(
        db.migration_fence(m.id).await,
        Err(DbError::Conflict(_))
    ));
    let latest = db.migration_latest("dora").await.unwrap().unwrap();
    assert_eq!(
        (latest.id, latest.status),
        (m.id, MigrationStatus::Cancelled)
    );
    assert_eq!(db.migration_latest("nobody").await.unwrap(), None);
}

/// Outbox followers: positions, owner events, cursors and pruning.
async fn followers(db: &Db) {
    db.node_upsert(&node("fa", "10.0.0.21")).await.unwrap();
    db.node_upsert(&node("fb", "10.0.0.22")).await.unwrap();
    db.pod_create(&pod("moving", "fa")).await.unwrap();
    let head = db.events_head().await.unwrap();
    assert_eq!(
        db.events_since(&head, 100).await.unwrap(),
        vec![],
        "nothing after the head"
    );

    // A move is one event, after the head, and only when it happens.
    assert!(db.pod_set_owner("moving", "fa", "fb").await.unwrap());
    assert!(
        !db.pod_set_owner("moving", "fa", "fb").await.unwrap(),
        "fa no longer owns it"
    );
    let events = db.events_since(&head, 100).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind.as_str(), events[0].pod_id.as_str()),
        ("owner", "moving")
    );
    assert_eq!(db.pod_get("moving").await.unwrap().unwrap().node_id, "fb");

    // Cursors persist; events every follower has read are pruned, no others.
    let read_all = xpod::db::EventCursor {
        xid: events[0].xid.clone(),
        id: events[0].id,
    };
    assert_eq!(db.follower_cursor("f1").await.unwrap(), None);
    db.follower_cursor_set("f1", &read_all).await.unwrap();
    db.follower_cursor_set("f2", &head).await.unwrap();
    assert_eq!(
        db.follower_cursor("f1").await.unwrap(),
        Some(read_all.clone())
    );
    db.events_prune().await.unwrap();
    assert_eq!(
        db.events_since(&head, 100).await.unwrap().len(),
        1,
        "f2 has not read it yet"
    );
    db.follower_cursor_set("f2", &read_all).await.unwrap();
    assert!(db.events_prune().await.unwrap() >= 1);
    assert_eq!(
        db.events_since(&head, 100).await.unwrap(),
        vec![],
        "read by all: pruned"
    );
    db.follower_cursor_delete("f1").await.unwrap();
    db.follower_cursor_delete("f2").await.unwrap();
    assert_eq!(db.follower_cursor("f1").await.unwrap(), None);
}

async fn subscriptions(db: &Db) {
    let sub = |id: &str, kind: &str| SubscriptionRecord {
        id: id.into(),
        channel_type: kind.into(),
        pod_id: "alice".into(),
        path: "/notes/".into(),
        topic: "http://localhost:3000/alice/notes/".into(),
        send_to: (kind == "webhook").then(|| "http://127.0.0.1:9/hook".into()),
        state: Some("\"1-abc\"".into()),
        start_at: None,
        end_at: Some(2_000_000_000_000),
        rate_ms: Some(1500),
        accept: Some("application/ld+json".into()),
        agent: None,
        created_at: db::now_ms(),
        after: db::EventCursor {
            xid: "7".into(),
            id: 42,
        },
    };
    let ws = sub("ws-1", "websocket");
    db.subscription_create(&ws).await.unwrap();
    assert!(matches!(
        db.subscription_create(&ws).await,
        Err(DbError::Conflict(_))
    ));
    assert_eq!(db.subscription_get("ws-1").await.unwrap(), Some(ws.clone()));
    assert_eq!(db.subscription_get("nope").await.unwrap(), None);
    // The state feature is handed out once.
    assert_eq!(
        db.subscription_take_state("ws-1").await.unwrap(),
        Some("\"1-abc\"".into())
    );
    assert_eq!(db.subscription_take_state("ws-1").await.unwrap(), None);
    assert_eq!(db.subscription_take_state("nope").await.unwrap(), None);
    let ws = SubscriptionRecord { state: None, ..ws };
    let hook = sub("hook-1", "webhook");
    db.subscription_create(&hook).await.unwrap();
    assert_eq!(
        db.subscriptions_of_type("webhook").await.unwrap(),
        vec![hook.clone()]
    );
    // The webhook queue: once per channel and event, oldest first.
    let queued = db
        .webhook_enqueue(
            &[
                ("hook-1".into(), 10, "first".into()),
                ("hook-1".into(), 11, "second".into()),
                ("hook-1".into(), 10, "again".into()),
            ],
            1,
        )
        .await
        .unwrap();
    assert_eq!(queued, 2, "an event is queued once per channel");
    let heads = db.webhook_heads(10).await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (heads[0].body.as_str(), heads[0].send_to.as_str()),
        ("first", "http://127.0.0.1:9/hook")
    );
    let next = db.webhook_next("hook-1").await.unwrap().unwrap();
    assert_eq!(next.id, heads[0].id);
    db.webhook_retry(next.id, 1, 5, 99).await.unwrap();
    let next = db.webhook_next("hook-1").await.unwrap().unwrap();
    assert_eq!(
        (next.attempts, next.first_failed_at, next.next_attempt_at),
        (1, Some(5), 99)
    );
    db.webhook_delivered(next.id).await.unwrap();
    assert_eq!(
        db.webhook_next("hook-1").await.unwrap().unwrap().body,
        "second"
    );
    assert_eq!(db.webhook_next("nope").await.unwrap(), None);
    assert!(db.subscription_delete("hook-1").await.unwrap());
    assert!(!db.subscription_delete("hook-1").await.unwrap());
    assert!(
        db.subscriptions_of_type("webhook")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        db.subscriptions_of_type("websocket").await.unwrap(),
        vec![ws]
    );
}

fn put(path: &str, hash: Option<&str>) -> PutRequest {
    PutRequest {
        pod_id: "carl".into(),
        path: path.into(),
        content_type: "text/plain".into(),
        blob: hash.map(|h| (h.to_string(), 5)),
        storage_id: "s-1".into(),
        writer_node: "a".into(),
        condition: Condition::default(),
        create_only: false,
    }
}

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn resources(db: &Db) {
    let root = db.pod_create(&pod("carl", "a")).await.unwrap();
    assert_eq!((root.path.as_str(), root.parent.as_deref()), ("/", None));
    let start = db.events_after(0, 10_000).await.unwrap().last().unwrap().id;

    // A put creates missing containers and bumps the nearest existing one.
    let out = db
        .resource_put(&put("/a/b/doc.txt", Some(H1)))
        .await
        .unwrap();
    assert!(out.created);
    assert_eq!(out.record.parent.as_deref(), Some("/a/b/"));
    assert!(
        db.resource_get("carl", "/a/")
            .await
            .unwrap()
            .unwrap()
            .is_container()
    );
    assert!(db.resource_get("carl", "/a/b/").await.unwrap().is_some());
    let root_after = db.resource_get("carl", "/").await.unwrap().unwrap();
    assert_ne!(root_after.etag, root.etag, "the root's membership changed");
    let events: Vec<(String, String)> = db
        .events_after(start, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.path))
        .collect();
    let expected = [
        ("create", "/a/"),
        ("create", "/a/b/"),
        ("create", "/a/b/doc.txt"),
        ("update", "/"),
    ];
    assert_eq!(
        events,
        expected
            .map(|(k, p)| (k.to_string(), p.to_string()))
            .to_vec(),
        "one outbox row per change, in order"
    );
    assert_eq!(db.blob_get("s-1", H1).await.unwrap().unwrap().refcount, 1);

    // Conditions are checked under the row lock.
    let etag = out.record.etag.clone();
    let mut stale = put("/a/b/doc.txt", Some(H2));
    stale.condition.if_match = Some(vec!["\"nope\"".into()]);
    assert!(matches!(
        db.resource_put(&stale).await,
        Err(DbError::PreconditionFailed)
    ));
    let mut none_match = put("/a/b/doc.txt", Some(H2));
    none_match.condition.if_none_match = Some(vec!["*".into()]);
    assert!(matches!(
        db.resource_put(&none_match).await,
        Err(DbError::PreconditionFailed)
    ));
    let mut fresh = put("/a/b/doc.txt", Some(H2));
    fresh.condition.if_match = Some(vec![etag.clone()]);
    let replaced = db.resource_put(&fresh).await.unwrap();
    assert!(!replaced.created);
    assert!(replaced.record.version > out.record.version);
    assert_ne!(replaced.record.etag, etag);
    assert_eq!(replaced.replaced_hash.as_deref(), Some(H1));
    let old = db.blob_get("s-1", H1).await.unwrap().unwrap();
    assert_eq!((old.refcount, old.zero_since.is_some()), (0, true));
    assert_eq!(db.blob_get("s-1", H2).await.unwrap().unwrap().refcount, 1);

    // Shared bytes are counted once per reference.
    db.resource_put(&put("/copy.txt", Some(H2))).await.unwrap();
    assert_eq!(db.blob_get("s-1", H2).await.unwrap().unwrap().refcount, 2);

    // Clashes and refusals change nothing.
    let before = db.events_after(0, 10_000).await.unwrap().len();
    let mut post = put("/copy.txt", Some(H1));
    post.create_only = true;
    assert!(matches!(
        db.resource_put(&post).await,
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.resource_put(&put("/copy.txt/", None)).await,
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.resource_put(&put("/copy.txt/x", Some(H1))).await,
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.resource_put(&put("/a", Some(H1))).await,
        Err(DbError::Conflict(_))
    ));
    let mut foreign = put("/z.txt", Some(H1));
    foreign.writer_node = "b".into();
    assert!(matches!(db.resource_put(&foreign).await, Err(DbError::NotOwner(o)) if o == "a"));
    let mut no_pod = put("/z.txt", Some(H1));
    no_pod.pod_id = "nobody".into();
    assert!(matches!(
        db.resource_put(&no_pod).await,
        Err(DbError::NotFound)
    ));
    let none = Condition::default();
    assert!(matches!(
        db.resource_delete("carl", "/a/", &none, "a").await,
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.resource_delete("carl", "/", &none, "a").await,
        Err(DbError::Conflict(_))
    ));
    assert!(matches!(
        db.resource_delete("carl", "/nope", &none, "a").await,
        Err(DbError::NotFound)
    ));
    assert_eq!(
        db.events_after(0, 10_000).await.unwrap().len(),
        before,
        "refusals write no event"
    );
    assert_eq!(db.blob_get("s-1", H1).await.unwrap().unwrap().refcount, 0);

    // Delete releases the blob and bumps the parent; versions keep growing
    // across deletion and re-creation.
    let parent_before = db.resource_get("carl", "/a/b/").await.unwrap().unwrap();
    let gone = db
        .resource_delete("carl", "/a/b/doc.txt", &none, "a")
        .await
        .unwrap();
    assert_eq!(gone.content_hash.as_deref(), Some(H2));
    assert_eq!(db.blob_get("s-1", H2).await.unwrap().unwrap().refcount, 1);
    let parent_after = db.resource_get("carl", "/a/b/").await.unwrap().unwrap();
    assert_ne!(parent_after.etag, parent_before.etag);
    let again = db
        .resource_put(&put("/a/b/doc.txt", Some(H1)))
        .await
        .unwrap();
    assert!(again.created && again.record.version > gone.version);
    db.resource_delete("carl", "/a/b/doc.txt", &none, "a")
        .await
        .unwrap();
    db.resource_delete("carl", "/a/b/", &none, "a")
        .await
        .unwrap();

    // Children page in path order.
    for i in 0..25 {
        db.resource_put(&put(&format!("/list/item-{i:02}"), Some(H1)))
            .await
            .unwrap();
    }
    let first = db
        .resource_children("carl", "/list/", None, 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].path, "/list/item-00");
    let rest = db
        .resource_children("carl", "/list/", Some(&first[9].path), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[14].path, "/list/item-24");
    assert_eq!(db.blob_get("s-1", H1).await.unwrap().unwrap().refcount, 25);

    // Concurrent conditional writers: each either wins or gets a precondition
    // failure, and exactly one wins per round.
    let base = db.resource_put(&put("/race.txt", Some(H1))).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let db = db.clone();
        let mut req = put("/race.txt", Some(if i % 2 == 0 { H1 } else { H2 }));
        req.condition.if_match = Some(vec![base.record.etag.clone()]);
        tasks.push(tokio::spawn(async move { db.resource_put(&req).await }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(DbError::PreconditionFailed) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one If-Match writer wins");

    gc(db).await;
}

const H3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

async fn gc(db: &Db) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let none = Condition::default();
    db.resource_put(&put("/gc/a.txt", Some(H3))).await.unwrap();
    let removed = Arc::new(AtomicUsize::new(0));
    let remover = |removed: &Arc<AtomicUsize>| -> db::RemoveBytes {
        let removed = removed.clone();
        Box::new(move || {
            Box::pin(async move {
                removed.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
    };
    let future = db::now_ms() + 60_000;
    // Referenced bytes are never collected.
    assert!(
        !db.blob_gc_candidates("s-1", future, 100)
            .await
            .unwrap()
            .contains(&H3.to_string())
    );
    assert!(
        !db.blob_gc_collect("s-1", H3, future, remover(&removed))
            .await
            .unwrap()
    );
    db.resource_delete("carl", "/gc/a.txt", &none, "a")
        .await
        .unwrap();
    // Unreferenced, but within the grace period.
    let past = db::now_ms() - 60_000;
    assert!(
        !db.blob_gc_candidates("s-1", past, 100)
            .await
            .unwrap()
            .contains(&H3.to_string())
    );
    assert!(
        !db.blob_gc_collect("s-1", H3, past, remover(&removed))
            .await
            .unwrap()
    );
    assert_eq!(removed.load(Ordering::SeqCst), 0);
    assert!(
        db.blob_gc_candidates("s-1", future, 100)
            .await
            .unwrap()
            .contains(&H3.to_string())
    );

    // An identical upload racing the collector: the writer's reference waits
    // for the collector's row lock, so it lands after the row is gone and
    // re-creates it (its bytes are then re-published by BlobStore::finish).
    let writer_db = db.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let racing: db::RemoveBytes = Box::new(move || {
        Box::pin(async move {
            let handle =
                tokio::spawn(
                    async move { writer_db.resource_put(&put("/gc/b.txt", Some(H3))).await },
                );
            // Give the writer time to reach the lock.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(!handle.is_finished(), "the writer waits for the collector");
            let _ = started_tx.send(handle);
            Ok(())
        })
    });
    assert!(db.blob_gc_collect("s-1", H3, future, racing).await.unwrap());
    let writer = started_rx.await.unwrap().await.unwrap().unwrap();
    assert!(writer.created);
    let blob = db.blob_get("s-1", H3).await.unwrap().unwrap();
    assert_eq!(
        (blob.refcount, blob.zero_since),
        (1, None),
        "the new reference is counted"
    );
    assert!(
        !db.blob_gc_candidates("s-1", future, 100)
            .await
            .unwrap()
            .contains(&H3.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = db::open(&DatabaseConfig::Sqlite(dir.path().join("xpod.sqlite")))
        .await
        .unwrap();
    contract(db).await;
    // Reopening applies nothing twice.
    let db = db::open(&DatabaseConfig::Sqlite(dir.path().join("xpod.sqlite")))
        .await
        .unwrap();
    assert_eq!(
        db.applied_migrations().await.unwrap().len() as i64,
        schema::LATEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_postgres() {
    let pg = support::Postgres::start();
    let url = pg.create_database("contract");
    let config = DatabaseConfig::Postgres(Secret::new(url.clone()));
    // Open several stores at once against the empty database: the advisory
    // lock lets exactly one of them apply each schema version.
    let mut opens = Vec::new();
    for _ in 0..4 {
        let config = config.clone();
        opens.push(tokio::spawn(
            async move { db::open(&config).await.unwrap() },
        ));
    }
    let mut stores: Vec<Db> = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap());
    }
    let per_version = pg.psql(
        "contract",
        "SELECT count(*) FROM schema_migrations GROUP BY version HAVING count(*) <> 1",
    );
    assert_eq!(per_version, "", "a schema version was recorded twice");
    contract(Arc::clone(&stores[0])).await;

    // A node that commits its setting after another node's statement began
    // still wins: the other node waits and then returns the committed value
    // (this is how five nodes starting at once agree on the cluster secret).
    let (raw, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    raw.batch_execute("BEGIN; INSERT INTO cluster_settings (key, value) VALUES ('held', 'first')")
        .await
        .unwrap();
    let db = Arc::clone(&stores[1]);
    let racing = tokio::spawn(async move { db.setting_init("held", "second").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !racing.is_finished(),
        "the racing insert waits for the open one"
    );
    raw.batch_execute("COMMIT").await.unwrap();
    assert_eq!(racing.await.unwrap().unwrap(), "first");
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    let port = support::free_port("127.0.0.1");
    let url = format!("postgres://xpod:hunter2@127.0.0.1:{port}/xpod");
    let err = match db::open(&DatabaseConfig::Postgres(Secret::new(url))).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("nothing listens there"),
    };
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(err.contains("CSS_DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}
