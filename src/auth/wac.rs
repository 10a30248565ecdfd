//! Web Access Control decisions, as the Solid WAC specification gives them
//! and Community Solid Server 7 applies them: which ACL governs a resource
//! (its own `.acl`, else the nearest container's `acl:default` rules),
//! which modes an agent gets from it, which modes a request needs, which
//! status a refusal gets, and the `WAC-Allow` header. Pure: the caller
//! reads the ACL documents and resolves group membership.
//!
//! [`crate::ldp::access`] reads the documents, caches them and applies
//! these decisions to every pod request and notification subscription.

use std::collections::HashSet;

use oxigraph::model::{NamedOrBlankNode, Term, Triple};

const ACL: &str = "http://www.w3.org/ns/auth/acl#";
const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const FOAF_AGENT: &str = "http://xmlns.com/foaf/0.1/Agent";

/// A set of access modes. Write implies Append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes(u8);

impl Modes {
    pub const NONE: Modes = Modes(0);
    pub const READ: Modes = Modes(1);
    pub const APPEND: Modes = Modes(2);
    pub const WRITE: Modes = Modes(4 | 2);
    pub const CONTROL: Modes = Modes(8);
    pub const ALL: Modes = Modes(15);

    pub fn union(self, other: Modes) -> Modes {
        Modes(self.0 | other.0)
    }

    /// Whether every mode of `wanted` is in this set.
    pub fn covers(self, wanted: Modes) -> bool {
        self.0 & wanted.0 == wanted.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The modes' names, sorted, as `WAC-Allow` lists them.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Modes::APPEND, "append"),
            (Modes::CONTROL, "control"),
            (Modes::READ, "read"),
            (Modes(4), "write"),
        ]
        .into_iter()
        .filter(|(m, _)| self.0 & m.0 == m.0)
        .map(|(_, name)| name)
        .collect()
    }

    fn from_iri(iri: &str) -> Modes {
        match iri.strip_prefix(ACL) {
            Some("Read") => Modes::READ,
            Some("Append") => Modes::APPEND,
            Some("Write") => Modes::WRITE,
            Some("Control") => Modes::CONTROL,
            _ => Modes::NONE,
        }
    }
}

/// Who asks: a WebID (authenticated) or nobody (anonymous), the groups
/// (by IRI) the caller found the WebID to be a member of, and the web
/// origin of the app making the request, when a browser said so in
/// `Origin` and it is not the server's own.
pub struct Agent<'a> {
    pub webid: Option<&'a str>,
    pub groups: &'a HashSet<String>,
    pub origin: Option<&'a str>,
}

/// One `acl:Authorization`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    agents: Vec<String>,
    public: bool,
    authenticated: bool,
    groups: Vec<String>,
    access_to: Vec<String>,
    default: Vec<String>,
    /// `acl:origin`: when not empty, the rule holds only for requests from
    /// these web origins (or with no `Origin` at all).
    origins: Vec<String>,
    modes: Modes,
}

impl Rule {
    /// Both the agent and, when the rule names origins, the app's origin
    /// must match: a rule naming only origins grants nothing.
    fn applies_to(&self, agent: &Agent<'_>) -> bool {
        let who = self.public
            || (agent.webid.is_some()
                && (self.authenticated
                    || self.agents.iter().any(|a| Some(a.as_str()) == agent.webid)
                    || self.groups.iter().any(|g| agent.groups.contains(g))));
        who && match agent.origin {
            Some(origin) if !self.origins.is_empty() => self.origins.iter().any(|o| o == origin),
            _ => true,
        }
    }
}

/// An origin as `Origin` sends it: scheme, host and port, lower case,
/// without a trailing slash.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// A parsed ACL document, for the resource it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// The protected resource's URL (the ACL's URL without `.acl`).
    subject: String,
    rules: Vec<Rule>,
}

