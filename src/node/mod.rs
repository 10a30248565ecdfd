//! This node: its persistent identity, its Ed25519 key pair and its internal
//! address. The registry and heartbeats come with clustering.

pub mod address;
pub mod identity;
pub mod keys;
