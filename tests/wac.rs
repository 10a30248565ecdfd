//! Web Access Control over HTTP (issue 10), as a user of a pod notices it:
//! who may do what where (a table, on SQLite and on PostgreSQL), ACL
//! documents needing Control, path tricks that must not reach a private
//! resource, and decisions on a pod reached through another node.
//!
//! Every agent is a real WebID with a DPoP-bound token from xpod's own
//! identity provider; ACLs are set up by PUTting Turtle as the pod owner.

mod support;

use reqwest::Client;
use reqwest::header::HeaderMap;

use support::account::{Account, Agent, account_sequence, more_credentials, signed};
use support::cluster::{Cluster, served_by};
use support::{Postgres, Server, borrowed, raw_request, xpod};
use xpod::config::DatabaseConfig;

const PREFIXES: &str = "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                        @prefix foaf: <http://xmlns.com/foaf/0.1/>.\n\
                        @prefix vcard: <http://www.w3.org/2006/vcard/ns#>.\n";

/// What every test document holds before a request may change it.
const DOC: &str = "<#doc> <http://example.org/state> \"original\".\n";
const REPLACED: &str = "<#doc> <http://example.org/state> \"replaced\".\n";
const PATCH_INSERT: &str = "@prefix solid: <http://www.w3.org/ns/solid/terms#>.\n\
     _:p a solid:InsertDeletePatch; solid:inserts { <#doc> <http://example.org/added> \"by patch\". }.";
const PATCH_DELETE: &str = "@prefix solid: <http://www.w3.org/ns/solid/terms#>.\n\
     _:p a solid:InsertDeletePatch; solid:deletes { <#doc> <http://example.org/state> \"original\". }.";

// ------------------------------------------------------------------ a node

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One `xpod serve` on 127.0.0.1, reached as `localhost`.
struct Node {
    server: Server,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    /// `http://localhost:<port>/`
    base: String,
    http: Client,
}

/// A response, read whole.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn start_node(backend: Backend) -> Node {
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(Postgres::start()),
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = support::free_port("127.0.0.1");
    let base = format!("http://localhost:{port}/");
    let mut env: Vec<(&'static str, String)> = vec![
        ("CSS_PORT", port.to_string()),
        ("CSS_BASE_URL", base.clone()),
        ("CSS_ROOT_FILE_PATH", root.display().to_string()),
        ("CSS_HOST", "127.0.0.1".into()),
        ("CSS_INTERNAL_IP", "127.0.0.1".into()),
    ];
    if let Some(pg) = &pg {
        env.push(("CSS_DATABASE_URL", pg.create_database("wac")));
    }
    let server = Server::start("127.0.0.1", &borrowed(&env), dir.path());
    let http = Client::builder()
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    Node {
        server,
        _pg: pg,
        _dir: dir,
        env,
        base,
        http,
    }
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method` on `path` (under the base URL) as `who` (None: anonymous).
    async fn call(
        &self,
        who: Option<&Agent>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        call(&self.http, &self.url(path), who, method, headers, body).await
    }

    /// PUTs Turtle as `who`, expecting it to be stored.
    async fn put_turtle(&self, who: &Agent, path: &str, text: &str) {
        let r = self
            .call(
                Some(who),
                "PUT",
                path,
                &[("content-type", "text/turtle")],
                Some(text),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 205,
            "PUT {path}: {} {}",
            r.status,
            r.body
        );
    }

    /// `xpod` on the command line, with the node's settings.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        xpod(&borrowed(&self.env), args)
    }
}

async fn call(
    http: &Client,
    url: &str,
    who: Option<&Agent>,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = signed(who, http.request(m, url), method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

// ------------------------------------------------------------- the agents

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// The pod's owner (alice).
    Owner,
    /// Another WebID with a pod of its own (bob).
    Other,
    /// A member of the owner's group document (carol).
    Member,
    Anonymous,
}

use Who::{Anonymous, Member, Other, Owner};

/// The order of the status columns of the table.
const AGENTS: [Who; 4] = [Owner, Other, Member, Anonymous];

/// A node with three accounts, each with its pod: alice (the owner of the
/// pod under test), bob and carol.
struct World {
    node: Node,
    owner: Agent,
    other: Agent,
    member: Agent,
    owner_account: Account,
    /// alice's pod, `http://localhost:<port>/alice/`.
    pod: String,
}

impl World {
    async fn start(backend: Backend) -> World {
        let node = tokio::task::spawn_blocking(move || start_node(backend))
            .await
            .unwrap();
        let (http, base) = (&node.http, &node.base);
        let alice = account_sequence(http, base, "alice", "alice@example.org").await;
        let bob = account_sequence(http, base, "bob", "bob@example.org").await;
        let carol = account_sequence(http, base, "carol", "carol@example.org").await;
        let owner = Agent::log_in(http, base, &alice).await;
        let other = Agent::log_in(http, base, &bob).await;
        let member = Agent::log_in(http, base, &carol).await;
        let pod = alice.pod.clone();
        World {
            node,
            owner,
            other,
            member,
            owner_account: alice,
            pod,
        }
    }

    fn agent(&self, who: Who) -> Option<&Agent> {
        match who {
            Owner => Some(&self.owner),
            Other => Some(&self.other),
            Member => Some(&self.member),
            Anonymous => None,
        }
    }

    /// `method` on `path` (in alice's pod) as `who`.
    async fn call(
        &self,
        who: Who,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        self.node
            .call(
                self.agent(who),
                method,
                &format!("alice/{path}"),
                headers,
                body,
            )
            .await
    }

    async fn put_turtle(&self, path: &str, text: &str) {
        self.node
            .put_turtle(&self.owner, &format!("alice/{path}"), text)
            .await;
    }

