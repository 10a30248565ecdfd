//! What nodes share: the cluster secret. Placement and migration come later.

pub mod secret;
