// Schema validation of Kubernetes objects, for tests/deploy/check_manifests.py.
//
//   node tests/deploy/validator/validate.mjs OBJECTS.json
//
// OBJECTS.json: [{"where": "deploy/overlays/cpu/", "object": {...}}, ...]
// (rendered manifests, as JSON). Prints one JSON array, an entry per object:
//   {"where", "apiVersion", "kind", "name", "schema": "<model>" | null,
//    "errors": [...], "unknown": [...]}
// where
//   schema   the model class the object was checked with (null: no schema
//            for its apiVersion/kind, which the caller reports as a failure);
//   errors   violations of the JSON schema (types, required fields, enums,
//            formats such as quantities and durations), from the package's
//            Ajv-compiled validate();
//   unknown  fields the schema does not define (a misspelt key, a field of a
//            newer API), from TypeScript's excess-property check of the
//            object, as a literal, against the package's type declarations:
//            Kubernetes' OpenAPI schemas allow any extra property, so the
//            JSON schema alone cannot catch `replicsa: 2`. TypeScript reports
//            the first excess property of each object literal it rejects.
// Exit status 0 when every object was checked (whatever it found), 2 on a
// usage or internal error.
//
// Schemas: kubernetes-models (Kubernetes 1.33 OpenAPI), and the CRDs of the
// Prometheus Operator (ServiceMonitor, PodMonitor, PrometheusRule, ...) and
// cert-manager, from @kubernetes-models/*; versions pinned by
// package-lock.json (installed by scripts/setup.sh).

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

// apiVersion group -> package directory of its models.
const CRD_PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "cert-manager.io": "@kubernetes-models/cert-manager",
  "acme.cert-manager.io": "@kubernetes-models/cert-manager",
};

function modulePath(apiVersion) {
  const slash = apiVersion.lastIndexOf("/");
  if (slash < 0) return `kubernetes-models/${apiVersion}`; // the core group: v1
  const group = apiVersion.slice(0, slash);
  const pkg = CRD_PACKAGES[group] || "kubernetes-models";
  return `${pkg}/${apiVersion}`;
}

function isSafeName(text) {
  return /^[A-Za-z0-9.-]+(\/[A-Za-z0-9.-]+)?$/.test(text);
}

async function loadModel(apiVersion, kind) {
  if (!isSafeName(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  const mod = modulePath(apiVersion);
  try {
    const exports = await import(`${mod}/${kind}`);
    return exports[kind] ? { cls: exports[kind], mod } : null;
  } catch (e) {
    if (e && (e.code === "ERR_MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED" ||
              e.code === "MODULE_NOT_FOUND")) {
      return null;
    }
    throw e;
  }
}

function schemaErrors(cls, object) {
  try {
    new cls(object).validate();
    return [];
  } catch (e) {
    // @kubernetes-models/validate throws one error whose message joins Ajv's
    // errors with ", ": "data/spec/replicas must be integer, data/...".
    return String(e && e.message ? e.message : e).split(/, (?=data[/ ])/);
  }
}

// TypeScript's excess-property check: one `const` per object, typed with
// the model's interface, in a file inside node_modules/.cache so that the
// packages resolve from this directory's node_modules.
function unknownFields(entries) {
  const cache = path.join(here, "node_modules", ".cache");
  fs.mkdirSync(cache, { recursive: true });
  const dir = fs.mkdtempSync(path.join(cache, "memaudit-validate-"));
  try {
    const lines = [];
    const lineOf = new Map();
    entries.forEach((entry, i) => {
      if (!entry.model) return;
      const type = `I${entry.kind}`;
      lines.push(`import type { ${type} as T${i} } from "${entry.model.mod}/${entry.kind}";`);
    });
    const header = lines.length;
    entries.forEach((entry, i) => {
      if (!entry.model) return;
      lineOf.set(lines.length + 1, i);
      lines.push(`export const o${i}: T${i} = ${JSON.stringify(entry.object)};`);
    });
    if (lines.length === header) return entries.map(() => []);
    const file = path.join(dir, "objects.ts");
    fs.writeFileSync(file, lines.join("\n") + "\n");
    const tsc = path.join(here, "node_modules", "typescript", "lib", "tsc.js");
    let output = "";
    try {
      execFileSync(process.execPath, [
        tsc, "--noEmit", "--strict", "--skipLibCheck", "--pretty", "false",
        "--module", "node16", "--moduleResolution", "node16",
        "--target", "es2020", file,
      ], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      output = `${e.stdout || ""}${e.stderr || ""}`;
      if (!output) throw e;
    }
    const found = entries.map(() => []);
    for (const line of output.split("\n")) {
      const m = /^.*objects\.ts\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line);
      if (!m) {
        if (line.trim() && !/^\s/.test(line)) {
          throw new Error(`tsc: ${line}`);
        }
        continue;
      }
      const index = lineOf.get(Number(m[1]));
      if (index === undefined) throw new Error(`tsc: ${line}`);
      found[index].push(`${m[3]}: ${m[4]}`);
    }
    return found;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  if (process.argv.length !== 3) {
    console.error("usage: node validate.mjs OBJECTS.json");
    process.exit(2);
  }
  const input = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const entries = [];
  for (const { where, object } of input) {
    const apiVersion = String(object.apiVersion || "");
    const kind = String(object.kind || "");
    const model = await loadModel(apiVersion, kind);
    entries.push({ where, object, apiVersion, kind, model });
  }
  const unknown = unknownFields(entries);
  const results = entries.map((entry, i) => ({
    where: entry.where,
    apiVersion: entry.apiVersion,
    kind: entry.kind,
    name: (entry.object.metadata || {}).name || null,
    schema: entry.model ? `${entry.model.mod}/${entry.kind}` : null,
    errors: entry.model ? schemaErrors(entry.model.cls, entry.object) : [],
    unknown: unknown[i],
  }));
  process.stdout.write(JSON.stringify(results) + "\n");
}

main().catch((e) => {
  console.error(`validate.mjs: ${e && e.stack ? e.stack : e}`);
  process.exit(2);
});