    /// The IRI of alice's friends group (its document is private to her).
    fn group(&self) -> String {
        format!("{}groups/friends#members", self.pod)
    }
}

// ---------------------------------------------------------------- fixtures

/// A resource under test and how the owner restores it before each request.
struct Fixture {
    name: &'static str,
    /// Its path in alice's pod.
    target: &'static str,
    /// Its own ACL, if it has one (else it inherits).
    own_acl: Option<String>,
    /// Whether requests may change it (then it is restored before each).
    restore: bool,
}

impl Fixture {
    fn container(&self) -> &'static str {
        let t = self.target.trim_end_matches('/');
        t.rfind('/').map_or("", |i| &t[..=i])
    }
}

/// A resource with its own ACL, in a container whose ACL differs.
const OWN: &str = "own ACL";
/// A resource two containers below the container whose ACL has acl:default.
const INHERITED: &str = "inherited";
/// A resource below a container whose rules are acl:accessTo only.
const ACCESS_TO_ONLY: &str = "accessTo-only parent";
/// That container itself.
const ACCESS_TO_ONLY_CONTAINER: &str = "accessTo-only container";
/// A resource whose own ACL is empty, below the inherited fixture's container.
const EMPTY: &str = "empty own ACL";
/// A resource whose ACL names a group in another pod.
const OUTSIDE_GROUP: &str = "group outside the pod";

fn owner_rule(webid: &str, to: &str, default: bool) -> String {
    let default = if default {
        format!(" acl:default <{to}>;")
    } else {
        String::new()
    };
    format!(
        "<#owner> a acl:Authorization; acl:agent <{webid}>; acl:accessTo <{to}>;{default}\n    \
         acl:mode acl:Read, acl:Write, acl:Control.\n"
    )
}

impl World {
    /// Writes the resources and container ACLs of every fixture, and the
    /// group documents.
    async fn fixtures(&self) -> Vec<Fixture> {
        let (o, b, g) = (&self.owner.webid, &self.other.webid, self.group());
        // alice's group, in her pod, private to her (the root ACL).
        self.put_turtle(
            "groups/friends",
            &format!(
                "{PREFIXES}<#members> a vcard:Group; vcard:hasMember <{}>.\n",
                self.member.webid
            ),
        )
        .await;
        // bob's group (public), naming carol: outside alice's pod.
        let bob_group = format!("{}bob/groups/friends", self.node.base);
        self.node
            .put_turtle(
                &self.other,
                "bob/groups/friends",
                &format!(
                    "{PREFIXES}<#members> a vcard:Group; vcard:hasMember <{}>.\n",
                    self.member.webid
                ),
            )
            .await;
        self.node
            .put_turtle(
                &self.other,
                "bob/groups/friends.acl",
                &format!(
                    "{PREFIXES}{}<#public> a acl:Authorization; acl:agentClass foaf:Agent; \
                     acl:accessTo <friends>; acl:mode acl:Read.\n",
                    owner_rule(b, "friends", false)
                ),
            )
            .await;

        // OWN: the container lets bob read and write and the group append,
        // below it; the document's own ACL lets bob read, any logged-in
        // agent append (so a PATCH that only inserts needs no more), and
        // everyone read.
        self.put_turtle("own/doc.ttl", DOC).await;
        self.put_turtle(
            "own/.acl",
            &format!(
                "{PREFIXES}{}\
                 <#other> a acl:Authorization; acl:agent <{b}>; acl:accessTo <./>; acl:default <./>;\n    \
                 acl:mode acl:Read, acl:Write.\n\
                 <#friends> a acl:Authorization; acl:agentGroup <{g}>; acl:accessTo <./>; acl:default <./>;\n    \
                 acl:mode acl:Append.\n",
                owner_rule(o, "./", true)
            ),
        )
        .await;
        let own_acl = format!(
            "{PREFIXES}{}\
             <#other> a acl:Authorization; acl:agent <{b}>; acl:accessTo <doc.ttl>; acl:mode acl:Read.\n\
             <#signed-in> a acl:Authorization; acl:agentClass acl:AuthenticatedAgent; acl:accessTo <doc.ttl>; acl:mode acl:Append.\n\
             <#public> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <doc.ttl>; acl:mode acl:Read.\n",
            owner_rule(o, "doc.ttl", false)
        );

        // INHERITED: rules on shared/ with acl:default only (besides the
        // owner's) reach shared/x/y/doc.ttl: bob reads and writes, any
        // logged-in agent reads, the group appends, nothing is public.
        self.put_turtle("shared/x/y/doc.ttl", DOC).await;
        self.put_turtle("shared/x/empty.ttl", DOC).await;
        self.put_turtle(
            "shared/.acl",
            &format!(
                "{PREFIXES}{}\
                 <#other> a acl:Authorization; acl:agent <{b}>; acl:default <./>; acl:mode acl:Read, acl:Write.\n\
                 <#signed-in> a acl:Authorization; acl:agentClass acl:AuthenticatedAgent; acl:default <./>;\n    \
                 acl:mode acl:Read.\n\
                 <#friends> a acl:Authorization; acl:agentGroup <{g}>; acl:default <./>; acl:mode acl:Append.\n",
                owner_rule(o, "./", true)
            ),
        )
        .await;
        // EMPTY: an ACL without rules stops that inheritance (the owner
        // writes it while she still has Control through shared/.acl).
        self.put_turtle("shared/x/empty.ttl.acl", PREFIXES).await;

        // ACCESS_TO_ONLY: bob and everyone may read top/, not what is in it.
        self.put_turtle("top/doc.ttl", DOC).await;
        self.put_turtle(
            "top/.acl",
            &format!(
                "{PREFIXES}{}\
                 <#other> a acl:Authorization; acl:agent <{b}>; acl:accessTo <./>; acl:mode acl:Read.\n\
                 <#public> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <./>; acl:mode acl:Read.\n",
                owner_rule(o, "./", true)
            ),
        )
        .await;

        // OUTSIDE_GROUP: read access for bob's group, which lists carol.
        self.put_turtle("outside.ttl", DOC).await;
        self.put_turtle(
            "outside.ttl.acl",
            &format!(
                "{PREFIXES}{}\
                 <#theirs> a acl:Authorization; acl:agentGroup <{bob_group}#members>; \
                 acl:accessTo <outside.ttl>; acl:mode acl:Read.\n",
                owner_rule(o, "outside.ttl", false)
            ),
        )
        .await;

        vec![
            Fixture {
                name: OWN,
                target: "own/doc.ttl",
                own_acl: Some(own_acl),
                restore: true,
            },
            Fixture {
                name: INHERITED,
                target: "shared/x/y/doc.ttl",
                own_acl: None,
                restore: true,
            },
            Fixture {
                name: ACCESS_TO_ONLY,
                target: "top/doc.ttl",
                own_acl: None,
                restore: false,
            },
            Fixture {
                name: ACCESS_TO_ONLY_CONTAINER,
                target: "top/",
                own_acl: None,
                restore: false,
            },
            Fixture {
                name: EMPTY,
                target: "shared/x/empty.ttl",
                own_acl: None,
                restore: false,
            },
            Fixture {
                name: OUTSIDE_GROUP,
                target: "outside.ttl",
                own_acl: None,
                restore: false,
            },
        ]
    }

