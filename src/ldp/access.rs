//! Applies Web Access Control ([`crate::auth::wac`]) to requests for the
//! pods this node owns: finds the ACLs that govern the target and its
//! container, resolves the caller's groups, decides, and refuses with 401,
//! 403 or 404.
//!
//! Parsed ACLs and group documents are cached per node ([`Cache`]). Every
//! write on this node forgets the entry for the path it wrote before it
//! answers; every other node forgets it when its outbox follower sees the
//! change (and forgets a whole pod when the pod changes owner), so an ACL
//! edit holds on the owner at once and everywhere within moments.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode, header};

use super::error::LdpError;
use super::target::Target;
use crate::app::App;
use crate::auth::Credentials;
use crate::auth::wac::{self, Acl, Agent, Modes, On, Request};
use crate::rdf::patch::Shape;

const VCARD_HAS_MEMBER: &str = "http://www.w3.org/2006/vcard/ns#hasMember";
/// Entries kept before the cache starts over (a bound on memory, not a
/// working-set estimate: one entry is a few hundred bytes).
const MAX_ENTRIES: usize = 100_000;
/// The largest ACL or group document read: a bigger one grants nothing.
const MAX_DOCUMENT: i64 = 1 << 20;

/// `(group IRI, member WebID)` pairs a group document states.
type Members = HashSet<(String, String)>;

/// Parsed ACLs (or their absence) and group documents, by pod and path.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    acls: HashMap<String, HashMap<String, Option<Arc<Acl>>>>,
    groups: HashMap<String, HashMap<String, Arc<Members>>>,
    entries: usize,
    /// Per pod, moves on every forget, so that a document read before a
    /// change is not cached after it.
    generations: HashMap<String, u64>,
}

impl Inner {
    fn bump(&mut self, pod: &str) {
        *self.generations.entry(pod.to_string()).or_default() += 1;
    }

    /// Makes room: first the records of absent ACLs (anyone can make
    /// those by asking for paths that do not exist), then everything.
    fn make_room(&mut self) {
        let mut removed = 0;
        for m in self.acls.values_mut() {
            let before = m.len();
            m.retain(|_, acl| acl.is_some());
            removed += before - m.len();
        }
        self.entries -= removed;
        if self.entries >= MAX_ENTRIES / 2 {
            self.acls.clear();
            self.groups.clear();
            self.entries = 0;
        }
    }
}

impl Cache {
    /// Forgets what is cached for one resource (it was written or deleted).
    pub fn forget(&self, pod: &str, path: &str) {
        let mut inner = self.inner.lock().expect("access cache");
        inner.bump(pod);
        let mut removed = 0;
        if let Some(m) = inner.acls.get_mut(pod) {
            removed += m.remove(path).is_some() as usize;
        }
        if let Some(m) = inner.groups.get_mut(pod) {
            removed += m.remove(path).is_some() as usize;
        }
        inner.entries -= removed;
    }

    /// Forgets a whole pod (it moved to another node).
    pub fn forget_pod(&self, pod: &str) {
        let mut inner = self.inner.lock().expect("access cache");
        inner.bump(pod);
        let removed = inner.acls.remove(pod).map_or(0, |m| m.len())
            + inner.groups.remove(pod).map_or(0, |m| m.len());
        inner.entries -= removed;
    }

    fn generation(&self, pod: &str) -> u64 {
        let inner = self.inner.lock().expect("access cache");
        inner.generations.get(pod).copied().unwrap_or_default()
    }

    fn acl(&self, pod: &str, path: &str) -> Option<Option<Arc<Acl>>> {
        let inner = self.inner.lock().expect("access cache");
        inner.acls.get(pod)?.get(path).cloned()
    }

    fn members(&self, pod: &str, path: &str) -> Option<Arc<Members>> {
        let inner = self.inner.lock().expect("access cache");
        inner.groups.get(pod)?.get(path).cloned()
    }

