//! The SPARQL sidecar of a container, `{container}/-/sparql`: SPARQL 1.1
//! queries over the RDF documents under the container, each a named graph
//! named by its URL (the default graph is their union), and SPARQL 1.1
//! updates of those documents, applied through the normal write path in
//! one transaction.
//!
//! A query sees only the documents its agent may read; an update needs on
//! each document it changes what a PATCH doing the same would need. The
//! documents come from a per-container index ([`index`]) kept in memory
//! and refreshed from the database on every request.

pub mod index;
mod isolate;
pub(crate) mod protocol;
mod update;

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use oxigraph::model::Triple;
use oxigraph::sparql::results::{QueryResultsFormat, QueryResultsSerializer};
use oxigraph::sparql::{QueryEvaluationError, QueryResults, SparqlEvaluator};

use crate::app::App;
use crate::db::ResourceRecord;
use crate::ldp::access::{self, Caller};
use crate::ldp::error::LdpError;
use crate::ldp::target::Target;
use crate::rdf::{self, Syntax};
use protocol::{Operation, Request};

/// What the SPARQL sidecars of a node share.
pub struct Sparql {
    pub indexes: index::Indexes,
    /// Queries and updates evaluated at once; the others wait their turn.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Sparql {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Sparql {
            indexes: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(cores.max(2))),
        }
    }
}

/// The media types of SELECT and ASK results, in our order of preference.
const RESULT_TYPES: [(&str, QueryResultsFormat); 6] = [
    ("application/sparql-results+json", QueryResultsFormat::Json),
    ("application/json", QueryResultsFormat::Json),
    ("application/sparql-results+xml", QueryResultsFormat::Xml),
    ("application/xml", QueryResultsFormat::Xml),
    ("text/csv", QueryResultsFormat::Csv),
    ("text/tab-separated-values", QueryResultsFormat::Tsv),
];

/// Serves a request to the sidecar of `container`.
pub async fn serve(
    app: &Arc<App>,
    container: &Target,
    method: &Method,
    headers: &HeaderMap,
    query_string: Option<&str>,
    body: Body,
    caller: &Caller<'_>,
) -> Response {
    let result = match protocol::read(method, headers, query_string, body).await {
        Ok(None) => Ok(protocol::options()),
        Ok(Some(request)) => match request.operation {
            Operation::Query(ref text) => {
                query(app, container, text, &request, headers, caller).await
            }
            Operation::Update(ref text) => {
                update::update(app, container, text, &request, caller).await
            }
        },
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| e.into_response())
}

/// Limits, as their errors name them.
fn timed_out(app: &App) -> LdpError {
    LdpError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "the SPARQL request ran longer than the limit of {} ms (CSS_SPARQL_TIMEOUT); narrow it (more specific patterns, a LIMIT) or ask the operator to raise the limit",
            app.config.sparql_timeout.as_millis()
        ),
    )
}

fn too_many(app: &App) -> LdpError {
    LdpError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "the query has more than {} results, the limit (CSS_SPARQL_MAX_RESULTS); add a LIMIT, or page with ORDER BY, LIMIT and OFFSET",
            app.config.sparql_max_results
        ),
    )
}

/// Why an evaluation stopped.
enum Stop {
    Evaluation(QueryEvaluationError),
    TooMany,
    Other(LdpError),
}

/// The refusal for a stopped evaluation. It runs in the child process, so
/// it logs nothing: the parent logs what comes back as a 500.
fn stopped(app: &App, stop: Stop) -> LdpError {
    match stop {
        Stop::TooMany => too_many(app),
        Stop::Other(e) => e,
        Stop::Evaluation(
            e @ (QueryEvaluationError::Service(_)
            | QueryEvaluationError::UnboundService
            | QueryEvaluationError::InvalidServiceName(_)
            | QueryEvaluationError::UnsupportedService(_)),
        ) => LdpError::bad_request(format!(
            "SERVICE is not supported: the sidecar answers from the pod's own documents only ({e})"
        )),
        Stop::Evaluation(QueryEvaluationError::Dataset(e)) => LdpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the SPARQL index failed during an evaluation: {e}"),
        ),
        Stop::Evaluation(e) => LdpError::bad_request(format!("the query cannot be evaluated: {e}")),
    }
}

/// What is under a container, as a request to its sidecar sees it.
struct Listing {
    /// Every resource under it (not the containers).
    all: Vec<ResourceRecord>,
    /// The RDF documents among them ([`is_data`]).
    data: Vec<ResourceRecord>,
    /// The paths of the documents the caller may read.
    readable: HashSet<String>,
}

