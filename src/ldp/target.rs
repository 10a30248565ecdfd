//! Which pod and which resource a request names, and the path rules that
//! keep clients out of places they must not reach.

use axum::http::{HeaderMap, Uri};

use crate::config::Config;

/// The longest request path accepted.
pub const MAX_PATH: usize = 2048;
/// The most segments a path may have (each one is an ACL to look up).
pub const MAX_DEPTH: usize = 64;

/// A request's target inside a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    /// The path inside the pod, starting with `/` (raw, percent-encoded form).
    pub path: String,
    /// The canonical URL of the pod root, ending in `/`.
    pub pod_url: String,
}

impl Target {
    /// The canonical URL of the target resource.
    pub fn url(&self) -> String {
        format!("{}{}", self.pod_url, &self.path[1..])
    }

    pub fn url_of(&self, path: &str) -> String {
        format!("{}{}", self.pod_url, &path[1..])
    }

    pub fn is_container(&self) -> bool {
        self.path.ends_with('/')
    }

    /// The container whose SPARQL sidecar (`{container}-/sparql`) this
    /// is, if it is one.
    pub fn sidecar(&self) -> Option<&str> {
        self.path
            .ends_with(SIDECAR)
            .then(|| &self.path[..self.path.len() - SIDECAR.len() + 1])
    }

    /// The target of another path in the same pod.
    pub fn at(&self, path: &str) -> Target {
        Target {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

/// The tail of a SPARQL sidecar's path: `/{container}/-/sparql`.
pub const SIDECAR: &str = "/-/sparql";

#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    /// Not a pod URL at all (e.g. the server root): 404.
    NoPod,
    /// A path trick or an invalid path: 400 with this reason.
    Bad(String),
}

/// Checks the raw path (still percent-encoded) for tricks.
pub fn check_path(raw: &str) -> Result<(), TargetError> {
    let bad = |why: &str| Err(TargetError::Bad(why.to_string()));
    if raw.len() > MAX_PATH {
        return bad("the request path is too long");
    }
    if raw.contains('\0') || raw.contains('\\') {
        return bad("the request path contains a forbidden character");
    }
    let lower = raw.to_ascii_lowercase();
    for (encoded, what) in [
        ("%2f", "an encoded slash"),
        ("%5c", "an encoded backslash"),
        ("%00", "an encoded NUL"),
    ] {
        if lower.contains(encoded) {
            return bad(&format!("the request path contains {what}"));
        }
    }
    let segments: Vec<&str> = raw.split('/').skip(1).collect();
    if segments.len() > MAX_DEPTH {
        return bad("the request path is more than 64 levels deep");
    }
    for (i, segment) in segments.iter().enumerate() {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8();
        let Ok(decoded) = decoded else {
            return bad("the request path is not valid UTF-8");
        };
        if decoded == "." || decoded == ".." {
            return bad("the request path contains a '.' or '..' segment");
        }
        if decoded.chars().any(|c| c.is_control()) {
            return bad("the request path contains a control character");
        }
        // `-` names the sidecars of a container: only `{container}/-/sparql`.
        let sidecar = *segment == "-" && i + 2 == segments.len() && segments[i + 1] == "sparql";
        if decoded == "-" && !sidecar {
            return bad("'-' is reserved and cannot name a resource");
        }
        if segment.is_empty() && i + 1 != segments.len() {
            return bad("the request path contains an empty segment ('//')");
        }
    }
    Ok(())
}

/// Finds the pod and path of a request.
pub fn resolve(config: &Config, uri: &Uri, headers: &HeaderMap) -> Result<Target, TargetError> {
    let raw = uri.path();
    check_path(raw)?;
    let base = &config.base_url;
    let base_path = base.path();
    if config.pod_subdomains {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.host())
            .unwrap_or_default();
        let host = host
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let suffix = format!(".{}", config.base_host());
        let pod = host.strip_suffix(&suffix).ok_or(TargetError::NoPod)?;
        if crate::pod::validate_name(pod).is_err() {
            return Err(TargetError::NoPod);
        }
        let path = raw
            .strip_prefix(base_path.trim_end_matches('/'))
            .ok_or(TargetError::NoPod)?;
        let path = if path.is_empty() { "/" } else { path };
        return Ok(Target {
            pod: pod.to_string(),
            path: path.to_string(),
            pod_url: crate::pod::base_url(config, pod).to_string(),
        });
    }
    let rest = raw.strip_prefix(base_path).ok_or(TargetError::NoPod)?;
    let (pod, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return Err(TargetError::NoPod),
    };
    if crate::pod::validate_name(pod).is_err() {
        return Err(TargetError::NoPod);
    }
    Ok(Target {
        pod: pod.to_string(),
        path: path.to_string(),
        pod_url: crate::pod::base_url(config, pod).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "/alice/../bob/x",
            "/alice/%2e%2e/x",
            "/alice/a%2Fb",
            "/alice/a%00b",
            "/alice/-",
            "/alice/-/",
            "/alice/-/x",
            "/alice/-/sparql/",
            "/alice/-/sparql/x",
            "/alice/-/-/sparql",
            "/alice/%2D/sparql",
            "/alice/%2d/sparql",
            "/alice/a//b",
            "/alice/%ff",
        ] {
            assert!(matches!(check_path(bad), Err(TargetError::Bad(_))), "{bad}");
        }
        assert!(check_path(&format!("/alice/{}", "a".repeat(MAX_PATH))).is_err());
        let at = |path: &str| Target {
            pod: "alice".into(),
            path: path.into(),
            pod_url: "http://x/alice/".into(),
        };
        assert_eq!(at("/-/sparql").sidecar(), Some("/"));
        assert_eq!(at("/c/d/-/sparql").sidecar(), Some("/c/d/"));
        assert_eq!(at("/c-/sparql").sidecar(), None);
        assert_eq!(at("/c/sparql").sidecar(), None);
        assert!(check_path(&"/a".repeat(MAX_DEPTH + 1)).is_err());
        assert!(check_path(&"/a".repeat(MAX_DEPTH)).is_ok());
        for good in [
            "/alice/",
            "/alice/a%20b.txt",
            "/alice/c/d/",
            "/alice/x-y",
            "/alice/-/sparql",
            "/alice/c/-/sparql",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }
}