    /// Caches what was read at `generation`, unless the pod changed since.
    fn keep(&self, generation: u64, pod: &str, path: &str, entry: Entry) {
        let mut inner = self.inner.lock().expect("access cache");
        if inner.generations.get(pod).copied().unwrap_or_default() != generation {
            return;
        }
        if inner.entries >= MAX_ENTRIES {
            inner.make_room();
        }
        let added = match entry {
            Entry::Acl(acl) => inner
                .acls
                .entry(pod.to_string())
                .or_default()
                .insert(path.to_string(), acl)
                .is_none(),
            Entry::Members(m) => inner
                .groups
                .entry(pod.to_string())
                .or_default()
                .insert(path.to_string(), m)
                .is_none(),
        };
        inner.entries += added as usize;
    }
}

enum Entry {
    Acl(Option<Arc<Acl>>),
    Members(Arc<Members>),
}

/// The ACL path for a resource path: `/a/b` → `/a/b.acl`, `/a/` → `/a/.acl`.
fn acl_path(path: &str) -> String {
    format!("{path}.acl")
}

/// The container of a path (`None` for the root).
fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    Some(&trimmed[..=cut])
}

/// The resource an `.acl` protects, if the path is one.
pub fn protected(path: &str) -> Option<&str> {
    path.strip_suffix(".acl")
}

/// Reads a stored RDF document's triples; `None` when it does not exist.
async fn read_triples(
    app: &App,
    target: &Target,
    path: &str,
) -> Result<Option<Result<Vec<oxigraph::model::Triple>, String>>, LdpError> {
    let Some(record) = app.db.resource_get(&target.pod, path).await? else {
        return Ok(None);
    };
    let Some(syntax) = crate::rdf::input_syntax(&record.content_type) else {
        return Ok(Some(Err(format!("{} is not RDF", record.content_type))));
    };
    if record.size > MAX_DOCUMENT {
        return Ok(Some(Err(format!(
            "{} bytes is more than the {MAX_DOCUMENT} an ACL or group document may have",
            record.size
        ))));
    }
    let bytes = super::write::read_stored(app, &record).await?;
    Ok(Some(crate::rdf::parse(
        &bytes,
        syntax,
        &target.url_of(path),
    )))
}

/// One ACL document, if it exists. A damaged one grants nothing (the pod
/// owner can still replace it).
async fn acl_at(app: &App, target: &Target, path: &str) -> Result<Option<Arc<Acl>>, LdpError> {
    if let Some(cached) = app.access.acl(&target.pod, path) {
        return Ok(cached);
    }
    let generation = app.access.generation(&target.pod);
    let subject = target.url_of(protected(path).unwrap_or(path));
    let acl = match read_triples(app, target, path).await? {
        None => None,
        Some(Ok(triples)) => Some(Arc::new(Acl::from_triples(&subject, &triples))),
        Some(Err(e)) => {
            tracing::warn!(pod = %target.pod, %path, error = %e, "an ACL does not parse: it grants nothing");
            Some(Arc::new(Acl::from_triples(&subject, &[])))
        }
    };
    app.access
        .keep(generation, &target.pod, path, Entry::Acl(acl.clone()));
    Ok(acl)
}

/// The governing ACL of `path` and whether it is inherited: its own, else
/// the nearest container's (`None` when no ACL exists up to the root).
async fn governing(
    app: &App,
    target: &Target,
    path: &str,
) -> Result<Option<(Arc<Acl>, bool)>, LdpError> {
    let mut current = Some(path);
    let mut inherited = false;
    while let Some(p) = current {
        if let Some(acl) = acl_at(app, target, &acl_path(p)).await? {
            return Ok(Some((acl, inherited)));
        }
        inherited = true;
        current = parent(p);
    }
    Ok(None)
}

/// The members a group document in this pod lists, by group.
async fn members_at(app: &App, target: &Target, path: &str) -> Result<Arc<Members>, LdpError> {
    if let Some(cached) = app.access.members(&target.pod, path) {
        return Ok(cached);
    }
    let generation = app.access.generation(&target.pod);
    let mut members = Members::new();
    match read_triples(app, target, path).await? {
        Some(Ok(triples)) => {
            for t in triples {
                if t.predicate.as_str() != VCARD_HAS_MEMBER {
                    continue;
                }
                if let (
                    oxigraph::model::NamedOrBlankNode::NamedNode(group),
                    oxigraph::model::Term::NamedNode(member),
                ) = (&t.subject, &t.object)
                {
                    members.insert((group.as_str().to_string(), member.as_str().to_string()));
                }
            }
        }
        Some(Err(e)) => {
            tracing::warn!(pod = %target.pod, %path, error = %e, "a group document does not parse: it has no members");
        }
        None => {}
    }
    let members = Arc::new(members);
    app.access.keep(
        generation,
        &target.pod,
        path,
        Entry::Members(members.clone()),
    );
    Ok(members)
}

