//! The versioned schema files, embedded in the binary, and the rule that
//! decides whether this binary may run against a database's schema.
//!
//! Each file starts with `-- compatible-from: N`: binaries whose newest schema
//! is at least N can still run against a database at this version. That is
//! how an older node restarts during a rolling upgrade: a newer node applies
//! an additive migration and records that older binaries remain compatible.

/// One embedded schema file.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl SchemaFile {
    /// The oldest binary schema version that can run against this one.
    pub fn compatible_from(&self) -> i64 {
        self.sql
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- compatible-from:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.version)
    }
}

macro_rules! schema {
    ($dir:literal, $( $version:literal => $name:literal ),* $(,)?) => {
        &[ $( SchemaFile {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../schema/", $dir, "/", $name, ".sql")),
        } ),* ]
    };
}

pub const SQLITE: &[SchemaFile] = schema!(
    "sqlite",
    1 => "0001_initial",
    2 => "0002_followers",
    3 => "0003_subscriptions",
    4 => "0004_migrations",
    5 => "0005_dpop_proofs",
    6 => "0006_idp_records",
    7 => "0007_edges",
    8 => "0008_pod_moves"
);
pub const POSTGRES: &[SchemaFile] = schema!(
    "postgres",
    1 => "0001_initial",
    2 => "0002_followers",
    3 => "0003_subscriptions",
    4 => "0004_migrations",
    5 => "0005_dpop_proofs",
    6 => "0006_idp_records",
    7 => "0007_edges",
    8 => "0008_pod_moves"
);

/// The newest schema this binary knows. Both backends move in step.
pub const LATEST: i64 = 8;

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub name: String,
    pub compatible_from: i64,
}

/// Checks the applied versions against this binary. `Err` holds the one-line
/// reason for refusing to start.
pub fn check_compatible(applied: &[AppliedMigration]) -> Result<(), String> {
    let newer: Vec<&AppliedMigration> = applied.iter().filter(|m| m.version > LATEST).collect();
    if let Some(blocking) = newer.iter().find(|m| m.compatible_from > LATEST) {
        let newest = applied.iter().map(|m| m.version).max().unwrap_or(0);
        return Err(format!(
            "the database schema is at version {newest}, but this xpod {} runs with schema versions up to {LATEST} (version {} needs binaries that know schema {} or newer); upgrade xpod on this node, or restore the database from before the upgrade",
            env!("CARGO_PKG_VERSION"),
            blocking.version,
            blocking.compatible_from
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_file_is_embedded_in_order() {
        for (dir, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let mut on_disk: Vec<String> =
                std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/").to_owned() + dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
            on_disk.sort();
            let embedded: Vec<String> = files.iter().map(|f| format!("{}.sql", f.name)).collect();
            assert_eq!(
                on_disk, embedded,
                "schema/{dir} and the embedded list differ"
            );
            for (i, f) in files.iter().enumerate() {
                assert_eq!(f.version, i as i64 + 1);
                assert!(f.name.starts_with(&format!("{:04}_", f.version)));
                assert!(f.compatible_from() <= f.version);
            }
            assert_eq!(files.last().unwrap().version, LATEST);
        }
    }

    #[test]
    fn newer_schema_is_refused_unless_declared_compatible() {
        let row = |version, compatible_from| AppliedMigration {
            version,
            name: "x".into(),
            compatible_from,
        };
        assert!(check_compatible(&[row(1, 1)]).is_ok());
        assert!(check_compatible(&[row(1, 1), row(LATEST + 1, 1)]).is_ok());
        let err = check_compatible(&[row(1, 1), row(LATEST + 1, LATEST + 1)]).unwrap_err();
        assert!(err.contains("upgrade xpod"), "{err}");
    }
}