    /// Puts the fixture's document and own ACL back as they were.
    async fn restore(&self, f: &Fixture) {
        self.put_turtle(f.target, DOC).await;
        let acl = format!("{}.acl", f.target);
        match &f.own_acl {
            Some(text) => self.put_turtle(&acl, text).await,
            None => {
                let r = self.call(Owner, "DELETE", &acl, &[], None).await;
                assert!(
                    r.status == 205 || r.status == 204 || r.status == 404,
                    "restore {acl}: {} {}",
                    r.status,
                    r.body
                );
            }
        }
    }
}

// ---------------------------------------------------------------- requests

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    /// PUT over the existing document.
    PutReplace,
    /// PUT of a new document in the target's container.
    PutCreate,
    /// PATCH (N3, inserts only) of a new document in the container.
    PatchCreate,
    /// POST of a new document to the target's container.
    Post,
    PatchInsert,
    PatchDelete,
    Delete,
    GetAcl,
    PutAcl,
    /// GET of a document that does not exist, in the target's container.
    GetMissing,
}

use Op::*;

/// Runs one cell of the table: `who` does `op` on the fixture. Returns the
/// mismatches (wrong status, or a refused request that changed something).
async fn cell(w: &World, f: &Fixture, op: Op, who: Who, expected: u16, n: usize) -> Vec<String> {
    if f.restore {
        w.restore(f).await;
    }
    let container = f.container();
    let tag = format!("{who:?}-{n}").to_lowercase();
    let acl = format!("{}.acl", f.target);
    // The document's name, as its ACL refers to it.
    let name = f.target.rsplit('/').next().unwrap();
    let new_acl = format!(
        "{}<#marker> <http://example.org/note> \"written by {tag}\".\n",
        f.own_acl
            .clone()
            .unwrap_or_else(|| format!("{PREFIXES}{}", owner_rule(&w.owner.webid, name, false)))
    );
    let turtle = [("content-type", "text/turtle")];
    let n3 = [("content-type", "text/n3")];
    let created = format!("{container}new-{tag}.ttl");
    let slug = format!("post-{tag}");
    let slug_header = [("content-type", "text/turtle"), ("slug", slug.as_str())];
    let (method, path, headers, body): (&str, String, &[(&str, &str)], Option<&str>) = match op {
        Get => ("GET", f.target.into(), &[], None),
        PutReplace => ("PUT", f.target.into(), &turtle, Some(REPLACED)),
        PutCreate => ("PUT", created.clone(), &turtle, Some(DOC)),
        PatchCreate => ("PATCH", created.clone(), &n3, Some(PATCH_INSERT)),
        Post => ("POST", container.into(), &slug_header, Some(DOC)),
        PatchInsert => ("PATCH", f.target.into(), &n3, Some(PATCH_INSERT)),
        PatchDelete => ("PATCH", f.target.into(), &n3, Some(PATCH_DELETE)),
        Delete => ("DELETE", f.target.into(), &[], None),
        GetAcl => ("GET", acl.clone(), &[], None),
        PutAcl => ("PUT", acl.clone(), &turtle, Some(new_acl.as_str())),
        GetMissing => ("GET", format!("{container}missing-{tag}.ttl"), &[], None),
    };
    let r = w.call(who, method, &path, headers, body).await;
    let mut wrong = Vec::new();
    let what = format!("{who:?} {op:?} on {} ({method} {path})", f.name);
    if r.status != expected {
        wrong.push(format!(
            "{what}: got {}, expected {expected}; {}",
            r.status,
            r.body.trim()
        ));
    }
    if (200..300).contains(&expected) {
        return wrong;
    }
    // A refusal leaves everything as it was (as the owner sees it).
    let check = match op {
        Get | GetAcl | GetMissing => None,
        PutReplace | PatchInsert | PatchDelete | Delete => Some(f.target.to_string()),
        PutCreate | PatchCreate => Some(created),
        Post => Some(format!("{container}{slug}")),
        PutAcl => Some(acl),
    };
    if let Some(path) = check {
        let seen = w.call(Owner, "GET", &path, &[], None).await;
        let as_before = match op {
            PutCreate | PatchCreate | Post => seen.status == 404,
            PutAcl => match &f.own_acl {
                Some(text) => seen.status == 200 && seen.body == *text,
                None => seen.status == 404,
            },
            _ => {
                seen.status == 200
                    && seen.body.contains("\"original\"")
                    && !seen.body.contains("replaced")
                    && !seen.body.contains("by patch")
            }
        };
        if !as_before {
            wrong.push(format!(
                "{what} was refused but changed {path}: the owner now gets {} {}",
                seen.status,
                seen.body.trim()
            ));
        }
    }
    wrong
}