/// The groups of `acl` that `webid` belongs to. Only groups described in
/// this pod count; the server reads them itself, so they may be private.
async fn groups_of(
    app: &App,
    target: &Target,
    acl: &Acl,
    webid: &str,
) -> Result<HashSet<String>, LdpError> {
    let mut found = HashSet::new();
    for group in acl.groups() {
        let document = group.split('#').next().unwrap_or(group);
        let Some(rest) = document.strip_prefix(target.pod_url.as_str()) else {
            continue;
        };
        let path = format!("/{rest}");
        if path.ends_with('/') || super::target::check_path(&path).is_err() {
            continue;
        }
        let members = members_at(app, target, &path).await?;
        if members.contains(&(group.to_string(), webid.to_string())) {
            found.insert(group.to_string());
        }
    }
    Ok(found)
}

/// Who is asking, as the decisions need it.
pub struct Caller<'a> {
    pub webid: Option<&'a str>,
    /// The cluster's pod mover: every mode.
    pub mover: bool,
    /// The requesting app's origin, unless it is this server's own.
    pub origin: Option<String>,
}

impl<'a> Caller<'a> {
    pub fn of(
        app: &App,
        target: &Target,
        headers: &HeaderMap,
        credentials: &'a Credentials,
    ) -> Self {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(wac::normalize_origin)
            .filter(|o| {
                // The server's own pages and the pod's own origin are
                // trusted (the base URL is parsed once, at start-up).
                let pod_origin = url::Url::parse(&target.pod_url).ok().map(|u| u.origin());
                app.config.base_url.origin().ascii_serialization() != *o
                    && pod_origin.is_none_or(|p| p.ascii_serialization() != *o)
            });
        Caller {
            webid: credentials.agent().map(|a| a.webid.as_str()),
            mover: matches!(credentials, Credentials::Mover),
            origin,
        }
    }
}

/// The modes the caller (and, separately, the public) has on `path`.
async fn modes_on(
    app: &App,
    target: &Target,
    path: &str,
    caller: &Caller<'_>,
) -> Result<(Modes, Modes), LdpError> {
    let Some((acl, inherited)) = governing(app, target, path).await? else {
        return Ok((Modes::NONE, Modes::NONE));
    };
    let groups = match caller.webid {
        Some(webid) if acl.groups().next().is_some() => groups_of(app, target, &acl, webid).await?,
        _ => HashSet::new(),
    };
    let origin = caller.origin.as_deref();
    let user = acl.modes(
        &Agent {
            webid: caller.webid,
            groups: &groups,
            origin,
        },
        inherited,
    );
    let public = acl.modes(
        &Agent {
            webid: None,
            groups: &groups,
            origin,
        },
        inherited,
    );
    Ok((user.union(public), public))
}

/// What a write was allowed as, so that it cannot become something else
/// before it commits: a PUT allowed only because the resource did not
/// exist must still not exist, and one allowed only because it existed
/// must still be the version seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Absent,
    Version(String),
}

/// An allowed request: the caller's and the public's modes on the target,
/// and the pin its write must hold to.
pub struct Decision {
    pub user: Modes,
    pub public: Modes,
    pub pin: Option<Pin>,
}

/// Whether the caller is the owner of the target's pod.
async fn is_owner(app: &App, target: &Target, caller: &Caller<'_>) -> Result<bool, LdpError> {
    let Some(webid) = caller.webid else {
        return Ok(false);
    };
    let pod = app.placement.pod(&app.db, &target.pod).await?;
    Ok(pod.and_then(|p| p.owner).as_deref() == Some(webid))
}

