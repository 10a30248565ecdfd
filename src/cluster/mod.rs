//! What nodes share: the cluster secret, and the signatures that authenticate
//! node-to-node requests.

pub mod follower;
pub mod join;
pub mod migration;
pub mod placement;
pub mod registry;
pub mod secret;
pub mod session;
pub mod signature;
