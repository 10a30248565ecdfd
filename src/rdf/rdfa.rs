//! Reading RDFa 1.1 from XHTML documents, so that an uploaded XHTML+RDFa
//! page can be served as Turtle or JSON-LD.
//!
//! This implements the core of RDFa 1.1 processing: prefixes (`xmlns:*`,
//! `@prefix`), CURIEs and absolute IRIs, `@about`, `@resource`, `@href`,
//! `@src`, `@rel` (with hanging rels completed by descendants), `@property`
//! (with `@content`, `@datatype` and language), `@typeof`, `@vocab` and
//! `<base>`. Unprefixed XHTML link types (`stylesheet`, `alternate`) are not
//! expanded. Documents that are not well-formed XML are refused.

use std::collections::HashMap;

use oxigraph::model::{BlankNode, Literal, NamedNode, NamedOrBlankNode, Term, Triple};
use quick_xml::events::{BytesStart, Event};

const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";

struct Element {
    name: String,
    attrs: HashMap<String, String>,
    children: Vec<Node>,
}

enum Node {
    Element(Element),
    Text(String),
}

fn attributes(start: &BytesStart<'_>) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("invalid attribute: {e}"))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = attr
            .unescape_value()
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(&attr.value).into_owned());
        map.insert(key, value);
    }
    Ok(map)
}

fn parse_tree(text: &str) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().expand_empty_elements = true;
    let mut stack: Vec<Element> = vec![Element {
        name: String::new(),
        attrs: HashMap::new(),
        children: Vec::new(),
    }];
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => stack.push(Element {
                name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                attrs: attributes(&start)?,
                children: Vec::new(),
            }),
            Ok(Event::End(_)) => {
                let done = stack.pop().ok_or("unbalanced end tag")?;
                stack
                    .last_mut()
                    .ok_or("unbalanced end tag")?
                    .children
                    .push(Node::Element(done));
            }
            Ok(Event::Text(t)) => {
                let s = t
                    .unescape()
                    .map(|v| v.into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&t).into_owned());
                if let Some(top) = stack.last_mut() {
                    top.children.push(Node::Text(s));
                }
            }
            Ok(Event::CData(c)) => {
                if let Some(top) = stack.last_mut() {
                    top.children
                        .push(Node::Text(String::from_utf8_lossy(&c).into_owned()));
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "not well-formed XHTML at byte {}: {e}",
                    reader.buffer_position()
                ));
            }
        }
    }
    if stack.len() != 1 {
        return Err("not well-formed XHTML: unclosed elements".into());
    }
    Ok(stack.pop().expect("root"))
}

fn text_of(e: &Element, out: &mut String) {
    for c in &e.children {
        match c {
            Node::Text(t) => out.push_str(t),
            Node::Element(child) => text_of(child, out),
        }
    }
}

#[derive(Clone)]
struct Context {
    base: String,
    parent_subject: Term,
    parent_object: Option<Term>,
    /// Hanging rels of an ancestor: (subject, predicate), completed by the
    /// next descendant that establishes a subject.
    incomplete: Vec<(NamedOrBlankNode, NamedNode)>,
    prefixes: HashMap<String, String>,
    vocab: Option<String>,
    lang: Option<String>,
}

fn resolve_iri(base: &str, value: &str) -> Option<NamedNode> {
    let base = oxiri::Iri::parse(base.to_string()).ok()?;
    let iri = base.resolve(value.trim()).ok()?;
    NamedNode::new(iri.into_inner()).ok()
}

/// A CURIE (`foaf:name`), a term (with `@vocab`), or an absolute IRI.
fn expand(ctx: &Context, value: &str, allow_terms: bool) -> Option<NamedNode> {
    let value = value.trim();
    if let Some((prefix, local)) = value.split_once(':') {
        if let Some(ns) = ctx.prefixes.get(&prefix.to_ascii_lowercase()) {
            return NamedNode::new(format!("{ns}{local}")).ok();
        }
        if prefix == "_" {
            return None;
        }
        // Otherwise an absolute IRI (http:, urn:, tel: …).
        return NamedNode::new(value).ok();
    }
    if allow_terms && let Some(vocab) = &ctx.vocab {
        return NamedNode::new(format!("{vocab}{value}")).ok();
    }
    None
}

fn expand_list(ctx: &Context, value: Option<&String>) -> Vec<NamedNode> {
    value
        .map(|v| {
            v.split_whitespace()
                .filter_map(|t| expand(ctx, t, true))
                .collect()
        })
        .unwrap_or_default()
}

