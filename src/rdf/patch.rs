//! PATCH of RDF documents: N3 Patch (`solid:InsertDeletePatch`) and SPARQL
//! Update. Both run on an in-memory copy of the document; the caller writes
//! the result back through the normal, conditional write path, so a patch is
//! applied atomically or not at all.

use std::collections::HashMap;

use oxigraph::model::{BlankNode, GraphNameRef, NamedOrBlankNode, Quad, Term, Triple};
use oxigraph::sparql::{QueryResults, SparqlEvaluator};
use oxigraph::store::Store;
use oxttl::n3::{N3Parser, N3Quad, N3Term};

const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const SOLID: &str = "http://www.w3.org/ns/solid/terms#";

/// Why a patch was refused, with the status the Solid Protocol gives it.
#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// 400: the patch document does not parse.
    Syntax(String),
    /// 422: it parses but is not a valid patch.
    Unprocessable(String),
    /// 409: the document does not match (where ≠ one solution, absent deletes).
    Conflict(String),
}

fn store_of(triples: &[Triple]) -> Store {
    let store = Store::new().expect("an in-memory store");
    for t in triples {
        store
            .insert(t.as_ref().in_graph(GraphNameRef::DefaultGraph))
            .expect("in-memory insert");
    }
    store
}

fn triples_of(store: &Store) -> Vec<Triple> {
    store
        .iter()
        .filter_map(Result::ok)
        .map(Triple::from)
        .collect()
}

/// Applies a SPARQL Update to the document's triples.
pub fn sparql_update(
    triples: &[Triple],
    update: &str,
    base: &str,
) -> Result<Vec<Triple>, PatchError> {
    super::check_nesting(update).map_err(PatchError::Syntax)?;
    super::on_parser_stack(|| sparql_update_here(triples, update, base))
}

fn sparql_update_here(
    triples: &[Triple],
    update: &str,
    base: &str,
) -> Result<Vec<Triple>, PatchError> {
    let prepared = SparqlEvaluator::new()
        .with_base_iri(base)
        .map_err(|e| PatchError::Syntax(e.to_string()))?
        .parse_update(update)
        .map_err(|e| PatchError::Syntax(format!("invalid SPARQL Update: {e}")))?;
    let store = store_of(triples);
    prepared
        .on_store(&store)
        .execute()
        .map_err(|e| PatchError::Unprocessable(format!("cannot apply the update: {e}")))?;
    // Updates may only change the document itself, never named graphs.
    if store.named_graphs().next().is_some() {
        return Err(PatchError::Unprocessable(
            "the update writes to a named graph; only the document's own graph can be changed"
                .into(),
        ));
    }
    Ok(triples_of(&store))
}

/// What a patch does, for the access modes it needs: inserts need
/// Append, deletes Read and Write, conditions Read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub inserts: bool,
    pub deletes: bool,
    pub reads: bool,
}

impl Shape {
    /// What an unreadable patch is assumed to do, so that it is refused
    /// for want of access before its syntax is judged.
    pub const EVERYTHING: Shape = Shape {
        inserts: true,
        deletes: true,
        reads: true,
    };
}

/// The shape of an N3 Patch.
pub fn n3_shape(patch: &[u8], base: &str) -> Result<Shape, PatchError> {
    let parts = n3_parts(patch, base)?;
    Ok(Shape {
        inserts: !parts.inserts.is_empty(),
        deletes: !parts.deletes.is_empty(),
        reads: !parts.conditions.is_empty(),
    })
}

/// The shape of a SPARQL Update: `INSERT DATA` inserts, `DELETE DATA`
/// deletes, `DELETE/INSERT … WHERE` also reads; graph management (LOAD,
/// CLEAR, CREATE, DROP) counts as everything.
pub fn sparql_shape(update: &str, base: &str) -> Result<Shape, PatchError> {
    super::check_nesting(update).map_err(PatchError::Syntax)?;
    super::on_parser_stack(|| sparql_shape_here(update, base))
}

