//! What a copy has done so far, so that a rerun after an interruption skips
//! what is already there. One JSON object per line, appended and flushed
//! after each resource: a line cut short by a crash is ignored on reading.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One copied resource: its path relative to the copied container and the
/// ETags both servers gave for the copied version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Done {
    pub path: String,
    pub source_etag: String,
    pub target_etag: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    source: String,
    target: String,
}

pub struct State {
    path: PathBuf,
    file: std::fs::File,
    done: HashMap<String, Done>,
}

/// Where the state of copying `source` to `target` lives unless `--state` names a file.
pub fn default_path(source: &str, target: &str) -> PathBuf {
    use sha2::Digest;
    let key = sha2::Sha256::digest(format!("{source}\n{target}").as_bytes());
    std::env::temp_dir()
        .join("xpod-walk")
        .join(format!("{}.jsonl", &hex::encode(key)[..24]))
}

impl State {
    /// Opens (or starts) the state file of a copy from `source` to `target`.
    /// A file that belongs to another pair of URLs is refused, so that a
    /// mistyped `--state` cannot make a copy skip resources.
    pub fn open(path: &Path, source: &str, target: &str) -> Result<State, String> {
        let what = |e: std::io::Error| format!("state file {}: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(what)?;
        }
        let mut done = HashMap::new();
        let mut fresh = true;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                if let Some(first) = lines.next() {
                    fresh = false;
                    let header: Header = serde_json::from_str(first).map_err(|e| {
                        format!(
                            "state file {} is not an xpod copy state ({e}); delete it or name another with --state",
                            path.display()
                        )
                    })?;
                    if header.source != source || header.target != target {
                        return Err(format!(
                            "state file {} belongs to a copy from {} to {}; delete it or name another with --state",
                            path.display(),
                            header.source,
                            header.target
                        ));
                    }
                    for line in lines {
                        if let Ok(d) = serde_json::from_str::<Done>(line) {
                            done.insert(d.path.clone(), d);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(what(e)),
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(what)?;
        if fresh {
            let header = serde_json::to_string(&Header {
                source: source.into(),
                target: target.into(),
            })
            .expect("serialisable");
            writeln!(file, "{header}").map_err(what)?;
        } else if !text_ends_with_newline(path) {
            // A line cut short by a crash: start the next one on its own line.
            writeln!(file).map_err(what)?;
        }
        Ok(State {
            path: path.to_path_buf(),
            file,
            done,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What an earlier run recorded for `path`.
    pub fn get(&self, path: &str) -> Option<&Done> {
        self.done.get(path)
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Records a copied resource (written and flushed before returning).
    pub fn record(&mut self, done: Done) -> Result<(), String> {
        let line = serde_json::to_string(&done).expect("serialisable");
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| format!("state file {}: {e}", self.path.display()))?;
        self.done.insert(done.path.clone(), done);
        Ok(())
    }
}

fn text_ends_with_newline(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.last().is_none_or(|c| *c == b'\n'))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_torn_last_line_and_refuse_other_urls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let mut s = State::open(&path, "http://a/", "http://b/").unwrap();
        let d = Done {
            path: "x".into(),
            source_etag: "\"1\"".into(),
            target_etag: "\"2\"".into(),
        };
        s.record(d.clone()).unwrap();
        drop(s);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"path\":\"y\",\"sour").unwrap();
        drop(f);
        let mut s = State::open(&path, "http://a/", "http://b/").unwrap();
        assert_eq!(s.get("x"), Some(&d));
        assert_eq!(s.len(), 1);
        s.record(Done {
            path: "y".into(),
            ..d.clone()
        })
        .unwrap();
        drop(s);
        let s = State::open(&path, "http://a/", "http://b/").unwrap();
        assert_eq!(s.len(), 2);
        let err = State::open(&path, "http://a/", "http://c/").err().unwrap();
        assert!(
            err.contains("belongs to a copy from http://a/ to http://b/"),
            "{err}"
        );
    }
}
