//! The SPARQL index: per container that has been queried, an in-memory
//! oxigraph store holding every RDF document under it, each as a named
//! graph named by its URL.
//!
//! It is refreshed lazily: each request lists the documents under the
//! container from the database (metadata only), and the index re-reads and
//! re-parses just those whose version changed, dropping the ones that are
//! gone. A request therefore always sees every write committed before it
//! started, on any node, without listening to the event bus, and a quiet
//! pod costs nothing. Requests that find the index up to date share it
//! (a read lock); a refresh takes it alone. Indexes are dropped least
//! recently used first when they hold more than [`MAX_TRIPLES`] between
//! them, and one container may not hold more.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use oxigraph::model::{GraphNameRef, NamedNode, NamedNodeRef, QuadRef, Triple};
use oxigraph::store::Store;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use super::isolate::store_access;
use crate::app::App;
use crate::db::ResourceRecord;
use crate::ldp::error::LdpError;
use crate::ldp::target::Target;

/// The most triples the indexes of one node hold together.
pub const MAX_TRIPLES: usize = 4_000_000;
/// The most documents one request may range over.
pub const MAX_DOCUMENTS: usize = 200_000;
/// The largest document read into an index (as RDF uploads are capped).
const MAX_DOCUMENT: i64 = crate::ldp::write::MAX_RDF as i64;
/// Documents read at once while an index fills.
const READ_AHEAD: usize = 16;

/// The indexes of this node, by pod and container.
#[derive(Default)]
pub struct Indexes {
    map: Mutex<HashMap<(String, String), Arc<Index>>>,
    clock: AtomicU64,
}

/// One container's index.
#[derive(Default)]
pub struct Index {
    state: Arc<RwLock<State>>,
    /// When it was last used, by [`Indexes::clock`].
    used: AtomicU64,
    /// The triples it holds, views included.
    triples: AtomicUsize,
}

struct State {
    store: Store,
    /// What is loaded, by path.
    docs: HashMap<String, Loaded>,
    /// The last store made of the documents one caller may read, when that
    /// was not all of them, and which set it was made for.
    view: Mutex<Option<(u64, Store, usize)>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            store: Store::new().expect("an in-memory store"),
            docs: HashMap::new(),
            view: Mutex::new(None),
        }
    }
}

struct Loaded {
    version: i64,
    etag: String,
    triples: usize,
    /// Why the stored document could not be read as RDF, if it could not
    /// (it is in the index empty).
    broken: Option<String>,
}

/// The documents of a container as one request sees them, held still (no
/// refresh changes them) until dropped.
pub struct Snapshot {
    _guard: OwnedRwLockReadGuard<State>,
    /// The store to evaluate on: every graph in it is one the caller may read.
    pub store: Store,
    /// The readable documents' versions (ETags), by path, as loaded.
    pub etags: HashMap<String, String>,
    /// Documents that could not be read as RDF, and why.
    pub broken: HashMap<String, String>,
}

