// The client of scripts/bench-sparql: it makes the benchmark's documents,
// loads them into a server, and answers one question in two ways, timing
// each complete answer:
//
//   sparql  one query to the container's SPARQL sidecar
//           ({container}-/sparql), JSON results parsed;
//   fetch   what a Solid client must do without one: walk the LDP
//           containers (ldp:contains), GET every document, parse its Turtle
//           with the n3 package and filter in JavaScript;
//   ask     `ASK {}` to the sidecar, what it costs whatever the query: the
//           server lists the documents, checks access, refreshes its index
//           and forks an evaluation, which reads nothing (answer: true).
//
// The question: the title and date of every task whose status is done,
// ordered by date, then title. Every answer is checked against the one the
// generator knows; a wrong answer or a failed request ends the process with
// status 3 and says what was sent and what came back.
//
//   node client.cjs load    --base=URL --docs=N --containers=C --concurrency=K
//   node client.cjs measure --phase=P --runs=R --approaches=A,B,… [--warmup]
//                           --xpod=URL --css=URL --xpod-pid=PID --css-pid=PID
//                           --docs=N --containers=C --concurrency=K --method=GET|POST
//                           [--first=R] --out=FILE
//   node client.cjs after-write --runs=W --xpod=URL --xpod-pid=PID --docs=N
//                           --containers=C --method=GET|POST --out=FILE
//   node client.cjs check-post --xpod=URL --docs=N --containers=C
//
// URLs are the servers' canonical bases (http://localhost:PORT/); every
// connection goes to 127.0.0.1. The n3 package is required from CSS_DIR
// (the Community Solid Server install, which depends on it).
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");

const N3 = require(path.join(process.env.CSS_DIR || ".", "node_modules", "n3"));

const POD = "bench";
const DATA = `${POD}/data/`;
const SCHEMA = "http://schema.org/";
const RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
const LDP_CONTAINS = "http://www.w3.org/ns/ldp#contains";
const ACTION = `${SCHEMA}Action`;
const STATUS = `${SCHEMA}actionStatus`;
const DONE = `${SCHEMA}CompletedActionStatus`;
const NAME = `${SCHEMA}name`;
const END = `${SCHEMA}endDate`;

const QUERY = `PREFIX schema: <http://schema.org/>
SELECT ?title ?date WHERE {
  ?task a schema:Action ;
        schema:actionStatus schema:CompletedActionStatus ;
        schema:name ?title ;
        schema:endDate ?date .
}
ORDER BY ?date ?title
`;

// ------------------------------------------------------------ arguments

function options(argv) {
  const o = {};
  for (const a of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(a);
    if (!m) fail(`unknown argument ${a}`);
    o[m[1]] = m[2] === undefined ? true : m[2];
  }
  return o;
}

function fail(message) {
  process.stderr.write(`bench-sparql client: ${message}\n`);
  process.exit(3);
}

function whole(o, name) {
  const v = Number(o[name]);
  if (!Number.isInteger(v) || v < 0) fail(`--${name} must be a whole number, not ${o[name]}`);
  return v;
}

// ------------------------------------------------------------ the data

// A small deterministic generator (mulberry32), so that every server gets
// the same documents and the expected answer is known without asking one.
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VERBS = ["review", "draft", "fix", "plan", "test", "ship", "call", "file", "sort", "check"];
const NOUNS = ["budget", "report", "garden", "invoice", "release", "backup", "schedule", "roof", "car", "taxes"];
const STATUSES = ["ActiveActionStatus", "PotentialActionStatus", "FailedActionStatus"];
const WORDS = ["home", "work", "urgent", "later", "family", "money", "health", "travel", "admin", "fun"];

function pad(n, w) {
  return String(n).padStart(w, "0");
}

function day(offset) {
  return new Date(Date.UTC(2025, 0, 1) + offset * 86400000).toISOString().slice(0, 10);
}

