//! Pods: their names, their canonical base URLs, and creating one.

use url::Url;

use crate::config::Config;

/// Why a pod name is refused.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 63 || !ok_chars {
        return Err(format!(
            "invalid pod name {name:?}: use 1-63 characters of a-z, 0-9 and '-'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid pod name {name:?}: it may not start or end with '-'"
        ));
    }
    if matches!(name, "api" | "-") {
        return Err(format!("pod name {name:?} is reserved"));
    }
    Ok(())
}

/// The one canonical base URL of a pod, whichever node serves it.
pub fn base_url(config: &Config, name: &str) -> Url {
    let base = &config.base_url;
    if config.pod_subdomains {
        let mut url = base.clone();
        let host = format!("{name}.{}", config.base_host());
        url.set_host(Some(&host)).expect("a valid host name");
        url
    } else {
        base.join(&format!("{name}/")).expect("a valid path")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_fixed_rules() {
        for ok in ["alice", "a", "bob-2", &"x".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "a_b",
            ".well-known",
            "api",
            "-",
            "-a",
            "a-",
            &"x".repeat(64),
            "a/b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
