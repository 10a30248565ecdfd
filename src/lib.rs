//! xpod: a Solid pod server shipped as an appliance.
//!
//! The module map, from the top of the dependency graph down:
//!
//! - [`cli`]: the command line; parses flags, loads [`config`], runs a command.
//! - [`http`]: the axum router, the served-by header, the server loop.
//! - [`ldp`]: the Solid/LDP resource server (one file per method).
//! - [`notify`]: Solid Notifications: subscription services, channels, the
//!   hub that feeds connected WebSockets from the outbox.
//! - [`walk`]: the container-walking migrator: copies a container tree
//!   between any two Solid servers over LDP, with resume and verification.
//! - [`update`]: `xpod self-update`: signed release manifests, verified
//!   downloads, install through dpkg/rpm or an atomic binary swap.
//! - [`app`]: the composition root; [`app::App`] owns everything below.
//! - [`pod`]: pod names and canonical base URLs.
//! - [`idp`]: xpod's own identity provider: accounts, signing keys, access
//!   tokens.
//! - [`auth`]: credentials (the administrator token, Solid-OIDC access
//!   tokens with DPoP proofs).
//! - [`edge`]: edge nodes: enrolment, signed heartbeats to the centre, the
//!   tunnel the centre sends their pods' requests through.
//! - [`cluster`]: what nodes share (the cluster secret).
//! - [`node`]: this node's identity, key pair and internal address.
//! - [`db`]: the metadata store trait and its SQLite and PostgreSQL backends.
//! - [`rdf`]: RDF parsing, serialising, content negotiation, N3 Patch and SPARQL Update.
//! - [`blob`]: content-addressed byte storage (`BlobStore`): the local
//!   filesystem, or S3 behind a bounded local cache (tiered).
//! - [`outbound`]: where requests made for clients may go (no internal
//!   addresses unless allowed).
//! - [`metrics`]: counters and histograms in the Prometheus text format.
//! - [`config`]: the typed configuration and its layers.
//! - [`fsutil`]: durable small-file writes.
//!
//! Lower modules never import higher ones.

pub mod app;
pub mod auth;
pub mod blob;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod db;
pub mod edge;
pub mod fsutil;
pub mod http;
pub mod idp;
pub mod ldp;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod outbound;
pub mod pod;
pub mod rdf;
pub mod sparql;
pub mod systemd;
pub mod update;
pub mod walk;
