//! SPARQL 1.1 Update through a container's sidecar. In a child process,
//! the update is parsed, checked and applied to a copy of the documents
//! the caller may read, and the copy comes back as N-Quads. Here, the
//! documents whose triples changed are checked as a PATCH of each would
//! be, and written back through the normal write path in one
//! transaction, conditional on the versions that were read. A concurrent
//! write to one of them makes the update start over; nothing is ever half
//! applied.

use std::collections::{HashMap, HashSet};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use oxigraph::model::{GraphName, Quad, Triple};
use oxigraph::sparql::SparqlEvaluator;
use oxigraph::store::Store;
use spargebra::GraphUpdateOperation as Op;
use spargebra::algebra::GraphTarget;
use spargebra::term::GraphNamePattern;

use super::isolate::store_access;
use super::protocol::Request;
use super::{Stop, evaluate, index};
use crate::app::App;
use crate::db::{Condition, DbError, PutRequest, ResourceRecord};
use crate::ldp::access::{self, Caller};
use crate::ldp::error::LdpError;
use crate::ldp::target::{self, Target};
use crate::ldp::write;
use crate::rdf::{self, Syntax, patch::Shape};

/// How often an update starts over because a document changed under it.
const ATTEMPTS: usize = 16;

pub async fn update(
    app: &App,
    container: &Target,
    text: &str,
    request: &Request,
    caller: &Caller<'_>,
) -> Result<Response, LdpError> {
    if !request.default_graphs.is_empty() || !request.named_graphs.is_empty() || request.using {
        return Err(LdpError::bad_request(
            "graph parameters are not supported with an update; name the documents in it with GRAPH <…> or WITH <…>",
        ));
    }
    rdf::check_nesting(text).map_err(LdpError::bad_request)?;
    // The deadline covers reading and evaluating; a commit, once started,
    // runs to its end.
    let deadline = tokio::time::Instant::now() + app.config.sparql_timeout;
    for _ in 0..ATTEMPTS {
        if let Some(resp) = attempt(app, container, text, caller, deadline).await? {
            return Ok(resp);
        }
    }
    Err(LdpError::unavailable(
        "the documents kept changing while the update was applied; try again",
    ))
}

/// Refuses what the sidecar does not do, and graphs outside the
/// container; says whether the update reads (has a WHERE or clears).
fn check(update: &spargebra::Update, base: &str) -> Result<bool, LdpError> {
    let outside = |iri: &str| -> Result<(), LdpError> {
        if iri.starts_with(base) {
            Ok(())
        } else {
            Err(LdpError::bad_request(format!(
                "the update names the graph <{iri}>, outside {base}: it may change only the documents under its container"
            )))
        }
    };
    let mut reads = false;
    for op in &update.operations {
        match op {
            Op::Load { .. } => {
                return Err(LdpError::bad_request(
                    "LOAD is not supported: the server fetches nothing for an update; PUT the document instead",
                ));
            }
            Op::Create { .. } => {
                return Err(LdpError::bad_request(
                    "CREATE is not supported: INSERT DATA { GRAPH <document> { … } } creates the document",
                ));
            }
            Op::Drop { .. } => {
                return Err(LdpError::bad_request(
                    "DROP is not supported: DELETE the document over HTTP, or CLEAR it",
                ));
            }
            Op::Clear { graph, .. } => {
                reads = true;
                match graph {
                    GraphTarget::NamedNode(n) => outside(n.as_str())?,
                    GraphTarget::DefaultGraph => {
                        return Err(LdpError::bad_request(
                            "CLEAR DEFAULT is not supported: the default graph is the union of the documents; CLEAR GRAPH <document> or CLEAR NAMED",
                        ));
                    }
                    GraphTarget::NamedGraphs | GraphTarget::AllGraphs => {}
                }
            }
            Op::InsertData { data } => {
                for q in data {
                    if let spargebra::term::GraphName::NamedNode(n) = &q.graph_name {
                        outside(n.as_str())?;
                    }
                }
            }
            Op::DeleteData { data } => {
                for q in data {
                    if let spargebra::term::GraphName::NamedNode(n) = &q.graph_name {
                        outside(n.as_str())?;
                    }
                }
            }
            Op::DeleteInsert {
                delete,
                insert,
                using,
                ..
            } => {
                reads = true;
                for g in delete.iter().map(|q| &q.graph_name) {
                    if let GraphNamePattern::NamedNode(n) = g {
                        outside(n.as_str())?;
                    }
                }
                for g in insert.iter().map(|q| &q.graph_name) {
                    if let GraphNamePattern::NamedNode(n) = g {
                        outside(n.as_str())?;
                    }
                }
                if let Some(using) = using {
                    for n in using.default.iter().chain(using.named.iter().flatten()) {
                        outside(n.as_str())?;
                    }
                }
            }
        }
    }
    Ok(reads)
}