impl Acl {
    /// Reads an ACL from its triples (parsed with the ACL's URL as base).
    /// Only subjects typed `acl:Authorization` count; unknown modes and
    /// predicates are ignored.
    pub fn from_triples(subject: &str, triples: &[Triple]) -> Acl {
        let typed: HashSet<&NamedOrBlankNode> = triples
            .iter()
            .filter(|t| {
                t.predicate.as_str() == RDF_TYPE
                    && matches!(&t.object, Term::NamedNode(n) if n.as_str() == format!("{ACL}Authorization"))
            })
            .map(|t| &t.subject)
            .collect();
        let mut rules = Vec::new();
        for node in typed {
            let mut rule = Rule::default();
            for t in triples.iter().filter(|t| &t.subject == node) {
                let Term::NamedNode(object) = &t.object else {
                    continue;
                };
                let object = object.as_str().to_string();
                match t.predicate.as_str().strip_prefix(ACL) {
                    Some("agent") => rule.agents.push(object),
                    Some("agentGroup") => rule.groups.push(object),
                    Some("agentClass") if object == FOAF_AGENT => rule.public = true,
                    Some("agentClass") if object == format!("{ACL}AuthenticatedAgent") => {
                        rule.authenticated = true
                    }
                    Some("accessTo") => rule.access_to.push(object),
                    Some("default") => rule.default.push(object),
                    Some("origin") => rule.origins.push(normalize_origin(&object)),
                    Some("mode") => rule.modes = rule.modes.union(Modes::from_iri(&object)),
                    _ => {}
                }
            }
            rules.push(rule);
        }
        Acl {
            subject: subject.to_string(),
            rules,
        }
    }

    /// Parses an ACL document stored at `acl_url` (Turtle or another RDF
    /// syntax). The error says what is wrong with it.
    pub fn parse(acl_url: &str, bytes: &[u8], syntax: crate::rdf::Syntax) -> Result<Acl, String> {
        let subject = acl_url
            .strip_suffix(".acl")
            .ok_or_else(|| format!("{acl_url} is not an ACL's URL (it must end in .acl)"))?;
        let triples = crate::rdf::parse(bytes, syntax, acl_url)?;
        Ok(Acl::from_triples(subject, &triples))
    }

    /// The groups its rules name: the caller resolves the agent's
    /// membership in these.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.groups.iter().map(String::as_str))
    }

    /// The modes it grants `agent`: on its own subject (`acl:accessTo`),
    /// or, `inherited`, on the resources below the container it protects
    /// (`acl:default`, which must name that container).
    pub fn modes(&self, agent: &Agent<'_>, inherited: bool) -> Modes {
        self.rules
            .iter()
            .filter(|r| {
                let targets = if inherited { &r.default } else { &r.access_to };
                targets.contains(&self.subject)
            })
            .filter(|r| r.applies_to(agent))
            .fold(Modes::NONE, |m, r| m.union(r.modes))
    }
}

/// The modes `agent` has on a resource, given the ACLs found walking up
/// from it: `chain[0]` is the resource's own ACL (if it exists), then its
/// container's, up to the root's. The first ACL that exists governs, even
/// an empty one; none at all grants nothing.
pub fn effective(chain: &[Option<&Acl>], agent: &Agent<'_>) -> Modes {
    chain
        .iter()
        .enumerate()
        .find_map(|(i, acl)| acl.map(|a| a.modes(agent, i > 0)))
        .unwrap_or(Modes::NONE)
}

/// Which resource a needed mode is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The request's target (for an `.acl`, the resource it protects).
    Target,
    /// The target's container.
    Parent,
}

/// What a request is, for the modes it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Read,
    /// PUT (or PATCH) of a resource that does not exist yet.
    Create,
    /// PUT over an existing resource.
    Replace,
    /// POST to a container.
    Post,
    /// A patch: whether it inserts, deletes, or has conditions (reads).
    Patch {
        inserts: bool,
        deletes: bool,
        reads: bool,
        exists: bool,
    },
    Delete,
}

/// The modes a request needs, and where. A request on an `.acl` needs
/// Control on the resource it protects instead (and the container's
/// modes when it creates or deletes the ACL).
pub fn required(request: Request, on_acl: bool) -> Vec<(On, Modes)> {
    let mut needs = match request {
        Request::Read => vec![(On::Target, Modes::READ)],
        // CSS and the protocol's tests: creating needs Append on the new
        // resource and on its container.
        Request::Create => vec![(On::Target, Modes::APPEND), (On::Parent, Modes::APPEND)],
        Request::Replace => vec![(On::Target, Modes::WRITE)],
        Request::Post => vec![(On::Target, Modes::APPEND)],
        Request::Patch {
            inserts,
            deletes,
            reads,
            exists,
        } => {
            let mut m = Modes::NONE;
            if inserts {
                m = m.union(Modes::APPEND);
            }
            if deletes {
                m = m.union(Modes::READ).union(Modes::WRITE);
            }
            if reads {
                m = m.union(Modes::READ);
            }
            if m.is_empty() {
                m = Modes::APPEND;
            }
            let mut needs = vec![(On::Target, m)];
            if !exists {
                needs.push((On::Parent, Modes::APPEND));
            }
            needs
        }
        Request::Delete => vec![(On::Target, Modes::WRITE), (On::Parent, Modes::WRITE)],
    };
    if on_acl {
        for (on, modes) in needs.iter_mut() {
            if *on == On::Target {
                *modes = Modes::CONTROL;
            }
        }
    }
    needs
}