/// `@about`/`@resource` take safe CURIEs (`[foaf:x]`) or IRIs; `@href` and
/// `@src` are plain IRIs.
fn resource_attr(
    ctx: &Context,
    e: &Element,
    name: &str,
    bnodes: &mut HashMap<String, BlankNode>,
) -> Option<Term> {
    let value = e.attrs.get(name)?;
    let v = value.trim();
    if let Some(label) = v
        .strip_prefix("[_:")
        .and_then(|s| s.strip_suffix(']'))
        .or_else(|| v.strip_prefix("_:"))
    {
        return Some(bnodes.entry(label.to_string()).or_default().clone().into());
    }
    if let Some(curie) = v.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return expand(ctx, curie, false).map(Into::into);
    }
    if matches!(name, "about" | "resource")
        && let Some((prefix, _)) = v.split_once(':')
        && ctx.prefixes.contains_key(&prefix.to_ascii_lowercase())
    {
        return expand(ctx, v, false).map(Into::into);
    }
    resolve_iri(&ctx.base, v).map(Into::into)
}

fn as_subject(t: &Term) -> Option<NamedOrBlankNode> {
    match t {
        Term::NamedNode(n) => Some(n.clone().into()),
        Term::BlankNode(b) => Some(b.clone().into()),
        _ => None,
    }
}

fn walk(
    e: &Element,
    ctx: &Context,
    out: &mut Vec<Triple>,
    bnodes: &mut HashMap<String, BlankNode>,
) {
    let mut ctx = ctx.clone();
    for (k, v) in &e.attrs {
        if let Some(prefix) = k.strip_prefix("xmlns:") {
            ctx.prefixes.insert(prefix.to_ascii_lowercase(), v.clone());
        }
    }
    if let Some(p) = e.attrs.get("prefix") {
        let mut parts = p.split_whitespace();
        while let (Some(name), Some(iri)) = (parts.next(), parts.next()) {
            if let Some(name) = name.strip_suffix(':') {
                ctx.prefixes
                    .insert(name.to_ascii_lowercase(), iri.to_string());
            }
        }
    }
    if let Some(v) = e.attrs.get("vocab") {
        ctx.vocab = (!v.is_empty()).then(|| v.clone());
    }
    if let Some(l) = e.attrs.get("xml:lang").or_else(|| e.attrs.get("lang")) {
        ctx.lang = (!l.is_empty()).then(|| l.clone());
    }

    let rels = expand_list(&ctx, e.attrs.get("rel"));
    let props = expand_list(&ctx, e.attrs.get("property"));
    let types = expand_list(&ctx, e.attrs.get("typeof"));
    let about = resource_attr(&ctx, e, "about", bnodes);
    let resource = resource_attr(&ctx, e, "resource", bnodes)
        .or_else(|| resource_attr(&ctx, e, "href", bnodes))
        .or_else(|| resource_attr(&ctx, e, "src", bnodes));
    let inherited = ctx
        .parent_object
        .clone()
        .unwrap_or(ctx.parent_subject.clone());

    let mut current_object: Option<Term> = None;
    let mut property_resource: Option<Term> = None;
    let new_subject: Term;
    let skip;
    if !rels.is_empty() {
        new_subject = about.clone().unwrap_or(inherited.clone());
        current_object = resource.clone();
        skip = false;
    } else if !props.is_empty() {
        new_subject = about.clone().unwrap_or(inherited.clone());
        property_resource = resource.clone();
        skip = false;
    } else {
        let set = about
            .clone()
            .or(resource.clone())
            .or_else(|| (!types.is_empty()).then(|| Term::from(BlankNode::default())));
        skip = set.is_none();
        new_subject = set.unwrap_or(inherited.clone());
    }
    let Some(subject) = as_subject(&new_subject) else {
        return;
    };

    if !skip {
        for (s, p) in std::mem::take(&mut ctx.incomplete) {
            out.push(Triple::new(s, p, new_subject.clone()));
        }
    }
    for t in &types {
        out.push(Triple::new(
            subject.clone(),
            NamedNode::new_unchecked(RDF_TYPE),
            t.clone(),
        ));
    }
    let mut hanging = Vec::new();
    for rel in &rels {
        match &current_object {
            Some(o) => out.push(Triple::new(subject.clone(), rel.clone(), o.clone())),
            None => hanging.push((subject.clone(), rel.clone())),
        }
    }
    if !hanging.is_empty() && current_object.is_none() {
        current_object = Some(BlankNode::default().into());
    }
    for prop in &props {
        let value: Term = if let Some(content) = e.attrs.get("content") {
            literal(content, e.attrs.get("datatype"), &ctx)
        } else if let (true, Some(r)) = (rels.is_empty(), &property_resource) {
            r.clone()
        } else {
            let mut text = String::new();
            text_of(e, &mut text);
            literal(&text, e.attrs.get("datatype"), &ctx)
        };
        out.push(Triple::new(subject.clone(), prop.clone(), value));
    }

    let mut child_ctx = ctx.clone();
    if !skip {
        child_ctx.parent_subject = new_subject.clone();
        child_ctx.parent_object = Some(current_object.clone().unwrap_or(new_subject.clone()));
        child_ctx.incomplete = hanging;
    }
    for c in &e.children {
        if let Node::Element(child) = c {
            if child.name == "base"
                && let Some(href) = child.attrs.get("href")
            {
                child_ctx.base = href.clone();
            }
            walk(child, &child_ctx, out, bnodes);
        }
    }
}

