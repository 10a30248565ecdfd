//! The container-walking migrator: copies a container tree from one Solid
//! server to another over plain LDP (GET from the source, PUT to the
//! target), so that a pod moves out to, or in from, any Solid server.
//!
//! 1. **Walk** the source: GET each container, follow `ldp:contains`.
//! 2. **Copy** every document, then make the empty containers (a PUT of a
//!    path ending in `/`; the others appear with their children), then the
//!    auxiliary resources found through each resource's `Link` headers
//!    (`rel="describedby"`, then `rel="acl"`, deepest first, so that an ACL
//!    cannot lock the copier out before it is done). Non-RDF bytes stream
//!    through unchanged; RDF is parsed, its IRIs under the source base are
//!    rewritten to the target base ([`rebase`]), and it is written in the
//!    same syntax. Container listings and other server-managed triples are
//!    not data and are not copied.
//! 3. **Resume**: each copied resource is appended to a state file
//!    ([`state`]) with both ETags; a rerun skips resources whose ETags on
//!    both sides still match.
//! 4. **Verify** ([`verify`]): walk both trees again and compare them.

pub mod rebase;
pub mod remote;
pub mod state;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, header};

pub use rebase::Rebase;
pub use remote::{Endpoint, Head, client_builder};
use state::{Done, State};

use crate::rdf::{self, Syntax};

/// Requests in flight at once against each server.
const CONCURRENCY: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "cannot reach {url} ({reason}); check that the server runs and the URL is right, then rerun to resume"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "{method} {url} answered {status}: the copier does not log in, so it copies only what anyone may read (from the source) and write (to the target); for the copy, give foaf:Agent those modes in the containers' ACLs, or use a --public-write pod"
    )]
    Auth {
        method: String,
        url: String,
        status: u16,
    },
    #[error("{method} {url} answered {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        method: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{0}")]
    Other(String),
    #[error("the copy differs from its source in {} place(s):\n  {}", .0.len(), .0.join("\n  "))]
    Differences(Vec<String>),
}

/// A container tree, as paths relative to its base.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    /// Every container, the base itself as `""`; paths end in `/`.
    pub containers: BTreeSet<String>,
    /// Every document that is not an auxiliary resource.
    pub documents: BTreeSet<String>,
    /// Containers without children.
    pub empty: BTreeSet<String>,
    /// Each container's head, from its listing (for its auxiliary links).
    pub heads: BTreeMap<String, Head>,
}

/// Whether `name`, a child of a container whose children are `siblings`,
/// is the auxiliary resource of the container or of a sibling (`.acl`,
/// `.meta`, `x.acl`, `x.meta`). Servers that store them as plain files list
/// them; they are copied through the `Link` headers of what they describe.
fn auxiliary_name(name: &str, siblings: &BTreeSet<&str>) -> bool {
    [".acl", ".meta"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|stem| stem.is_empty() || siblings.contains(stem))
    })
}

/// Walks the tree under `ep.base`.
pub async fn walk(ep: &Endpoint, progress: &ProgressBar) -> Result<Tree, WalkError> {
    let mut tree = Tree::default();
    let mut queue = vec![String::new()];
    progress.set_length(1);
    while let Some(rel) = queue.pop() {
        let url = ep.url(&rel);
        let (head, children) = ep.list(&url).await.map_err(|e| match e {
            WalkError::Status { status: 404, .. } if rel.is_empty() => {
                WalkError::Other(format!("there is no container at {url} (404)"))
            }
            e => e,
        })?;
        progress.set_message(format!("walking {url}"));
        let names: Vec<&str> = children
            .iter()
            .filter_map(|c| c.strip_prefix(&url))
            .collect();
        let documents: BTreeSet<&str> = names
            .iter()
            .copied()
            .filter(|n| !n.ends_with('/'))
            .collect();
        let mut any = false;
        for name in names {
            any = true;
            if name.ends_with('/') {
                queue.push(format!("{rel}{name}"));
                progress.inc_length(1);
            } else if !auxiliary_name(name, &documents) {
                tree.documents.insert(format!("{rel}{name}"));
            }
        }
        if !any {
            tree.empty.insert(rel.clone());
        }
        tree.heads.insert(rel.clone(), head);
        tree.containers.insert(rel);
        progress.inc(1);
    }
    Ok(tree)
}

/// What a copy did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub containers: usize,
    pub documents: usize,
    pub copied: usize,
    pub skipped: usize,
    pub auxiliary: usize,
    pub bytes: u64,
    pub state_file: PathBuf,
}

