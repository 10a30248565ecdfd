//! RDF: which media types are RDF, parsing with line-numbered errors,
//! serialising, and content negotiation. N3 Patch and SPARQL Update live in
//! `patch.rs`. Remote JSON-LD contexts are never fetched.

pub mod patch;
pub mod rdfa;

use oxigraph::io::{JsonLdProfileSet, RdfFormat, RdfParser, RdfSerializer};
use oxigraph::model::{GraphName, NamedNode, NamedOrBlankNode, Term, Triple};

/// The RDF syntaxes xpod reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Turtle,
    JsonLd,
    NTriples,
    /// Output only (and the language of N3 Patch).
    N3,
    RdfXml,
    /// Input only: RDFa in XHTML, read for conversion, never validated on upload.
    Rdfa,
}

impl Syntax {
    pub fn media_type(self) -> &'static str {
        match self {
            Syntax::Turtle => "text/turtle",
            Syntax::JsonLd => "application/ld+json",
            Syntax::NTriples => "application/n-triples",
            Syntax::N3 => "text/n3",
            Syntax::RdfXml => "application/rdf+xml",
            Syntax::Rdfa => "application/xhtml+xml",
        }
    }

    pub(crate) fn format(self) -> RdfFormat {
        match self {
            Syntax::Turtle => RdfFormat::Turtle,
            Syntax::JsonLd => RdfFormat::JsonLd {
                profile: JsonLdProfileSet::empty(),
            },
            Syntax::NTriples => RdfFormat::NTriples,
            Syntax::N3 => RdfFormat::N3,
            Syntax::RdfXml | Syntax::Rdfa => RdfFormat::RdfXml,
        }
    }

    /// Every syntax a client may ask for, in our order of preference.
    pub const OUTPUT: [Syntax; 5] = [
        Syntax::Turtle,
        Syntax::JsonLd,
        Syntax::NTriples,
        Syntax::RdfXml,
        Syntax::N3,
    ];
}

/// The bare media type of a Content-Type value, lowercased.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The syntax of a stored or uploaded document, if it is RDF that xpod parses.
pub fn input_syntax(content_type: &str) -> Option<Syntax> {
    match essence(content_type).as_str() {
        "text/turtle" | "application/x-turtle" => Some(Syntax::Turtle),
        "application/ld+json" => Some(Syntax::JsonLd),
        "application/n-triples" => Some(Syntax::NTriples),
        "application/rdf+xml" => Some(Syntax::RdfXml),
        _ => None,
    }
}

/// The syntax a stored document can be read in for conversion: the RDF
/// syntaxes, plus RDFa in XHTML.
pub fn readable_syntax(content_type: &str) -> Option<Syntax> {
    input_syntax(content_type).or_else(|| {
        matches!(
            essence(content_type).as_str(),
            "application/xhtml+xml" | "text/html"
        )
        .then_some(Syntax::Rdfa)
    })
}

/// Parses a document; the error names the line and column.
pub fn parse(bytes: &[u8], syntax: Syntax, base: &str) -> Result<Vec<Triple>, String> {
    parse_with(bytes, syntax, base, false)
}

/// [`parse`], with blank nodes given new, unique labels: for documents
/// held together in one dataset, where each document's `_:b0` is its own.
pub fn parse_distinct(bytes: &[u8], syntax: Syntax, base: &str) -> Result<Vec<Triple>, String> {
    parse_with(bytes, syntax, base, true)
}

fn parse_with(
    bytes: &[u8],
    syntax: Syntax,
    base: &str,
    rename: bool,
) -> Result<Vec<Triple>, String> {
    if syntax == Syntax::Rdfa {
        return rdfa::extract(bytes, base);
    }
    let mut parser = RdfParser::from_format(syntax.format())
        .with_base_iri(base)
        .map_err(|e| format!("invalid base IRI: {e}"))?
        .with_default_graph(GraphName::DefaultGraph);
    if rename {
        parser = parser.rename_blank_nodes();
    }
    let mut triples = Vec::new();
    for quad in parser.for_slice(bytes) {
        let quad = quad.map_err(|e| describe_error(&e, syntax))?;
        if quad.graph_name != GraphName::DefaultGraph {
            return Err(format!(
                "{} documents hold one graph; named graphs are not allowed",
                syntax.media_type()
            ));
        }
        triples.push(Triple::from(quad));
    }
    Ok(triples)
}

