//! The final pass of a copy: walks both trees again and compares them. The
//! same containers and documents must exist on both sides; non-RDF documents
//! must have the same media type and the same bytes; RDF documents and
//! auxiliary resources must hold isomorphic graphs once the source's IRIs
//! are moved to the target's base, in whatever syntax each server answers.

use futures::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::remote::{self, Endpoint, Head};
use super::{AuxKind, Rebase, WalkError, bar, read_aux, walk};
use crate::rdf;

/// Compares the tree under `source.base` with the one under `target.base`:
/// the number of resources checked, or every difference found.
pub async fn verify(
    source: &Endpoint,
    target: &Endpoint,
    progress: bool,
) -> Result<usize, WalkError> {
    let rebase = Rebase::new(&source.base, &target.base);
    let walk_bar = bar(progress, "walk");
    let (a, b) = futures::try_join!(walk(source, &walk_bar), walk(target, &walk_bar))?;
    walk_bar.finish_and_clear();
    let mut diffs = Vec::new();
    for c in a.containers.difference(&b.containers) {
        diffs.push(format!("container {} is missing on the target", show(c)));
    }
    for c in b.containers.difference(&a.containers) {
        diffs.push(format!("container {} exists only on the target", show(c)));
    }
    for d in a.documents.difference(&b.documents) {
        diffs.push(format!("{d} is missing on the target"));
    }
    for d in b.documents.difference(&a.documents) {
        diffs.push(format!("{d} exists only on the target"));
    }

    let common: Vec<&String> = a.documents.intersection(&b.documents).collect();
    let check_bar = bar(progress, "verify");
    check_bar.set_length(common.len() as u64);
    let results: Vec<(Vec<String>, Head, Head)> = futures::stream::iter(common.iter())
        .map(|rel| {
            let (rebase, bar) = (&rebase, &check_bar);
            async move {
                let r = compare_document(rebase, source, target, rel).await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(super::CONCURRENCY)
        .try_collect()
        .await?;
    let mut pairs = Vec::new();
    for (d, s, t) in results {
        diffs.extend(d);
        pairs.push((s, t));
    }
    for c in a.containers.intersection(&b.containers) {
        if let (Some(s), Some(t)) = (a.heads.get(c), b.heads.get(c)) {
            pairs.push((s.clone(), t.clone()));
        }
    }
    check_bar.inc_length(pairs.len() as u64);
    let aux: Vec<Vec<String>> = futures::stream::iter(pairs.iter())
        .map(|(s, t)| {
            let (rebase, bar) = (&rebase, &check_bar);
            async move {
                let r = compare_aux(rebase, source, target, s, t).await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(super::CONCURRENCY)
        .try_collect()
        .await?;
    check_bar.finish_and_clear();
    diffs.extend(aux.into_iter().flatten());
    if diffs.is_empty() {
        Ok(common.len() + a.containers.len())
    } else {
        diffs.sort();
        Err(WalkError::Differences(diffs))
    }
}

fn show(rel: &str) -> &str {
    if rel.is_empty() { "(the base)" } else { rel }
}

async fn compare_document(
    rebase: &Rebase,
    source: &Endpoint,
    target: &Endpoint,
    rel: &str,
) -> Result<(Vec<String>, Head, Head), WalkError> {
    let (su, tu) = (source.url(rel), target.url(rel));
    let ((sh, sresp), (th, tresp)) =
        futures::try_join!(source.get(&su, None), target.get(&tu, None))?;
    let mut diffs = Vec::new();
    if !sh.exists() || !th.exists() {
        diffs.push(format!(
            "{rel}: the source answered {} and the target {}",
            sh.status, th.status
        ));
        return Ok((diffs, sh, th));
    }
    let sct = sh.content_type.clone().unwrap_or_default();
    let tct = th.content_type.clone().unwrap_or_default();
    match rdf::input_syntax(&sct) {
        Some(syntax) => {
            let (sb, tb) =
                futures::try_join!(remote::read_body(&su, sresp), remote::read_body(&tu, tresp))?;
            let Some(tsyntax) = rdf::input_syntax(&tct) else {
                diffs.push(format!(
                    "{rel}: RDF ({sct}) on the source, but {tct:?} on the target"
                ));
                return Ok((diffs, sh, th));
            };
            let s = rdf::parse(&sb, syntax, &su)
                .map_err(|e| WalkError::Other(format!("{su} is unreadable: {e}")))?;
            let t = rdf::parse(&tb, tsyntax, &tu)
                .map_err(|e| WalkError::Other(format!("{tu} is unreadable: {e}")))?;
            if let Some(d) = graph_difference(rel, &rebase.triples(s), &t) {
                diffs.push(d);
            }
        }
        None => {
            if rdf::essence(&sct) != rdf::essence(&tct) {
                diffs.push(format!(
                    "{rel}: media type {sct:?} on the source, {tct:?} on the target"
                ));
            }
            let (s, t) = futures::try_join!(digest(&su, sresp), digest(&tu, tresp))?;
            if s != t {
                diffs.push(format!(
                    "{rel}: the bytes differ ({} on the source, {} on the target)",
                    s.0, t.0
                ));
            }
        }
    }
    Ok((diffs, sh, th))
}

async fn compare_aux(
    rebase: &Rebase,
    source: &Endpoint,
    target: &Endpoint,
    sh: &Head,
    th: &Head,
) -> Result<Vec<String>, WalkError> {
    let mut diffs = Vec::new();
    for kind in [AuxKind::Description, AuxKind::Acl] {
        let Some(su) = sh.links.get(kind.rel()) else {
            continue;
        };
        if source.rel(su).is_none() {
            continue;
        }
        let s = read_aux(source, kind, su).await?;
        let tu = th
            .links
            .get(kind.rel())
            .cloned()
            .unwrap_or_else(|| rebase.iri(su));
        let t = read_aux(target, kind, &tu).await?;
        let label = format!("{} ({})", source.rel(su).unwrap_or(su), kind.rel());
        match (s, t) {
            (None, None) => {}
            (Some(_), None) => diffs.push(format!("{label} is missing on the target")),
            (None, Some(_)) => diffs.push(format!("{label} exists only on the target")),
            (Some((_, s)), Some((_, t))) => {
                if let Some(d) = graph_difference(&label, &rebase.triples(s), &t) {
                    diffs.push(d);
                }
            }
        }
    }
    Ok(diffs)
}

fn graph_difference(
    label: &str,
    source: &[oxigraph::model::Triple],
    target: &[oxigraph::model::Triple],
) -> Option<String> {
    let (only_s, only_t) = super::rebase::difference(source, target)?;
    let first = |v: &[String]| v.first().cloned().unwrap_or_default();
    Some(format!(
        "{label}: the graphs differ: {} triple(s) only on the source (such as {}), {} only on the target (such as {})",
        only_s.len(),
        first(&only_s),
        only_t.len(),
        first(&only_t)
    ))
}

/// The length and SHA-256 of a body, read as a stream.
async fn digest(url: &str, resp: reqwest::Response) -> Result<(u64, Vec<u8>), WalkError> {
    let mut hash = sha2::Sha256::new();
    let mut len = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| WalkError::Unreachable {
            url: url.to_string(),
            reason: format!("the body broke off: {}", remote::error_chain(&e)),
        })?;
        len += chunk.len() as u64;
        hash.update(&chunk);
    }
    Ok((len, hash.finalize().to_vec()))
}