/// Who may do what: per fixture and request, the status for
/// [owner, another WebID, a group member, anonymous].
#[rustfmt::skip]
const TABLE: &[(&str, Op, [u16; 4])] = &[
    // fixture        request       owner other member anon
    (OWN,            Get,          [200,  200,  200,   200]),
    (OWN,            PutReplace,   [205,  403,  403,   401]),
    (OWN,            PutCreate,    [201,  201,  201,   401]),
    (OWN,            PatchCreate,  [201,  201,  201,   401]),
    (OWN,            Post,         [201,  201,  201,   401]),
    (OWN,            PatchInsert,  [205,  205,  205,   401]),
    (OWN,            PatchDelete,  [205,  403,  403,   401]),
    (OWN,            Delete,       [205,  403,  403,   401]),
    (OWN,            GetAcl,       [200,  403,  403,   401]),
    (OWN,            PutAcl,       [205,  403,  403,   401]),
    (OWN,            GetMissing,   [404,  404,  403,   401]),

    (INHERITED,      Get,          [200,  200,  200,   401]),
    (INHERITED,      PutReplace,   [205,  205,  403,   401]),
    (INHERITED,      PutCreate,    [201,  201,  201,   401]),
    (INHERITED,      PatchCreate,  [201,  201,  201,   401]),
    (INHERITED,      Post,         [201,  201,  201,   401]),
    (INHERITED,      PatchInsert,  [205,  205,  205,   401]),
    (INHERITED,      PatchDelete,  [205,  205,  403,   401]),
    (INHERITED,      Delete,       [205,  205,  403,   401]),
    // The document has no ACL of its own: the owner learns that; the others,
    // who lack Control, must not (even those who may read the document).
    (INHERITED,      GetAcl,       [404,  403,  403,   401]),
    (INHERITED,      PutAcl,       [201,  403,  403,   401]),
    (INHERITED,      GetMissing,   [404,  404,  404,   401]),

    (ACCESS_TO_ONLY, Get,          [200,  403,  403,   401]),
    (ACCESS_TO_ONLY, GetMissing,   [404,  403,  403,   401]),
    (ACCESS_TO_ONLY_CONTAINER, Get,[200,  200,  200,   200]),

    // Nobody, not even the owner, reads through an empty ACL.
    (EMPTY,          Get,          [403,  403,  403,   401]),

    (OUTSIDE_GROUP,  Get,          [200,  403,  403,   401]),
];

/// acl:origin: bob may read apps/doc.ttl only from https://app.example (or
/// with no Origin, or the server's own); a rule with an origin and no agent
/// grants nothing. `SELF` stands for the server's own origin.
#[rustfmt::skip]
const ORIGIN_TABLE: &[(Who, Option<&str>, u16)] = &[
    (Other,     Some("https://app.example"),  200),
    (Other,     None,                         200),
    (Other,     Some("SELF"),                 200),
    (Other,     Some("https://evil.example"), 403),
    (Owner,     Some("https://evil.example"), 200),
    (Member,    Some("https://app.example"),  403),
    (Anonymous, Some("https://app.example"),  401),
];