/// One change to write.
struct Change {
    path: String,
    triples: Vec<Triple>,
    /// The version it replaces; `None` when it creates the document.
    etag: Option<String>,
    content_type: String,
}

/// One try: `None` when a document changed under it (start over).
async fn attempt(
    app: &App,
    container: &Target,
    text: &str,
    caller: &Caller<'_>,
    deadline: tokio::time::Instant,
) -> Result<Option<Response>, LdpError> {
    let (listing, snapshot) = super::prepare(app, container, caller, deadline).await?;
    let by_path: HashMap<&str, &ResourceRecord> =
        listing.all.iter().map(|r| (r.path.as_str(), r)).collect();
    let etags = snapshot.etags.clone();
    let broken = snapshot.broken.clone();
    let base = container.url();
    // In the child: the snapshot's store holds exactly the readable
    // documents; the update runs on a copy of it.
    let work = |store: &Store| -> Result<Vec<u8>, Stop> {
        let parsed = super::parser(&base)?.parse_update(text).map_err(|e| {
            Stop::Other(LdpError::bad_request(format!("invalid SPARQL Update: {e}")))
        })?;
        let reads = check(&parsed, &base).map_err(Stop::Other)?;
        let fail = |e: oxigraph::store::StorageError| {
            Stop::Other(LdpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot copy the documents: {e}"),
            ))
        };
        let scratch = Store::new().map_err(fail)?;
        for graph in store.named_graphs() {
            scratch
                .insert_named_graph(graph.map_err(fail)?.as_ref())
                .map_err(fail)?;
        }
        scratch
            .extend(store.iter().collect::<Result<Vec<_>, _>>().map_err(fail)?)
            .map_err(fail)?;
        let mut prepared = SparqlEvaluator::new().for_update(parsed);
        // A WHERE without USING or WITH reads the union of the documents,
        // as a query does.
        for dataset in prepared.using_datasets_mut() {
            if dataset.is_default_dataset() {
                dataset.set_default_graph_as_union();
            }
        }
        prepared
            .on_store(&scratch)
            .execute()
            .map_err(update_stopped)?;
        let mut answer = vec![u8::from(reads)];
        scratch
            .dump_to_writer(oxigraph::io::RdfFormat::NQuads, &mut answer)
            .map_err(|e| {
                Stop::Other(LdpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot write the updated documents: {e}"),
                ))
            })?;
        Ok(answer)
    };
    let (answer, before) = evaluate(app, deadline, snapshot, work, |snapshot| {
        store_access(|| graphs_of(&snapshot.store))
    })
    .await?;
    let reads = answer.first() == Some(&1);
    let after = parse_dump(answer.get(1..).unwrap_or_default())?;
    let mut changes = Vec::new();
    let names: HashSet<&Option<String>> = before.keys().chain(after.keys()).collect();
    for name in names {
        let empty = HashSet::new();
        let was = before.get(name).unwrap_or(&empty);
        let now = after.get(name).unwrap_or(&empty);
        let inserts = now.difference(was).count() > 0;
        let deletes = was.difference(now).count() > 0;
        if !inserts && !deletes {
            continue;
        }
        let Some(name) = name.as_deref() else {
            return Err(LdpError::bad_request(
                "the update writes to the default graph, the union of the documents; name the document with GRAPH <…> { … } or WITH <…>",
            ));
        };
        let path = document_path(container, &base, name)?;
        let target = container.at(&path);
        write::refuse_reserved(&target)?;
        let shape = Shape {
            inserts,
            deletes,
            reads,
        };
        // Decided first, so that a refusal tells nothing of the document.
        access::authorize(app, &target, &Method::PATCH, caller, Some(shape)).await?;
        let existing = by_path.get(path.as_str()).copied();
        if let Some(record) = existing
            && rdf::input_syntax(&record.content_type).is_none()
        {
            return Err(LdpError::new(
                StatusCode::CONFLICT,
                format!(
                    "{} is {}, not RDF: SPARQL cannot change it",
                    target.url(),
                    record.content_type
                ),
            ));
        }
        if let Some(why) = broken.get(&path) {
            return Err(unreadable(&target, why));
        }
        let (triples, etag) = match (existing, etags.get(&path)) {
            // Read and changed.
            (Some(_), Some(etag)) => (now.iter().cloned().collect(), Some(etag.clone())),
            // Appended to without reading (only inserts can reach it).
            (Some(record), None) => {
                let mut triples = read_document(app, &target, record).await?;
                let had: HashSet<Triple> = triples.iter().cloned().collect();
                triples.extend(now.iter().filter(|t| !had.contains(*t)).cloned());
                (triples, Some(record.etag.clone()))
            }
            (None, _) => (now.iter().cloned().collect(), None),
        };
        changes.push(Change {
            path,
            triples,
            etag,
            content_type: existing.map_or_else(|| "text/turtle".into(), |r| r.content_type.clone()),
        });
    }
    if changes.is_empty() {
        return Ok(Some(StatusCode::NO_CONTENT.into_response()));
    }
    commit(app, container, changes).await
}