/// The status of a refusal: 404 when the agent may read the resource and
/// it does not exist (and is not being created), else 403 for an
/// authenticated agent and 401 for an anonymous one, so that nobody
/// learns whether a resource they may not read exists.
pub fn refusal(authenticated: bool, may_read: bool, exists: bool, creating: bool) -> u16 {
    if may_read && !exists && !creating {
        404
    } else if authenticated {
        403
    } else {
        401
    }
}

/// The `WAC-Allow` header value: the agent's modes (which include the
/// public's) and the public's.
pub fn wac_allow(user: Modes, public: Modes) -> String {
    let user = user.union(public);
    let mut groups = Vec::new();
    for (name, modes) in [("user", user), ("public", public)] {
        if !modes.is_empty() {
            groups.push(format!("{name}=\"{}\"", modes.names().join(" ")));
        }
    }
    groups.join(",")
}

/// The ACL of a new pod's root: its owner has every mode on the pod and
/// everything in it; nothing is public.
pub fn pod_root_acl(owner: &str) -> String {
    format!(
        "@prefix acl: <{ACL}>.\n\n\
         <#owner> a acl:Authorization;\n    acl:agent <{owner}>;\n    \
         acl:accessTo <./>;\n    acl:default <./>;\n    \
         acl:mode acl:Read, acl:Write, acl:Control.\n"
    )
}

/// The ACL of a new pod's WebID profile: readable by everyone, controlled
/// by its owner.
pub fn profile_acl(owner: &str) -> String {
    format!(
        "@prefix acl: <{ACL}>.\n@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n\n\
         <#public> a acl:Authorization;\n    acl:agentClass foaf:Agent;\n    \
         acl:accessTo <./card>;\n    acl:mode acl:Read.\n\n\
         <#owner> a acl:Authorization;\n    acl:agent <{owner}>;\n    \
         acl:accessTo <./card>;\n    acl:mode acl:Read, acl:Write, acl:Control.\n"
    )
}

