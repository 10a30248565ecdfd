//! Credentials. For now the administrator token; Solid-OIDC and WAC come later.

pub mod admin_token;
