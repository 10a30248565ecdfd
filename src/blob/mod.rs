//! Blob storage: bytes keyed by their SHA-256. This issue brings only the
//! storage identity of the local-filesystem store; reads and writes follow.

pub mod fs;