fn describe_error(e: &oxigraph::io::RdfSyntaxError, syntax: Syntax) -> String {
    match e.location() {
        Some(loc) => format!(
            "invalid {} at line {}, column {}: {e}",
            syntax.media_type(),
            loc.start.line + 1,
            loc.start.column + 1
        ),
        None => format!("invalid {}: {e}", syntax.media_type()),
    }
}

/// Serialises triples. Turtle and N3 write the IRIs of `base`'s own origin
/// relative to it (`<a>`, `</bob/card#me>`) and every other IRI whole.
pub fn serialize(triples: &[Triple], syntax: Syntax, base: &str) -> Vec<u8> {
    let mut serializer = RdfSerializer::from_format(syntax.format());
    let mut out = Vec::new();
    let mut relative = None;
    if matches!(syntax, Syntax::Turtle | Syntax::N3) {
        serializer = serializer
            .with_prefix("ldp", "http://www.w3.org/ns/ldp#")
            .expect("valid prefix")
            .with_prefix("dc", "http://purl.org/dc/terms/")
            .expect("valid prefix");
        relative = Relative::new(base);
        // An empty graph stays an empty document.
        if relative.is_some() && !triples.is_empty() {
            out = format!("@base <{base}> .\n").into_bytes();
        }
    }
    let mut writer = serializer.for_writer(out);
    for t in triples {
        let t = match &relative {
            Some(r) => &r.triple(t),
            None => t,
        };
        writer
            .serialize_triple(t)
            .expect("writing to memory cannot fail");
    }
    writer.finish().expect("writing to memory cannot fail")
}

/// Writes IRIs relative to a base, but only those of the base's own
/// scheme and authority. (The serialiser's own relativisation also writes
/// other hosts' IRIs as network-path references, `<//schema.org/name>`:
/// valid, but not what anyone reading a document expects.)
struct Relative {
    base: oxiri::Iri<String>,
    /// `scheme://authority/`: the start of every IRI written relative.
    origin: String,
}

impl Relative {
    fn new(base: &str) -> Option<Relative> {
        let base = oxiri::Iri::parse(base.to_string()).ok()?;
        let origin = format!("{}://{}/", base.scheme(), base.authority()?);
        Some(Relative { base, origin })
    }

    fn node(&self, node: &NamedNode) -> NamedNode {
        if node.as_str().starts_with(&self.origin)
            && let Ok(iri) = oxiri::Iri::parse(node.as_str())
            && let Ok(relative) = self.base.relativize(&iri)
            // A path starting `//` is written as a network-path reference
            // (`<//host//x>`): such an IRI is kept whole.
            && !relative.as_str().starts_with("//")
        {
            // Relative on purpose: the document's @base resolves it.
            return NamedNode::new_unchecked(relative.into_inner());
        }
        node.clone()
    }

    fn triple(&self, t: &Triple) -> Triple {
        let subject = match &t.subject {
            NamedOrBlankNode::NamedNode(n) => self.node(n).into(),
            other => other.clone(),
        };
        let object = match &t.object {
            Term::NamedNode(n) => self.node(n).into(),
            other => other.clone(),
        };
        Triple::new(subject, self.node(&t.predicate), object)
    }
}

/// The most brackets (`(`, `{`, `[`) a SPARQL text may hold. The parser
/// recurses once per level of nesting, and nesting needs brackets, so
/// this bounds its depth whatever the text.
pub const MAX_BRACKETS: usize = 10_000;

