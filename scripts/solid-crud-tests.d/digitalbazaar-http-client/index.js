// Stand-in for @digitalbazaar/http-client 1.x, which jsonld 5 uses only in its
// document loader, to fetch remote JSON-LD contexts. The real package loads
// through `esm`, which copies Node 20's lazy `crypto` getter onto Jest's test
// global; Jest 26 reads every global when it tears down a test file, the getter
// throws ('Value of "this" must be of type nullish or must be the global
// object'), and conneg.test.ts fails as a whole with its results lost.
// solid-crud-tests' fixtures use inline contexts, and this runner has no
// network beyond the servers under test, so a remote context is an error.
"use strict";
function refuse(url) {
  return Promise.reject(
    new Error(`remote JSON-LD document ${url} not fetched: xpod's solid-crud-tests runner stubs @digitalbazaar/http-client`)
  );
}
const httpClient = { get: refuse, head: refuse, post: refuse, put: refuse, patch: refuse, delete: refuse };
module.exports = { httpClient, DEFAULT_HEADERS: { Accept: "application/ld+json, application/json" } };