async fn listing(app: &App, container: &Target, caller: &Caller<'_>) -> Result<Listing, LdpError> {
    let all = index::list(app, container).await?;
    let data: Vec<ResourceRecord> = all
        .iter()
        .filter(|d| is_data(d))
        // A path the IRI grammar refuses (`|`, `{`…) cannot name a graph.
        .filter(|d| index::graph_name(container, &d.path).is_ok())
        .cloned()
        .collect();
    let mut readable = HashSet::new();
    for doc in &data {
        if access::readable(app, &container.at(&doc.path), caller).await? {
            readable.insert(doc.path.clone());
        }
    }
    Ok(Listing {
        all,
        data,
        readable,
    })
}

/// Lists the container and brings its index up to date, by `deadline`.
async fn prepare(
    app: &App,
    container: &Target,
    caller: &Caller<'_>,
    deadline: tokio::time::Instant,
) -> Result<(Listing, index::Snapshot), LdpError> {
    let listing = tokio::time::timeout_at(deadline, listing(app, container, caller))
        .await
        .map_err(|_| timed_out(app))??;
    let snapshot = tokio::time::timeout_at(
        deadline,
        app.sparql
            .indexes
            .snapshot(app, container, &listing.data, &listing.readable),
    )
    .await
    .map_err(|_| timed_out(app))??;
    Ok((listing, snapshot))
}

/// A SPARQL parser reading relative IRIs against `base`.
fn parser(base: &str) -> Result<spargebra::SparqlParser, Stop> {
    spargebra::SparqlParser::new()
        .with_base_iri(base)
        .map_err(|e| Stop::Other(LdpError::bad_request(e.to_string())))
}

/// Whether a resource is one of the documents SPARQL sees: RDF, not an ACL
/// (ACLs describe access, not the pod's data).
fn is_data(record: &ResourceRecord) -> bool {
    rdf::input_syntax(&record.content_type).is_some() && access::protected(&record.path).is_none()
}

/// Runs `work` on `snapshot` in a child process ([`isolate`]) once a slot
/// is free, stopping it when `deadline` passes. `then` runs here, on the
/// snapshot, while the child works; the snapshot is let go after it.
async fn evaluate<T>(
    app: &App,
    deadline: tokio::time::Instant,
    snapshot: index::Snapshot,
    work: impl FnOnce(&oxigraph::store::Store) -> Result<Vec<u8>, Stop> + Send,
    then: impl FnOnce(&index::Snapshot) -> T,
) -> Result<(Vec<u8>, T), LdpError> {
    let slot = tokio::time::timeout_at(deadline, app.sparql.slots.clone().acquire_owned())
        .await
        .map_err(|_| timed_out(app))?
        .map_err(|_| LdpError::unavailable("the server is stopping"))?;
    let cpu = app.config.sparql_timeout;
    let store = &snapshot.store;
    let child = isolate::start(cpu, || work(store).map_err(|stop| stopped(app, stop)));
    let also = then(&snapshot);
    drop(snapshot);
    let result = match child {
        Ok(child) => isolate::wait(child, deadline).await,
        Err(failure) => Err(failure),
    };
    drop(slot);
    let bytes = result.map_err(|failure| match failure {
        isolate::Failure::TimedOut => timed_out(app),
        isolate::Failure::OutOfMemory => LdpError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the SPARQL request needed more than {} MiB of memory; narrow it (more specific patterns, a LIMIT)",
                isolate::MEMORY >> 20
            ),
        ),
        isolate::Failure::Refused(e) => {
            if e.status.is_server_error() {
                tracing::error!(error = %e.message, "a SPARQL evaluation failed");
            }
            e
        }
        isolate::Failure::Crashed(why) => {
            tracing::error!(error = %why, "a SPARQL evaluation failed");
            LdpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the SPARQL evaluation failed; see the server log",
            )
        }
    })?;
    Ok((bytes, also))
}

