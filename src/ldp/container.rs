//! Container representations: the listing of children as Turtle, streamed
//! page by page so a container of any size starts answering at once and
//! never sits whole in memory.

use bytes::Bytes;
use futures::StreamExt;

use super::headers::xsd_date_time;
use crate::blob::ByteStream;
use crate::db::{Db, ResourceRecord};

const PAGE: u32 = 1000;

const PREFIXES: &str = "@prefix dc: <http://purl.org/dc/terms/>.\n\
@prefix ldp: <http://www.w3.org/ns/ldp#>.\n\
@prefix posix: <http://www.w3.org/ns/posix/stat#>.\n\
@prefix xsd: <http://www.w3.org/2001/XMLSchema#>.\n\n";

fn header(container: &ResourceRecord, is_root: bool) -> String {
    let storage = if is_root {
        ", <http://www.w3.org/ns/pim/space#Storage>"
    } else {
        ""
    };
    format!(
        "{PREFIXES}<> a ldp:Container, ldp:BasicContainer, ldp:Resource{storage};\n    dc:modified \"{}\"^^xsd:dateTime.\n",
        xsd_date_time(container.modified_at)
    )
}

/// The name of a child relative to its container (`doc.ttl`, `sub/`).
pub fn relative_name(child: &ResourceRecord) -> &str {
    let parent_len = child.parent.as_deref().map(str::len).unwrap_or(1);
    &child.path[parent_len..]
}

fn child_triples(child: &ResourceRecord) -> String {
    let name = relative_name(child);
    let kind = if child.is_container() {
        "ldp:Container, ldp:BasicContainer, ldp:Resource"
    } else {
        "ldp:Resource"
    };
    format!(
        "<> ldp:contains <{name}>.\n<{name}> a {kind};\n    posix:size {};\n    dc:modified \"{}\"^^xsd:dateTime;\n    posix:mtime {}.\n",
        child.size,
        xsd_date_time(child.modified_at),
        child.modified_at / 1000
    )
}

/// The Turtle listing of a container, as a stream of pages.
pub fn listing(db: Db, container: ResourceRecord, is_root: bool) -> ByteStream {
    let first = Bytes::from(header(&container, is_root));
    let state = Some((db, container, None::<String>));
    let pages = futures::stream::unfold(state, |state| async move {
        let (db, container, after) = state?;
        match db
            .resource_children(&container.pod_id, &container.path, after.as_deref(), PAGE)
            .await
        {
            Ok(children) => {
                let next = (children.len() == PAGE as usize)
                    .then(|| children.last().map(|c| c.path.clone()))
                    .flatten();
                let mut text = String::with_capacity(children.len() * 160);
                // ACLs are auxiliary resources, found by their Link, not listed.
                for child in children.iter().filter(|c| !c.path.ends_with(".acl")) {
                    text.push_str(&child_triples(child));
                }
                let rest = next.map(|after| (db, container, Some(after)));
                Some((Ok(Bytes::from(text)), rest))
            }
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    futures::stream::once(async move { Ok(first) })
        .chain(pages)
        .boxed()
}
