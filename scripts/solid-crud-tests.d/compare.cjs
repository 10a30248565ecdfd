#!/usr/bin/env node
// Compares two Jest --json result files of the solid-crud-tests suite, test by
// test (by file and full name): the reference server (Community Solid Server)
// and xpod. Prints a table, the failures of xpod on tests the reference passes,
// and the counts; the last line is exactly "N passed, M failed" for xpod on the
// tests the reference passes.
//
// Usage: node compare.cjs REF.json XPOD.json OUT_DIR [REF_LABEL] [XPOD_LABEL]
// Writes OUT_DIR/comparison.json and OUT_DIR/summary.txt.
// Exit: 0 when xpod passes every test the reference passes, 1 when it does not,
// 2 when the results cannot be trusted (missing file, suite failed to load).
"use strict";
const fs = require("fs");
const path = require("path");

const [refFile, xpodFile, outDir, refLabel = "CSS", xpodLabel = "xpod"] = process.argv.slice(2);
if (!refFile || !xpodFile || !outDir) {
  console.error("usage: compare.cjs REF.json XPOD.json OUT_DIR [REF_LABEL] [XPOD_LABEL]");
  process.exit(2);
}

const lines = [];
const out = (s = "") => {
  lines.push(s);
  console.log(s);
};
let trouble = []; // reasons the run cannot be trusted