/// `WAC-Allow` on GET (and HEAD) for who, where.
#[rustfmt::skip]
const WAC_ALLOW: &[(Who, &str, &str)] = &[
    (Owner,     "own/doc.ttl",        r#"user="append control read write",public="read""#),
    (Other,     "own/doc.ttl",        r#"user="append read",public="read""#),
    (Member,    "own/doc.ttl",        r#"user="append read",public="read""#),
    (Anonymous, "own/doc.ttl",        r#"user="read",public="read""#),
    (Owner,     "shared/x/y/doc.ttl", r#"user="append control read write""#),
    (Other,     "shared/x/y/doc.ttl", r#"user="append read write""#),
    (Member,    "shared/x/y/doc.ttl", r#"user="append read""#),
    (Owner,     "",                   r#"user="append control read write""#),
];

async fn access_table(backend: Backend) {
    let w = World::start(backend).await;
    let fixtures = w.fixtures().await;
    let mut wrong = Vec::new();
    let mut n = 0;
    for (name, op, statuses) in TABLE {
        let f = fixtures.iter().find(|f| f.name == *name).unwrap();
        for (who, expected) in AGENTS.iter().zip(statuses) {
            n += 1;
            wrong.extend(cell(&w, f, *op, *who, *expected, n).await);
        }
    }

    // acl:origin.
    w.put_turtle("apps/doc.ttl", DOC).await;
    w.put_turtle(
        "apps/doc.ttl.acl",
        &format!(
            "{PREFIXES}{}\
             <#via-app> a acl:Authorization; acl:agent <{}>; acl:origin <https://app.example>;\n    \
             acl:accessTo <doc.ttl>; acl:mode acl:Read.\n\
             <#origin-only> a acl:Authorization; acl:origin <https://app.example>;\n    \
             acl:accessTo <doc.ttl>; acl:mode acl:Read, acl:Write.\n",
            owner_rule(&w.owner.webid, "doc.ttl", false),
            w.other.webid
        ),
    )
    .await;
    let own_origin = w.node.base.trim_end_matches('/').to_string();
    for (who, origin, expected) in ORIGIN_TABLE {
        let origin = origin.map(|o| if o == "SELF" { own_origin.as_str() } else { o });
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        let r = w.call(*who, "GET", "apps/doc.ttl", &headers, None).await;
        if r.status != *expected {
            wrong.push(format!(
                "{who:?} GET with Origin {origin:?}: got {}, expected {expected}",
                r.status
            ));
        }
    }

    // WAC-Allow, and the acl link.
    for (who, path, expected) in WAC_ALLOW {
        for method in ["GET", "HEAD"] {
            let r = w.call(*who, method, path, &[], None).await;
            let got = r.header("wac-allow");
            if r.status != 200 || got != Some(*expected) {
                wrong.push(format!(
                    "{who:?} {method} {path}: got {} WAC-Allow {got:?}, expected 200 {expected}",
                    r.status
                ));
            }
        }
    }
    for (path, acl) in [
        ("own/doc.ttl", "own/doc.ttl.acl"),
        ("own/", "own/.acl"),
        ("", ".acl"),
    ] {
        let r = w.call(Owner, "GET", path, &[], None).await;
        let links: Vec<&str> = r
            .headers
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let want = format!("<{}{acl}>; rel=\"acl\"", w.pod);
        if !links.iter().any(|l| l.contains(&want)) {
            wrong.push(format!("GET {path}: no {want} in {links:?}"));
        }
    }

    // A new account pod: private to its owner, with a public profile.
    #[rustfmt::skip]
    let defaults: &[(Who, &str, &str, u16)] = &[
        (Owner,     "GET", "",               200),
        (Other,     "GET", "",               403),
        (Anonymous, "GET", "",               401),
        (Owner,     "GET", ".acl",           200),
        (Other,     "GET", ".acl",           403),
        (Anonymous, "GET", ".acl",           401),
        (Anonymous, "GET", "profile/card",   200),
        (Other,     "GET", "profile/card",   200),
        (Anonymous, "PUT", "profile/card",   401),
        (Other,     "PUT", "profile/card",   403),
        (Other,     "GET", "groups/friends", 403),
        (Member,    "GET", "groups/friends", 403),
        (Anonymous, "PUT", "intruder.ttl",   401),
        (Other,     "PUT", "intruder.ttl",   403),
    ];
    for (who, method, path, expected) in defaults {
        let body = (*method == "PUT").then_some(REPLACED);
        let r = w
            .call(*who, method, path, &[("content-type", "text/turtle")], body)
            .await;
        if r.status != *expected {
            wrong.push(format!(
                "new pod: {who:?} {method} /alice/{path}: got {}, expected {expected}",
                r.status
            ));
        }
    }
    let card = w.call(Owner, "GET", "profile/card", &[], None).await;
    if !card.body.contains("oidcIssuer") || card.body.contains("replaced") {
        wrong.push(format!("the profile changed: {}", card.body));
    }

    // Pods made on the command line: with --owner, private to the new
    // WebID; with --public-write, everyone may do everything.
    wrong.extend(cli_pods(&w).await);

    assert!(
        wrong.is_empty(),
        "{backend:?}: {} of the expectations failed:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Who, method, path, status, `WAC-Allow`.
type CliRow<'a> = (Option<&'a Agent>, &'a str, &'a str, u16, Option<&'a str>);

async fn cli_pods(w: &World) -> Vec<String> {
    let mut wrong = Vec::new();
    let node = &w.node;
    let out = node.cli(&[
        "pods",
        "create",
        "alice-cli",
        "--owner",
        "alice@example.org",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let webid = format!("{}alice-cli/profile/card#me", node.base);
    let (acct, _) = more_credentials(&node.http, &w.owner_account, "cli", &webid).await;
    let cli_owner = Agent::log_in(&node.http, &node.base, &acct).await;
    let out = node.cli(&["pods", "create", "open", "--public-write"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = r#"user="append control read write",public="append control read write""#;
    #[rustfmt::skip]
    let rows: &[CliRow] = &[
        (Some(&cli_owner), "GET", "alice-cli/",             200, Some(r#"user="append control read write""#)),
        (Some(&cli_owner), "GET", "alice-cli/.acl",         200, None),
        (Some(&cli_owner), "PUT", "alice-cli/a.ttl",        201, None),
        (Some(&w.owner),   "GET", "alice-cli/",             403, None),
        (None,             "GET", "alice-cli/",             401, None),
        (None,             "GET", "alice-cli/.acl",         401, None),
        (None,             "GET", "open/",                  200, Some(all)),
        (None,             "PUT", "open/a.ttl",             201, None),
        (None,             "GET", "open/.acl",              200, None),
        (Some(&w.other),   "GET", "open/a.ttl",             200, Some(all)),
    ];
    for (who, method, path, expected, allow) in rows {
        let body = (*method == "PUT").then_some(DOC);
        let r = node
            .call(*who, method, path, &[("content-type", "text/turtle")], body)
            .await;
        let name = who.map(|a| a.webid.as_str()).unwrap_or("anonymous");
        if r.status != *expected {
            wrong.push(format!(
                "CLI pods: {name} {method} /{path}: got {}, expected {expected}; {}",
                r.status,
                r.body.trim()
            ));
        }
        if let Some(allow) = allow
            && r.header("wac-allow") != Some(*allow)
        {
            wrong.push(format!(
                "CLI pods: {name} {method} /{path}: WAC-Allow {:?}, expected {allow}",
                r.header("wac-allow")
            ));
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_table_on_sqlite() {
    access_table(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_table_on_postgres() {
    access_table(Backend::Postgres).await;
}

// ------------------------------------------------------------ ACL documents

/// Who, method, path, headers, body, status.
type AclRequest<'a> = (
    Who,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_documents_need_control_even_with_read_and_write() {
    let w = World::start(Backend::Sqlite).await;
    let (o, b) = (w.owner.webid.clone(), w.other.webid.clone());
    w.put_turtle("rw/doc.ttl", DOC).await;
    // bob may read and write the container and what is in it, and the
    // document; everyone may read the document. Only alice has Control.
    w.put_turtle(
        "rw/.acl",
        &format!(
            "{PREFIXES}{}<#other> a acl:Authorization; acl:agent <{b}>; acl:accessTo <./>; \
             acl:default <./>; acl:mode acl:Read, acl:Write.\n",
            owner_rule(&o, "./", true)
        ),
    )
    .await;
    let acl = format!(
        "{PREFIXES}{}<#other> a acl:Authorization; acl:agent <{b}>; acl:accessTo <doc.ttl>; \
         acl:mode acl:Read, acl:Write.\n\
         <#public> a acl:Authorization; acl:agentClass foaf:Agent; acl:accessTo <doc.ttl>; \
         acl:mode acl:Read.\n",
        owner_rule(&o, "doc.ttl", false)
    );
    w.put_turtle("rw/doc.ttl.acl", &acl).await;
    let turtle = [("content-type", "text/turtle")];
    let r = w.call(Other, "GET", "rw/doc.ttl", &[], None).await;
    assert_eq!(r.status, 200, "bob reads the document");
    assert_eq!(
        r.header("wac-allow"),
        Some(r#"user="append read write",public="read""#)
    );
    let r = w.call(Other, "PUT", "rw/doc.ttl", &turtle, Some(DOC)).await;
    assert_eq!(r.status, 205, "bob writes the document: {}", r.body);

    // bob may not read, replace, patch or delete its ACL, nor the
    // container's; anonymous (who may read the document) neither.
    let grab = format!(
        "{acl}<#grab> a acl:Authorization; acl:agent <{b}>; acl:accessTo <doc.ttl>; acl:mode acl:Control.\n"
    );
    let patch = format!(
        "@prefix solid: <http://www.w3.org/ns/solid/terms#>.\n\
         _:p a solid:InsertDeletePatch; solid:inserts {{ <#grab> a <http://www.w3.org/ns/auth/acl#Authorization>; \
         <http://www.w3.org/ns/auth/acl#agent> <{b}>; <http://www.w3.org/ns/auth/acl#accessTo> <doc.ttl>; \
         <http://www.w3.org/ns/auth/acl#mode> <http://www.w3.org/ns/auth/acl#Control>. }}."
    );
    let n3 = [("content-type", "text/n3")];
    #[rustfmt::skip]
    let refused: &[AclRequest] = &[
        (Other,     "GET",    "rw/doc.ttl.acl", &[],     None,         403),
        (Other,     "HEAD",   "rw/doc.ttl.acl", &[],     None,         403),
        (Other,     "PUT",    "rw/doc.ttl.acl", &turtle, Some(grab.as_str()),  403),
        (Other,     "PATCH",  "rw/doc.ttl.acl", &n3,     Some(patch.as_str()), 403),
        (Other,     "DELETE", "rw/doc.ttl.acl", &[],     None,         403),
        (Other,     "GET",    "rw/.acl",        &[],     None,         403),
        (Other,     "PUT",    "rw/.acl",        &turtle, Some(grab.as_str()),  403),
        (Anonymous, "GET",    "rw/doc.ttl.acl", &[],     None,         401),
        (Anonymous, "PUT",    "rw/doc.ttl.acl", &turtle, Some(grab.as_str()),  401),
    ];
    for (who, method, path, headers, body, expected) in refused {
        let r = w.call(*who, method, path, headers, *body).await;
        assert_eq!(r.status, *expected, "{who:?} {method} {path}: {}", r.body);
        assert!(!r.body.contains("acl:agent"), "{who:?} {method} {path}");
    }
    // Nothing changed: the owner reads the ACL as she wrote it.
    let r = w.call(Owner, "GET", "rw/doc.ttl.acl", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, acl);
    assert!(
        r.header("wac-allow").is_some_and(|v| v.contains("control")),
        "{:?}",
        r.header("wac-allow")
    );
    let r = w.call(Other, "GET", "rw/doc.ttl", &[], None).await;
    assert_eq!(
        r.header("wac-allow"),
        Some(r#"user="append read write",public="read""#)
    );

    // The owner rewrites it: now bob has Control, and it is Control that
    // lets him read the ACL.
    w.put_turtle("rw/doc.ttl.acl", &grab).await;
    let r = w.call(Other, "GET", "rw/doc.ttl.acl", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, grab);
    // The owner removes it: the document falls back to rw/.acl (bob reads
    // and writes, nobody else but alice), and alice still controls both.
    let r = w.call(Owner, "DELETE", "rw/doc.ttl.acl", &[], None).await;
    assert_eq!(r.status, 205, "{}", r.body);
    assert_eq!(
        w.call(Owner, "GET", "rw/doc.ttl.acl", &[], None)
            .await
            .status,
        404
    );
    assert_eq!(
        w.call(Anonymous, "GET", "rw/doc.ttl", &[], None)
            .await
            .status,
        401
    );
    let r = w.call(Owner, "GET", "rw/.acl", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(&b), "{}", r.body);
    // Without Control, bob does not learn that the ACL is gone either.
    assert_eq!(
        w.call(Other, "GET", "rw/doc.ttl.acl", &[], None)
            .await
            .status,
        403
    );
    // bob may write in rw/, but not make a container named like an ACL,
    // which would stand in the way of rw/x's ACL.
    let r = w
        .call(
            Other,
            "PUT",
            "rw/x.acl/y.ttl",
            &[("content-type", "text/turtle")],
            Some(DOC),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Nobody, not even the owner, deletes the pod's root ACL (the pod
    // would serve nobody); it can be replaced.
    let r = w.call(Owner, "DELETE", ".acl", &[], None).await;
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(w.call(Owner, "GET", "", &[], None).await.status, 200);
}

// ------------------------------------------------------------- path tricks

const SECRET: &str = "the-secret-bytes-7f3a9c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_never_reach_a_private_resource() {
    let w = World::start(Backend::Sqlite).await;
    w.put_turtle("open/readme.ttl", DOC).await;
    w.put_turtle(
        "open/.acl",
        &format!(
            "{PREFIXES}{}<#public> a acl:Authorization; acl:agentClass foaf:Agent; \
             acl:accessTo <./>; acl:default <./>; acl:mode acl:Read.\n",
            owner_rule(&w.owner.webid, "./", true)
        ),
    )
    .await;
    let r = w
        .call(
            Owner,
            "PUT",
            "closed/secret",
            &[("content-type", "text/plain")],
            Some(SECRET),
        )
        .await;
    assert_eq!(r.status, 201);
    // The setup is what it seems: the owner reads the secret, anyone reads
    // the open container, and a raw request reaches the server as sent.
    let r = w.call(Owner, "GET", "closed/secret", &[], None).await;
    assert_eq!((r.status, r.body.as_str()), (200, SECRET));
    let (host, port) = (w.node.server.host.clone(), w.node.server.port);
    let options_host = host.clone();
    let raw = move |path: String| {
        let (host, port) = (host.clone(), port);
        async move {
            tokio::task::spawn_blocking(move || raw_request(&host, port, "GET", &path, &[], b""))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no HTTP answer"))
        }
    };
    let (status, _, body) = raw("/alice/open/readme.ttl".into()).await;
    assert_eq!(status, 200);
    assert!(body.contains("original"), "{body}");
    let (status, _, body) = raw("/alice/closed/secret".into()).await;
    assert_eq!(status, 401);
    assert!(!body.contains(SECRET));
    // OPTIONS is never refused, but it does not tell a stranger (through
    // `Allow`) that the secret exists: the same answer as for nothing.
    let options = |path: &'static str| {
        let host = options_host.clone();
        async move {
            tokio::task::spawn_blocking(move || raw_request(&host, port, "OPTIONS", path, &[], b""))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (status, secret_headers, _) = options("/alice/closed/secret").await;
    assert_eq!(status, 204);
    let (_, nothing_headers, _) = options("/alice/closed/nothing").await;
    assert_eq!(
        support::header(&secret_headers, "allow"),
        support::header(&nothing_headers, "allow")
    );
    assert!(
        !support::header(&secret_headers, "allow")
            .unwrap()
            .contains("DELETE"),
        "{secret_headers:?}"
    );

    let mut wrong = Vec::new();
    for trick in [
        "/alice/open/../closed/secret",
        "/alice/open/./../closed/secret",
        "/alice/open/..%2Fclosed/secret",
        "/alice/open/..%2fclosed%2fsecret",
        "/alice/open%2F..%2Fclosed%2Fsecret",
        "/alice/open/%2e%2e/closed/secret",
        "/alice/open/%2E%2E/closed/secret",
        "/alice/open/.%2e/closed/secret",
        "/alice/open/..\\closed\\secret",
        "/alice/open/%5C..%5Cclosed%5Csecret",
        "/alice/closed/secret.",
        "/alice/closed/secret%00",
        "/alice/closed/secret%00.ttl",
        "/alice/closed/%73ecret",
        "/alice/CLOSED/secret",
        "/alice/closed/SECRET",
        "/alice/closed//secret",
        "/alice//closed/secret",
        "/alice/closed/./secret",
        "/alice/closed/secret/",
        "/alice/closed/secret.acl",
        "/alice/closed/secret?x=../../open/readme.ttl",
        "/alice/open/../../alice/closed/secret",
        "//alice/closed/secret",
        "/./alice/closed/secret",
        "/%61lice/closed/secret",
    ] {
        let (status, _, body) = raw(trick.to_string()).await;
        if !matches!(status, 400 | 401 | 404) || body.contains(SECRET) {
            wrong.push(format!("{trick}: {status} {}", body.trim()));
        }
    }
    assert!(
        wrong.is_empty(),
        "an anonymous request got more than 400/401/404 without the secret:\n{}",
        wrong.join("\n")
    );
}

// -------------------------------------------------------------- two nodes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_hold_on_a_pod_reached_through_another_node() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start_layout(&[0, 0], &[]))
        .await
        .unwrap();
    let base = cluster.url("");
    let first = &cluster.nodes[0];
    let alice = account_sequence(&first.client, &base, "alice", "alice@example.org").await;
    let bob = account_sequence(&first.client, &base, "bob", "bob@example.org").await;
    let owner = Agent::log_in(&first.client, &base, &alice).await;
    let other = Agent::log_in(&cluster.nodes[1].client, &base, &bob).await;

    // Which node owns alice's pod: the one that serves her (public) profile.
    let card = format!("{}profile/card", alice.pod);
    let resp = first.client.get(&card).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let owner_id = served_by(&resp);
    let (home, away) = if cluster.nodes[0].id == owner_id {
        (&cluster.nodes[0], &cluster.nodes[1])
    } else {
        (&cluster.nodes[1], &cluster.nodes[0])
    };
    assert_eq!(home.id, owner_id);

    // Written through the node that does not own the pod.
    let url = format!("{}private/note.txt", alice.pod);
    let body = "only for alice";
    let put = owner
        .sign(away.client.put(&url), "PUT", &url)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    for (node, name) in [(away, "the other node"), (home, "the owner node")] {
        for (who, status) in [(Some(&owner), 200), (Some(&other), 403), (None, 401)] {
            let r = call(&node.client, &url, who, "GET", &[], None).await;
            let label = who.map(|a| a.webid.as_str()).unwrap_or("anonymous");
            assert_eq!(r.status, status, "{label} through {name}: {}", r.body);
            assert_eq!(
                r.header("x-xpod-served-by"),
                Some(owner_id.as_str()),
                "the owner node decided"
            );
            if status == 200 {
                assert_eq!(r.body, body);
                assert_eq!(
                    r.header("wac-allow"),
                    Some(r#"user="append control read write""#)
                );
            } else {
                assert!(!r.body.contains(body));
            }
        }
    }
    // bob's refused write through the other node changes nothing.
    let r = call(
        &away.client,
        &url,
        Some(&other),
        "PUT",
        &[("content-type", "text/plain")],
        Some("bob was here"),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(&home.client, &url, Some(&owner), "GET", &[], None).await;
    assert_eq!(r.body, body);

    // A subscription made at the other node is decided by the owner node,
    // as the caller.
    let service = format!("{base}.notifications/WebSocketChannel2023/");
    let request = serde_json::json!({
        "type": "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023",
        "topic": url,
    })
    .to_string();
    for (who, status) in [(Some(&owner), 200), (Some(&other), 403), (None, 401)] {
        let r = call(
            &away.client,
            &service,
            who,
            "POST",
            &[("content-type", "application/ld+json")],
            Some(&request),
        )
        .await;
        let label = who.map(|a| a.webid.as_str()).unwrap_or("anonymous");
        assert_eq!(r.status, status, "{label} subscribing: {}", r.body);
        assert_eq!(r.header("x-xpod-served-by"), Some(away.id.as_str()));
    }
}

/// Pods made before access control existed were open to anyone. When
/// their node starts, a pod with an owner becomes its owner's, a pod
/// without one stays open to everyone, as it was, and ACLs planted while
/// they were open are removed; a pod made under access control is left
/// alone.
#[tokio::test]
async fn pods_from_before_access_control_get_an_acl_when_their_node_starts() {
    let mut node = start_node(Backend::Sqlite);
    let owner = "https://id.example/alice#me";
    for args in [
        &["pods", "create", "open", "--public-write"][..],
        &["pods", "create", "owned", "--owner", owner][..],
        &["pods", "create", "kept", "--public-write"][..],
    ] {
        let out = node.cli(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let planted = format!(
        "{PREFIXES}<#mallory> a acl:Authorization; acl:agent <https://mallory.example/#me>;\n\
           acl:accessTo <./>; acl:default <./>; acl:mode acl:Read, acl:Write, acl:Control.\n"
    );
    for pod in ["open", "kept"] {
        for (path, ty, body) in [
            ("doc.ttl", "text/turtle", DOC),
            ("docs/.acl", "text/turtle", planted.as_str()),
        ] {
            let r = node
                .call(
                    None,
                    "PUT",
                    &format!("{pod}/{path}"),
                    &[("content-type", ty)],
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 201, "{pod}/{path}: {}", r.body);
        }
    }
    let r = node
        .call(
            None,
            "PUT",
            "owned/doc.ttl",
            &[("content-type", "text/turtle")],
            Some(DOC),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let kept_acl = node.call(None, "GET", "kept/.acl", &[], None).await;
    assert_eq!(kept_acl.status, 200);

    // Back to before access control for two of the pods: no root ACL, an
    // ACL planted by someone, and no record of having been through the pass.
    node.server.stop_with(libc::SIGTERM);
    let root = &node
        .env
        .iter()
        .find(|(k, _)| *k == "CSS_ROOT_FILE_PATH")
        .unwrap()
        .1;
    let db_path = std::path::PathBuf::from(root).join("xpod.sqlite");
    let db = xpod::db::open(&DatabaseConfig::Sqlite(db_path.clone()))
        .await
        .unwrap();
    for pod in ["open", "owned"] {
        let record = db.pod_get(pod).await.unwrap().unwrap();
        db.resource_delete(pod, "/.acl", &Default::default(), &record.node_id)
            .await
            .unwrap();
    }
    drop(db);
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute(
            "DELETE FROM cluster_settings WHERE key IN ('access-control:open', 'access-control:owned')",
            [],
        )
        .unwrap();
    node.server = Server::start("127.0.0.1", &borrowed(&node.env), node._dir.path());

    // Without an owner: open to everyone, as before, but the planted ACL
    // is gone (its text is in the log).
    let r = node.call(None, "GET", "open/doc.ttl", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = node.call(None, "GET", "open/docs/.acl", &[], None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = node
        .call(
            None,
            "PUT",
            "open/new.ttl",
            &[("content-type", "text/turtle")],
            Some(DOC),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // With an owner: the owner's alone.
    let r = node.call(None, "GET", "owned/", &[], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // The pod made under access control keeps its ACLs, even one anybody
    // could write there (it is --public-write).
    let r = node.call(None, "GET", "kept/.acl", &[], None).await;
    assert_eq!((r.status, &r.body), (200, &kept_acl.body));
    // (that one now gives only mallory Control over docs/).
    let r = node.call(None, "GET", "kept/docs/.acl", &[], None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let log = node.server.log_text();
    for needle in [
        "it is now its owner's alone",
        "stays open to everyone",
        "removed an ACL written while the pod was open to anyone",
        "mallory.example",
    ] {
        assert!(log.contains(needle), "{needle}: {log}");
    }
    assert_eq!(log.matches("removed an ACL").count(), 1, "{log}");
    node.server.stop_with(libc::SIGTERM);
    let db = xpod::db::open(&DatabaseConfig::Sqlite(db_path))
        .await
        .unwrap();
    let acl = db.resource_get("owned", "/.acl").await.unwrap();
    assert!(acl.is_some(), "the owned pod has a root ACL again");
}