fn literal(text: &str, datatype: Option<&String>, ctx: &Context) -> Term {
    if let Some(dt) = datatype.and_then(|d| expand(ctx, d, true)) {
        return Literal::new_typed_literal(text, dt).into();
    }
    match &ctx.lang {
        Some(lang) => Literal::new_language_tagged_literal(text, lang.to_ascii_lowercase())
            .unwrap_or_else(|_| Literal::new_simple_literal(text))
            .into(),
        None => Literal::new_simple_literal(text).into(),
    }
}

/// Extracts the RDFa triples of an XHTML document whose URL is `base`.
pub fn extract(document: &[u8], base: &str) -> Result<Vec<Triple>, String> {
    let text =
        std::str::from_utf8(document).map_err(|_| "the document is not UTF-8".to_string())?;
    let root = parse_tree(text)?;
    let base_node = NamedNode::new(base).map_err(|e| e.to_string())?;
    let ctx = Context {
        base: base.to_string(),
        parent_subject: base_node.into(),
        parent_object: None,
        incomplete: Vec::new(),
        prefixes: HashMap::new(),
        vocab: None,
        lang: None,
    };
    let mut out = Vec::new();
    let mut bnodes = HashMap::new();
    for c in &root.children {
        if let Node::Element(e) = c {
            walk(e, &ctx, &mut out, &mut bnodes);
        }
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hanging_rels_properties_and_links() {
        let doc = br#"<?xml version="1.0"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:foaf="http://xmlns.com/foaf/0.1/"
      xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#" xmlns:c="http://ex/c#" xml:lang="en">
<head><link rel="stylesheet" href="main.css"/><link rel="foaf:primaryTopic" href="http://ex/foaf.rdf"/></head>
<body><p><span property="foaf:name">Jerry</span> <a rel="rdfs:seeAlso" href="about.htm">x</a></p>
<p rel="c:address">93 Rose Ave <a property="c:city" rel="rdfs:seeAlso" resource="http://ex/Adelaide" href="http://wiki/Adelaide">Adelaide</a></p>
<span rel="foaf:phone" resource="tel:+61">+61</span></body></html>"#;
        let triples: Vec<String> = extract(doc, "http://pod/doc.html")
            .unwrap()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let has = |needle: &str| triples.iter().any(|t| t.contains(needle));
        assert!(
            has(
                "<http://pod/doc.html> <http://xmlns.com/foaf/0.1/primaryTopic> <http://ex/foaf.rdf>"
            ),
            "{triples:#?}"
        );
        assert!(
            has("<http://pod/doc.html> <http://xmlns.com/foaf/0.1/name> \"Jerry\"@en"),
            "{triples:#?}"
        );
        assert!(has(
            "<http://pod/doc.html> <http://www.w3.org/2000/01/rdf-schema#seeAlso> <http://pod/about.htm>"
        ));
        assert!(
            has("<http://pod/doc.html> <http://ex/c#address> _:"),
            "{triples:#?}"
        );
        assert!(
            has("<http://www.w3.org/2000/01/rdf-schema#seeAlso> <http://ex/Adelaide>"),
            "{triples:#?}"
        );
        assert!(has("<http://ex/c#city> \"Adelaide\"@en"), "{triples:#?}");
        assert!(has(
            "<http://pod/doc.html> <http://xmlns.com/foaf/0.1/phone> <tel:+61>"
        ));
        assert!(!has("main.css"), "unprefixed link types are not expanded");
        assert_eq!(triples.len(), 7, "{triples:#?}");
    }

    #[test]
    fn malformed_documents_are_refused() {
        assert!(extract(b"<html><p>unclosed</html>", "http://pod/x").is_err());
    }
}