fn unreadable(target: &Target, why: &str) -> LdpError {
    LdpError::new(
        StatusCode::CONFLICT,
        format!(
            "{} is not readable RDF ({why}); replace it with PUT before changing it with SPARQL",
            target.url()
        ),
    )
}

/// Why an update stopped, as a query's stop would be told.
fn update_stopped(e: oxigraph::sparql::UpdateEvaluationError) -> Stop {
    use oxigraph::sparql::{QueryEvaluationError as Q, UpdateEvaluationError as U};
    match e {
        U::Unexpected(e) => match e.downcast::<Q>() {
            Ok(e) => Stop::Evaluation(*e),
            Err(e) => Stop::Other(LdpError::bad_request(format!(
                "the update cannot be applied: {e}"
            ))),
        },
        U::Service(e) => Stop::Evaluation(Q::Service(e)),
        U::UnboundService => Stop::Evaluation(Q::UnboundService),
        U::UnsupportedService(n) => Stop::Evaluation(Q::UnsupportedService(n)),
        U::InvalidServiceName(t) => Stop::Evaluation(Q::InvalidServiceName(t)),
        U::Storage(e) => Stop::Evaluation(Q::Dataset(Box::new(e))),
        other => Stop::Other(LdpError::bad_request(format!(
            "the update cannot be applied: {other}"
        ))),
    }
}

type Graphs = HashMap<Option<String>, HashSet<Triple>>;

/// The triples of each graph of a store (`None`: the default graph).
fn graphs_of(store: &oxigraph::store::Store) -> Graphs {
    group(store.iter().filter_map(Result::ok))
}

/// The graphs of an N-Quads dump.
fn parse_dump(dump: &[u8]) -> Result<Graphs, LdpError> {
    let quads: Vec<Quad> = oxigraph::io::RdfParser::from_format(oxigraph::io::RdfFormat::NQuads)
        .for_slice(dump)
        .collect::<Result<_, _>>()
        .map_err(index::internal)?;
    Ok(group(quads.into_iter()))
}