pub struct Options {
    pub source: Endpoint,
    pub target: Endpoint,
    /// The state file; `None` for the default under the temp directory.
    pub state: Option<PathBuf>,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

struct Ctx<'a> {
    source: &'a Endpoint,
    target: &'a Endpoint,
    rebase: Rebase,
    state: Mutex<State>,
    bar: ProgressBar,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
enum AuxKind {
    Description,
    Acl,
}

impl AuxKind {
    fn rel(self) -> &'static str {
        match self {
            AuxKind::Description => "describedby",
            AuxKind::Acl => "acl",
        }
    }
}

/// An auxiliary resource to copy: where it is on both sides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AuxJob {
    kind: AuxKind,
    source: String,
    target: String,
}

fn aux_jobs(rebase: &Rebase, source: &Head, target: &Head) -> Vec<AuxJob> {
    [AuxKind::Description, AuxKind::Acl]
        .into_iter()
        .filter_map(|kind| {
            let s = source.links.get(kind.rel())?;
            let t = target
                .links
                .get(kind.rel())
                .cloned()
                .unwrap_or_else(|| rebase.iri(s));
            Some(AuxJob {
                kind,
                source: s.clone(),
                target: t,
            })
        })
        .collect()
}

pub fn bar(progress: bool, what: &str) -> ProgressBar {
    let target = if progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>9} [{{bar:30}}] {{pos}}/{{len}} {{wide_msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Copies the tree under `opts.source.base` to `opts.target.base`, then verifies it.
pub async fn copy(opts: Options) -> Result<Report, WalkError> {
    for ep in [&opts.source, &opts.target] {
        if !ep.base.ends_with('/') || url::Url::parse(&ep.base).is_err() {
            return Err(WalkError::Other(format!(
                "{} is not a container URL: it must be an absolute http(s) URL ending in /",
                ep.base
            )));
        }
    }
    let state_path = opts
        .state
        .clone()
        .unwrap_or_else(|| state::default_path(&opts.source.base, &opts.target.base));
    let state =
        State::open(&state_path, &opts.source.base, &opts.target.base).map_err(WalkError::Other)?;
    let resumed = state.len();

    let walk_bar = bar(opts.progress, "walk");
    let tree = walk(&opts.source, &walk_bar).await?;
    walk_bar.finish_and_clear();
    eprintln!(
        "walked {}: {} container(s), {} document(s){}",
        opts.source.base,
        tree.containers.len(),
        tree.documents.len(),
        if resumed > 0 {
            format!("; resuming with {resumed} resource(s) done before")
        } else {
            String::new()
        }
    );

    let ctx = Ctx {
        source: &opts.source,
        target: &opts.target,
        rebase: Rebase::new(&opts.source.base, &opts.target.base),
        state: Mutex::new(state),
        bar: bar(opts.progress, "copy"),
    };
    ctx.bar
        .set_length((tree.documents.len() + tree.containers.len()) as u64);
    let mut report = Report {
        containers: tree.containers.len(),
        documents: tree.documents.len(),
        state_file: state_path.clone(),
        ..Report::default()
    };

    // Documents (their containers appear with them).
    let outcomes: Vec<Outcome> = futures::stream::iter(tree.documents.iter())
        .map(|rel| copy_document(&ctx, rel))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut jobs = Vec::new();
    for o in outcomes {
        match o.copied {
            Some(bytes) => {
                report.copied += 1;
                report.bytes += bytes;
            }
            None => report.skipped += 1,
        }
        jobs.extend(o.aux);
    }

    // Containers: make the empty ones, and learn where their auxiliaries go.
    let container_jobs: Vec<Vec<AuxJob>> = futures::stream::iter(tree.containers.iter())
        .map(|rel| ensure_container(&ctx, rel, &tree))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    jobs.extend(container_jobs.into_iter().flatten());

    // Auxiliaries: descriptions, then ACLs from the deepest to the base's own.
    jobs.sort_by(|a, b| {
        (
            a.kind,
            std::cmp::Reverse(a.source.matches('/').count()),
            &a.source,
        )
            .cmp(&(
                b.kind,
                std::cmp::Reverse(b.source.matches('/').count()),
                &b.source,
            ))
    });
    ctx.bar.inc_length(jobs.len() as u64);
    for group in [AuxKind::Description, AuxKind::Acl] {
        let group_jobs: Vec<&AuxJob> = jobs.iter().filter(|j| j.kind == group).collect();
        if group == AuxKind::Acl {
            // One at a time, deepest first.
            for job in group_jobs {
                if copy_aux(&ctx, job).await? {
                    report.auxiliary += 1;
                }
            }
        } else {
            let copied: Vec<bool> = futures::stream::iter(group_jobs)
                .map(|job| copy_aux(&ctx, job))
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            report.auxiliary += copied.into_iter().filter(|c| *c).count();
        }
    }
    ctx.bar.finish_and_clear();
    eprintln!(
        "copied {} document(s) ({} bytes) and {} auxiliary resource(s); {} unchanged since an earlier run",
        report.copied, report.bytes, report.auxiliary, report.skipped
    );

    let checked = verify::verify(&opts.source, &opts.target, opts.progress).await?;
    eprintln!("verified {checked} resource(s): the copy matches its source");
    Ok(report)
}

struct Outcome {
    /// Bytes read from the source, or `None` when skipped as unchanged.
    copied: Option<u64>,
    aux: Vec<AuxJob>,
}

/// The recorded copy of `rel` when both sides still have the versions it
/// recorded: the heads of both sides, or `None` when it must be copied again.
async fn unchanged(
    ctx: &Ctx<'_>,
    rel: &str,
    source_url: &str,
    target_url: &str,
) -> Result<Option<(Head, Head)>, WalkError> {
    let done = ctx.state.lock().expect("state lock").get(rel).cloned();
    let Some(done) = done else {
        return Ok(None);
    };
    let (s, t) = futures::try_join!(ctx.source.head(source_url), ctx.target.head(target_url))?;
    let same = s.exists()
        && t.exists()
        && s.etag.as_deref() == Some(done.source_etag.as_str())
        && t.etag.as_deref() == Some(done.target_etag.as_str());
    Ok(same.then_some((s, t)))
}

fn record(ctx: &Ctx<'_>, rel: &str, source: &Head, target: &Head) -> Result<(), WalkError> {
    // Without ETags on both sides, nothing proves a later run that the copy
    // is still current: such a resource is copied again.
    if let (Some(s), Some(t)) = (&source.etag, &target.etag) {
        ctx.state
            .lock()
            .expect("state lock")
            .record(Done {
                path: rel.to_string(),
                source_etag: s.clone(),
                target_etag: t.clone(),
            })
            .map_err(WalkError::Other)?;
    }
    Ok(())
}

async fn copy_document(ctx: &Ctx<'_>, rel: &str) -> Result<Outcome, WalkError> {
    let source_url = ctx.source.url(rel);
    let target_url = ctx.target.url(rel);
    ctx.bar.set_message(rel.to_string());
    if let Some((s, t)) = unchanged(ctx, rel, &source_url, &target_url).await? {
        ctx.bar.inc(1);
        return Ok(Outcome {
            copied: None,
            aux: aux_jobs(&ctx.rebase, &s, &t),
        });
    }
    let (head, resp) = ctx.source.get(&source_url, None).await?;
    if !head.exists() {
        return Err(remote::status_error("GET", &source_url, resp).await);
    }
    let content_type = head
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    let bytes;
    let put = match rdf::input_syntax(&content_type) {
        Some(syntax) => {
            let body = remote::read_body(&source_url, resp).await?;
            bytes = body.len() as u64;
            let data = rebased(&ctx.rebase, &body, syntax, &source_url)?;
            let ct = syntax.media_type();
            ctx.target
                .send(Method::PUT, &target_url, |r| {
                    r.header(header::CONTENT_TYPE, ct).body(data)
                })
                .await?
        }
        None => {
            let length = resp.content_length();
            bytes = length.unwrap_or(0);
            let stream = resp.bytes_stream();
            ctx.target
                .send(Method::PUT, &target_url, |r| {
                    let r = r
                        .header(header::CONTENT_TYPE, content_type.as_str())
                        .body(reqwest::Body::wrap_stream(stream));
                    match length {
                        Some(n) => r.header(header::CONTENT_LENGTH, n),
                        None => r,
                    }
                })
                .await?
        }
    };
    if !put.status().is_success() {
        return Err(remote::status_error("PUT", &target_url, put).await);
    }
    let target = ctx.target.head(&target_url).await?;
    record(ctx, rel, &head, &target)?;
    ctx.bar.inc(1);
    Ok(Outcome {
        copied: Some(bytes),
        aux: aux_jobs(&ctx.rebase, &head, &target),
    })
}

/// An RDF document moved to its new base, in the same syntax.
fn rebased(
    rebase: &Rebase,
    body: &[u8],
    syntax: Syntax,
    source_url: &str,
) -> Result<Vec<u8>, WalkError> {
    let triples = rdf::parse(body, syntax, source_url)
        .map_err(|e| WalkError::Other(format!("{source_url} cannot be copied as RDF: {e}")))?;
    Ok(write_rdf(&rebase.triples(triples), syntax))
}

/// Serialises with absolute IRIs (relative ones would depend on how each
/// server resolves them), with the usual Solid prefixes in Turtle.
fn write_rdf(triples: &[oxigraph::model::Triple], syntax: Syntax) -> Vec<u8> {
    use oxigraph::io::RdfSerializer;
    let mut serializer = RdfSerializer::from_format(syntax.format());
    if syntax == Syntax::Turtle {
        for (prefix, iri) in [
            ("acl", "http://www.w3.org/ns/auth/acl#"),
            ("foaf", "http://xmlns.com/foaf/0.1/"),
            ("ldp", "http://www.w3.org/ns/ldp#"),
            ("dc", "http://purl.org/dc/terms/"),
            ("solid", "http://www.w3.org/ns/solid/terms#"),
        ] {
            serializer = serializer.with_prefix(prefix, iri).expect("valid prefix");
        }
    }
    let mut writer = serializer.for_writer(Vec::new());
    for t in triples {
        writer
            .serialize_triple(t)
            .expect("writing to memory cannot fail");
    }
    writer.finish().expect("writing to memory cannot fail")
}

async fn ensure_container(ctx: &Ctx<'_>, rel: &str, tree: &Tree) -> Result<Vec<AuxJob>, WalkError> {
    let target_url = ctx.target.url(rel);
    let mut target = ctx.target.head(&target_url).await?;
    if !target.exists() {
        // Containers with children appeared with them; the empty ones need a PUT.
        let resp = ctx
            .target
            .send(Method::PUT, &target_url, |r| {
                r.header(header::CONTENT_TYPE, "text/turtle")
            })
            .await?;
        if !resp.status().is_success() {
            return Err(remote::status_error("PUT", &target_url, resp).await);
        }
        target = ctx.target.head(&target_url).await?;
    }
    ctx.bar.inc(1);
    let source = tree.heads.get(rel).cloned().unwrap_or_default();
    Ok(aux_jobs(&ctx.rebase, &source, &target))
}

/// Copies one auxiliary resource; `false` when the source has none.
async fn copy_aux(ctx: &Ctx<'_>, job: &AuxJob) -> Result<bool, WalkError> {
    ctx.bar.inc(1);
    let Some(rel) = ctx.source.rel(&job.source).map(str::to_string) else {
        tracing::warn!(
            url = job.source,
            "skipping an auxiliary resource outside the copied container"
        );
        return Ok(false);
    };
    if unchanged(ctx, &rel, &job.source, &job.target)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let Some((head, triples)) = read_aux(ctx.source, job.kind, &job.source).await? else {
        return Ok(false);
    };
    let triples = ctx.rebase.triples(triples);
    let turtle = write_rdf(&triples, Syntax::Turtle);
    let resp = ctx
        .target
        .send(Method::PUT, &job.target, |r| {
            r.header(header::CONTENT_TYPE, "text/turtle").body(turtle)
        })
        .await?;
    let status = resp.status();
    if status == reqwest::StatusCode::METHOD_NOT_ALLOWED && job.kind == AuxKind::Description {
        // Some servers (Community Solid Server) only PATCH descriptions.
        let update = format!("INSERT DATA {{\n{}}}\n", ntriples(&triples));
        let resp = ctx
            .target
            .send(Method::PATCH, &job.target, |r| {
                r.header(header::CONTENT_TYPE, "application/sparql-update")
                    .body(update)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(remote::status_error("PATCH", &job.target, resp).await);
        }
    } else if !status.is_success() {
        return Err(remote::status_error("PUT", &job.target, resp).await);
    }
    let target = ctx.target.head(&job.target).await?;
    record(ctx, &rel, &head, &target)?;
    Ok(true)
}

fn ntriples(triples: &[oxigraph::model::Triple]) -> String {
    String::from_utf8(write_rdf(triples, Syntax::NTriples)).expect("N-Triples is UTF-8")
}

/// An auxiliary resource's graph, without the triples its server manages;
/// `None` when there is none, or a description with nothing but
/// server-managed triples.
async fn read_aux(
    ep: &Endpoint,
    kind: AuxKind,
    url: &str,
) -> Result<Option<(Head, Vec<oxigraph::model::Triple>)>, WalkError> {
    let (head, resp) = ep.get(url, Some("text/turtle")).await?;
    if head.status == 404 || head.status == 410 {
        return Ok(None);
    }
    if !head.exists() {
        return Err(remote::status_error("GET", url, resp).await);
    }
    let ct = head.content_type.clone().unwrap_or_default();
    let body = remote::read_body(url, resp).await?;
    let syntax = rdf::input_syntax(&ct).ok_or_else(|| {
        WalkError::Other(format!(
            "{url} ({}) should be RDF but is {ct:?}",
            kind.rel()
        ))
    })?;
    let mut triples = rdf::parse(&body, syntax, url)
        .map_err(|e| WalkError::Other(format!("{url} cannot be read as RDF: {e}")))?;
    if kind == AuxKind::Description {
        triples.retain(|t| !rebase::server_managed(t));
        if triples.is_empty() {
            return Ok(None);
        }
    }
    // An empty ACL grants nothing, which is worth copying too.
    Ok(Some((head, triples)))
}
