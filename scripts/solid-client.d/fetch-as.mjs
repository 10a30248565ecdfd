#!/usr/bin/env node
// Logs in to a Solid-OIDC issuer with client credentials (a "static client"
// in @inrupt/solid-client-authn-node, DPoP-bound token) and makes one
// authenticated request with the session's fetch.
//
//   node fetch-as.mjs --issuer URL --client-id ID --client-secret SECRET
//       [--method GET] [--header 'K: V']... [--body TEXT]
//       [--resolve HOST:PORT:ADDRESS]... URL
//
// Prints one JSON line on stdout,
//   {"webId": ..., "status": ..., "headers": {...}, "body": "..."}
// and exits 0 whatever the status; on any error prints the message on stderr
// and exits 1 (2 for a usage error). Never prints the secret or a token.
//
// --resolve makes HOST resolve to ADDRESS, like curl's --resolve, for every
// connection this process makes: discovery, token endpoint, JWKS and the
// request itself. It overrides dns.lookup, which both node:http (used by
// openid-client for discovery and the token request) and the built-in fetch
// (JWKS, the request) call at connect time, so the URLs and Host headers keep
// HOST. The mapping is by host name: PORT is required for curl compatibility
// ("*" is accepted too) but the mapping applies to every port of HOST.
//
// The library is imported from the node_modules next to this file (the copy
// that scripts/solid-client installs), else from $XPOD_SOLID_CLIENT_DIR, else
// from ${XPOD_CI_CACHE:-~/.cache/xpod-ci}/solid-client-5.0.0.
import dns from "node:dns";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const CLIENT_VERSION = "5.0.0";
const PKG = "@inrupt/solid-client-authn-node";

// Everything that must never reach stdout or stderr.
const secrets = new Set();
function redact(text) {
  let out = String(text);
  for (const s of secrets) {
    if (s) out = out.split(s).join("[redacted]");
  }
  return out;
}

function fail(message, code = 1) {
  process.stderr.write(`fetch-as: ${redact(message)}\n`, () => process.exit(code));
}

function usage(message) {
  fail(
    `${message}\nusage: node fetch-as.mjs --issuer URL --client-id ID --client-secret SECRET ` +
      `[--method GET] [--header 'K: V']... [--body TEXT] [--resolve HOST:PORT:ADDRESS]... URL`,
    2,
  );
}

function errorMessage(err) {
  if (!(err instanceof Error)) return String(err);
  let msg = err.message;
  // fetch() says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND...)
  // is in the cause chain.
  for (let c = err.cause, depth = 0; c && depth < 5; c = c.cause, depth++) {
    msg += `: ${c.message ?? c}`;
    if (c.code && !String(c.message).includes(c.code)) msg += ` (${c.code})`;
  }
  return msg;
}

function parseResolve(spec) {
  const m = /^([^:]+):(\d+|\*):(.+)$/.exec(spec);
  if (!m) return null;
  const address = m[3].replace(/^\[(.*)\]$/, "$1");
  const family = net.isIP(address);
  if (!family) return null;
  return { host: m[1].toLowerCase(), address, family };
}

function installResolve(entries) {
  const map = new Map(entries.map((e) => [e.host, e]));
  const systemLookup = dns.lookup;
  dns.lookup = function lookup(hostname, options, callback) {
    if (typeof options === "function") {
      callback = options;
      options = {};
    } else if (typeof options === "number") {
      options = { family: options };
    }
    const hit = map.get(String(hostname).toLowerCase());
    if (!hit) return systemLookup.call(this, hostname, options ?? {}, callback);
    const wanted = options?.family === "IPv4" ? 4 : options?.family === "IPv6" ? 6 : options?.family;
    if (wanted && wanted !== hit.family) {
      const err = new Error(`getaddrinfo ENOTFOUND ${hostname} (--resolve gives IPv${hit.family} only)`);
      err.code = "ENOTFOUND";
      process.nextTick(callback, err);
    } else if (options?.all) {
      process.nextTick(callback, null, [{ address: hit.address, family: hit.family }]);
    } else {
      process.nextTick(callback, null, hit.address, hit.family);
    }
  };
}