// Task i: where it lives and what it says. `flipped` turns done into not
// done and back (the after-write phase's change).
function task(i, containers, flipped = false) {
  const r = random(i * 2654435761 + 17);
  const done = (r() < 0.1) !== flipped;
  const id = `task-${pad(i, 5)}`;
  const title = `Task ${i}: ${VERBS[Math.floor(r() * 10)]} the ${NOUNS[Math.floor(r() * 10)]}`;
  const start = Math.floor(r() * 700);
  const end = start + 1 + Math.floor(r() * 30);
  const status = done ? "CompletedActionStatus" : STATUSES[Math.floor(r() * 3)];
  const priority = 1 + Math.floor(r() * 5);
  const person = Math.floor(r() * 50);
  const words = [0, 1, 2].map(() => WORDS[Math.floor(r() * 10)]);
  const body = `@prefix schema: <http://schema.org/>.
@prefix xsd: <http://www.w3.org/2001/XMLSchema#>.

<#task> a schema:Action;
  schema:identifier "${id}";
  schema:name "${title}";
  schema:description "A task of the benchmark, number ${i}, with a sentence of text like a real one would have.";
  schema:actionStatus schema:${status};
  schema:startTime "${day(start)}"^^xsd:date;
  schema:endDate "${day(end)}"^^xsd:date;
  schema:position ${priority};
  schema:keywords "${words[0]}", "${words[1]}", "${words[2]}";
  schema:agent <#agent>;
  schema:object <#object>.
<#agent> a schema:Person;
  schema:name "Person ${person}";
  schema:email "person${person}@example.org".
<#object> a schema:CreativeWork;
  schema:name "The ${NOUNS[i % 10]} of task ${i}".
`;
  return { path: `${DATA}c${i % containers}/${id}.ttl`, done, title, date: day(end), body };
}

function answerOf(rows) {
  return rows
    .map((r) => [r.title, r.date])
    .sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function expected(docs, containers, flipped = new Set()) {
  const rows = [];
  for (let i = 0; i < docs; i++) {
    const t = task(i, containers, flipped.has(i));
    if (t.done) rows.push(t);
  }
  return answerOf(rows);
}

// ------------------------------------------------------------ HTTP

function lookup(host, opts, cb) {
  if (typeof opts === "function") cb = opts;
  if (opts && opts.all) cb(null, [{ address: "127.0.0.1", family: 4 }]);
  else cb(null, "127.0.0.1", 4);
}

// A client for one complete answer: its own keep-alive connections (at
// most `max` at once) and a count of the requests and bytes it used.
class Client {
  constructor(max) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: max });
    this.sockets = new Set();
    this.requests = 0;
  }

  request(method, url, headers = {}, body = null) {
    this.requests++;
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method, headers, agent: this.agent, lookup }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      });
      req.on("socket", (s) => this.sockets.add(s));
      req.on("error", (e) => reject(new Error(`${method} ${url}: ${e.message}`)));
      if (body !== null) req.end(body);
      else req.end();
    });
  }

  // Bytes received and sent on every connection, headers included.
  bytes() {
    let read = 0;
    let written = 0;
    for (const s of this.sockets) {
      read += s.bytesRead;
      written += s.bytesWritten;
    }
    return [read, written];
  }

  // Closes the connections, a moment after the last response: CSS logs a
  // "premature close" when a connection closes before its response stream
  // has finished on its side, even though every byte was sent.
  async close() {
    await new Promise((resolve) => setTimeout(resolve, 20));
    this.agent.destroy();
  }
}