/// The stack SPARQL is parsed, evaluated and dropped on: room for
/// [`MAX_BRACKETS`] levels at a few KiB each (reserved, not used, until
/// needed).
const PARSER_STACK: usize = 64 << 20;

/// Refuses a SPARQL text nested past what [`on_parser_stack`] has room for.
pub fn check_nesting(text: &str) -> Result<(), String> {
    let brackets = text
        .bytes()
        .filter(|b| matches!(b, b'(' | b'{' | b'['))
        .count();
    if brackets > MAX_BRACKETS {
        return Err(format!(
            "the SPARQL text has {brackets} brackets, more than the {MAX_BRACKETS} accepted; split it into smaller requests"
        ));
    }
    Ok(())
}

/// Runs `work` (parsing a SPARQL text checked by [`check_nesting`], and
/// everything done with and dropping what it parsed) on a thread with a
/// stack deep enough for it: a deeply nested text would overflow the
/// stack of a runtime thread and abort the process.
pub fn on_parser_stack<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("sparql".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, work)
            .expect("cannot start a thread to parse SPARQL");
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// One media range of an Accept header.
struct Range {
    kind: String,
    q: f32,
}

fn accept_ranges(accept: &str) -> Vec<Range> {
    accept
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let kind = pieces.next()?.trim().to_ascii_lowercase();
            if kind.is_empty() {
                return None;
            }
            let q = pieces
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(Range { kind, q })
        })
        .collect()
}

fn quality(ranges: &[Range], media_type: &str) -> f32 {
    let (top, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    let mut best: Option<(u8, f32)> = None;
    for r in ranges {
        let specificity = if r.kind == media_type {
            3
        } else if r.kind == format!("{top}/*") {
            2
        } else if r.kind == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, r.q));
        }
    }
    best.map(|(_, q)| q).unwrap_or(0.0)
}

/// The media type of `offers` that an Accept header prefers (ties go to
/// the earlier offer; no Accept header takes the first), or `None` when
/// it accepts none of them.
pub fn preferred<'a>(accept: Option<&str>, offers: &[&'a str]) -> Option<&'a str> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return offers.first().copied();
    };
    let ranges = accept_ranges(accept);
    let mut best: Option<(f32, &str)> = None;
    for offer in offers {
        let q = quality(&ranges, offer);
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, offer));
        }
    }
    best.map(|(_, offer)| offer)
}

/// What to send for a document stored as `stored` (an RDF syntax or not).
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The bytes as stored.
    AsStored,
    /// Converted to this syntax.
    Convert(Syntax),
    /// Nothing acceptable.
    NotAcceptable,
}