async function loadLibrary() {
  try {
    return await import(PKG);
  } catch (err) {
    if (err?.code !== "ERR_MODULE_NOT_FOUND" || !String(err.message).includes(PKG)) throw err;
  }
  const dir =
    process.env.XPOD_SOLID_CLIENT_DIR ||
    path.join(process.env.XPOD_CI_CACHE || path.join(os.homedir(), ".cache", "xpod-ci"), `solid-client-${CLIENT_VERSION}`);
  const entry = path.join(dir, "node_modules", PKG, "dist", "index.mjs");
  try {
    return await import(pathToFileURL(entry).href);
  } catch (err) {
    throw new Error(`cannot load ${PKG} from ${dir} (run scripts/solid-client first): ${err.message}`);
  }
}

async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        issuer: { type: "string" },
        "client-id": { type: "string" },
        "client-secret": { type: "string" },
        method: { type: "string", default: "GET" },
        header: { type: "string", multiple: true, default: [] },
        body: { type: "string" },
        resolve: { type: "string", multiple: true, default: [] },
      },
    });
  } catch (err) {
    return usage(err.message);
  }
  const { values: o, positionals } = args;
  secrets.add(o["client-secret"]);
  for (const name of ["issuer", "client-id", "client-secret"]) {
    if (!o[name]) return usage(`--${name} is required`);
  }
  if (positionals.length !== 1) return usage("exactly one URL is required");
  const target = positionals[0];

  const headers = new Headers();
  for (const h of o.header) {
    const i = h.indexOf(":");
    if (i <= 0) return usage(`bad --header ${JSON.stringify(h)}: expected 'Name: value'`);
    headers.append(h.slice(0, i).trim(), h.slice(i + 1).trim());
  }
  const entries = [];
  for (const spec of o.resolve) {
    const e = parseResolve(spec);
    if (!e) return usage(`bad --resolve ${JSON.stringify(spec)}: expected HOST:PORT:ADDRESS with an IP address`);
    entries.push(e);
  }
  if (entries.length) installResolve(entries);

  const { Session, EVENTS } = await loadLibrary();
  const session = new Session();
  session.events.on(EVENTS?.NEW_TOKENS ?? "newTokens", (t) => {
    secrets.add(t?.accessToken);
    secrets.add(t?.idToken);
    secrets.add(t?.refreshToken);
  });
  // An unhandled "error" event would throw; report it instead.
  session.events.on(EVENTS?.ERROR ?? "error", (error, description) => {
    process.stderr.write(`fetch-as: session error: ${redact(`${error} ${description ?? ""}`)}\n`);
  });

  try {
    await session.login({
      oidcIssuer: o.issuer,
      clientId: o["client-id"],
      clientSecret: o["client-secret"],
      tokenType: "DPoP",
    });
  } catch (err) {
    throw new Error(`login to ${o.issuer} failed: ${errorMessage(err)}`);
  }
  if (!session.info.isLoggedIn) throw new Error(`login to ${o.issuer} did not complete`);

  const init = { method: o.method.toUpperCase(), headers };
  if (o.body !== undefined) init.body = o.body;
  let res, body;
  try {
    res = await session.fetch(target, init);
    body = await res.text();
  } catch (err) {
    throw new Error(`${init.method} ${target} failed: ${errorMessage(err)}`);
  }
  const line = JSON.stringify({
    webId: session.info.webId ?? null,
    status: res.status,
    headers: Object.fromEntries(res.headers),
    body,
  });
  // The session keeps a timer until the token expires: exit explicitly, once
  // stdout is flushed.
  process.stdout.write(`${line}\n`, () => process.exit(0));
}

main().catch((err) => fail(errorMessage(err)));