function refused(what, res) {
  const head = Object.entries(res.headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n  ");
  return new Error(`${what} answered ${res.status}\n  ${head}\n${res.body.slice(0, 2000)}`);
}

async function pool(items, max, work) {
  let next = 0;
  const runners = [];
  for (let k = 0; k < Math.min(max, items.length); k++) {
    runners.push(
      (async () => {
        while (next < items.length) await work(items[next++]);
      })(),
    );
  }
  await Promise.all(runners);
}

// ------------------------------------------------------------ load

async function load(o) {
  const base = o.base;
  const docs = whole(o, "docs");
  const containers = whole(o, "containers");
  const client = new Client(whole(o, "concurrency"));
  const all = [];
  for (let i = 0; i < docs; i++) all.push(task(i, containers));
  const put = async (t) => {
    const res = await client.request("PUT", base + t.path, { "content-type": "text/turtle" }, t.body);
    if (![200, 201, 204, 205].includes(res.status)) throw refused(`PUT ${base}${t.path}`, res);
  };
  const t0 = process.hrtime.bigint();
  // The first document of each container alone, so that the containers on
  // the way are created by one request each, then the rest concurrently.
  for (const t of all.slice(0, containers)) await put(t);
  await pool(all.slice(containers), whole(o, "concurrency"), put);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  await client.close();
  const bytes = all.reduce((n, t) => n + Buffer.byteLength(t.body), 0);
  const triples = new N3.Parser({ baseIRI: base + all[0].path }).parse(all[0].body).length;
  process.stdout.write(`${docs}\t${seconds.toFixed(3)}\t${bytes}\t${triples}\n`);
}

// ------------------------------------------------------------ answers

// One SPARQL query: [answer, client].
async function viaSparql(base, method, query = QUERY) {
  const client = new Client(1);
  const url = `${base}${DATA}-/sparql`;
  const accept = { accept: "application/sparql-results+json" };
  const res =
    method === "POST"
      ? await client.request("POST", url, { ...accept, "content-type": "application/sparql-query" }, query)
      : await client.request("GET", `${url}?query=${encodeURIComponent(query)}`, accept);
  if (res.status !== 200) throw refused(`${method} ${url} (the query)`, res);
  if (!/^application\/sparql-results\+json\b/.test(res.headers["content-type"] || "")) {
    throw refused(`${method} ${url} (the query): Content-Type is not application/sparql-results+json;`, res);
  }
  let json;
  try {
    json = JSON.parse(res.body);
  } catch (e) {
    throw new Error(`${method} ${url}: the body is not JSON (${e.message}), content-type ${res.headers["content-type"]}:\n${res.body.slice(0, 2000)}`);
  }
  if (typeof json.boolean === "boolean") return [[[String(json.boolean), ""]], client];
  const rows = json.results.bindings.map((b) => [b.title && b.title.value, b.date && b.date.value]);
  return [rows, client];
}

// The same answer by walking the containers and reading every document.
async function viaFetch(base, max) {
  const client = new Client(max);
  const rows = [];
  const queue = [base + DATA];
  let active = 0;
  await new Promise((resolve, reject) => {
    let failed = false;
    const pump = () => {
      if (failed) return;
      if (queue.length === 0 && active === 0) return resolve();
      while (active < max && queue.length) {
        const url = queue.shift();
        active++;
        visit(url).then(
          () => {
            active--;
            pump();
          },
          (e) => {
            failed = true;
            reject(e);
          },
        );
      }
    };
    const visit = async (url) => {
      const res = await client.request("GET", url, { accept: "text/turtle" });
      if (res.status !== 200) throw refused(`GET ${url}`, res);
      const quads = new N3.Parser({ baseIRI: url, format: "text/turtle" }).parse(res.body);
      if (url.endsWith("/")) {
        for (const q of quads) {
          if (q.predicate.value === LDP_CONTAINS && q.subject.value === url) queue.push(q.object.value);
        }
        return;
      }
      // The filter: subjects that are tasks, done, with a title and a date.
      const by = new Map();
      for (const q of quads) {
        let s = by.get(q.subject.value);
        if (!s) by.set(q.subject.value, (s = { types: [], status: [], names: [], dates: [] }));
        const p = q.predicate.value;
        if (p === RDF_TYPE) s.types.push(q.object.value);
        else if (p === STATUS) s.status.push(q.object.value);
        else if (p === NAME) s.names.push(q.object.value);
        else if (p === END) s.dates.push(q.object.value);
      }
      for (const s of by.values()) {
        if (!s.types.includes(ACTION) || !s.status.includes(DONE)) continue;
        for (const title of s.names) for (const date of s.dates) rows.push({ title, date });
      }
    };
    pump();
  });
  return [answerOf(rows), client];
}

function same(got, want) {
  if (got.length !== want.length) return `${got.length} rows instead of ${want.length}`;
  for (let k = 0; k < want.length; k++) {
    if (got[k][0] !== want[k][0] || got[k][1] !== want[k][1]) {
      return `row ${k + 1} is ${JSON.stringify(got[k])} instead of ${JSON.stringify(want[k])}`;
    }
  }
  return null;
}

// utime + stime of a process and of its reaped children (xpod evaluates
// each query in a child it forks and waits for), in clock ticks.
function ticks(pid) {
  if (!pid) return 0;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
}

// Parses every document once without a server, so that the first timed
// answer does not pay for compiling the parser.
function warmParser(docs, containers) {
  for (let i = 0; i < docs; i++) {
    const t = task(i, containers);
    new N3.Parser({ baseIRI: `http://localhost/${t.path}`, format: "text/turtle" }).parse(t.body);
  }
}

// A request to each server's root container (xpod: its health check),
// so that the first timed answer does not pay for compiling the client's
// HTTP code either. It reads nothing of the documents.
async function warmHttp(o, approaches) {
  for (const server of new Set(approaches.map((a) => a.split("-")[0]))) {
    const client = new Client(1);
    const url = server === "xpod" ? `${o.xpod}.cluster/health` : o[server];
    const res = await client.request("GET", url);
    await client.close();
    if (res.status !== 200) throw refused(`GET ${url}`, res);
  }
}

// One timed answer, checked; returns a TSV line.
async function answer(o, phase, approach, run, want) {
  const [server, how] = approach.split("-");
  const base = o[server];
  const pid = Number(o[`${server}-pid`] || 0);
  const k0 = ticks(pid);
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const [rows, client] =
    how === "sparql"
      ? await viaSparql(base, o.method)
      : how === "ask"
        ? await viaSparql(base, o.method, "ASK {}")
        : await viaFetch(base, whole(o, "concurrency"));
  if (how === "ask") want = [["true", ""]];
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(c0);
  const k1 = ticks(pid);
  const [read, written] = client.bytes();
  await client.close();
  const wrong = same(rows, want);
  if (wrong) fail(`${approach} (${phase}, run ${run}) gave a wrong answer: ${wrong}`);
  return [phase, approach, run, ms.toFixed(3), client.requests, read, written, rows.length, cpu.user + cpu.system, k1 - k0].join("\t") + "\n";
}

async function measure(o) {
  const docs = whole(o, "docs");
  const containers = whole(o, "containers");
  const runs = whole(o, "runs");
  const approaches = String(o.approaches).split(",");
  const want = expected(docs, containers);
  warmParser(docs, containers);
  await warmHttp(o, approaches);
  if (o.warmup) {
    // One answer by each approach, not recorded: connections, the servers'
    // caches and the client's code are warm before the first timed one.
    for (const a of approaches) await answer(o, "warmup", a, 0, want);
  }
  const first = o.first === undefined ? 1 : whole(o, "first");
  for (let r = first; r < first + runs; r++) {
    for (let k = 0; k < approaches.length; k++) {
      // The order rotates from round to round.
      const a = approaches[(r - 1 + k) % approaches.length];
      const line = await answer(o, o.phase, a, r, want);
      fs.appendFileSync(o.out, line);
    }
  }
}

// Times a query (the control, nothing changed since the last one), then
// PUTs one document with its status flipped and times the query that
// follows: the index must re-read that document. Both in one process, in
// turn, so that they compare like with like.
async function afterWrite(o) {
  const docs = whole(o, "docs");
  const containers = whole(o, "containers");
  const runs = whole(o, "runs");
  const flipped = new Set();
  warmParser(docs, containers);
  await warmHttp(o, ["xpod-sparql"]);
  await answer(o, "warmup", "xpod-sparql", 0, expected(docs, containers));
  for (let r = 1; r <= runs; r++) {
    fs.appendFileSync(o.out, await answer(o, "before-write", "xpod-sparql", r, expected(docs, containers, flipped)));
    // Spread over the containers; a different document each time.
    const i = Math.floor(((r - 1) * docs) / runs + r) % docs;
    flipped.add(i);
    const t = task(i, containers, true);
    const writer = new Client(1);
    const p0 = process.hrtime.bigint();
    const res = await writer.request("PUT", o.xpod + t.path, { "content-type": "text/turtle" }, t.body);
    const putMs = Number(process.hrtime.bigint() - p0) / 1e6;
    await writer.close();
    if (![200, 201, 204, 205].includes(res.status)) throw refused(`PUT ${o.xpod}${t.path}`, res);
    const line = await answer(o, "after-write", "xpod-sparql", r, expected(docs, containers, flipped));
    fs.appendFileSync(o.out, line.replace(/\n$/, `\t${putMs.toFixed(3)}\n`));
  }
}

// The other way of sending the query must give the same answer.
async function checkPost(o) {
  const want = expected(whole(o, "docs"), whole(o, "containers"));
  for (const method of ["GET", "POST"]) {
    const [rows, client] = await viaSparql(o.xpod, method);
    await client.close();
    const wrong = same(rows, want);
    if (wrong) fail(`the query sent by ${method} gave a wrong answer: ${wrong}`);
  }
  process.stdout.write(`${want.length}\n`);
}

const [command, ...rest] = process.argv.slice(2);
const o = options(rest);
const commands = { load, measure, "after-write": afterWrite, "check-post": checkPost };
if (!commands[command]) fail(`unknown command ${command} (one of ${Object.keys(commands).join(", ")})`);
commands[command](o).catch((e) => fail(e.message));