fn group(quads: impl Iterator<Item = Quad>) -> Graphs {
    let mut graphs = Graphs::new();
    for quad in quads {
        let Quad {
            subject,
            predicate,
            object,
            graph_name,
        } = quad;
        let name = match graph_name {
            GraphName::NamedNode(n) => Some(n.into_string()),
            GraphName::BlankNode(b) => Some(format!("_:{}", b.as_str())),
            GraphName::DefaultGraph => None,
        };
        graphs
            .entry(name)
            .or_default()
            .insert(Triple::new(subject, predicate, object));
    }
    graphs
}

/// The path of the document a graph name names, if it is one under the
/// container that an update may write.
fn document_path(container: &Target, base: &str, name: &str) -> Result<String, LdpError> {
    let not_a_document = |why: &str| {
        LdpError::bad_request(format!(
            "the update writes to <{name}>, which {why}; it may change only documents under {base}"
        ))
    };
    let rest = name
        .strip_prefix(base)
        .ok_or_else(|| not_a_document("is not under the container"))?;
    if rest.is_empty() || rest.ends_with('/') {
        return Err(not_a_document("is a container"));
    }
    if rest.contains(['#', '?']) {
        return Err(not_a_document(
            "is not a document URL (it has a fragment or query)",
        ));
    }
    if access::protected(rest).is_some() {
        return Err(not_a_document("is an ACL; change ACLs with PUT or PATCH"));
    }
    let path = format!("{}{rest}", container.path);
    target::check_path(&path).map_err(|e| match e {
        target::TargetError::Bad(why) => not_a_document(&format!("is not a valid path ({why})")),
        target::TargetError::NoPod => not_a_document("is not a valid path"),
    })?;
    Ok(path)
}

/// A stored document's triples.
async fn read_document(
    app: &App,
    target: &Target,
    record: &ResourceRecord,
) -> Result<Vec<Triple>, LdpError> {
    let syntax = rdf::input_syntax(&record.content_type).unwrap_or(Syntax::Turtle);
    let bytes = write::read_stored(app, record).await?;
    rdf::parse(&bytes, syntax, &target.url()).map_err(|why| unreadable(target, &why))
}

/// Stores the new documents and commits them together; `None` when one
/// of them changed since it was read.
async fn commit(
    app: &App,
    container: &Target,
    changes: Vec<Change>,
) -> Result<Option<Response>, LdpError> {
    let mut uploads = Vec::new();
    let mut requests = Vec::new();
    for change in changes {
        let url = container.url_of(&change.path);
        let syntax = rdf::input_syntax(&change.content_type).unwrap_or(Syntax::Turtle);
        let bytes = bytes::Bytes::from(rdf::serialize(&change.triples, syntax, &url));
        let stream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let upload = match app.blobs.put(stream, app.config.max_body_size).await {
            Ok(u) => u,
            Err(e) => {
                for u in uploads {
                    write::release(app, u).await;
                }
                return Err(e.into());
            }
        };
        requests.push(PutRequest {
            pod_id: container.pod.clone(),
            path: change.path,
            content_type: change.content_type,
            blob: Some((upload.info.hash.clone(), upload.info.size as i64)),
            storage_id: app.blobs.storage_id().to_string(),
            writer_node: app.node.id.clone(),
            condition: match change.etag {
                Some(etag) => Condition {
                    if_match: Some(vec![etag]),
                    if_none_match: None,
                },
                None => Condition {
                    if_match: None,
                    if_none_match: Some(vec!["*".into()]),
                },
            },
            create_only: false,
        });
        uploads.push(upload);
    }
    match write::put_resources(app, &requests).await {
        Ok(_) => {
            for upload in uploads {
                app.blobs.finish(upload).await?;
            }
            Ok(Some(StatusCode::NO_CONTENT.into_response()))
        }
        Err(e) => {
            for upload in uploads {
                write::release(app, upload).await;
            }
            match e {
                DbError::PreconditionFailed => Ok(None),
                e => Err(e.into()),
            }
        }
    }
}