/// Answers a query. Everything done with its text (parsing, checking the
/// graphs it names, evaluating) happens in the child process.
async fn query(
    app: &App,
    container: &Target,
    text: &str,
    request: &Request,
    headers: &HeaderMap,
    caller: &Caller<'_>,
) -> Result<Response, LdpError> {
    // The sidecar is as visible as its container.
    access::authorize(app, container, &Method::GET, caller, None).await?;
    if app
        .db
        .resource_get(&container.pod, &container.path)
        .await?
        .is_none()
    {
        return Err(LdpError::not_found());
    }
    rdf::check_nesting(text).map_err(LdpError::bad_request)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let deadline = tokio::time::Instant::now() + app.config.sparql_timeout;
    let (_, snapshot) = prepare(app, container, caller, deadline).await?;
    let base = container.url();
    let max = app.config.sparql_max_results;
    let work = |store: &oxigraph::store::Store| -> Result<Vec<u8>, Stop> {
        let parsed = parser(&base)?.parse_query(text).map_err(|e| {
            Stop::Other(LdpError::bad_request(format!("invalid SPARQL query: {e}")))
        })?;
        let (from, from_named) = protocol::dataset_of(&parsed, request).map_err(Stop::Other)?;
        for graph in from
            .iter()
            .flatten()
            .chain(from_named.iter().flatten())
            .map(|g| g.as_str().to_string())
            .chain(protocol::graph_constants(&parsed.to_sse()))
        {
            if !graph.starts_with(&base) {
                return Err(Stop::Other(LdpError::bad_request(format!(
                    "the query names the graph <{graph}>, outside {base}: a query sees only the documents under its container"
                ))));
            }
        }
        let shape = Shape::of(&parsed, accept).map_err(Stop::Other)?;
        let mut prepared = SparqlEvaluator::new().for_query(parsed);
        let dataset = prepared.dataset_mut();
        match (from, from_named) {
            (None, None) => dataset.set_default_graph_as_union(),
            (from, from_named) => {
                dataset.set_default_graph(
                    from.unwrap_or_default()
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                );
                dataset.set_available_named_graphs(
                    from_named
                        .unwrap_or_default()
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                );
            }
        }
        let results = prepared
            .on_store(store)
            .execute()
            .map_err(Stop::Evaluation)?;
        // The media type, a newline, the results.
        let mut answer = shape.media_type().as_bytes().to_vec();
        answer.push(b'\n');
        answer.extend(shape.write(results, max, &base)?);
        Ok(answer)
    };
    let (answer, ()) = evaluate(app, deadline, snapshot, work, |_| ()).await?;
    let split = answer.iter().position(|b| *b == b'\n').unwrap_or(0);
    let media_type = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut resp = (StatusCode::OK, answer[split + 1..].to_vec()).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// How a query's answer is written.
enum Shape {
    Results(&'static str, QueryResultsFormat),
    Graph(Syntax),
}

impl Shape {
    fn of(query: &spargebra::Query, accept: Option<&str>) -> Result<Shape, LdpError> {
        let graph = matches!(
            query,
            spargebra::Query::Construct { .. } | spargebra::Query::Describe { .. }
        );
        if graph {
            let offers: Vec<&str> = Syntax::OUTPUT.iter().map(|s| s.media_type()).collect();
            let chosen = rdf::preferred(accept, &offers).ok_or_else(|| not_acceptable(&offers))?;
            let syntax = Syntax::OUTPUT
                .into_iter()
                .find(|s| s.media_type() == chosen)
                .unwrap_or(Syntax::Turtle);
            return Ok(Shape::Graph(syntax));
        }
        let offers: Vec<&str> = RESULT_TYPES.iter().map(|(t, _)| *t).collect();
        let chosen = rdf::preferred(accept, &offers).ok_or_else(|| not_acceptable(&offers))?;
        let (media_type, format) = RESULT_TYPES
            .into_iter()
            .find(|(t, _)| *t == chosen)
            .unwrap_or(RESULT_TYPES[0]);
        Ok(Shape::Results(media_type, format))
    }

    fn media_type(&self) -> &'static str {
        match self {
            Shape::Results(media_type, _) => media_type,
            Shape::Graph(syntax) => syntax.media_type(),
        }
    }

    /// Writes the results, stopping past `max` rows or triples.
    fn write(self, results: QueryResults<'_>, max: u64, base: &str) -> Result<Vec<u8>, Stop> {
        let io = |e: std::io::Error| {
            Stop::Other(LdpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the results: {e}"),
            ))
        };
        match (self, results) {
            (Shape::Results(_, format), QueryResults::Solutions(solutions)) => {
                let mut writer = QueryResultsSerializer::from_format(format)
                    .serialize_solutions_to_writer(Vec::new(), solutions.variables().to_vec())
                    .map_err(io)?;
                let mut count = 0u64;
                for solution in solutions {
                    let solution = solution.map_err(Stop::Evaluation)?;
                    count += 1;
                    if count > max {
                        return Err(Stop::TooMany);
                    }
                    writer.serialize(&solution).map_err(io)?;
                }
                writer.finish().map_err(io)
            }
            (Shape::Results(_, format), QueryResults::Boolean(value)) => {
                QueryResultsSerializer::from_format(format)
                    .serialize_boolean_to_writer(Vec::new(), value)
                    .map_err(io)
            }
            (Shape::Graph(syntax), QueryResults::Graph(triples)) => {
                let mut all: Vec<Triple> = Vec::new();
                for triple in triples {
                    all.push(triple.map_err(Stop::Evaluation)?);
                    if all.len() as u64 > max {
                        return Err(Stop::TooMany);
                    }
                }
                Ok(rdf::serialize(&all, syntax, base))
            }
            _ => Err(Stop::Other(LdpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the query's results are not of the kind it asked for",
            ))),
        }
    }
}

fn not_acceptable(offers: &[&str]) -> LdpError {
    LdpError::new(
        StatusCode::NOT_ACCEPTABLE,
        format!(
            "no acceptable result format: ask for one of {}",
            offers.join(", ")
        ),
    )
}