impl Indexes {
    fn index(&self, pod: &str, container: &str) -> Arc<Index> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().expect("sparql indexes");
        let index = map
            .entry((pod.to_string(), container.to_string()))
            .or_default()
            .clone();
        index.used.store(now, Ordering::Relaxed);
        index
    }

    /// Drops one index (it failed, or grew past the limit).
    fn forget(&self, pod: &str, container: &str, index: &Arc<Index>) {
        let mut map = self.map.lock().expect("sparql indexes");
        let key = (pod.to_string(), container.to_string());
        if map.get(&key).is_some_and(|i| Arc::ptr_eq(i, index)) {
            map.remove(&key);
        }
    }

    /// Drops the least recently used indexes (never `keep`) while they
    /// hold more than [`MAX_TRIPLES`] together.
    fn make_room(&self, keep: &Arc<Index>) {
        let mut map = self.map.lock().expect("sparql indexes");
        let mut total: usize = map
            .values()
            .map(|i| i.triples.load(Ordering::Relaxed))
            .sum();
        while total > MAX_TRIPLES {
            let oldest = map
                .iter()
                .filter(|(_, i)| !Arc::ptr_eq(i, keep))
                .min_by_key(|(_, i)| i.used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            let Some(key) = oldest else { break };
            if let Some(gone) = map.remove(&key) {
                total -= gone.triples.load(Ordering::Relaxed);
            }
        }
    }

    /// Brings the index of `container` up to date with `docs` (its RDF
    /// documents, as just listed) and returns the part of it `readable`
    /// (a subset of `docs`' paths) may see.
    pub async fn snapshot(
        &self,
        app: &App,
        container: &Target,
        docs: &[ResourceRecord],
        readable: &HashSet<String>,
    ) -> Result<Snapshot, LdpError> {
        let index = self.index(&container.pod, &container.path);
        let current = index.state.clone().read_owned().await;
        let guard = if up_to_date(&current, docs) {
            current
        } else {
            drop(current);
            let mut state = index.state.clone().write_owned().await;
            if let Err(e) = refresh(app, container, &mut state, docs).await {
                drop(state);
                self.forget(&container.pod, &container.path, &index);
                return Err(e);
            }
            let triples = state.docs.values().map(|d| d.triples).sum();
            index.triples.store(triples, Ordering::Relaxed);
            state.downgrade()
        };
        self.make_room(&index);
        let etags: HashMap<String, String> = guard
            .docs
            .iter()
            .filter(|(path, _)| readable.contains(*path))
            .map(|(path, d)| (path.clone(), d.etag.clone()))
            .collect();
        let broken = guard
            .docs
            .iter()
            .filter_map(|(path, d)| Some((path.clone(), d.broken.clone()?)))
            .collect();
        let store = if etags.len() == guard.docs.len() {
            guard.store.clone()
        } else {
            view(&guard, &index, container, &etags)?
        };
        Ok(Snapshot {
            _guard: guard,
            store,
            etags,
            broken,
        })
    }
}

/// Whether the index holds exactly `docs`, at their versions.
fn up_to_date(state: &State, docs: &[ResourceRecord]) -> bool {
    docs.len() == state.docs.len()
        && docs.iter().all(|d| {
            state
                .docs
                .get(&d.path)
                .is_some_and(|l| l.version == d.version)
        })
}

/// The store of the documents in `etags` only: the last one made, if it
/// was made for the same documents at the same versions.
fn view(
    state: &State,
    index: &Index,
    container: &Target,
    etags: &HashMap<String, String>,
) -> Result<Store, LdpError> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut seen: Vec<(&String, &String)> = etags.iter().collect();
    seen.sort();
    seen.hash(&mut hasher);
    let fingerprint = hasher.finish();
    let mut cached = state.view.lock().expect("sparql view");
    if let Some((f, view, _)) = cached.as_ref()
        && *f == fingerprint
    {
        return Ok(view.clone());
    }
    let view = copy_graphs(&state.store, container, etags.keys())?;
    let size = store_access(|| view.len()).map_err(internal)?;
    let before = cached.as_ref().map_or(0, |(_, _, n)| *n);
    index.triples.fetch_add(size, Ordering::Relaxed);
    index.triples.fetch_sub(before, Ordering::Relaxed);
    *cached = Some((fingerprint, view.clone(), size));
    Ok(view)
}

/// A new store holding the graphs of `paths` copied from `from`.
pub fn copy_graphs<'a>(
    from: &Store,
    container: &Target,
    paths: impl Iterator<Item = &'a String>,
) -> Result<Store, LdpError> {
    let to = Store::new().map_err(internal)?;
    for path in paths {
        let graph = graph_name(container, path)?;
        store_access(|| {
            let quads: Vec<_> = from
                .quads_for_pattern(None, None, None, Some(graph.as_ref().into()))
                .collect::<Result<_, _>>()?;
            to.insert_named_graph(graph.as_ref())?;
            to.extend(quads)
        })
        .map_err(internal)?;
    }
    Ok(to)
}

/// The graph name of a document: its URL.
pub fn graph_name(container: &Target, path: &str) -> Result<NamedNode, LdpError> {
    NamedNode::new(container.url_of(path))
        .map_err(|e| LdpError::bad_request(format!("{path} is not a valid IRI: {e}")))
}

/// An internal failure, logged here (never in a child process).
pub(super) fn internal(e: impl std::fmt::Display) -> LdpError {
    tracing::error!(error = %e, "the SPARQL index failed");
    LdpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the SPARQL index failed; see the server log",
    )
}