fn sparql_shape_here(update: &str, base: &str) -> Result<Shape, PatchError> {
    use spargebra::GraphUpdateOperation as Op;
    use spargebra::algebra::GraphPattern;
    let parsed = spargebra::SparqlParser::new()
        .with_base_iri(base)
        .map_err(|e| PatchError::Syntax(e.to_string()))?
        .parse_update(update)
        .map_err(|e| PatchError::Syntax(format!("invalid SPARQL Update: {e}")))?;
    let mut shape = Shape::default();
    for op in &parsed.operations {
        match op {
            Op::InsertData { data } => shape.inserts |= !data.is_empty(),
            Op::DeleteData { data } => shape.deletes |= !data.is_empty(),
            Op::DeleteInsert {
                delete,
                insert,
                pattern,
                ..
            } => {
                shape.deletes |= !delete.is_empty();
                shape.inserts |= !insert.is_empty();
                let empty = matches!(pattern.as_ref(), GraphPattern::Bgp { patterns } if patterns.is_empty());
                shape.reads |= !empty;
            }
            _ => shape = Shape::EVERYTHING,
        }
    }
    Ok(shape)
}

/// The three formulas of an N3 Patch.
struct N3Parts {
    conditions: Vec<N3Quad>,
    inserts: Vec<N3Quad>,
    deletes: Vec<N3Quad>,
}

fn n3_parts(patch: &[u8], base: &str) -> Result<N3Parts, PatchError> {
    let parser = N3Parser::new()
        .with_base_iri(base)
        .map_err(|e| PatchError::Syntax(e.to_string()))?;
    let mut quads: Vec<N3Quad> = Vec::new();
    for q in parser.for_slice(patch) {
        quads.push(q.map_err(|e| PatchError::Syntax(format!("invalid N3 Patch: {e}")))?);
    }
    let is = |t: &N3Term, iri: &str| matches!(t, N3Term::NamedNode(n) if n.as_str() == iri);
    let default = |q: &&N3Quad| q.graph_name.is_default_graph();
    let patches: Vec<&N3Term> = quads
        .iter()
        .filter(default)
        .filter(|q| {
            is(&q.predicate, RDF_TYPE) && is(&q.object, &format!("{SOLID}InsertDeletePatch"))
        })
        .map(|q| &q.subject)
        .collect();
    let subject = match patches.as_slice() {
        [one] => *one,
        [] => {
            return Err(PatchError::Unprocessable(
                "the patch has no solid:InsertDeletePatch resource".into(),
            ));
        }
        _ => {
            return Err(PatchError::Unprocessable(
                "the patch has more than one solid:InsertDeletePatch resource".into(),
            ));
        }
    };
    let formula = |name: &str| -> Result<Vec<&N3Quad>, PatchError> {
        let predicate = format!("{SOLID}{name}");
        let objects: Vec<&N3Term> = quads
            .iter()
            .filter(default)
            .filter(|q| &q.subject == subject && is(&q.predicate, &predicate))
            .map(|q| &q.object)
            .collect();
        match objects.as_slice() {
            [] => Ok(Vec::new()),
            [N3Term::BlankNode(graph)] => Ok(quads
                .iter()
                .filter(|q| matches!(&q.graph_name, oxigraph::model::GraphName::BlankNode(b) if b == graph))
                .collect()),
            [_] => Err(PatchError::Unprocessable(format!(
                "solid:{name} must be a formula ({{ … }})"
            ))),
            _ => Err(PatchError::Unprocessable(format!(
                "the patch has more than one solid:{name}"
            ))),
        }
    };
    let owned = |qs: Vec<&N3Quad>| qs.into_iter().cloned().collect::<Vec<_>>();
    Ok(N3Parts {
        conditions: owned(formula("where")?),
        inserts: owned(formula("inserts")?),
        deletes: owned(formula("deletes")?),
    })
}