const stripAnsi = (s) => s.replace(/\u001b\[[0-9;]*[A-Za-z]/g, "");

// A short form of a Jest failure message: its first line plus the
// Expected/Received lines, without colours or stack frames.
function shortMessage(messages) {
  if (!messages || !messages.length) return "";
  const text = stripAnsi(messages.join("\n"));
  const kept = [];
  const all = text.split("\n").map((l) => l.trim());
  for (let i = 0; i < all.length && kept.length < 4; i++) {
    let line = all[i];
    if (!line || line.startsWith("at ") || line === "● Test suite failed to run") continue;
    if (kept.length && !/^(Expected|Received|- Expected|\+ Received)/.test(line)) continue;
    // "Received:" with its value on the next line (jest-extended matchers).
    if (line.endsWith(":") && i + 1 < all.length && all[i + 1] && !all[i + 1].startsWith("at ")) {
      const value = all[++i];
      line += " " + (value.length > 100 ? value.slice(0, 97) + "..." : value);
    }
    kept.push(line);
  }
  const short = kept.join(" | ");
  return short.length > 300 ? short.slice(0, 297) + "..." : short;
}

function load(file, label) {
  let data;
  try {
    data = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    trouble.push(`${label}: no usable Jest results in ${file} (${e.message})`);
    return { tests: new Map(), fileFailures: [], data: null };
  }
  const tests = new Map();
  const fileFailures = [];
  for (const suite of data.testResults || []) {
    const rel = path.basename(suite.name || "?");
    const results = suite.assertionResults || [];
    if (suite.status === "failed" && !results.some((r) => r.status === "failed")) {
      // The file itself failed: compile error, a throwing beforeAll/afterAll,
      // a module that cannot load.
      fileFailures.push({ file: rel, message: shortMessage([suite.message || suite.failureMessage || ""]) });
    }
    for (const r of results) {
      let key = `${rel} :: ${r.fullName}`;
      for (let n = 2; tests.has(key); n++) key = `${rel} :: ${r.fullName} #${n}`;
      tests.set(key, {
        file: rel,
        name: r.fullName,
        status: r.status === "passed" ? "pass" : r.status === "failed" ? "fail" : "skip",
        message: shortMessage(r.failureMessages),
      });
    }
  }
  return { tests, fileFailures, data };
}

const ref = load(refFile, refLabel);
const xp = load(xpodFile, xpodLabel);

// Failures that mean the suite itself is broken here (e.g. jsonld >= 9 needs
// node:crypto, which Jest 26 cannot load), not that a server is wrong.
const setupError = /node:crypto|Cannot find module|Jest encountered an unexpected token|SyntaxError: Cannot use import/;
for (const [label, run] of [[refLabel, ref], [xpodLabel, xp]]) {
  for (const f of run.fileFailures) {
    if (setupError.test(f.message) || label === refLabel) trouble.push(`${label}: test file ${f.file} failed to run: ${f.message}`);
  }
  for (const t of run.tests.values()) {
    if (t.status === "fail" && setupError.test(t.message)) trouble.push(`${label}: ${t.name}: suite setup error: ${t.message}`);
  }
}

const keys = [...new Set([...ref.tests.keys(), ...xp.tests.keys()])].sort();
const count = (run, st) => [...run.tests.values()].filter((t) => t.status === st).length;

// The table.
const cell = (s) => (s === "fail" ? "FAIL" : s || "-").padEnd(5);
out(`${refLabel.padEnd(5)} ${xpodLabel.padEnd(5)}    test (file :: full name)`);
const rows = [];
let lastFile = "";
for (const key of keys) {
  const r = ref.tests.get(key);
  const x = xp.tests.get(key);
  const rs = r ? r.status : "";
  const xs = x ? x.status : "";
  const regression = rs === "pass" && xs !== "pass";
  const t = r || x;
  if (t.file !== lastFile) {
    out(`-- ${t.file}`);
    lastFile = t.file;
  }
  out(`${cell(rs)} ${cell(xs)} ${regression ? "<<" : "  "} ${t.name}`);
  rows.push({
    file: t.file,
    name: t.name,
    [refLabel]: rs || "absent",
    [xpodLabel]: xs || "absent",
    regression,
    [`${refLabel}_message`]: r ? r.message : "",
    [`${xpodLabel}_message`]: x ? x.message : "",
  });
}

// What xpod fails that the reference passes.
const regressions = rows.filter((r) => r.regression);
out();
if (regressions.length) {
  out(`${xpodLabel} fails ${regressions.length} test(s) that ${refLabel} passes:`);
  for (const r of regressions) {
    out(`  ${r.name}`);
    out(`      ${r[`${xpodLabel}_message`] || `(${r[xpodLabel]})`}`);
  }
} else if (count(ref, "pass") > 0) {
  out(`${xpodLabel} passes every test that ${refLabel} passes.`);
}
for (const f of xp.fileFailures) out(`${xpodLabel}: test file ${f.file} failed as a whole: ${f.message}`);
const better = rows.filter((r) => r[refLabel] !== "pass" && r[xpodLabel] === "pass");
if (better.length) {
  out(`${xpodLabel} passes ${better.length} test(s) that ${refLabel} does not:`);
  for (const r of better) out(`  ${r.name}`);
}

// The JSON-LD conneg tests are the ones that need jsonld 5 (see package.json).
const jsonld = rows.filter((r) => /JSON-LD/.test(r.name) && r[refLabel] !== "skip" && r[refLabel] !== "absent");
out(`JSON-LD tests that ran on ${refLabel}: ${jsonld.length} (${jsonld.filter((r) => r[refLabel] === "pass").length} passed)`);
if (!jsonld.length && ref.data) trouble.push(`${refLabel}: no JSON-LD test ran`);
if (ref.data && count(ref, "pass") === 0) trouble.push(`${refLabel} passed no test at all`);

for (const t of trouble) out(`SETUP PROBLEM: ${t}`);

const refPassed = rows.filter((r) => r[refLabel] === "pass");
const xpPassedOfThose = refPassed.filter((r) => r[xpodLabel] === "pass").length;
out();
out(`${refLabel} (reference), all tests: passed ${count(ref, "pass")}, failed ${count(ref, "fail")}, skipped ${count(ref, "skip")}`);
out(`${xpodLabel}, all tests: passed ${count(xp, "pass")}, failed ${count(xp, "fail")}, skipped ${count(xp, "skip")}`);
out(`${xpodLabel} on the ${refPassed.length} tests that ${refLabel} passes:`);
out(`${xpPassedOfThose} passed, ${refPassed.length - xpPassedOfThose} failed`);

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "comparison.json"), JSON.stringify({ trouble, tests: rows }, null, 2) + "\n");
fs.writeFileSync(path.join(outDir, "summary.txt"), lines.join("\n") + "\n");

process.exit(trouble.length ? 2 : regressions.length ? 1 : 0);