/// Decides a request: `Ok` to go on, or the refusal. `patch` is what a
/// PATCH does.
pub async fn authorize(
    app: &App,
    target: &Target,
    method: &Method,
    caller: &Caller<'_>,
    patch: Option<Shape>,
) -> Result<Decision, LdpError> {
    // The storage description is the server's, not the pod's data: apps
    // read it to find the notification services before they log in.
    if target.path == "/.well-known/solid" && matches!(*method, Method::GET | Method::HEAD) {
        return Ok(Decision {
            user: Modes::READ,
            public: Modes::READ,
            pin: None,
        });
    }
    if caller.mover {
        return Ok(Decision {
            user: Modes::ALL,
            public: Modes::NONE,
            pin: None,
        });
    }
    // An `.acl` is governed by the resource it protects.
    let (subject, on_acl) = match protected(&target.path) {
        Some(p) => (p, true),
        None => (target.path.as_str(), false),
    };
    let mut known: Option<Option<String>> = None;
    let request = match *method {
        Method::PUT | Method::PATCH => {
            let etag = app
                .db
                .resource_get(&target.pod, &target.path)
                .await?
                .map(|r| r.etag);
            let found = etag.is_some();
            known = Some(etag);
            match (method == Method::PUT, found) {
                (true, true) => Request::Replace,
                (true, false) => Request::Create,
                (false, exists) => {
                    let shape = patch.unwrap_or(Shape::EVERYTHING);
                    Request::Patch {
                        inserts: shape.inserts,
                        deletes: shape.deletes,
                        reads: shape.reads,
                        exists,
                    }
                }
            }
        }
        Method::POST => Request::Post,
        Method::DELETE => Request::Delete,
        _ => Request::Read,
    };
    let (user, public) = modes_on(app, target, subject, caller).await?;
    // The pod's owner can always read and write its ACLs, so that it
    // cannot lock itself out.
    if on_acl && is_owner(app, target, caller).await? {
        return Ok(Decision {
            user: Modes::ALL,
            public,
            pin: None,
        });
    }
    let mut parent_modes: Option<Modes> = None;
    let mut allowed = async |request: Request| -> Result<Option<Modes>, LdpError> {
        for (on, wanted) in wac::required(request, on_acl) {
            let have = match on {
                On::Target => user,
                On::Parent => match (parent_modes, parent(&target.path)) {
                    (Some(m), _) => m,
                    (None, Some(p)) => {
                        let m = modes_on(app, target, p, caller).await?.0;
                        parent_modes = Some(m);
                        m
                    }
                    // The root has no container: whether it may be created
                    // or deleted is the LDP handler's business.
                    (None, None) => Modes::ALL,
                },
            };
            if !have.covers(wanted) {
                return Ok(Some(wanted));
            }
        }
        Ok(None)
    };
    if allowed(request).await?.is_none() {
        // The same request on the resource in its other state (existing or
        // not) may be refused: then the write must find it as it was seen.
        let other = match request {
            Request::Create => Some(Request::Replace),
            Request::Replace => Some(Request::Create),
            Request::Patch {
                inserts,
                deletes,
                reads,
                exists: true,
            } => Some(Request::Patch {
                inserts,
                deletes,
                reads,
                exists: false,
            }),
            _ => None,
        };
        let pin = match other {
            Some(other) if allowed(other).await?.is_some() => match known.clone().flatten() {
                Some(etag) => Some(Pin::Version(etag)),
                None => Some(Pin::Absent),
            },
            _ => None,
        };
        return Ok(Decision { user, public, pin });
    }
    let creating = matches!(
        request,
        Request::Create | Request::Patch { exists: false, .. }
    );
    let found = match known {
        Some(etag) => etag.is_some(),
        None => app
            .db
            .resource_get(&target.pod, &target.path)
            .await?
            .is_some(),
    };
    let may_read = user.covers(if on_acl { Modes::CONTROL } else { Modes::READ });
    let status = wac::refusal(caller.webid.is_some(), may_read, found, creating);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    Err(match status {
        StatusCode::NOT_FOUND => LdpError::not_found(),
        StatusCode::UNAUTHORIZED => LdpError::new(
            status,
            "this resource is not public: log in with a Solid-OIDC access token (DPoP) to use it",
        )
        .with(
            header::WWW_AUTHENTICATE,
            format!("DPoP algs=\"{}\"", crate::auth::jose::ALGORITHMS),
        ),
        _ => LdpError::new(
            status,
            format!(
                "{} may not {} here; the owner of the pod can grant it in an ACL",
                caller.webid.unwrap_or("this agent"),
                what(method, on_acl)
            ),
        ),
    })
}

