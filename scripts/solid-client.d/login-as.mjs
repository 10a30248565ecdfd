#!/usr/bin/env node
// Logs in to a Solid-OIDC issuer the way a browser app does, with Inrupt's
// library (authorization code, PKCE, DPoP), and plays the user itself: it
// follows the CSS-style account API's controls to log in with an email and
// password, pick a WebID and consent. Then it makes one authenticated
// request with the session's fetch and, with --refresh, logs in again with
// the refresh token it got (same DPoP key) and repeats the request.
//
//   node login-as.mjs --issuer URL --email EMAIL --password PASSWORD
//       --webid WEBID --redirect-url URL [--client-id URL] [--refresh] URL
//
// Without --client-id the library registers a client dynamically; with a
// URL it is a Solid-OIDC Client ID Document. Prints one JSON line,
//   {"webId": ..., "steps": ["account", "login", "consent"], "status": ...,
//    "body": "...", "refreshed": {"webId": ..., "status": ..., "body": "..."}}
// and exits 0; on any error prints the message on stderr and exits 1 (2 for
// usage). Never prints the password or a token.
//
// The library is loaded as fetch-as.mjs loads it.
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const CLIENT_VERSION = "5.0.0";
const PKG = "@inrupt/solid-client-authn-node";

const secrets = new Set();
function redact(text) {
  let out = String(text);
  for (const s of secrets) if (s) out = out.split(s).join("[redacted]");
  return out;
}
function fail(message, code = 1) {
  process.stderr.write(`login-as: ${redact(message)}\n`, () => process.exit(code));
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

// The user agent: cookies by name and path, no automatic redirects.
const jar = new Map();
async function browse(url, init = {}) {
  const u = new URL(url);
  const cookies = [...jar.entries()]
    .filter(([, c]) => u.pathname.startsWith(c.path))
    .map(([name, c]) => `${name}=${c.value}`);
  const headers = new Headers(init.headers ?? {});
  if (cookies.length) headers.set("cookie", cookies.join("; "));
  headers.set("accept", "application/json");
  const res = await fetch(url, { ...init, headers, redirect: "manual" });
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(";").map((s) => s.trim());
    const i = pair.indexOf("=");
    const name = pair.slice(0, i);
    const pathAttr = attrs.find((a) => a.toLowerCase().startsWith("path="));
    const expired = attrs.some((a) => /^max-age=0$/i.test(a) || /1970/.test(a));
    if (expired) jar.delete(name);
    else jar.set(name, { value: pair.slice(i + 1), path: pathAttr ? pathAttr.slice(5) : "/" });
  }
  return res;
}
async function postJson(url, body) {
  const res = await browse(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${json.message ?? ""}`);
  return json;
}

async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        issuer: { type: "string" },
        email: { type: "string" },
        password: { type: "string" },
        webid: { type: "string" },
        "redirect-url": { type: "string" },
        "client-id": { type: "string" },
        refresh: { type: "boolean", default: false },
      },
    });
  } catch (err) {
    return fail(err.message, 2);
  }
  const { values: o, positionals } = args;
  secrets.add(o.password);
  for (const name of ["issuer", "email", "password", "webid", "redirect-url"]) {
    if (!o[name]) return fail(`--${name} is required`, 2);
  }
  if (positionals.length !== 1) return fail("exactly one URL is required", 2);
  const target = positionals[0];

  const { Session } = await loadLibrary();
  const session = new Session();
  let refreshToken;
  session.events.on("newTokens", (t) => {
    secrets.add(t?.accessToken);
    secrets.add(t?.idToken);
    secrets.add(t?.refreshToken);
  });
  session.events.on("newRefreshToken", (t) => {
    secrets.add(t);
    refreshToken = t;
  });
  session.events.on("error", (error, description) => {
    process.stderr.write(`login-as: session error: ${redact(`${error} ${description ?? ""}`)}\n`);
  });

  let authUrl;
  await session.login({
    oidcIssuer: o.issuer,
    redirectUrl: o["redirect-url"],
    clientId: o["client-id"],
    clientName: "xpod login-as",
    tokenType: "DPoP",
    handleRedirect: (url) => {
      authUrl = url;
    },
  });
  if (!authUrl) throw new Error("the library did not start a login");

  // The user: follows the account API's controls until the app's
  // redirect URL comes back.
  let res = await browse(authUrl);
  let location = res.headers.get("location");
  if (res.status !== 303 || !location) throw new Error(`authorization answered ${res.status}: ${await res.text()}`);
  const steps = [];
  let callback;
  for (let i = 0; i < 6 && !callback; i++) {
    const index = await (await browse(new URL(".account/", o.issuer).href)).json();
    const oidc = index.controls?.oidc;
    if (!oidc) throw new Error("the account API shows no login in progress (controls.oidc)");
    const { prompt } = await (await browse(oidc.prompt)).json();
    steps.push(prompt);
    let next;
    if (prompt === "account") {
      next = (await postJson(index.controls.password.login, { email: o.email, password: o.password })).location;
    } else if (prompt === "login") {
      next = (await postJson(oidc.webId, { webId: o.webid })).location;
    } else if (prompt === "consent") {
      next = (await postJson(oidc.consent, { remember: true })).location;
    } else {
      throw new Error(`unexpected prompt ${JSON.stringify(prompt)}`);
    }
    res = await browse(next);
    location = res.headers.get("location");
    if (res.status !== 303 || !location) throw new Error(`${next} answered ${res.status}`);
    if (location.startsWith(o["redirect-url"])) callback = location;
  }
  if (!callback) throw new Error(`no redirect back to the app after ${steps.join(", ")}`);

  const info = await session.handleIncomingRedirect(callback);
  if (!info?.isLoggedIn) throw new Error("the library did not accept the login");
  const out = { webId: session.info.webId ?? null, steps };
  const first = await session.fetch(target);
  out.status = first.status;
  out.body = await first.text();
  if (o.refresh) {
    if (!refreshToken) throw new Error("no refresh token came with the login");
    await session.login({
      oidcIssuer: o.issuer,
      clientId: o["client-id"] ?? session.info.clientAppId,
      refreshToken,
      tokenType: "DPoP",
    });
    const again = await session.fetch(target);
    out.refreshed = { webId: session.info.webId ?? null, status: again.status, body: await again.text() };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

main().catch((err) => {
  let msg = err instanceof Error ? err.message : String(err);
  for (let c = err?.cause, d = 0; c && d < 5; c = c.cause, d++) msg += `: ${c.message ?? c}`;
  fail(msg);
});