/// The root ACL of a `--public-write` test pod: everyone may do
/// everything.
pub fn public_write_acl() -> String {
    format!(
        "@prefix acl: <{ACL}>.\n@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n\n\
         <#everyone> a acl:Authorization;\n    acl:agentClass foaf:Agent;\n    \
         acl:accessTo <./>;\n    acl:default <./>;\n    \
         acl:mode acl:Read, acl:Write, acl:Control.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdf::Syntax;

    const POD: &str = "https://pods.example/alice/";
    const OWNER: &str = "https://pods.example/alice/profile/card#me";
    const BOB: &str = "https://bob.example/card#me";
    const CAROL: &str = "https://carol.example/card#me";
    const GROUP: &str = "https://pods.example/alice/groups#friends";

    fn acl(url: &str, text: &str) -> Acl {
        Acl::parse(url, text.as_bytes(), Syntax::Turtle).unwrap()
    }

    fn agent<'a>(webid: Option<&'a str>, groups: &'a HashSet<String>) -> Agent<'a> {
        Agent {
            webid,
            groups,
            origin: None,
        }
    }

    #[test]
    fn an_origin_restricts_a_rule_to_the_apps_it_names() {
        let restricted = acl(
            &format!("{POD}notes/.acl"),
            &format!(
                "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                 <#bob> a acl:Authorization; acl:agent <{BOB}>; acl:origin <https://App.example/>;\n\
                   acl:accessTo <./>; acl:mode acl:Read.\n\
                 <#apps> a acl:Authorization; acl:origin <https://other.example>; acl:accessTo <./>; acl:mode acl:Write.\n"
            ),
        );
        let none = HashSet::new();
        let from = |origin| Agent {
            webid: Some(BOB),
            groups: &none,
            origin,
        };
        let chain = [Some(&restricted)];
        // Not from a browser app (no Origin): the agent's rule holds.
        assert_eq!(effective(&chain, &from(None)), Modes::READ);
        assert_eq!(
            effective(&chain, &from(Some("https://app.example"))),
            Modes::READ
        );
        assert_eq!(
            effective(&chain, &from(Some("https://evil.example"))),
            Modes::NONE
        );
        // A rule naming only an origin names no agent: it grants nothing.
        assert_eq!(
            effective(&chain, &from(Some("https://other.example"))),
            Modes::NONE
        );
    }

    /// A container ACL: Bob reads the container and what is in it, the
    /// friends group appends below it, authenticated agents read the
    /// container only, and everyone reads one file via its own ACL.
    fn shared_acl() -> Acl {
        acl(
            &format!("{POD}shared/.acl"),
            &format!(
                "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                 <#owner> a acl:Authorization; acl:agent <{OWNER}>; acl:accessTo <./>; acl:default <./>;\n\
                   acl:mode acl:Read, acl:Write, acl:Control.\n\
                 <#bob> a acl:Authorization; acl:agent <{BOB}>; acl:accessTo <./>; acl:default <./>; acl:mode acl:Read.\n\
                 <#friends> a acl:Authorization; acl:agentGroup <{GROUP}>; acl:default <./>; acl:mode acl:Append.\n\
                 <#signed-in> a acl:Authorization; acl:agentClass acl:AuthenticatedAgent; acl:accessTo <./>; acl:mode acl:Read.\n\
                 <#untyped> acl:agentClass <http://xmlns.com/foaf/0.1/Agent>; acl:accessTo <./>; acl:default <./>; acl:mode acl:Write.\n"
            ),
        )
    }

    #[test]
    fn a_table_of_agents_modes_and_inheritance() {
        let container = shared_acl();
        let none = HashSet::new();
        let friends: HashSet<String> = [GROUP.to_string()].into();
        let chain_container = [Some(&container)];
        let chain_child: [Option<&Acl>; 2] = [None, Some(&container)];
        let rows = [
            // who, webid, groups, on the container, on a child (inherited)
            ("owner", Some(OWNER), &none, Modes::ALL, Modes::ALL),
            ("bob", Some(BOB), &none, Modes::READ, Modes::READ),
            ("friend", Some(CAROL), &friends, Modes::READ, Modes::APPEND),
            ("stranger", Some(CAROL), &none, Modes::READ, Modes::NONE),
            ("anonymous", None, &friends, Modes::NONE, Modes::NONE),
        ];
        for (who, webid, groups, on_container, on_child) in rows {
            let a = agent(webid, groups);
            assert_eq!(
                effective(&chain_container, &a),
                on_container,
                "{who} on the container"
            );
            assert_eq!(effective(&chain_child, &a), on_child, "{who} on a child");
        }
    }

    #[test]
    fn a_resource_with_its_own_acl_does_not_inherit() {
        let container = shared_acl();
        let own = acl(
            &format!("{POD}shared/note.acl"),
            "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
             <#public> a acl:Authorization; acl:agentClass <http://xmlns.com/foaf/0.1/Agent>;\n\
               acl:accessTo <./note>; acl:mode acl:Read.",
        );
        let none = HashSet::new();
        let chain = [Some(&own), Some(&container)];
        assert_eq!(effective(&chain, &agent(None, &none)), Modes::READ);
        // The owner's inherited rights do not reach past the file's own ACL.
        assert_eq!(effective(&chain, &agent(Some(OWNER), &none)), Modes::READ);
        // An empty ACL stops inheritance too.
        let empty = acl(&format!("{POD}shared/note.acl"), "");
        assert_eq!(
            effective(
                &[Some(&empty), Some(&container)],
                &agent(Some(OWNER), &none)
            ),
            Modes::NONE
        );
        // No ACL anywhere grants nothing.
        assert_eq!(
            effective(&[None, None], &agent(Some(OWNER), &none)),
            Modes::NONE
        );
    }

    #[test]
    fn defaults_apply_only_below_the_container_that_names_them() {
        // A default naming another container, and accessTo naming a child,
        // give nothing through inheritance.
        let odd = acl(
            &format!("{POD}a/.acl"),
            &format!(
                "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                 <#r> a acl:Authorization; acl:agent <{BOB}>; acl:default <../b/>; acl:accessTo <./x>; acl:mode acl:Read."
            ),
        );
        let none = HashSet::new();
        assert_eq!(
            effective(&[None, Some(&odd)], &agent(Some(BOB), &none)),
            Modes::NONE
        );
        // acl:default does not grant on the container itself.
        let container_only_default = acl(
            &format!("{POD}a/.acl"),
            &format!(
                "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n\
                 <#r> a acl:Authorization; acl:agent <{BOB}>; acl:default <./>; acl:mode acl:Read."
            ),
        );
        assert_eq!(
            effective(&[Some(&container_only_default)], &agent(Some(BOB), &none)),
            Modes::NONE
        );
    }

    #[test]
    fn requests_need_the_modes_of_the_spec() {
        assert_eq!(
            required(Request::Read, false),
            vec![(On::Target, Modes::READ)]
        );
        assert_eq!(
            required(Request::Create, false),
            vec![(On::Target, Modes::APPEND), (On::Parent, Modes::APPEND)]
        );
        assert_eq!(
            required(Request::Replace, false),
            vec![(On::Target, Modes::WRITE)]
        );
        assert_eq!(
            required(Request::Delete, false),
            vec![(On::Target, Modes::WRITE), (On::Parent, Modes::WRITE)]
        );
        let insert = Request::Patch {
            inserts: true,
            deletes: false,
            reads: false,
            exists: true,
        };
        assert_eq!(required(insert, false), vec![(On::Target, Modes::APPEND)]);
        let delete = Request::Patch {
            inserts: false,
            deletes: true,
            reads: false,
            exists: false,
        };
        assert_eq!(
            required(delete, false),
            vec![
                (On::Target, Modes::READ.union(Modes::WRITE)),
                (On::Parent, Modes::APPEND)
            ]
        );
        // Reading or changing an ACL needs Control, and only Control.
        assert_eq!(
            required(Request::Read, true),
            vec![(On::Target, Modes::CONTROL)]
        );
        assert_eq!(
            required(Request::Replace, true),
            vec![(On::Target, Modes::CONTROL)]
        );
        assert!(!Modes::WRITE.covers(Modes::CONTROL));
        assert!(Modes::WRITE.covers(Modes::APPEND));
        assert!(!Modes::APPEND.covers(Modes::WRITE));
    }

    #[test]
    fn refusals_do_not_reveal_what_the_agent_may_not_read() {
        assert_eq!(refusal(false, false, true, false), 401);
        assert_eq!(refusal(true, false, true, false), 403);
        assert_eq!(
            refusal(true, false, false, false),
            403,
            "no 404 without Read"
        );
        assert_eq!(refusal(true, true, false, false), 404);
        assert_eq!(
            refusal(false, true, false, true),
            401,
            "creating is never 404"
        );
    }

    #[test]
    fn wac_allow_lists_sorted_modes_and_the_public_in_the_user() {
        assert_eq!(
            wac_allow(Modes::WRITE.union(Modes::READ), Modes::READ),
            "user=\"append read write\",public=\"read\""
        );
        assert_eq!(
            wac_allow(Modes::NONE, Modes::READ),
            "user=\"read\",public=\"read\""
        );
        assert_eq!(
            wac_allow(Modes::ALL, Modes::NONE),
            "user=\"append control read write\""
        );
        assert_eq!(wac_allow(Modes::NONE, Modes::NONE), "");
    }

    #[test]
    fn new_pods_are_private_but_their_profile_is_public() {
        let none = HashSet::new();
        let root = acl(&format!("{POD}.acl"), &pod_root_acl(OWNER));
        let card = acl(&format!("{POD}profile/card.acl"), &profile_acl(OWNER));
        let owner = agent(Some(OWNER), &none);
        let anyone = agent(None, &none);
        let someone = agent(Some(BOB), &none);
        // The root, a document deep in the pod, and the profile.
        assert_eq!(effective(&[Some(&root)], &owner), Modes::ALL);
        assert_eq!(effective(&[Some(&root)], &someone), Modes::NONE);
        let deep = [None, None, Some(&root)];
        assert_eq!(effective(&deep, &owner), Modes::ALL);
        assert_eq!(effective(&deep, &anyone), Modes::NONE);
        let profile = [Some(&card), None, Some(&root)];
        assert_eq!(effective(&profile, &anyone), Modes::READ);
        assert_eq!(effective(&profile, &owner), Modes::ALL);
        let open = acl(&format!("{POD}.acl"), &public_write_acl());
        assert_eq!(effective(&[None, Some(&open)], &anyone), Modes::ALL);
    }
}
