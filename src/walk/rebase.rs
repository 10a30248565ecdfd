//! RDF across servers: moving IRIs from one base to another, leaving out the
//! triples a server writes about its own resources, and comparing graphs up
//! to blank node names.

use std::collections::BTreeSet;

use oxigraph::model::graph::CanonicalizationAlgorithm;
use oxigraph::model::{Graph, NamedNode, NamedOrBlankNode, Term, Triple};

/// Rewrites absolute IRIs under one base (a container URL ending in `/`) to
/// the same path under another. IRIs elsewhere, and literals, stay as they are.
#[derive(Debug, Clone)]
pub struct Rebase {
    from: String,
    to: String,
}

impl Rebase {
    pub fn new(from: &str, to: &str) -> Rebase {
        Rebase {
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    /// The IRI under the new base, or the IRI itself when it is not under the old one.
    pub fn iri(&self, iri: &str) -> String {
        match iri.strip_prefix(&self.from) {
            Some(rest) => format!("{}{rest}", self.to),
            None => iri.to_string(),
        }
    }

    fn named(&self, n: NamedNode) -> NamedNode {
        if n.as_str().starts_with(&self.from) {
            NamedNode::new_unchecked(self.iri(n.as_str()))
        } else {
            n
        }
    }

    pub fn triple(&self, t: Triple) -> Triple {
        let subject = match t.subject {
            NamedOrBlankNode::NamedNode(n) => NamedOrBlankNode::NamedNode(self.named(n)),
            other => other,
        };
        let object = match t.object {
            Term::NamedNode(n) => Term::NamedNode(self.named(n)),
            other => other,
        };
        Triple::new(subject, self.named(t.predicate), object)
    }

    pub fn triples(&self, triples: Vec<Triple>) -> Vec<Triple> {
        triples.into_iter().map(|t| self.triple(t)).collect()
    }
}

const LDP: &str = "http://www.w3.org/ns/ldp#";
const POSIX: &str = "http://www.w3.org/ns/posix/stat#";
const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const DC_MODIFIED: &str = "http://purl.org/dc/terms/modified";
const MA_FORMAT: &str = "http://www.w3.org/ns/ma-ont#format";
const PIM_STORAGE: &str = "http://www.w3.org/ns/pim/space#Storage";
const MEDIA_TYPES: &str = "http://www.w3.org/ns/iana/media-types/";

/// Whether a triple is one a server states about its own resources
/// (containment, sizes, dates, LDP types, media types) rather than data a
/// user wrote. Servers such as Community Solid Server answer a description
/// resource (`.meta`) with these even when nobody wrote one.
pub fn server_managed(t: &Triple) -> bool {
    let p = t.predicate.as_str();
    if p.starts_with(POSIX)
        || p == DC_MODIFIED
        || p == MA_FORMAT
        || p == "http://www.w3.org/ns/ldp#contains"
    {
        return true;
    }
    if p == RDF_TYPE
        && let Term::NamedNode(o) = &t.object
    {
        let o = o.as_str();
        return o.starts_with(LDP) || o == PIM_STORAGE || o.starts_with(MEDIA_TYPES);
    }
    false
}

/// A graph with its blank nodes named canonically, as a sorted set of
/// N-Triples lines: two graphs are isomorphic when their forms are equal.
pub fn canonical(triples: &[Triple]) -> BTreeSet<String> {
    let mut graph: Graph = triples.iter().collect();
    graph.canonicalize(CanonicalizationAlgorithm::Unstable);
    graph.iter().map(|t| t.to_string()).collect()
}

/// How two graphs differ: triples only in `a`, triples only in `b` (in
/// canonical form), or `None` when they are isomorphic.
pub fn difference(a: &[Triple], b: &[Triple]) -> Option<(Vec<String>, Vec<String>)> {
    let (ca, cb) = (canonical(a), canonical(b));
    if ca == cb {
        return None;
    }
    Some((
        ca.difference(&cb).cloned().collect(),
        cb.difference(&ca).cloned().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdf::{Syntax, parse};

    #[test]
    fn rebases_iris_under_the_old_base_only() {
        let r = Rebase::new("http://a/pod/", "http://b/copy/");
        let t = parse(
            b"<x> <http://a/pod/p> <http://a/other>, \"http://a/pod/lit\", <../pod/y/z> .",
            Syntax::Turtle,
            "http://a/pod/doc",
        )
        .unwrap();
        let out: BTreeSet<String> = r.triples(t).iter().map(|t| t.to_string()).collect();
        assert!(out.contains("<http://b/copy/x> <http://b/copy/p> <http://a/other>"));
        assert!(out.contains("<http://b/copy/x> <http://b/copy/p> \"http://a/pod/lit\""));
        assert!(out.contains("<http://b/copy/x> <http://b/copy/p> <http://b/copy/y/z>"));
    }

    #[test]
    fn isomorphism_ignores_blank_node_names() {
        let a = parse(b"<s> <p> [ <q> 1 ] .", Syntax::Turtle, "http://a/").unwrap();
        let b = parse(
            b"_:zz <http://a/q> 1 . <http://a/s> <http://a/p> _:zz .",
            Syntax::Turtle,
            "http://a/",
        )
        .unwrap();
        assert!(difference(&a, &b).is_none());
        let c = parse(b"<s> <p> [ <q> 2 ] .", Syntax::Turtle, "http://a/").unwrap();
        let (only_a, only_c) = difference(&a, &c).unwrap();
        assert!(only_a.iter().any(|t| t.contains("\"1\"")), "{only_a:?}");
        assert!(only_c.iter().any(|t| t.contains("\"2\"")), "{only_c:?}");
    }

    #[test]
    fn server_triples_are_recognised() {
        let t = parse(
            b"@prefix ldp: <http://www.w3.org/ns/ldp#>. <> a ldp:Container, <http://ex/T>; ldp:contains <a>; <http://purl.org/dc/terms/title> \"t\"; <http://www.w3.org/ns/posix/stat#size> 3 .",
            Syntax::Turtle,
            "http://a/",
        )
        .unwrap();
        let kept: Vec<_> = t.into_iter().filter(|t| !server_managed(t)).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
    }
}