/// Re-reads the documents whose version changed and drops those gone.
async fn refresh(
    app: &App,
    container: &Target,
    state: &mut State,
    docs: &[ResourceRecord],
) -> Result<(), LdpError> {
    *state.view.get_mut().expect("sparql view") = None;
    let listed: HashSet<&str> = docs.iter().map(|d| d.path.as_str()).collect();
    let gone: Vec<String> = state
        .docs
        .keys()
        .filter(|p| !listed.contains(p.as_str()))
        .cloned()
        .collect();
    for path in gone {
        let graph = graph_name(container, &path)?;
        store_access(|| state.store.remove_named_graph(graph.as_ref())).map_err(internal)?;
        state.docs.remove(&path);
    }
    let stale: Vec<&ResourceRecord> = docs
        .iter()
        .filter(|d| {
            state
                .docs
                .get(&d.path)
                .is_none_or(|l| l.version != d.version)
        })
        .collect();
    let mut total: usize = state.docs.values().map(|d| d.triples).sum();
    for chunk in stale.chunks(READ_AHEAD) {
        let mut reads = Vec::with_capacity(chunk.len());
        for record in chunk {
            reads.push(read(app, container, record));
        }
        let read = futures::future::join_all(reads).await;
        for (record, parsed) in chunk.iter().zip(read) {
            let (triples, broken) = match parsed? {
                Ok(triples) => (triples, None),
                Err(why) => {
                    tracing::warn!(pod = %container.pod, path = %record.path, error = %why, "a stored document is not readable RDF: SPARQL sees it empty");
                    (Vec::new(), Some(why))
                }
            };
            total -= state.docs.get(&record.path).map_or(0, |l| l.triples);
            total += triples.len();
            if total > MAX_TRIPLES {
                return Err(LdpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "the documents under {} hold more than the {MAX_TRIPLES} triples the SPARQL index takes; query a container further down",
                        container.url()
                    ),
                ));
            }
            load(container, state, record, triples, broken)?;
        }
    }
    Ok(())
}

/// A stored document's triples, each blank node made its own (two
/// documents' `_:b0` are two nodes), or why it is not readable RDF.
async fn read(
    app: &App,
    container: &Target,
    record: &ResourceRecord,
) -> Result<Result<Vec<Triple>, String>, LdpError> {
    let Some(syntax) = crate::rdf::input_syntax(&record.content_type) else {
        return Ok(Err(format!("{} is not RDF", record.content_type)));
    };
    if record.size > MAX_DOCUMENT {
        return Ok(Err(format!(
            "{} bytes is more than the {MAX_DOCUMENT} bytes an RDF document may have",
            record.size
        )));
    }
    let bytes = crate::ldp::write::read_stored(app, record).await?;
    Ok(crate::rdf::parse_distinct(
        &bytes,
        syntax,
        &container.url_of(&record.path),
    ))
}

/// Puts one document's triples in the index, in place of what it held.
fn load(
    container: &Target,
    state: &mut State,
    record: &ResourceRecord,
    triples: Vec<Triple>,
    broken: Option<String>,
) -> Result<(), LdpError> {
    let graph = graph_name(container, &record.path)?;
    let graph_ref = GraphNameRef::NamedNode(NamedNodeRef::from(&graph));
    store_access(|| {
        state.store.clear_graph(graph_ref)?;
        state.store.insert_named_graph(graph.as_ref())?;
        state.store.extend(triples.iter().map(|t| {
            QuadRef::new(
                t.subject.as_ref(),
                t.predicate.as_ref(),
                t.object.as_ref(),
                graph_ref,
            )
        }))
    })
    .map_err(internal)?;
    state.docs.insert(
        record.path.clone(),
        Loaded {
            version: record.version,
            etag: record.etag.clone(),
            triples: triples.len(),
            broken,
        },
    );
    Ok(())
}

/// Every resource under `container` (not containers), walking it.
pub async fn list(app: &App, container: &Target) -> Result<Vec<ResourceRecord>, LdpError> {
    const PAGE: u32 = 1000;
    let mut found = Vec::new();
    let mut containers = vec![container.path.clone()];
    while let Some(current) = containers.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = app
                .db
                .resource_children(&container.pod, &current, after.as_deref(), PAGE)
                .await?;
            for child in &page {
                if child.is_container() {
                    containers.push(child.path.clone());
                } else {
                    found.push(child.clone());
                }
            }
            if found.len() > MAX_DOCUMENTS {
                return Err(LdpError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "{} holds more than {MAX_DOCUMENTS} documents, more than one SPARQL request ranges over; query a container further down",
                        container.url()
                    ),
                ));
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.path.clone()),
                _ => break,
            }
        }
    }
    Ok(found)
}
