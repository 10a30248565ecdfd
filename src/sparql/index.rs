//! The SPARQL index: per container that has been queried, an in-memory
//! oxigraph store holding every RDF document under it, each as a named
//! graph named by its URL.
//!
//! It is refreshed lazily: each query lists the documents under the
//! container from the database (metadata only), and the index re-reads and
//! re-parses just those whose version changed, dropping the ones that are
//! gone. A query therefore always sees every write committed before it
//! started, on any node, without listening to the event bus, and a quiet
//! pod costs nothing. Indexes are dropped least recently used first when
//! they hold more than [`MAX_TRIPLES`] between them.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use oxigraph::model::{GraphNameRef, NamedNode, NamedNodeRef, QuadRef};
use oxigraph::store::Store;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::app::App;
use crate::db::ResourceRecord;
use crate::ldp::error::LdpError;
use crate::ldp::target::Target;

/// The most triples the indexes of one node hold together.
pub const MAX_TRIPLES: usize = 4_000_000;
/// The most documents one query may range over.
pub const MAX_DOCUMENTS: usize = 200_000;
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
    triples: AtomicUsize,
}

struct State {
    store: Store,
    /// What is loaded, by path.
    docs: HashMap<String, Loaded>,
    /// The last store made of the documents one caller may read, when that
    /// was not all of them, and which set it was made for.
    view: Option<(u64, Store)>,
}

impl Default for State {
    fn default() -> Self {
        State {
            store: Store::new().expect("an in-memory store"),
            docs: HashMap::new(),
            view: None,
        }
    }
}

struct Loaded {
    version: i64,
    etag: String,
    triples: usize,
}

/// The documents of a container as a query sees them, held still (no
/// refresh changes them) until dropped.
pub struct Snapshot {
    _guard: OwnedRwLockReadGuard<State>,
    /// The store to evaluate on: every graph in it is one the caller may read.
    pub store: Store,
    /// Their versions (ETags), by path, as loaded.
    pub etags: HashMap<String, String>,
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
        let mut state = index.state.clone().write_owned().await;
        refresh(app, container, &mut state, docs).await?;
        let triples = state.docs.values().map(|d| d.triples).sum();
        index.triples.store(triples, Ordering::Relaxed);
        if triples > MAX_TRIPLES {
            return Err(LdpError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the documents under {} hold {triples} triples, more than the {MAX_TRIPLES} the SPARQL index takes; query a container further down",
                    container.url()
                ),
            ));
        }
        self.make_room(&index);
        let etags: HashMap<String, String> = state
            .docs
            .iter()
            .filter(|(path, _)| readable.contains(*path))
            .map(|(path, d)| (path.clone(), d.etag.clone()))
            .collect();
        let store = if etags.len() == state.docs.len() {
            state.store.clone()
        } else {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            let mut seen: Vec<(&String, &String)> = etags.iter().collect();
            seen.sort();
            seen.hash(&mut hasher);
            let fingerprint = hasher.finish();
            match &state.view {
                Some((f, view)) if *f == fingerprint => view.clone(),
                _ => {
                    let view = copy_graphs(&state.store, container, etags.keys())?;
                    state.view = Some((fingerprint, view.clone()));
                    view
                }
            }
        };
        Ok(Snapshot {
            _guard: state.downgrade(),
            store,
            etags,
        })
    }
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
        let quads = from.quads_for_pattern(None, None, None, Some(graph.as_ref().into()));
        let quads: Vec<_> = quads.collect::<Result<_, _>>().map_err(internal)?;
        to.insert_named_graph(graph.as_ref()).map_err(internal)?;
        to.extend(quads).map_err(internal)?;
    }
    Ok(to)
}

/// The graph name of a document: its URL.
pub fn graph_name(container: &Target, path: &str) -> Result<NamedNode, LdpError> {
    NamedNode::new(container.url_of(path))
        .map_err(|e| LdpError::bad_request(format!("{path} is not a valid IRI: {e}")))
}

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
    let listed: HashSet<&str> = docs.iter().map(|d| d.path.as_str()).collect();
    let gone: Vec<String> = state
        .docs
        .keys()
        .filter(|p| !listed.contains(p.as_str()))
        .cloned()
        .collect();
    let stale: Vec<&ResourceRecord> = docs
        .iter()
        .filter(|d| {
            state
                .docs
                .get(&d.path)
                .is_none_or(|l| l.version != d.version)
        })
        .collect();
    if gone.is_empty() && stale.is_empty() {
        return Ok(());
    }
    state.view = None;
    for path in gone {
        let graph = graph_name(container, &path)?;
        state
            .store
            .remove_named_graph(graph.as_ref())
            .map_err(internal)?;
        state.docs.remove(&path);
    }
    for chunk in stale.chunks(READ_AHEAD) {
        let mut reads = Vec::with_capacity(chunk.len());
        for record in chunk {
            reads.push(crate::ldp::write::read_stored(app, record));
        }
        let read = futures::future::join_all(reads).await;
        for (record, bytes) in chunk.iter().zip(read) {
            load(container, state, record, bytes)?;
        }
    }
    Ok(())
}

/// Puts one document's triples in the index, in place of what it held.
fn load(
    container: &Target,
    state: &mut State,
    record: &ResourceRecord,
    bytes: Result<bytes::Bytes, LdpError>,
) -> Result<(), LdpError> {
    {
        let url = container.url_of(&record.path);
        let graph = graph_name(container, &record.path)?;
        let triples = match crate::rdf::input_syntax(&record.content_type) {
            Some(syntax) => bytes.map(|bytes| {
                crate::rdf::parse(&bytes, syntax, &url).unwrap_or_else(|e| {
                    tracing::warn!(pod = %container.pod, path = %record.path, error = %e, "a stored document does not parse: SPARQL sees it empty");
                    Vec::new()
                })
            }),
            None => Ok(Vec::new()),
        };
        state.store.clear_graph(graph.as_ref()).map_err(internal)?;
        state
            .store
            .insert_named_graph(graph.as_ref())
            .map_err(internal)?;
        let graph_ref = GraphNameRef::NamedNode(NamedNodeRef::from(&graph));
        let triples = triples?;
        state
            .store
            .extend(triples.iter().map(|t| {
                QuadRef::new(
                    t.subject.as_ref(),
                    t.predicate.as_ref(),
                    t.object.as_ref(),
                    graph_ref,
                )
            }))
            .map_err(internal)?;
        state.docs.insert(
            record.path.clone(),
            Loaded {
                version: record.version,
                etag: record.etag.clone(),
                triples: triples.len(),
            },
        );
    }
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
                        "{} holds more than {MAX_DOCUMENTS} documents, more than one SPARQL query ranges over; query a container further down",
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