pub fn negotiate(accept: Option<&str>, stored: Option<Syntax>, stored_type: &str) -> Choice {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Choice::AsStored;
    };
    let ranges = accept_ranges(accept);
    let stored_q = quality(&ranges, &essence(stored_type));
    let Some(stored) = stored else {
        return if stored_q > 0.0 {
            Choice::AsStored
        } else {
            Choice::NotAcceptable
        };
    };
    let mut best = (stored_q, None);
    for syntax in Syntax::OUTPUT {
        let q = quality(&ranges, syntax.media_type());
        if q > best.0 && syntax != stored {
            best = (q, Some(syntax));
        }
    }
    match best {
        (q, _) if q <= 0.0 => Choice::NotAcceptable,
        (_, Some(syntax)) => Choice::Convert(syntax),
        (_, None) => Choice::AsStored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turtle_writes_only_the_base_origins_iris_relative() {
        let n = |iri: &str| NamedNode::new(iri).unwrap();
        let triples = [
            Triple::new(
                n("http://pods.example/alice/notes/"),
                n("http://www.w3.org/ns/ldp#contains"),
                n("http://pods.example/alice/notes/a.ttl"),
            ),
            Triple::new(
                n("http://pods.example/alice/notes/a.ttl"),
                n("http://schema.org/author"),
                n("http://pods.example/bob/profile/card#me"),
            ),
            Triple::new(
                n("http://pods.example/alice/notes/a.ttl"),
                n("http://purl.org/dc/terms/references"),
                n("https://pods.example/alice/"),
            ),
            Triple::new(
                n("http://pods.example/alice/notes/a.ttl"),
                n("http://purl.org/dc/terms/relation"),
                n("http://pods.example//double"),
            ),
        ];
        let base = "http://pods.example/alice/notes/";
        let text = String::from_utf8(serialize(&triples, Syntax::Turtle, base)).unwrap();
        assert!(text.starts_with("@base <http://pods.example/alice/notes/> .\n"));
        assert!(
            text.contains("@prefix ldp: <http://www.w3.org/ns/ldp#> ."),
            "{text}"
        );
        assert!(text.contains("<> ldp:contains <a.ttl> ."), "{text}");
        assert!(
            text.contains("<http://schema.org/author> </bob/profile/card#me>"),
            "{text}"
        );
        // Another scheme is another origin.
        assert!(
            text.contains("dc:references <https://pods.example/alice/>"),
            "{text}"
        );
        assert!(
            text.contains("dc:relation <http://pods.example//double>"),
            "{text}"
        );
        assert!(!text.contains("<//"), "{text}");
        // An empty graph is an empty document.
        assert!(serialize(&[], Syntax::Turtle, base).is_empty());
        // It reads back as the same triples.
        let back = parse(text.as_bytes(), Syntax::Turtle, base).unwrap();
        assert_eq!(
            back.into_iter().collect::<std::collections::HashSet<_>>(),
            triples.into_iter().collect()
        );
    }

    #[test]
    fn negotiation_prefers_the_stored_form_on_ties() {
        let t = Some(Syntax::Turtle);
        assert_eq!(negotiate(None, t, "text/turtle"), Choice::AsStored);
        assert_eq!(negotiate(Some("*/*"), t, "text/turtle"), Choice::AsStored);
        assert_eq!(
            negotiate(Some("application/ld+json"), t, "text/turtle"),
            Choice::Convert(Syntax::JsonLd)
        );
        assert_eq!(
            negotiate(
                Some("application/ld+json;q=0.5, text/turtle"),
                t,
                "text/turtle"
            ),
            Choice::AsStored
        );
        assert_eq!(
            negotiate(
                Some("text/turtle;q=0.5, application/n-triples"),
                t,
                "text/turtle"
            ),
            Choice::Convert(Syntax::NTriples)
        );
        assert_eq!(
            negotiate(Some("image/png"), t, "text/turtle"),
            Choice::NotAcceptable
        );
        assert_eq!(
            negotiate(Some("image/*"), None, "image/png"),
            Choice::AsStored
        );
        assert_eq!(
            negotiate(Some("text/turtle"), None, "image/png"),
            Choice::NotAcceptable
        );
    }

    #[test]
    fn preferred_offers() {
        let offers = ["application/sparql-results+json", "text/csv"];
        assert_eq!(preferred(None, &offers), Some(offers[0]));
        assert_eq!(preferred(Some("*/*"), &offers), Some(offers[0]));
        assert_eq!(preferred(Some("text/*"), &offers), Some("text/csv"));
        assert_eq!(
            preferred(Some("text/csv;q=0.9, application/*;q=0.5"), &offers),
            Some("text/csv")
        );
        assert_eq!(preferred(Some("image/png"), &offers), None);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = parse(b"<a> <b> <c> .\n<a> <b> .\n", Syntax::Turtle, "http://x/").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let ok = parse(
            b"<#me> <http://xmlns.com/foaf/0.1/name> \"A\".",
            Syntax::Turtle,
            "http://x/card",
        )
        .unwrap();
        assert_eq!(ok[0].subject.to_string(), "<http://x/card#me>");
        let json = br#"{"@id": "http://x/a", "http://x/p": "v"}"#;
        assert_eq!(parse(json, Syntax::JsonLd, "http://x/").unwrap().len(), 1);
    }
}