/// Applies an N3 Patch to the document's triples.
pub fn n3_patch(triples: &[Triple], patch: &[u8], base: &str) -> Result<Vec<Triple>, PatchError> {
    let N3Parts {
        conditions,
        inserts,
        deletes,
    } = n3_parts(patch, base)?;
    let vars_of = |qs: &[N3Quad]| -> Vec<String> {
        qs.iter()
            .flat_map(|q| [&q.subject, &q.predicate, &q.object])
            .filter_map(|t| match t {
                N3Term::Variable(v) => Some(v.as_str().to_string()),
                _ => None,
            })
            .collect()
    };
    let bound = vars_of(&conditions);
    for (name, qs) in [("inserts", &inserts), ("deletes", &deletes)] {
        if let Some(v) = vars_of(qs).into_iter().find(|v| !bound.contains(v)) {
            return Err(PatchError::Unprocessable(format!(
                "variable ?{v} in solid:{name} does not occur in solid:where"
            )));
        }
    }
    if deletes
        .iter()
        .flat_map(|q| [&q.subject, &q.object])
        .any(|t| matches!(t, N3Term::BlankNode(_)))
    {
        return Err(PatchError::Unprocessable(
            "solid:deletes may not contain blank nodes".into(),
        ));
    }

    let store = store_of(triples);
    // The conditions must match exactly once.
    let mut binding: HashMap<String, Term> = HashMap::new();
    if !conditions.is_empty() {
        let pattern: Vec<String> = conditions
            .iter()
            .map(|q| format!("{} {} {} .", q.subject, q.predicate, q.object))
            .collect();
        let query = format!("SELECT * WHERE {{ {} }} LIMIT 2", pattern.join(" "));
        let results = SparqlEvaluator::new()
            .parse_query(&query)
            .map_err(|e| PatchError::Unprocessable(format!("invalid solid:where: {e}")))?
            .on_store(&store)
            .execute()
            .map_err(|e| PatchError::Unprocessable(format!("cannot evaluate solid:where: {e}")))?;
        let QueryResults::Solutions(solutions) = results else {
            unreachable!("a SELECT query");
        };
        let solutions: Vec<_> = solutions.filter_map(Result::ok).collect();
        if solutions.len() != 1 {
            return Err(PatchError::Conflict(format!(
                "solid:where matches {} times; it must match exactly once",
                if solutions.is_empty() {
                    "0"
                } else {
                    "more than one"
                }
            )));
        }
        for (var, value) in solutions[0].iter() {
            binding.insert(var.as_str().to_string(), value.clone());
        }
    }

    let mut fresh: HashMap<String, BlankNode> = HashMap::new();
    let mut instantiate = |t: &N3Term| -> Result<Term, PatchError> {
        Ok(match t {
            N3Term::NamedNode(n) => n.clone().into(),
            N3Term::Literal(l) => l.clone().into(),
            N3Term::BlankNode(b) => fresh
                .entry(b.as_str().to_string())
                .or_default()
                .clone()
                .into(),
            N3Term::Variable(v) => binding.get(v.as_str()).cloned().ok_or_else(|| {
                PatchError::Unprocessable(format!("unbound variable ?{}", v.as_str()))
            })?,
            #[allow(unreachable_patterns)]
            _ => {
                return Err(PatchError::Unprocessable(
                    "unsupported term in patch".into(),
                ));
            }
        })
    };
    let mut to_triple = |q: &N3Quad| -> Result<Triple, PatchError> {
        let s = instantiate(&q.subject)?;
        let p = instantiate(&q.predicate)?;
        let o = instantiate(&q.object)?;
        let subject: NamedOrBlankNode = match s {
            Term::NamedNode(n) => n.into(),
            Term::BlankNode(b) => b.into(),
            _ => {
                return Err(PatchError::Unprocessable(
                    "a literal cannot be a subject".into(),
                ));
            }
        };
        let Term::NamedNode(predicate) = p else {
            return Err(PatchError::Unprocessable(
                "a predicate must be an IRI".into(),
            ));
        };
        Ok(Triple::new(subject, predicate, o))
    };
    let deletes: Vec<Triple> = deletes
        .iter()
        .map(&mut to_triple)
        .collect::<Result<_, _>>()?;
    let inserts: Vec<Triple> = inserts.iter().map(to_triple).collect::<Result<_, _>>()?;
    for t in &deletes {
        let quad: Quad = t.clone().in_graph(oxigraph::model::GraphName::DefaultGraph);
        if !store.contains(&quad).unwrap_or(false) {
            return Err(PatchError::Conflict(format!(
                "the triple to delete is not in the document: {t}"
            )));
        }
        store.remove(&quad).expect("in-memory remove");
    }
    for t in &inserts {
        store
            .insert(t.as_ref().in_graph(GraphNameRef::DefaultGraph))
            .expect("in-memory insert");
    }
    Ok(triples_of(&store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdf::{Syntax, parse};

    const BASE: &str = "http://x/doc";

    fn doc() -> Vec<Triple> {
        parse(
            b"@prefix ex: <http://ex/>. <#a> ex:name \"Claudia\"; ex:family \"Garcia\". <#b> ex:family \"Garcia\".",
            Syntax::Turtle,
            BASE,
        )
        .unwrap()
    }

    #[test]
    fn n3_patch_inserts_and_deletes_with_one_match() {
        let patch =
            br#"@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix ex: <http://ex/>.
            _:p a solid:InsertDeletePatch;
              solid:where { ?who ex:name "Claudia". };
              solid:inserts { ?who ex:name "Alex". };
              solid:deletes { ?who ex:name "Claudia". }."#;
        let out = n3_patch(&doc(), patch, BASE).unwrap();
        let text: Vec<String> = out.iter().map(|t| t.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("\"Alex\"")));
        assert!(!text.iter().any(|t| t.contains("\"Claudia\"")));
    }

    #[test]
    fn n3_patch_statuses() {
        let two = br#"@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix ex: <http://ex/>.
            _:p a solid:InsertDeletePatch; solid:where { ?who ex:family "Garcia". }; solid:inserts { ?who ex:x 1. }."#;
        assert!(matches!(
            n3_patch(&doc(), two, BASE),
            Err(PatchError::Conflict(_))
        ));
        let absent =
            br#"@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix ex: <http://ex/>.
            _:p a solid:InsertDeletePatch; solid:deletes { <#a> ex:name "Nobody". }."#;
        assert!(matches!(
            n3_patch(&doc(), absent, BASE),
            Err(PatchError::Conflict(_))
        ));
        let unbound =
            br#"@prefix solid: <http://www.w3.org/ns/solid/terms#>. @prefix ex: <http://ex/>.
            _:p a solid:InsertDeletePatch; solid:inserts { ?x ex:name "A". }."#;
        assert!(matches!(
            n3_patch(&doc(), unbound, BASE),
            Err(PatchError::Unprocessable(_))
        ));
        let none = br#"@prefix ex: <http://ex/>. <#a> ex:b ex:c."#;
        assert!(matches!(
            n3_patch(&doc(), none, BASE),
            Err(PatchError::Unprocessable(_))
        ));
        assert!(matches!(
            n3_patch(&doc(), b"this is { not n3", BASE),
            Err(PatchError::Syntax(_))
        ));
    }

    #[test]
    fn sparql_update_data_and_where() {
        let out = sparql_update(
            &doc(),
            "PREFIX ex: <http://ex/> DELETE DATA { <#a> ex:name \"Claudia\" }; INSERT DATA { <#a> ex:name \"Alex\" }",
            BASE,
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        let out = sparql_update(
            &doc(),
            "PREFIX ex: <http://ex/> DELETE { ?s ex:family ?f } INSERT { ?s ex:surname ?f } WHERE { ?s ex:family ?f }",
            BASE,
        )
        .unwrap();
        assert_eq!(
            out.iter()
                .filter(|t| t.to_string().contains("surname"))
                .count(),
            2
        );
        assert!(matches!(
            sparql_update(&doc(), "NOT SPARQL", BASE),
            Err(PatchError::Syntax(_))
        ));
    }
}