fn what(method: &Method, on_acl: bool) -> &'static str {
    if on_acl {
        return "read or change access control";
    }
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "write",
    }
}

/// Whether the caller may read `target` (for notification subscriptions
/// on the owner node): `Ok(())`, or the refusal.
pub async fn may_read(app: &App, target: &Target, caller: &Caller<'_>) -> Result<(), LdpError> {
    authorize(app, target, &Method::GET, caller, None)
        .await
        .map(|_| ())
}

/// Whether the caller may read `target` (an existing resource), without
/// the refusal: what the SPARQL sidecar asks of every document it might
/// query. An `.acl` needs Control, as a GET of it does.
pub async fn readable(app: &App, target: &Target, caller: &Caller<'_>) -> Result<bool, LdpError> {
    if caller.mover {
        return Ok(true);
    }
    let (subject, on_acl) = match protected(&target.path) {
        Some(p) => (p, true),
        None => (target.path.as_str(), false),
    };
    let (user, _) = modes_on(app, target, subject, caller).await?;
    if on_acl {
        return Ok(user.covers(Modes::CONTROL) || is_owner(app, target, caller).await?);
    }
    Ok(user.covers(Modes::READ))
}

/// Writes an ACL document into a pod (at pod creation).
pub async fn write_acl(
    app: &App,
    pod: &str,
    pod_url: &str,
    path: &str,
    text: String,
) -> Result<(), String> {
    let target = Target {
        pod: pod.to_string(),
        path: path.to_string(),
        pod_url: pod_url.to_string(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/turtle"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&text.len().to_string()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    super::put::put(app, &target, &headers, text.into())
        .await
        .map(|_| ())
        .map_err(|e| e.message)
}

/// The setting that records a pod's ACLs as made by this version.
pub fn baseline_key(pod: &str) -> String {
    format!("access-control:{pod}")
}

/// Records that a new pod's ACLs were made by xpod (so the start-up pass
/// leaves them alone).
pub async fn mark_baseline(app: &App, pod: &str) -> Result<(), crate::db::DbError> {
    app.db
        .setting_init(&baseline_key(pod), "1")
        .await
        .map(|_| ())
}

/// Every `.acl` in a pod, walking its containers.
async fn acls_in(app: &App, pod: &str) -> Result<Vec<String>, crate::db::DbError> {
    let mut found = Vec::new();
    let mut containers = vec!["/".to_string()];
    while let Some(container) = containers.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = app
                .db
                .resource_children(pod, &container, after.as_deref(), 500)
                .await?;
            for child in &page {
                if child.path.ends_with('/') {
                    containers.push(child.path.clone());
                } else if child.path.ends_with(".acl") {
                    found.push(child.path.clone());
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(last.path.clone()),
                _ => break,
            }
        }
    }
    Ok(found)
}

/// Pods made before access control existed were open to anyone, who may
/// have planted ACLs in them. When a node starts, each of its pods that
/// has not been through this gets the ACLs it would get today (its
/// owner's, with a public WebID profile; without an owner, open to
/// everyone as it was), and every other ACL in it is removed, its text
/// kept in the log. Then the pod is marked, and never touched again.
pub async fn give_old_pods_an_acl(app: &App) -> Result<(), crate::app::StartupError> {
    let failed = |e: crate::db::DbError| {
        crate::app::StartupError(format!(
            "cannot check the pods' access control lists: {e}; check that the database is reachable"
        ))
    };
    for pod in app.db.pod_list().await.map_err(failed)? {
        if pod.node_id != app.node.id
            || app
                .db
                .setting_get(&baseline_key(&pod.pod_id))
                .await
                .map_err(failed)?
                .is_some()
        {
            continue;
        }
        let profile = format!("{}profile/card#me", pod.base_url);
        let mut writes = vec![(
            "/.acl",
            match &pod.owner {
                Some(owner) => wac::pod_root_acl(owner),
                None => wac::public_write_acl(),
            },
        )];
        if pod.owner.as_deref() == Some(profile.as_str()) {
            writes.push(("/profile/card.acl", wac::profile_acl(&profile)));
        }
        let target = Target {
            pod: pod.pod_id.clone(),
            path: "/".into(),
            pod_url: pod.base_url.clone(),
        };
        for path in acls_in(app, &pod.pod_id).await.map_err(failed)? {
            if writes.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let text = match read_triples(app, &target, &path).await {
                Ok(Some(Ok(triples))) => String::from_utf8_lossy(&crate::rdf::serialize(
                    &triples,
                    crate::rdf::Syntax::Turtle,
                    &target.url_of(&path),
                ))
                .into_owned(),
                _ => "(unreadable)".into(),
            };
            super::write::delete_resource(app, &pod.pod_id, &path, &Default::default())
                .await
                .map_err(failed)?;
            tracing::warn!(
                pod = %pod.pod_id,
                %path,
                acl = %text.chars().take(4096).collect::<String>(),
                "removed an ACL written while the pod was open to anyone; put it back if it is yours"
            );
        }
        for (path, text) in writes {
            write_acl(app, &pod.pod_id, &pod.base_url, path, text)
                .await
                .map_err(|e| {
                    crate::app::StartupError(format!(
                        "cannot give pod {} an ACL at {path}: {e}; check the storage, then start again",
                        pod.pod_id
                    ))
                })?;
        }
        mark_baseline(app, &pod.pod_id).await.map_err(failed)?;
        match &pod.owner {
            Some(owner) => {
                tracing::warn!(pod = %pod.pod_id, %owner, "the pod was open to anyone: it is now its owner's alone")
            }
            None => tracing::warn!(
                pod = %pod.pod_id,
                "the pod was open to anyone and has no owner: it stays open to everyone; write its /.acl to restrict it"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_acl_paths() {
        assert_eq!(parent("/a/b"), Some("/a/"));
        assert_eq!(parent("/a/b/"), Some("/a/"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(acl_path("/a/"), "/a/.acl");
        assert_eq!(protected("/a/b.acl"), Some("/a/b"));
        assert_eq!(protected("/a/.acl"), Some("/a/"));
    }

    #[test]
    fn the_cache_forgets_what_changed_and_never_keeps_a_stale_read() {
        let cache = Cache::default();
        let acl = Arc::new(Acl::from_triples("https://x.example/p/", &[]));
        let g = cache.generation("p");
        cache.keep(g, "p", "/.acl", Entry::Acl(Some(acl.clone())));
        cache.keep(g, "p", "/a.acl", Entry::Acl(None));
        assert!(matches!(cache.acl("p", "/.acl"), Some(Some(_))));
        assert!(matches!(cache.acl("p", "/a.acl"), Some(None)));
        // A change in another pod does not stop this one's reads being kept.
        let other = cache.generation("q");
        cache.forget("q", "/x");
        assert_eq!(cache.generation("p"), g);
        assert_ne!(cache.generation("q"), other);
        cache.forget("p", "/a.acl");
        assert!(cache.acl("p", "/a.acl").is_none());
        assert!(cache.acl("p", "/.acl").is_some());
        // A read that started before the forget is not cached.
        cache.keep(g, "p", "/a.acl", Entry::Acl(None));
        assert!(cache.acl("p", "/a.acl").is_none());
        cache.forget_pod("p");
        assert!(cache.acl("p", "/.acl").is_none());
        assert_eq!(cache.inner.lock().unwrap().entries, 0);
    }

    #[test]
    fn a_full_cache_drops_absent_acls_first() {
        let cache = Cache::default();
        let acl = Arc::new(Acl::from_triples("https://x.example/p/", &[]));
        cache.keep(0, "p", "/.acl", Entry::Acl(Some(acl)));
        for i in 0..MAX_ENTRIES {
            cache.keep(0, "p", &format!("/{i}/.acl"), Entry::Acl(None));
        }
        assert!(cache.acl("p", "/.acl").is_some(), "a real ACL survives");
        assert!(cache.inner.lock().unwrap().entries < MAX_ENTRIES / 2);
    }
}
