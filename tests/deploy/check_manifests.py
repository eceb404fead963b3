#!/usr/bin/python3
"""Offline structural checks of the container and cluster files.

Run by tests/deploy/check_manifests.sh (which also runs yamllint, promtool and,
when present, kubectl); usable alone:

    /usr/bin/python3 tests/deploy/check_manifests.py [--root DIR] [--kubectl PATH] [--promtool PATH]

Prints one line per check: "ok - ...", "not ok - ...: why", or "skip - ...: why"
(skips are not counted). Exits 1 if any check failed. Needs only the Python
standard library and PyYAML (Debian: python3-yaml), plus node with
tests/deploy/validator's packages (scripts/setup.sh) and promtool.

What it checks:
  * every YAML file under deploy/ parses; every file a kustomization names exists;
  * every applied kustomization renders (deploy/overlays/{cpu,gpu,secure,
    cpu-autoscaled,batch,batch/merge}/, deploy/monitoring/): with kubectl
    kustomize when --kubectl is given, and always with a small built-in
    kustomize (resources, components, configMapGenerator without hashes,
    strategic-merge and JSON 6902 patches, images, labels); the two agree;
  * the online StatefulSet (overlays/cpu/): gRPC probes on 8500, ports,
    requests and limits, non-root, read-only root filesystem with an emptyDir
    /tmp, the model repository mounted where --model_repository points,
    --state_dir a writable mount of its volumeClaimTemplate (ReadWriteOnce,
    fsGroup the server's group, claims retained on scale-down), known flags;
    the gRPC (ClusterIP), headless (the StatefulSet's serviceName, ready pods
    only) and metrics Services select its pods;
  * in every online rendering: terminationGracePeriodSeconds exceeds
    --shutdown_grace_seconds + --shutdown_watchdog_seconds and the liveness
    window; probes are gRPC on 8500, or httpGet on 9090 (/readyz, /healthz;
    HTTPS with --metrics_tls) when the gRPC port speaks TLS; readiness asks
    what server/server.cc turns NOT_SERVING before it drains; one
    NetworkPolicy (8500 from memaudit.io/client pods, 9090 from the
    monitoring namespace, egress DNS only); one PodDisruptionBudget; no
    Secret objects, private keys or token hashes committed;
  * the GPU overlay: nvidia.com/gpu, --device=cuda:0, node selection, CUDA image;
  * the secure overlay: args are the base's plus exactly the security flags;
    every flag naming a file points into a read-only Secret volume mount whose
    items provide it, mode 0440 with the pod's fsGroup; HTTPS metrics Service;
    the README's commands create those Secrets with those keys;
  * autoscaling: prometheus-adapter's rules name a metric (and label values)
    the server exports, map namespace and pod, and promtool parses and
    unit-tests their queries; the HPA scales the StatefulSet (no replicas in
    the manifest) on a Pods metric an adapter rule outputs; the ServiceMonitor
    selects the metrics Service;
  * the batch Job: Indexed, completions == the --shard-count it passes,
    --shard-index from JOB_COMPLETION_INDEX, the server as a native sidecar
    with a startupProbe, the CLI on 127.0.0.1, the prompt file a key of the
    rendered ConfigMap, reports on a ReadWriteMany claim that the merge Job
    reads with a matching glob; its NetworkPolicy;
  * schemas: every rendered object and example file against the Kubernetes
    and CRD schemas of tests/deploy/validator (npm kubernetes-models),
    unknown fields rejected; a broken canary object must fail;
  * docs/KUBERNETES.md and deploy/README.md: the directories, files and
    objects their commands name exist;
  * alert rules and the Grafana dashboard: metric names (memaudit_*, process_*,
    up) and bounded aggregation labels;
  * the Dockerfile: the scripts it runs exist, EXPOSE matches the ports, the
    runtime stage runs as non-root, and (when the binaries are built) its
    runtime packages cover the libraries they link.
"""

import argparse
import copy
import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

GRPC_PORT = 8500
METRICS_PORT = 9090
# The kustomizations that are applied (deploy/base/ and deploy/components/
# are only their parts). Online: the server StatefulSet; batch: the Indexed
# Job with its sidecar server, and the merge Job.
CPU = "deploy/overlays/cpu"
GPU = "deploy/overlays/gpu"
SECURE = "deploy/overlays/secure"
AUTOSCALED = "deploy/overlays/cpu-autoscaled"
BATCH = "deploy/overlays/batch"
MERGE = "deploy/overlays/batch/merge"
ONLINE = (CPU, GPU, SECURE, AUTOSCALED)
RENDERINGS = ONLINE + (BATCH, MERGE, "deploy/monitoring")
# Files under deploy/ that are applied with `kubectl apply -f` (examples),
# schema-checked like the renderings.
EXAMPLES = ("deploy/overlays/secure/certificate.example.yaml",
            "deploy/overlays/batch/models.example.yaml")
# YAML under deploy/ that is no Kubernetes object: prometheus-adapter's config.
ADAPTER_RULES = "deploy/components/autoscaling/prometheus-adapter-rules.yaml"
# The server's job store directory in the online pods (--state_dir).
STATE_DIR = "/var/lib/memaudit"

# Server flags (--flag=value form), read from server/'s add_option("--...")
# calls by load_server_facts; switches (bare --flag), from add_flag("--...").
SERVER_FLAGS = set()
SERVER_SWITCHES = set()
# Defaults of the shutdown flags, read from server/server_main.cc
# ("double grace_seconds = 30;"): {flag: seconds}.
SERVER_DEFAULTS = {}

# The Secrets deploy/secure/ mounts, with their keys (the shape cert-manager
# writes for memaudit-tls), and the file each server flag reads from them.
SECRET_KEYS = {
    "memaudit-tls": {"tls.crt", "tls.key", "ca.crt"},
    "memaudit-tokens": {"tokens"},
}
FILE_FLAGS = {
    "tls_cert": ("memaudit-tls", "tls.crt"),
    "tls_key": ("memaudit-tls", "tls.key"),
    "tls_client_ca": ("memaudit-tls", "ca.crt"),
    "token_file": ("memaudit-tokens", "tokens"),
}
SECURITY_FLAGS = set(FILE_FLAGS) | {"metrics_tls", "metrics_require_token"}
# The probe paths on the metrics port.
PROBE_PATHS = {"startupProbe": "/readyz", "readinessProbe": "/readyz",
               "livenessProbe": "/healthz"}

# Metric families the server exports (docs/SERVICE.md), read from server/'s
# .Name("...") calls by load_server_facts. Dashboards and alerts may use
# these (plus _bucket/_sum/_count of histograms), process_* and up.
METRIC_FAMILIES = set()
# Labels that queries may aggregate or match on: all of bounded cardinality.
ALLOWED_LABELS = {
    "method", "code", "model", "verdict", "state", "kind", "le", "job", "instance",
    "device", "version", "result",
}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}
LABEL_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, condition, name, detail=""):
        if condition:
            self.passed += 1
            print(f"ok - {name}")
        else:
            self.failed += 1
            print(f"not ok - {name}" + (f": {detail}" if detail else ""))
        return bool(condition)

    def skip(self, name, why):
        print(f"skip - {name}: {why}")


R = Results()


# --------------------------------------------------------------------------
# A small kustomize: enough for these manifests (resources, patches with
# strategic merge or JSON 6902, images, labels, configMapGenerator file checks).

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


def strategic_merge(base, patch, field=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            for i, existing in enumerate(out):
                if isinstance(existing, dict) and existing.get(key) == item.get(key):
                    out[i] = strategic_merge(existing, item, None)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def json_pointer(path):
    """RFC 6901 pointer -> list of reference tokens."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} does not start with /")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def pointer_step(node, token, path, appending=False):
    """The child `token` of a dict or list (an index or, when appending, '-')."""
    if isinstance(node, dict):
        if token not in node:
            raise ValueError(f"JSON 6902: {path}: no member {token!r}")
        return token
    if isinstance(node, list):
        if appending and token == "-":
            return len(node)
        if not re.fullmatch(r"0|[1-9][0-9]*", token) or int(token) > len(node) - (not appending):
            raise ValueError(f"JSON 6902: {path}: no index {token!r} in a list of {len(node)}")
        return int(token)
    raise ValueError(f"JSON 6902: {path}: {token!r} is below a scalar")


JSON6902_OPS = ("add", "remove", "replace", "test")


def json6902(obj, operations):
    """Applies RFC 6902 add/remove/replace/test operations (not move/copy)."""
    doc = copy.deepcopy(obj)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        tokens = json_pointer(path)
        if not tokens:
            raise ValueError(f"JSON 6902: {op} on the whole document: not modelled")
        parent = doc
        for token in tokens[:-1]:
            parent = parent[pointer_step(parent, token, path)]
        last = tokens[-1]
        if op == "add":
            value = copy.deepcopy(operation["value"])
            if isinstance(parent, dict):
                parent[last] = value
            else:
                parent.insert(pointer_step(parent, last, path, appending=True), value)
        elif op in ("replace", "remove", "test"):
            key = pointer_step(parent, last, path)
            if op == "replace":
                parent[key] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del parent[key]
            elif parent[key] != operation["value"]:
                raise ValueError(f"JSON 6902: test {path}: {parent[key]!r} != "
                                 f"{operation['value']!r}")
        else:
            raise ValueError(f"JSON 6902: op {op!r}: not modelled")
    return doc


def split_image(image):
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, ""
    if ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    return name, tag, digest


def pod_spec(obj):
    return obj.get("spec", {}).get("template", {}).get("spec")


def all_containers(obj):
    spec = pod_spec(obj) or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def load_kustomization(directory):
    with open(Path(directory) / "kustomization.yaml") as f:
        return yaml.safe_load(f)


def generate_config_maps(directory, k):
    """configMapGenerator entries with files (KEY=PATH or PATH) and literals;
    only without the name hash (generatorOptions.disableNameSuffixHash)."""
    options = k.get("generatorOptions") or {}
    objects = []
    for generator in k.get("configMapGenerator") or []:
        gen_options = generator.get("options") or {}
        if not (gen_options.get("disableNameSuffixHash",
                                options.get("disableNameSuffixHash")) is True):
            raise ValueError(f"{directory}: configMapGenerator {generator.get('name')} with a "
                             "name hash: not modelled")
        data = {}
        for entry in generator.get("files") or []:
            key, _, path = entry.rpartition("=")
            path = path or entry
            data[key or Path(path).name] = (Path(directory) / path).read_text()
        for entry in generator.get("literals") or []:
            key, _, value = entry.partition("=")
            data[key] = value
        labels = dict(options.get("labels") or {})
        labels.update(gen_options.get("labels") or {})
        meta = {"name": generator["name"]}
        if labels:
            meta["labels"] = labels
        annotations = dict(options.get("annotations") or {})
        annotations.update(gen_options.get("annotations") or {})
        if annotations:
            meta["annotations"] = annotations
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return objects


def kustomize(directory, accumulated=None):
    """Renders a kustomization directory into a list of objects. A Component
    (kind: Component) is rendered onto the objects of the kustomization that
    includes it (`accumulated`), as kustomize does: its resources are added
    and its patches and transformers apply to everything so far."""
    directory = Path(directory)
    k = load_kustomization(directory)
    if (k.get("kind") == "Component") != (accumulated is not None):
        raise ValueError(f"{directory}: a Component is only usable under components:, "
                         "and only a Component there")
    objects = list(accumulated or [])
    for resource in k.get("resources") or []:
        path = directory / resource
        if path.is_dir():
            objects.extend(kustomize(path))
        else:
            with open(path) as f:
                objects.extend(d for d in yaml.safe_load_all(f) if d)
    for component in k.get("components") or []:
        objects = kustomize(directory / component, objects)
    objects.extend(generate_config_maps(directory, k))
    patches = [{"path": p} for p in k.get("patchesStrategicMerge") or []]
    patches += k.get("patches") or []
    for patch in patches:
        if "path" in patch:
            with open(directory / patch["path"]) as f:
                body = yaml.safe_load(f)
        else:
            body = yaml.safe_load(patch["patch"])
        # A list of operations is a JSON 6902 patch (which needs a target);
        # a map, a strategic-merge patch.
        is_json6902 = isinstance(body, list)
        if is_json6902 and not patch.get("target"):
            raise ValueError(f"{directory}: JSON 6902 patch {patch} without a target")
        target = patch.get("target") or {
            "kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
        matched = 0
        for i, obj in enumerate(objects):
            if target.get("kind") and obj.get("kind") != target["kind"]:
                continue
            if target.get("name") and obj.get("metadata", {}).get("name") != target["name"]:
                continue
            if is_json6902:
                objects[i] = json6902(obj, body)
                matched += 1
                continue
            patched = strategic_merge(obj, {k2: v for k2, v in body.items()
                                            if k2 not in ("apiVersion", "kind", "metadata")})
            patched["metadata"] = strategic_merge(
                obj["metadata"], {k2: v for k2, v in body.get("metadata", {}).items()
                                  if k2 != "name"})
            objects[i] = patched
            matched += 1
        if not matched:
            raise ValueError(f"{directory}: patch {patch} matches no resource")
    for obj in objects:
        for entry in k.get("labels") or []:
            labels = obj.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(entry.get("pairs") or {})
            if entry.get("includeSelectors") or entry.get("includeTemplates"):
                raise ValueError("labels with includeSelectors/includeTemplates: not modelled")
        for container in all_containers(obj):
            name, tag, digest = split_image(container.get("image", ""))
            for image in k.get("images") or []:
                if image["name"] != name:
                    continue
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                ref = new_name + (f":{new_tag}" if new_tag else "")
                if image.get("digest") or digest:
                    ref += "@" + (image.get("digest") or digest)
                container["image"] = ref
    return objects


def normalized(objects):
    """Objects in a stable order, associative lists sorted by their merge key
    (kustomize may order merged list items differently)."""
    def walk(value, field=None):
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            items = [walk(v) for v in value]
            key = MERGE_KEYS.get(field)
            if key and all(isinstance(i, dict) for i in items):
                items.sort(key=lambda i: str(i.get(key)))
            return items
        return value
    return sorted((walk(o) for o in objects),
                  key=lambda o: (o.get("kind", ""), o.get("metadata", {}).get("name", "")))


def render_with_kubectl(kubectl, directory):
    out = subprocess.run([kubectl, "kustomize", str(directory)], check=True,
                         capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


# --------------------------------------------------------------------------
# Helpers

def parse_quantity(value):
    """Kubernetes quantity -> float (cores or bytes)."""
    s = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
                "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "m": 1e-3}
    for suffix, factor in suffixes.items():
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * factor
    return float(s)


def flag_map(args):
    """{flag: value} of --flag=value args; a bare --switch maps to True."""
    flags = {}
    for arg in args or []:
        m = re.fullmatch(r"--([A-Za-z0-9_]+)(?:=(.*))?", str(arg))
        if m:
            flags[m.group(1)] = True if m.group(2) is None else m.group(2)
        else:
            flags.setdefault("__malformed__", []).append(arg)
    return flags


def check_flags_known(name, flags):
    """Valued flags are add_option flags, bare ones add_flag switches."""
    R.check("__malformed__" not in flags, f"{name}: args are --flag=value or --switch",
            f"{flags.get('__malformed__')}")
    unknown = sorted(k for k, v in flags.items() if k != "__malformed__" and
                     k not in (SERVER_SWITCHES if v is True else SERVER_FLAGS))
    R.check(not unknown, f"{name}: args use only flags the server declares (options with "
            "a value, switches bare)", f"unknown {unknown}")


def port_of(address):
    m = re.search(r":(\d+)$", address or "")
    return int(m.group(1)) if m else None


def find(objects, kind, name=None):
    return [o for o in objects if o.get("kind") == kind
            and (name is None or o.get("metadata", {}).get("name") == name)]


def promql_names(expr):
    """(metric names, label names) used in a PromQL expression."""
    labels = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    for m in re.finditer(r"\{([^}]*)\}", text):
        for matcher in m.group(1).split(","):
            name = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)", matcher)
            if name:
                labels.add(name.group(1))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    for m in LABEL_CLAUSE.finditer(text):
        labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    text = LABEL_CLAUSE.sub(" ", text)
    metrics = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)", text):
        word = m.group(1)
        if word.lower() in PROMQL_KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end():]):
            continue  # a function or an aggregation
        metrics.add(word)
    return metrics, labels


def metric_ok(name):
    if name == "up" or name.startswith("process_"):
        return True
    if not name.startswith("memaudit_"):
        return False
    family = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in METRIC_FAMILIES or family in METRIC_FAMILIES


def load_server_facts(root):
    """Reads the server's flags and metric families from server/."""
    global SERVER_FLAGS, SERVER_SWITCHES, METRIC_FAMILIES  # noqa: PLW0603
    sources = source_text(root, "server")
    if not R.check(sources is not None, "server/ has C++ sources to read flags and metrics from"):
        return
    flags = set(re.findall(r'add_option\(\s*"--([A-Za-z0-9_]+)"', sources))
    switches = set(re.findall(r'add_flag\(\s*"--([A-Za-z0-9_]+)"', sources))
    if R.check(switches, f"server/ sources declare {len(switches)} switches (add_flag)"):
        SERVER_SWITCHES = switches
    main = root / "server/server_main.cc"
    text = main.read_text() if main.is_file() else ""
    for flag, variable in (("shutdown_grace_seconds", "grace_seconds"),
                           ("shutdown_watchdog_seconds", "watchdog_seconds")):
        m = re.search(rf"\b{variable}\s*=\s*([0-9.]+)\s*;", text)
        bound = re.search(rf'add_option\(\s*"--{flag}"\s*,\s*{variable}\b', text)
        if R.check(m and bound, f"server/server_main.cc: default of --{flag}"
                   + (f" ({m.group(1)} s)" if m else ""),
                   f"no `{variable} = N;` bound to --{flag}"):
            SERVER_DEFAULTS[flag] = float(m.group(1))
    families = {f for f in re.findall(r'\.Name\(\s*"([A-Za-z0-9_:]+)"', sources)
                if f.startswith("memaudit_")}
    if R.check(flags, f"server/ sources declare {len(flags)} flags (add_option)"):
        SERVER_FLAGS = flags
    if R.check(families, f"server/ sources export {len(families)} memaudit_ metric "
               "families (.Name)"):
        METRIC_FAMILIES = families


def check_promql(where, expr):
    metrics, labels = promql_names(expr)
    R.check(metrics, f"{where}: uses a metric", f"no metric found in {expr!r}")
    bad = sorted(m for m in metrics if not metric_ok(m))
    R.check(not bad, f"{where}: metric names are memaudit_* (known families), process_* or up",
            f"unexpected {bad}")
    unbounded = sorted(labels - ALLOWED_LABELS)
    R.check(not unbounded, f"{where}: labels are bounded ({', '.join(sorted(labels)) or 'none'})",
            f"labels outside {sorted(ALLOWED_LABELS)}: {unbounded}")
    return metrics


def source_text(root, directory):
    base = root / directory
    if not base.is_dir():
        return None
    parts = [p.read_text(errors="replace") for p in sorted(base.rglob("*"))
             if p.is_file() and p.suffix in (".cc", ".cpp", ".h", ".hpp")]
    return "\n".join(parts) if parts else None


# --------------------------------------------------------------------------
# Checks

def check_yaml_files(root):
    docs = {}
    for path in sorted((root / "deploy").rglob("*.yaml")):
        rel = path.relative_to(root)
        try:
            with open(path) as f:
                docs[rel] = [d for d in yaml.safe_load_all(f) if d is not None]
            R.check(docs[rel], f"{rel} parses", "empty")
        except yaml.YAMLError as e:
            R.check(False, f"{rel} parses", str(e).replace("\n", " "))
    return docs


def check_kustomizations(root, docs):
    for rel, content in docs.items():
        if rel.name != "kustomization.yaml":
            continue
        k = content[0]
        R.check(k.get("kind") in ("Kustomization", "Component")
                and k.get("apiVersion", "").startswith("kustomize.config.k8s.io/"),
                f"{rel}: is a Kustomization or a Component")
        R.check((rel.parts[1] == "components") == (k.get("kind") == "Component"),
                f"{rel}: Components live in deploy/components/, Kustomizations elsewhere",
                k.get("kind"))
        R.check("namespace" not in k, f"{rel}: namespace-agnostic (no namespace:)")
        directory = root / rel.parent
        names = list(k.get("resources") or []) + list(k.get("patchesStrategicMerge") or [])
        names += list(k.get("components") or [])
        names += [p["path"] for p in k.get("patches") or [] if "path" in p]
        for generator in k.get("configMapGenerator") or []:
            names += [f.split("=", 1)[-1] for f in generator.get("files") or []]
        missing = [n for n in names if not (directory / n).exists()]
        R.check(not missing, f"{rel}: the {len(names)} files it names exist", f"missing {missing}")
    for rel, content in docs.items():
        if rel.name == "kustomization.yaml" or rel.parts[1] == "monitoring" \
                or str(rel) == ADAPTER_RULES:
            continue
        for d in content:
            if isinstance(d, list):  # a JSON 6902 patch
                R.check(d and all(isinstance(o, dict) and o.get("op") in JSON6902_OPS
                                  and isinstance(o.get("path"), str) for o in d),
                        f"{rel}: JSON 6902 operations ({len(d)}) have op and path")
                continue
            R.check(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"),
                    f"{rel}: {d.get('kind')} has apiVersion, kind, metadata.name")


def render(root, kubectl):
    rendered = {}
    for overlay in RENDERINGS:
        try:
            own = kustomize(root / overlay)
            R.check(True, f"built-in kustomize renders {overlay}/ ({len(own)} objects)")
        except Exception as e:  # noqa: BLE001 - report any failure as a check
            R.check(False, f"built-in kustomize renders {overlay}/", repr(e))
            own = None
        if kubectl:
            try:
                theirs = render_with_kubectl(kubectl, root / overlay)
                R.check(True, f"kubectl kustomize {overlay}/ ({len(theirs)} objects)")
            except subprocess.CalledProcessError as e:
                R.check(False, f"kubectl kustomize {overlay}/", e.stderr.strip())
                theirs = None
            if own is not None and theirs is not None:
                R.check(normalized(own) == normalized(theirs), f"built-in overlay merge equals kubectl kustomize for {overlay}/",
                        "renderings differ (update kustomize() in this file)")
            rendered[overlay] = theirs if theirs is not None else own
        else:
            rendered[overlay] = own
    if not kubectl:
        R.skip("kubectl kustomize " + ", ".join(f"{o}/" for o in RENDERINGS),
               "kubectl not found; checked with the built-in kustomize")
    return rendered


def check_security(where, obj):
    """Pod and container security settings, resource limits, declared volumes."""
    pod = pod_spec(obj)
    pod_sc = pod.get("securityContext") or {}
    R.check(pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0,
            f"{where}: pod securityContext: runAsNonRoot with a non-zero runAsUser", f"{pod_sc}")
    R.check(pod.get("automountServiceAccountToken") is False,
            f"{where}: no service account token (the pods call no Kubernetes API)")
    volumes = {v["name"] for v in pod.get("volumes") or []}
    volumes |= {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates") or []}
    for c in all_containers(obj):
        sc = c.get("securityContext") or {}
        R.check(sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
                f"{where}: container {c['name']}: read-only root fs, no privilege escalation, "
                "capabilities dropped", f"{sc}")
        unknown = [m["name"] for m in c.get("volumeMounts") or [] if m["name"] not in volumes]
        R.check(not unknown, f"{where}: container {c['name']}: mounts only declared volumes",
                f"{unknown}")
        resources = c.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        R.check({"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests),
                f"{where}: container {c['name']}: cpu and memory requests and limits",
                f"{resources}")
        try:
            R.check(all(parse_quantity(requests[r]) <= parse_quantity(limits[r])
                        for r in ("cpu", "memory")),
                    f"{where}: container {c['name']}: requests <= limits")
        except (KeyError, ValueError) as e:
            R.check(False, f"{where}: container {c['name']}: requests <= limits", repr(e))


def server_flags_in_step(name, server, volumes_of, mounts):
    """--listen/--metrics_listen ports, the model repository mounted, --threads
    within the CPU limit, known flags."""
    flags = flag_map(server.get("args"))
    check_flags_known(name, flags)
    R.check(port_of(flags.get("listen")) == GRPC_PORT,
            f"{name}: --listen is on port {GRPC_PORT}", flags.get("listen"))
    R.check(port_of(flags.get("metrics_listen")) == METRICS_PORT,
            f"{name}: --metrics_listen is on port {METRICS_PORT}", flags.get("metrics_listen"))
    repository = flags.get("model_repository")
    R.check(repository in mounts and mounts[repository]["name"] in volumes_of,
            f"{name}: --model_repository={repository} is a mounted volume")
    limits = (server.get("resources") or {}).get("limits") or {}
    try:
        threads = int(flags.get("threads", "0"))
        R.check(threads <= parse_quantity(limits.get("cpu", 0)),
                f"{name}: --threads={threads} within the CPU limit")
    except ValueError as e:
        R.check(False, "numeric flags parse", repr(e))
    return flags


def check_base(root, objects):
    """The CPU overlay (the base as it is): the server StatefulSet, its job
    store, Services, PodDisruptionBudget."""
    where = f"{CPU}/"
    for obj in objects:
        meta = obj.get("metadata", {})
        R.check("namespace" not in meta, f"{obj['kind']}/{meta.get('name')}: no namespace")
    R.check(not find(objects, "Deployment"), f"{where}: no Deployment (the server is a "
            "StatefulSet)")
    sets = find(objects, "StatefulSet")
    if not R.check(len(sets) == 1 and sets[0].get("apiVersion") == "apps/v1",
                   f"{where}: exactly one apps/v1 StatefulSet"):
        return None
    sts = sets[0]
    spec = sts["spec"]
    template_labels = spec["template"]["metadata"].get("labels", {})
    match_labels = spec.get("selector", {}).get("matchLabels", {})
    R.check(match_labels and all(template_labels.get(k) == v for k, v in match_labels.items()),
            "StatefulSet selector matches its pod template labels")
    pod = spec["template"]["spec"]
    server = server_container(sts)
    if not R.check(server is not None, "StatefulSet has the memaudit-server container"):
        return None
    name = f"container {server['name']}"

    ports = {p.get("containerPort"): p for p in server.get("ports") or []}
    R.check(GRPC_PORT in ports and METRICS_PORT in ports,
            f"{name} exposes ports {GRPC_PORT} and {METRICS_PORT}", f"ports {sorted(ports)}")
    R.check(all(p.get("protocol", "TCP") == "TCP" and p.get("name") for p in ports.values()),
            f"{name}: ports are named TCP ports")

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = server.get(probe) or {}
        grpc = p.get("grpc") or {}
        R.check(grpc.get("port") == GRPC_PORT and not set(p) & {"httpGet", "exec", "tcpSocket"},
                f"{name}: {probe} is a native gRPC probe on {GRPC_PORT}", f"got {p}")

    check_security(where, sts)
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    claims = {c["metadata"]["name"]: c for c in spec.get("volumeClaimTemplates") or []}
    mounts = {m["mountPath"]: m for m in server.get("volumeMounts") or []}
    tmp = mounts.get("/tmp")
    R.check(tmp and "emptyDir" in volumes.get(tmp["name"], {}),
            f"{name}: /tmp is an emptyDir (root fs is read-only)")
    flags = server_flags_in_step(name, server, set(volumes) | set(claims), mounts)
    R.check(flags.get("device", "cpu") == "cpu", f"{name}: CPU overlay uses --device=cpu")

    # The job store: --state_dir is a writable mount of this replica's own
    # claim (a volumeClaimTemplate), writable by the server's group.
    state_dir = flags.get("state_dir")
    R.check(state_dir == STATE_DIR, f"{name}: --state_dir={STATE_DIR}", f"{state_dir!r}")
    mount = mounts.get(state_dir)
    if R.check(mount is not None, f"{name}: --state_dir={state_dir} is a volume mount"):
        claim = claims.get(mount["name"])
        R.check(claim is not None and mount["name"] not in volumes,
                f"{name}: --state_dir is mounted from a volumeClaimTemplate (one claim per "
                "replica)", f"volume {mount['name']!r}")
        R.check(not mount.get("readOnly") and not mount.get("subPath"),
                f"{name}: the state mount is writable, whole volume")
        if claim:
            cspec = claim.get("spec") or {}
            R.check(cspec.get("accessModes") in (["ReadWriteOnce"], ["ReadWriteOncePod"]),
                    "state claim is ReadWriteOnce(Pod): one replica's store, on a local "
                    "file system with locks", f"{cspec.get('accessModes')}")
            R.check(((cspec.get("resources") or {}).get("requests") or {}).get("storage"),
                    "state claim requests storage")
    pod_sc = pod.get("securityContext") or {}
    R.check(pod_sc.get("fsGroup") is not None
            and pod_sc.get("fsGroup") == pod_sc.get("runAsGroup", pod_sc.get("runAsUser")),
            "pod fsGroup is the server's group: the state claim is writable by it",
            f"{pod_sc}")
    retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    R.check(retention.get("whenScaled") == "Retain",
            "StatefulSet keeps a scaled-down replica's claim (its jobs resume when it is back)",
            f"{retention}")
    R.check(spec.get("podManagementPolicy") == "Parallel",
            "StatefulSet starts replicas in parallel (no order needed)")

    # Services: a ClusterIP gRPC Service, the headless one, the metrics one.
    port_names = {p.get("name"): p.get("containerPort") for p in server.get("ports") or []}

    def target(port):
        t = port.get("targetPort", port.get("port"))
        return port_names.get(t) if isinstance(t, str) else t

    services = find(objects, "Service")
    R.check(len(services) == 3, f"{where}: gRPC, headless and metrics Services",
            f"{[s['metadata']['name'] for s in services]}")
    for svc in services:
        sname = f"Service {svc['metadata']['name']}"
        selector = svc["spec"].get("selector") or {}
        R.check(selector and all(template_labels.get(k) == v for k, v in selector.items()),
                f"{sname} selects the StatefulSet's pods", f"selector {selector}")
    grpc_svc = [s for s in services if any(target(p) == GRPC_PORT for p in s["spec"]["ports"])]
    metrics_svc = [s for s in services
                   if any(target(p) == METRICS_PORT for p in s["spec"]["ports"])]
    headless = [s for s in grpc_svc if s["spec"].get("clusterIP") == "None"]
    virtual = [s for s in grpc_svc if s["spec"].get("clusterIP") != "None"]
    R.check(len(headless) == 1 and len(virtual) == 1,
            f"two Services reach container port {GRPC_PORT}: one ClusterIP, one headless",
            f"{[s['metadata']['name'] for s in grpc_svc]}")
    for svc in grpc_svc:
        p = next(p for p in svc["spec"]["ports"] if target(p) == GRPC_PORT)
        R.check(p.get("port") == GRPC_PORT and p.get("appProtocol") == "grpc"
                and p.get("name") == "grpc",
                f"Service {svc['metadata']['name']}: port {GRPC_PORT} named grpc, appProtocol "
                "grpc", f"{p}")
    if headless:
        h = headless[0]
        R.check(spec.get("serviceName") == h["metadata"]["name"],
                f"StatefulSet serviceName is the headless Service {h['metadata']['name']}",
                f"{spec.get('serviceName')!r}")
        R.check(h["metadata"]["name"] == "memaudit-headless",
                "the headless Service is memaudit-headless (the name docs/KUBERNETES.md dials)")
        R.check(not h["spec"].get("publishNotReadyAddresses"),
                "headless Service publishes ready pods only (none loading or draining)")
    if R.check(len(metrics_svc) == 1 and metrics_svc[0] not in grpc_svc,
               f"a separate Service reaches container port {METRICS_PORT}"):
        svc = metrics_svc[0]
        p = next(p for p in svc["spec"]["ports"] if target(p) == METRICS_PORT)
        ann = svc["metadata"].get("annotations") or {}
        R.check(p.get("port") == METRICS_PORT, f"metrics Service: port {METRICS_PORT}")
        R.check(ann.get("prometheus.io/scrape") == "true"
                and ann.get("prometheus.io/port") == str(METRICS_PORT)
                and ann.get("prometheus.io/path", "/metrics") == "/metrics",
                "metrics Service: prometheus.io scrape/port/path annotations", f"{ann}")
    return sts


def check_gpu(base_sts, objects):
    sets = find(objects, "StatefulSet")
    if not R.check(len(sets) == 1, f"{GPU}/: one StatefulSet"):
        return
    sts = sets[0]
    pod = pod_spec(sts)
    server = server_container(sts)
    base_server = server_container(base_sts)
    limits = (server.get("resources") or {}).get("limits") or {}
    R.check(str(limits.get("nvidia.com/gpu")) == "1", "GPU overlay: limits nvidia.com/gpu: 1",
            f"{limits}")
    R.check({"cpu", "memory"} <= set(limits), "GPU overlay keeps cpu/memory limits")
    flags, base_flags = flag_map(server.get("args")), flag_map(base_server.get("args"))
    R.check(flags.get("device") == "cuda:0", "GPU overlay: --device=cuda:0", f"{flags}")
    drift = sorted(k for k in set(flags) | set(base_flags)
                   if k not in ("device", "threads") and flags.get(k) != base_flags.get(k))
    R.check(not drift, "GPU overlay args equal the base's except --device/--threads",
            f"differ: {drift}")
    R.check(pod.get("nodeSelector") or (pod.get("affinity") or {}).get("nodeAffinity"),
            "GPU overlay: selects GPU nodes")
    R.check(any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations") or []),
            "GPU overlay: tolerates the nvidia.com/gpu taint")
    R.check("cuda" in server.get("image", "") and server["image"] != base_server.get("image"),
            "GPU overlay: uses the CUDA image", server.get("image"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        R.check(((server.get(probe) or {}).get("grpc") or {}).get("port") == GRPC_PORT,
                f"GPU overlay keeps the gRPC {probe}")
    R.check((server.get("securityContext") or {}).get("readOnlyRootFilesystem") is True,
            "GPU overlay keeps the container securityContext")


def server_container(obj):
    return next((c for c in (pod_spec(obj) or {}).get("containers") or []
                 if c.get("name") == "memaudit"), None)


def container_port(server, port):
    """A probe's or policy's port (number or container port name) as a number."""
    if isinstance(port, str) and not port.isdigit():
        return next((p.get("containerPort") for p in server.get("ports") or []
                     if p.get("name") == port), None)
    return int(port) if port is not None else None


def check_probes(where, server):
    """gRPC probes on 8500 on a plaintext gRPC port; otherwise (and whenever
    a probe is httpGet) httpGet on 9090: /readyz for startup and readiness,
    /healthz for liveness, HTTPS exactly when --metrics_tls."""
    flags = flag_map(server.get("args"))
    grpc_tls = "tls_cert" in flags
    scheme = "HTTPS" if flags.get("metrics_tls") is True else "HTTP"
    for probe, path in PROBE_PATHS.items():
        p = server.get(probe) or {}
        handlers = sorted(set(p) & {"grpc", "httpGet", "exec", "tcpSocket"})
        if not R.check(len(handlers) == 1, f"{where}: {probe} has one handler", f"{handlers}"):
            continue
        if handlers == ["grpc"]:
            R.check(not grpc_tls and p["grpc"].get("port") == GRPC_PORT,
                    f"{where}: {probe} is gRPC on {GRPC_PORT}, which speaks plaintext",
                    "the kubelet's gRPC probe cannot speak TLS (--tls_cert): use httpGet on "
                    f"{METRICS_PORT}" if grpc_tls else f"port {p['grpc'].get('port')}")
            continue
        get = p.get("httpGet") or {}
        R.check(handlers == ["httpGet"]
                and container_port(server, get.get("port")) == METRICS_PORT
                and get.get("path") == path
                and get.get("scheme", "HTTP") == scheme
                and not get.get("host"),
                f"{where}: {probe} is httpGet {scheme} :{METRICS_PORT}{path}"
                + (" (gRPC port speaks TLS)" if grpc_tls else ""), f"got {p}")


def check_termination(where, obj, server):
    """The kubelet's SIGKILL comes after the server's own latest exit, and the
    liveness probe cannot restart a draining server first."""
    flags = flag_map(server.get("args"))
    pod = pod_spec(obj)
    period = pod.get("terminationGracePeriodSeconds", 30)
    live = server.get("livenessProbe") or {}
    if live:
        window = live.get("failureThreshold", 3) * live.get("periodSeconds", 10)
        R.check(window >= period, f"{where}: {server['name']}: livenessProbe failureThreshold x "
                f"periodSeconds ({window} s) >= terminationGracePeriodSeconds ({period} s): "
                "a draining server (health NOT_SERVING) is not restarted",
                f"{window} < {period}")
    try:
        limit = sum(float(flags[f]) if f in flags else SERVER_DEFAULTS[f]
                    for f in ("shutdown_grace_seconds", "shutdown_watchdog_seconds"))
    except (KeyError, ValueError) as e:
        R.check(False, f"{where}: terminationGracePeriodSeconds exceeds --shutdown_grace_seconds"
                " + --shutdown_watchdog_seconds", f"cannot tell the flags' values: {e!r}")
        return
    R.check(period > limit, f"{where}: terminationGracePeriodSeconds ({period}) exceeds "
            f"--shutdown_grace_seconds + --shutdown_watchdog_seconds ({limit:g})",
            f"{period} <= {limit:g}")


def label_selector_matches(selector, labels):
    if not isinstance(selector, dict) or set(selector) - {"matchLabels"}:
        return False  # matchExpressions: not modelled
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def check_network_policy(where, objects, obj):
    """One NetworkPolicy selects the server's pods: ingress to 8500 from
    memaudit.io/client pods (any namespace), to 9090 from the monitoring
    namespace, nothing else; egress, when restricted, DNS only."""
    server = server_container(obj)
    labels = pod_spec(obj) and obj["spec"]["template"]["metadata"].get("labels", {})
    policies = [p for p in find(objects, "NetworkPolicy")
                if label_selector_matches(p["spec"].get("podSelector"), labels)]
    if not R.check(len(policies) == 1, f"{where}: one NetworkPolicy selects the server's pods",
                   f"{[p['metadata']['name'] for p in policies]}"):
        return
    policy = policies[0]
    spec = policy["spec"]
    R.check(policy.get("apiVersion") == "networking.k8s.io/v1" and
            spec["podSelector"].get("matchLabels"),
            f"{where}: NetworkPolicy is networking.k8s.io/v1 with a non-empty podSelector")
    types = spec.get("policyTypes") or []
    R.check("Ingress" in types, f"{where}: NetworkPolicy restricts ingress", f"{types}")

    def ports_of(rule):
        return sorted((p.get("protocol", "TCP"), container_port(server, p.get("port")))
                      for p in rule.get("ports") or [])

    clients = [{"namespaceSelector": {},
                "podSelector": {"matchLabels": {"memaudit.io/client": "true"}}}]
    monitoring = [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    rules = spec.get("ingress") or []
    wanted = {GRPC_PORT: clients, METRICS_PORT: monitoring}
    seen = {}
    for rule in rules:
        ports = ports_of(rule)
        # An empty ports or from list would allow every port or every source.
        R.check(ports and len(ports) == 1 and ports[0][0] == "TCP" and ports[0][1] in wanted
                and rule.get("from"),
                f"{where}: NetworkPolicy ingress rule names one TCP port of "
                f"{sorted(wanted)} and its sources", f"{rule}")
        if ports:
            seen.setdefault(ports[0][1], []).append(rule.get("from"))
    R.check(sorted(seen) == sorted(wanted) and all(len(v) == 1 for v in seen.values()),
            f"{where}: NetworkPolicy allows ingress to exactly ports {sorted(wanted)}, one "
            "rule each", f"{seen}")
    R.check(seen.get(GRPC_PORT) == [clients],
            f"{where}: NetworkPolicy: {GRPC_PORT} only from pods labelled "
            "memaudit.io/client=true in any namespace", f"{seen.get(GRPC_PORT)}")
    R.check(seen.get(METRICS_PORT) == [monitoring],
            f"{where}: NetworkPolicy: {METRICS_PORT} only from the namespace monitoring",
            f"{seen.get(METRICS_PORT)}")
    if "Egress" in types:
        dns = {("UDP", 53), ("TCP", 53)}
        egress = spec.get("egress") or []
        R.check(all(r.get("ports") and set(ports_of(r)) <= dns for r in egress),
                f"{where}: NetworkPolicy egress is DNS (port 53) only",
                f"{egress}")


def check_rendering(where, objects):
    """Checks that hold for every online rendering."""
    R.check(not find(objects, "Secret"), f"{where}: renders no Secret (none committed)")
    R.check(not find(objects, "Deployment"), f"{where}: no Deployment")
    sets = find(objects, "StatefulSet")
    sts = sets[0] if len(sets) == 1 else None
    if not R.check(sts is not None and server_container(sts) is not None,
                   f"{where}: one StatefulSet with the memaudit container"):
        return
    server = server_container(sts)
    check_termination(where, sts, server)
    check_probes(where, server)
    check_drain_readiness(where, server)
    check_network_policy(where, objects, sts)
    check_pdb(where, objects, sts)


def check_secure(root, base_sts, objects):
    sets = find(objects, "StatefulSet")
    if not R.check(len(sets) == 1, f"{SECURE}/: one StatefulSet"):
        return
    sts = sets[0]
    pod = pod_spec(sts)
    server, base_server = server_container(sts), server_container(base_sts)
    args, base_args = server.get("args") or [], base_server.get("args") or []
    extra = flag_map(args[len(base_args):])
    R.check(args[:len(base_args)] == base_args and set(extra) == SECURITY_FLAGS
            and len(args) == len(base_args) + len(SECURITY_FLAGS),
            "secure overlay args are the base's plus exactly "
            + ", ".join(f"--{f}" for f in sorted(SECURITY_FLAGS)),
            f"extra {args[len(base_args):] if args[:len(base_args)] == base_args else args}")
    flags = flag_map(args)
    check_flags_known("secure overlay", flags)
    R.check(flags.get("metrics_tls") is True and flags.get("metrics_require_token") is True,
            "secure overlay: --metrics_tls and --metrics_require_token are bare switches")
    R.check(server.get("image") == base_server.get("image"),
            "secure overlay keeps the base image")

    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = server.get("volumeMounts") or []
    fs_group = (pod.get("securityContext") or {}).get("fsGroup")
    R.check(isinstance(fs_group, int) and fs_group != 0,
            f"secure overlay: pod fsGroup ({fs_group}) owns the Secret files")
    for flag, (secret_name, key) in FILE_FLAGS.items():
        path = flags.get(flag)
        what = f"secure overlay: --{flag}={path}"
        if not R.check(isinstance(path, str) and path.startswith("/"),
                       f"secure overlay: --{flag} is an absolute path", f"{path!r}"):
            continue
        exact = [m for m in mounts if m["mountPath"].rstrip("/") == path]
        if exact:
            R.check(False, f"{what}: the file is inside a whole-volume mount",
                    f"the file itself is a mount ({exact[0]}): with subPath, Secret updates "
                    "never reach it")
            continue
        inside = [m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")]
        mount = max(inside, key=lambda m: len(m["mountPath"]), default=None)
        if not R.check(mount is not None, f"{what} is inside a volume mount"):
            continue
        secret = (volumes.get(mount["name"]) or {}).get("secret")
        if not R.check(secret, f"{what} is inside a Secret volume", f"mount {mount}"):
            continue
        R.check(secret.get("secretName") == secret_name,
                f"{what}: the volume is Secret {secret_name}", f"{secret}")
        R.check(mount.get("readOnly") is True and not mount.get("subPath")
                and not mount.get("subPathExpr"),
                f"{what}: whole-volume mount (no subPath, so updates arrive), read-only",
                f"{mount}")
        relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
        items = secret.get("items")
        item = next((i for i in items or [] if i.get("path") == relative), None)
        if items is not None:
            provided = item and item.get("key")
        else:
            provided = relative if "/" not in relative else None
        R.check(provided == key, f"{what}: the Secret's key {key} provides the file",
                f"file {relative!r} comes from key {provided!r}")
        R.check(not set(k.get("key") for k in items or []) - SECRET_KEYS[secret_name],
                f"{what}: the volume's items are keys of {secret_name} "
                f"({', '.join(sorted(SECRET_KEYS[secret_name]))})", f"{items}")
        mode = (item or {}).get("mode", secret.get("defaultMode", 0o644))
        R.check(mode == 0o440, f"{what}: mode 0440 (owner and fsGroup read, others nothing)",
                f"mode {mode:#o}")

    # The metrics Service is scraped over HTTPS when the port speaks it.
    for svc in find(objects, "Service"):
        if any(p.get("port") == METRICS_PORT for p in svc["spec"].get("ports") or []):
            ann = svc["metadata"].get("annotations") or {}
            port = next(p for p in svc["spec"]["ports"] if p.get("port") == METRICS_PORT)
            R.check(ann.get("prometheus.io/scheme") == "https"
                    and port.get("appProtocol") == "https",
                    "secure overlay: metrics Service says https (annotation, appProtocol)",
                    f"{ann}, {port}")

    # The documented commands create the Secrets with the keys mounted here.
    readme = root / "deploy/README.md"
    text = readme.read_text() if readme.is_file() else ""
    for secret_name, keys in SECRET_KEYS.items():
        commands = re.findall(rf"kubectl create secret generic {secret_name}\b(?:\\\n|[^\n])*",
                              text)
        made = {m for c in commands for m in re.findall(r"--from-file=([\w.-]+)", c)}
        R.check(commands and made == keys,
                f"deploy/README.md: `kubectl create secret generic {secret_name}` makes "
                f"keys {', '.join(sorted(keys))}", f"{commands} -> {sorted(made)}")


# --------------------------------------------------------------------------
# Draining, disruption budget, autoscaling, monitoring, batch, schemas, docs

# What the server does on SIGTERM, read from server/server.cc by
# load_drain_facts: the health services it registers and whether Shutdown()
# turns them NOT_SERVING before it waits for running audits.
DRAIN = {"services": None, "not_serving_first": False, "readyz_is_serving": False}


def function_body(text, signature):
    """The body of a C++ function definition `signature(...) {...}`."""
    m = re.search(re.escape(signature) + r"\([^)]*\)\s*(?:const\s*)?\{", text)
    if not m:
        return None
    depth, i = 1, m.end()
    while depth and i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end():i - 1]


def load_drain_facts(root):
    path = root / "server/server.cc"
    text = path.read_text() if path.is_file() else ""
    m = re.search(r"kServiceNames\[\]\s*=\s*\{([^}]*)\}", text)
    services = set(re.findall(r'"([^"]+)"', m.group(1))) if m else set()
    set_serving = function_body(text, "void MemauditServer::SetServing") or ""
    sets_all = ('SetServingStatus("", serving)' in set_serving
                and "kServiceNames" in set_serving)
    if R.check(services and sets_all, "server/server.cc: SetServing() sets the health of \"\" "
               f"and of every service ({', '.join(sorted(services))})"):
        DRAIN["services"] = services
    shutdown = function_body(text, "void MemauditServer::Shutdown") or ""
    first = shutdown.find("SetServing(false)")
    drain = shutdown.find("jobs_->Shutdown(")
    DRAIN["not_serving_first"] = R.check(
        0 <= first < drain, "server/server.cc: Shutdown() reports NOT_SERVING before it drains "
        "the running audits (readiness fails while draining)",
        "no SetServing(false) before jobs_->Shutdown(grace)")
    DRAIN["readyz_is_serving"] = R.check(
        re.search(r"http\.ready\s*=\s*\[[^\]]*\]\s*\{\s*return self->serving_", text),
        "server/server.cc: /readyz answers from the same serving flag")


def check_drain_readiness(where, server):
    """The readiness probe asks something that turns NOT_SERVING on SIGTERM."""
    probe = server.get("readinessProbe") or {}
    if "grpc" in probe:
        service = probe["grpc"].get("service", "")
        R.check(DRAIN["not_serving_first"] and DRAIN["services"] is not None
                and service in DRAIN["services"] | {""},
                f"{where}: readinessProbe asks health service {service!r}, which the server "
                "sets NOT_SERVING while draining", f"services {DRAIN['services']}")
    else:
        R.check(DRAIN["not_serving_first"] and DRAIN["readyz_is_serving"]
                and (probe.get("httpGet") or {}).get("path") == "/readyz",
                f"{where}: readinessProbe is /readyz, 503 while draining", f"{probe}")


def check_pdb(where, objects, sts):
    labels = sts["spec"]["template"]["metadata"].get("labels", {})
    pdbs = [p for p in find(objects, "PodDisruptionBudget")
            if label_selector_matches(p["spec"].get("selector"), labels)]
    if not R.check(len(pdbs) == 1 and pdbs[0].get("apiVersion") == "policy/v1",
                   f"{where}: one policy/v1 PodDisruptionBudget selects the server's pods"):
        return
    spec = pdbs[0]["spec"]
    hpa = next((h for h in find(objects, "HorizontalPodAutoscaler")
                if (h["spec"].get("scaleTargetRef") or {}).get("name")
                == sts["metadata"]["name"]), None)
    replicas = hpa["spec"].get("minReplicas", 1) if hpa else sts["spec"].get("replicas", 1)
    if "maxUnavailable" in spec:
        ok = isinstance(spec["maxUnavailable"], int) and 1 <= spec["maxUnavailable"] < replicas
    else:
        ok = isinstance(spec.get("minAvailable"), int) and 1 <= spec["minAvailable"] < replicas
    R.check(ok, f"{where}: the PodDisruptionBudget lets one pod go and keeps one serving "
            f"(at {replicas} replicas)", f"{spec}")


def series_name(selector):
    m = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", selector or "")
    return m.group(1) if m else None


def matchers(selector):
    """{label: value} of the equality matchers of a series selector."""
    m = re.search(r"\{(.*)\}", selector or "")
    return dict(re.findall(r'([A-Za-z_]\w*)\s*=\s*"([^"]*)"', m.group(1))) if m else {}


def load_adapter_rules(root):
    """prometheus-adapter's rules -> [(rule, output name)], after checking
    each against the server's metrics."""
    path = root / ADAPTER_RULES
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        R.check(False, f"{ADAPTER_RULES} parses", repr(e))
        return []
    rules = config.get("rules") or []
    R.check(rules and set(config) <= {"rules", "resourceRules", "externalRules"},
            f"{ADAPTER_RULES}: a prometheus-adapter config with rules", f"{sorted(config)}")
    metrics_source = (root / "server/metrics.cc").read_text() \
        if (root / "server/metrics.cc").is_file() else ""
    out = []
    for i, rule in enumerate(rules):
        where = f"adapter rule {i}"
        series = series_name(rule.get("seriesQuery"))
        R.check(series in METRIC_FAMILIES, f"{where}: seriesQuery names a metric the server "
                f"exports ({series})", f"known: {sorted(METRIC_FAMILIES)}")
        wanted = matchers(rule.get("seriesQuery"))
        for label, value in wanted.items():
            if label in ("namespace", "pod"):
                continue
            R.check(re.search(rf'\{{\s*"{label}"\s*,\s*"{re.escape(value)}"\s*\}}',
                              metrics_source),
                    f"{where}: server/metrics.cc sets {series}{{{label}=\"{value}\"}}")
        overrides = (rule.get("resources") or {}).get("overrides") or {}
        R.check((overrides.get("namespace") or {}).get("resource") == "namespace"
                and (overrides.get("pod") or {}).get("resource") == "pod",
                f"{where}: maps the namespace and pod labels to their resources "
                "(a Pods metric)", f"{overrides}")
        name = rule.get("name") or {}
        try:
            matched = series and re.search(name.get("matches", ""), series)
        except re.error as e:
            matched = None
            R.check(False, f"{where}: name.matches is a regex", repr(e))
        if not R.check(matched, f"{where}: name.matches {name.get('matches')!r} matches "
                       f"{series}"):
            continue
        output = re.sub(name["matches"], name.get("as", "").replace("$", "\\"), series) \
            if name.get("as") else series
        query = rule.get("metricsQuery", "")
        R.check(all(t in query for t in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>")),
                f"{where}: metricsQuery uses <<.Series>>, <<.LabelMatchers>>, <<.GroupBy>>",
                query)
        R.check(matchers(query.replace("<<.LabelMatchers>>", "")) ==
                {k: v for k, v in wanted.items() if k not in ("namespace", "pod")},
                f"{where}: metricsQuery selects the series seriesQuery discovers "
                f"({output})", query)
        out.append((rule, output))
    names = [o for _, o in out]
    R.check(len(set(names)) == len(names), "adapter rules: distinct output names", f"{names}")
    return out


def check_adapter_queries(rules, promtool):
    """promtool parses each rule's queries with the adapter's templates filled
    in, and a unit test checks what they return: one value per pod of the
    rule's own state, scraped twice or not, other namespaces left out."""
    if not promtool:
        R.skip("promtool check/test of the adapter queries", "promtool not installed")
        return
    namespace, pods = "memaudit", ["memaudit-0", "memaudit-1"]
    values = {("memaudit-0", "queued"): 3, ("memaudit-0", "running"): 2,
              ("memaudit-1", "queued"): 1, ("memaudit-1", "running"): 0}

    def fill(query):
        return (query.replace("<<.Series>>", "memaudit_jobs")
                .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{"|".join(pods)}"')
                .replace("<<.GroupBy>>", "pod"))

    recording, tests = [], []
    for rule, output in rules:
        recording.append({"record": output, "expr": fill(rule["metricsQuery"])})
        recording.append({"record": f"{output}:series", "expr": rule["seriesQuery"]})
        state = matchers(rule["seriesQuery"]).get("state")
        tests.append({"expr": output, "eval_time": "2m", "exp_samples": [
            {"labels": f'{output}{{pod="{pod}"}}', "value": values[(pod, state)]}
            for pod in pods]})
    series = []
    for (pod, state), value in values.items():
        series.append({"series": f'memaudit_jobs{{namespace="{namespace}",pod="{pod}",'
                                 f'state="{state}",job="memaudit-metrics"}}',
                       "values": f"{value}x5"})
    # memaudit-1 scraped a second time (another job), and a pod of the same
    # name in another namespace: neither may change the answer.
    series.append({"series": f'memaudit_jobs{{namespace="{namespace}",pod="memaudit-1",'
                             'state="queued",job="kubernetes-pods"}', "values": "1x5"})
    series.append({"series": 'memaudit_jobs{namespace="other",pod="memaudit-0",'
                             'state="queued",job="memaudit-metrics"}', "values": "40x5"})
    with tempfile.TemporaryDirectory() as tmp:
        rules_path = Path(tmp) / "adapter-rules.yaml"
        test_path = Path(tmp) / "adapter-rules.test.yaml"
        rules_path.write_text(yaml.safe_dump({"groups": [{"name": "adapter",
                                                          "rules": recording}]}))
        test_path.write_text(yaml.safe_dump({
            "rule_files": [rules_path.name], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series,
                       "promql_expr_test": tests}]}))
        for what, argv in (("check", ["check", "rules", str(rules_path)]),
                           ("test", ["test", "rules", str(test_path)])):
            run = subprocess.run([promtool, *argv], capture_output=True, text=True, cwd=tmp)
            R.check(run.returncode == 0,
                    f"promtool {what} rules: the adapter's queries, templates filled in"
                    + (" (one value per pod, of the rule's state)" if what == "test" else ""),
                    (run.stdout + run.stderr).strip().replace("\n", " | "))


def check_autoscaling(root, objects, base_sts, promtool):
    where = f"{AUTOSCALED}/"
    rules = load_adapter_rules(root)
    check_adapter_queries(rules, promtool)
    outputs = {o for _, o in rules}
    sets = find(objects, "StatefulSet")
    hpas = find(objects, "HorizontalPodAutoscaler")
    if not R.check(len(sets) == 1 and len(hpas) == 1 and hpas[0].get("apiVersion")
                   == "autoscaling/v2", f"{where}: one StatefulSet and one autoscaling/v2 HPA"):
        return
    sts, hpa = sets[0], hpas[0]
    spec = hpa["spec"]
    ref = spec.get("scaleTargetRef") or {}
    R.check(ref == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": sts["metadata"]["name"]},
            f"{where}: the HPA scales the server StatefulSet", f"{ref}")
    R.check("replicas" not in sts["spec"],
            f"{where}: the StatefulSet sets no replicas (the HPA owns the count)")
    R.check(2 <= spec.get("minReplicas", 1) <= spec.get("maxReplicas", 0),
            f"{where}: 2 <= minReplicas <= maxReplicas", f"{spec}")
    metrics = spec.get("metrics") or []
    R.check(metrics, f"{where}: the HPA has metrics")
    queued = int(flag_map(server_container(base_sts).get("args")).get("max_queued_jobs", "0"))
    for metric in metrics:
        pods = metric.get("pods") or {}
        name = (pods.get("metric") or {}).get("name")
        R.check(metric.get("type") == "Pods" and name in outputs,
                f"{where}: HPA Pods metric {name} is an output of an adapter rule",
                f"adapter outputs {sorted(outputs)}")
        target = pods.get("target") or {}
        try:
            value = parse_quantity(target.get("averageValue"))
        except (TypeError, ValueError):
            value = None
        R.check(target.get("type") == "AverageValue" and value and 0 < value < queued,
                f"{where}: HPA target is an average per pod below --max_queued_jobs={queued}",
                f"{target}")
    down = (spec.get("behavior") or {}).get("scaleDown") or {}
    R.check(down.get("stabilizationWindowSeconds", 300) >= 300 and down.get("policies") and
            all(p.get("type") == "Pods" and p.get("value") == 1 for p in down["policies"]),
            f"{where}: scale-down one pod at a time after >= 5 minutes (each removal "
            "interrupts running audits)", f"{down}")
    check_servicemonitor(where, objects, sts)


def check_servicemonitor(where, objects, sts):
    monitors = find(objects, "ServiceMonitor")
    if not R.check(len(monitors) == 1 and monitors[0].get("apiVersion")
                   == "monitoring.coreos.com/v1", f"{where}: one monitoring.coreos.com/v1 "
                   "ServiceMonitor"):
        return
    spec = monitors[0]["spec"]
    selected = [s for s in find(objects, "Service")
                if label_selector_matches(spec.get("selector"), s["metadata"].get("labels", {}))]
    metrics_services = [s for s in selected
                        if any(p.get("port") == METRICS_PORT for p in s["spec"]["ports"])]
    R.check(len(selected) == 1 and len(metrics_services) == 1,
            f"{where}: the ServiceMonitor selects the metrics Service only",
            f"{[s['metadata']['name'] for s in selected]}")
    if not metrics_services:
        return
    svc = metrics_services[0]
    names = {p.get("name") for p in svc["spec"]["ports"] if p.get("port") == METRICS_PORT}
    for endpoint in spec.get("endpoints") or []:
        R.check(endpoint.get("port") in names and endpoint.get("path", "/metrics") == "/metrics",
                f"{where}: ServiceMonitor endpoint is the Service's port {sorted(names)} "
                "at /metrics", f"{endpoint}")
    R.check(spec.get("endpoints"), f"{where}: ServiceMonitor has endpoints")
    R.check(not spec.get("jobLabel") and re.fullmatch("memaudit.*", svc["metadata"]["name"]),
            f"{where}: the scrape job is named after {svc['metadata']['name']}, which the alert "
            "rules' job=~\"memaudit.*\" match")
    R.check(label_selector_matches({"matchLabels": svc["spec"].get("selector") or {}},
                                   sts["spec"]["template"]["metadata"].get("labels", {})),
            f"{where}: the monitored Service selects the StatefulSet's pods (each pod is a "
            "target, with its pod label)")


def shell_flag(script, flag):
    """The value of `--flag VALUE` in a shell script (quotes removed)."""
    m = re.search(rf"{re.escape(flag)}[ =]+(\"[^\"]*\"|'[^']*'|\S+)", script)
    return m.group(1).strip("\"'") if m else None


def env_value(container, text):
    """"$NAME" or "${NAME}" -> the container's env value; anything else as is."""
    m = re.fullmatch(r"\$\{?([A-Za-z_]\w*)\}?", text or "")
    if not m:
        return text
    return next((e.get("value") for e in container.get("env") or [] if e["name"] == m.group(1)),
                None)


def check_batch(root, objects, merge_objects):
    where = f"{BATCH}/"
    R.check(not find(objects, "Secret"), f"{where}: renders no Secret")
    jobs = find(objects, "Job")
    if not R.check(len(jobs) == 1 and jobs[0].get("apiVersion") == "batch/v1",
                   f"{where}: one batch/v1 Job"):
        return
    job = jobs[0]
    spec = job["spec"]
    pod = pod_spec(job)
    R.check(spec.get("completionMode") == "Indexed", f"{where}: an Indexed Job")
    completions = spec.get("completions")
    R.check(isinstance(completions, int) and completions >= 1
            and 1 <= spec.get("parallelism", 1) <= completions,
            f"{where}: completions ({completions}) >= parallelism >= 1")
    R.check(pod.get("restartPolicy") == "Never", f"{where}: restartPolicy Never (needed by "
            "backoffLimitPerIndex and podFailurePolicy)")
    check_security(where, job)
    check_shell_scripts(where, job)

    # The server: a native sidecar with a startup probe.
    sidecars = [c for c in pod.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    if not R.check(len(sidecars) == 1, f"{where}: one native sidecar (initContainer with "
                   "restartPolicy: Always) runs the server"):
        return
    server = sidecars[0]
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = {m["mountPath"]: m for m in server.get("volumeMounts") or []}
    flags = server_flags_in_step(f"{where} sidecar {server['name']}", server, set(volumes),
                                 mounts)
    R.check("state_dir" not in flags, f"{where}: the sidecar keeps no job store (a shard is "
            "retried whole)")
    startup = server.get("startupProbe") or {}
    grpc = startup.get("grpc") or {}
    R.check(grpc.get("port") == port_of(flags.get("listen")) and DRAIN["services"] is not None
            and grpc.get("service", "") in DRAIN["services"],
            f"{where}: the sidecar has a gRPC startupProbe on its --listen port asking a "
            "service it registers (the audit starts once the server is SERVING)", f"{startup}")
    R.check(not (server.get("readinessProbe") or {}), f"{where}: sidecar has no readiness "
            "probe (nothing routes to it)")
    check_termination(where, job, server)
    repository = volumes.get((mounts.get(flags.get("model_repository")) or {}).get("name"), {})
    R.check((repository.get("persistentVolumeClaim") or {}).get("readOnly") is True
            and mounts[flags["model_repository"]].get("readOnly") is True,
            f"{where}: the model repository is a read-only claim")

    # The CLI: shard JOB_COMPLETION_INDEX of completions, against the sidecar.
    containers = pod.get("containers") or []
    if not R.check(len(containers) == 1, f"{where}: one main container (the CLI)"):
        return
    cli = containers[0]
    script = "\n".join((cli.get("command") or []) + (cli.get("args") or []))
    R.check(cli.get("image") == server.get("image"), f"{where}: CLI and server are one image",
            f"{cli.get('image')} vs {server.get('image')}")
    address = shell_flag(script, "--server")
    R.check(address == f"127.0.0.1:{port_of(flags.get('listen'))}",
            f"{where}: the CLI dials its own sidecar on 127.0.0.1", f"{address}")
    R.check(re.search(r"\baudit\b", script) and shell_flag(script, "--json") is not None,
            f"{where}: the CLI runs `audit ... --json`")
    R.check(shell_flag(script, "--shard-index") in ("$JOB_COMPLETION_INDEX",
                                                   "${JOB_COMPLETION_INDEX}"),
            f"{where}: --shard-index is the pod's JOB_COMPLETION_INDEX")
    count = env_value(cli, shell_flag(script, "--shard-count"))
    R.check(str(count) == str(completions),
            f"{where}: --shard-count ({count}) equals the Job's completions ({completions})")
    R.check(shell_flag(script, "--fail-on") == "never",
            f"{where}: shards pass --fail-on never (the gate is the merged report's)")
    cli_mounts = {m["mountPath"]: m for m in cli.get("volumeMounts") or []}

    def mount_of(path, mounts_):
        inside = [m for m in mounts_ if path and path.startswith(m.rstrip("/") + "/")]
        return mounts_[max(inside, key=len)] if inside else None

    prompts = shell_flag(script, "--prompts")
    mount = mount_of(prompts, cli_mounts)
    config_map = (volumes.get(mount["name"]) if mount else {}).get("configMap") or {}
    generated = find(objects, "ConfigMap", config_map.get("name"))
    key = prompts[len(mount["mountPath"].rstrip("/")) + 1:] if mount else None
    if R.check(generated and key in (generated[0].get("data") or {}),
               f"{where}: --prompts {prompts} is key {key} of the ConfigMap "
               f"{config_map.get('name')} the kustomization renders"):
        lines = [x for x in generated[0]["data"][key].splitlines() if x.strip()]
        bad = []
        for line in lines:
            if line.lstrip().startswith("{"):
                try:
                    if not isinstance(json.loads(line).get("prompt"), str):
                        bad.append(line)
                except ValueError:
                    bad.append(line)
        R.check(len(lines) >= completions and not bad,
                f"{where}: the prompt list has {len(lines)} prompts (>= shards), JSON Lines "
                "with a prompt each or plain lines", f"bad {bad[:3]}")
    report = re.search(r'out="([^"]*\$JOB_COMPLETION_INDEX[^"]*)"', script)
    report = report.group(1) if report else None
    mount = mount_of(report, cli_mounts)
    claim = (volumes.get(mount["name"]) if mount else {}).get("persistentVolumeClaim") or {}
    R.check(report and claim and not mount.get("readOnly") and '> "$out.partial"' in script
            and 'mv "$out.partial" "$out"' in script,
            f"{where}: each shard writes {report} on a writable claim, renamed when complete",
            f"{report}, {mount}")
    pvcs = find(objects, "PersistentVolumeClaim", claim.get("claimName"))
    R.check(pvcs and (spec.get("parallelism", 1) == 1 or
                      "ReadWriteMany" in pvcs[0]["spec"].get("accessModes", [])),
            f"{where}: the reports claim {claim.get('claimName')} is rendered, ReadWriteMany "
            "(shards run on several nodes)")
    named = {(rule.get("onExitCodes") or {}).get("containerName")
             for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []} - {None}
    R.check(named <= {cli["name"]}, f"{where}: podFailurePolicy's exit-code rules name the CLI "
            "container", f"{sorted(named)}")

    # The NetworkPolicy: selects the batch pods (audit and merge), no
    # ingress, egress DNS only; not the online servers'.
    labels = job["spec"]["template"]["metadata"].get("labels", {})
    policies = [p for p in find(objects, "NetworkPolicy")
                if label_selector_matches(p["spec"].get("podSelector"), labels)]
    if R.check(len(policies) == 1, f"{where}: one NetworkPolicy selects the shard pods"):
        pspec = policies[0]["spec"]
        R.check("Ingress" in pspec.get("policyTypes", []) and not pspec.get("ingress"),
                f"{where}: NetworkPolicy: no ingress to the shard pods")
        R.check("Egress" in pspec.get("policyTypes", []) and all(
            {(p.get("protocol", "TCP"), p.get("port")) for p in r.get("ports") or []}
            <= {("UDP", 53), ("TCP", 53)} and r.get("ports") for r in pspec.get("egress") or []),
            f"{where}: NetworkPolicy: egress DNS only")
        online = kustomize_cached(root, CPU)
        sts = find(online, "StatefulSet")
        R.check(sts and not label_selector_matches(
            pspec["podSelector"], sts[0]["spec"]["template"]["metadata"].get("labels", {})),
            f"{where}: the batch NetworkPolicy does not select the online server pods")

    # The merge Job: same claim, a glob that matches the shards' names.
    where = f"{MERGE}/"
    merges = find(merge_objects or [], "Job")
    if not R.check(len(merges) == 1, f"{where}: one Job"):
        return
    merge = merges[0]
    check_security(where, merge)
    check_shell_scripts(where, merge)
    mpod = pod_spec(merge)
    mcontainer = (mpod.get("containers") or [{}])[0]
    mscript = "\n".join((mcontainer.get("command") or []) + (mcontainer.get("args") or []))
    m = re.search(r"memaudit merge (\S+)", mscript)
    glob = m.group(1) if m else ""
    mmounts = {x["mountPath"]: x for x in mcontainer.get("volumeMounts") or []}
    mmount = mount_of(glob, mmounts)
    mclaim = ({v["name"]: v for v in mpod.get("volumes") or []}.get(mmount["name"])
              if mmount else {}) or {}
    example = report.replace("$JOB_COMPLETION_INDEX", "3") if report else ""
    R.check(glob and fnmatch.fnmatch(example, glob) and mmount
            and (mclaim.get("persistentVolumeClaim") or {}).get("claimName")
            == claim.get("claimName") and mmount["mountPath"] == mount["mountPath"],
            f"{where}: `memaudit merge {glob}` reads the shards' reports from the same claim",
            f"{glob} vs {report}")
    R.check(mcontainer.get("image") == cli.get("image"), f"{where}: the merge uses the CLI's "
            "image")
    R.check(label_selector_matches(policies[0]["spec"]["podSelector"] if policies else None,
                                   merge["spec"]["template"]["metadata"].get("labels", {})),
            f"{where}: the batch NetworkPolicy covers the merge pod too")


def check_shell_scripts(where, obj):
    """shellcheck on the `sh -c` scripts of a pod's containers."""
    shellcheck = shutil.which("shellcheck")
    for c in all_containers(obj):
        command = c.get("command") or []
        if command[:2] != ["/bin/sh", "-c"] or not c.get("args"):
            continue
        if not shellcheck:
            R.skip(f"{where}: shellcheck the script of container {c['name']}",
                   "shellcheck not installed")
            continue
        run = subprocess.run([shellcheck, "-s", "sh", "-"], input=c["args"][0],
                             capture_output=True, text=True)
        R.check(run.returncode == 0, f"{where}: shellcheck the script of container {c['name']}",
                run.stdout.strip().replace("\n", " | "))


_RENDER_CACHE = {}


def kustomize_cached(root, overlay):
    if overlay not in _RENDER_CACHE:
        _RENDER_CACHE[overlay] = kustomize(root / overlay)
    return _RENDER_CACHE[overlay]


VALIDATOR = "tests/deploy/validator"


def check_schemas(root, rendered):
    """Every rendered object and example against the Kubernetes OpenAPI
    schemas and the CRDs' (tests/deploy/validator: kubernetes-models), with
    unknown fields rejected; plus a broken copy that must be rejected."""
    validator = root / VALIDATOR
    node = shutil.which("node")
    if not R.check(node and (validator / "node_modules/kubernetes-models").is_dir(),
                   "schema validator installed (node, tests/deploy/validator/node_modules)",
                   "run scripts/setup.sh (npm ci in tests/deploy/validator)"):
        return
    entries = []
    for overlay, objects in rendered.items():
        entries += [{"where": f"{overlay}/", "object": o} for o in objects or []]
    for example in EXAMPLES:
        with open(root / example) as f:
            entries += [{"where": example, "object": d} for d in yaml.safe_load_all(f) if d]
    # The canary: a StatefulSet with a misspelt field and a bad quantity.
    canary = next((copy.deepcopy(e["object"]) for e in entries
                   if e["object"].get("kind") == "StatefulSet"), None)
    if canary:
        canary["spec"]["replicsa"] = 3
        canary["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = \
            "2 cores"
        entries.append({"where": "canary", "object": canary})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(entries, f)
        path = f.name
    try:
        run = subprocess.run([node, str(validator / "validate.mjs"), path],
                             capture_output=True, text=True)
    finally:
        os.unlink(path)
    try:
        results = json.loads(run.stdout)
    except ValueError:
        results = None
    if not R.check(run.returncode == 0 and isinstance(results, list)
                   and len(results) == len(entries),
                   "schema validator ran", (run.stderr or run.stdout).strip()[-2000:]):
        return
    for result in results:
        what = f"{result['where']} {result['kind']}/{result['name']}"
        if result["where"] == "canary":
            R.check(any("replicsa" in u for u in result["unknown"])
                    and any("cpu" in e for e in result["errors"]),
                    "schema validator rejects a misspelt field and a bad quantity (canary)",
                    f"{result}")
            continue
        if not R.check(result["schema"], f"schema: {what}: a schema exists for "
                       f"{result['apiVersion']} {result['kind']}"):
            continue
        R.check(not result["errors"] and not result["unknown"],
                f"schema: {what} ({result['schema']}, no unknown fields)",
                "; ".join(result["errors"] + result["unknown"]))


def check_docs(root, rendered):
    """The paths and object names the docs give in commands exist."""
    names = {(o.get("kind", "").lower(), o.get("metadata", {}).get("name"))
             for objects in rendered.values() for o in objects or []}
    for doc in ("docs/KUBERNETES.md", "deploy/README.md"):
        path = root / doc
        if not R.check(path.is_file(), f"{doc} exists"):
            continue
        text = path.read_text()
        dirs = set(re.findall(r"(?:apply|kustomize|delete)[^\n]*?-k\s+(deploy/[\w./-]*)", text))
        missing = sorted(d for d in dirs if not (root / d / "kustomization.yaml").is_file())
        R.check(dirs and not missing, f"{doc}: the {len(dirs)} `-k` directories are "
                "kustomizations", f"missing {missing}")
        files = set(re.findall(r"-f\s+(deploy/[\w./-]+)", text))
        missing = sorted(f for f in files if not (root / f).is_file())
        R.check(not missing, f"{doc}: the {len(files)} `-f` files exist", f"missing {missing}")
        refs = set(re.findall(r"\b(job|statefulset|pvc|hpa|svc|pod)/([a-z0-9-]+)", text))
        kinds = {"job": "job", "statefulset": "statefulset", "svc": "service",
                 "hpa": "horizontalpodautoscaler", "pvc": "persistentvolumeclaim", "pod": "pod"}
        examples = set()
        for example in EXAMPLES:
            with open(root / example) as f:
                examples |= {(d.get("kind", "").lower(), d["metadata"]["name"])
                             for d in yaml.safe_load_all(f) if d}
        unknown = sorted(f"{k}/{n}" for k, n in refs
                         if (kinds[k], n) not in names | examples
                         and not re.fullmatch(r"(state-)?memaudit-\d+", n))
        R.check(not unknown, f"{doc}: the {len(refs)} objects named in commands are rendered",
                f"unknown {unknown}")


def check_no_committed_secrets(root):
    found = []
    for path in sorted((root / "deploy").rglob("*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text) or \
                    re.search(r"sha256:[0-9a-fA-F]{64}\b", text):
                found.append(str(path.relative_to(root)))
    R.check(not found, "deploy/ holds no private key and no token hash", f"in {found}")


def check_monitoring(root, base_sts):
    rules_path = root / "deploy/monitoring/memaudit-rules.yaml"
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    groups = rules.get("groups") or []
    alerts = [r for g in groups for r in g.get("rules") or [] if "alert" in r]
    R.check(groups and alerts, "alert rules: groups with alerts")
    for rule in alerts:
        where = f"alert {rule['alert']}"
        R.check(rule.get("labels", {}).get("severity") in ("critical", "warning", "info"),
                f"{where}: severity label")
        R.check({"summary", "description"} <= set(rule.get("annotations") or {}),
                f"{where}: summary and description")
        check_promql(where, rule["expr"])
    wanted = {
        "server down": r"\bup\b",
        "error rate by code": r"by \([^)]*code[^)]*\).*memaudit_rpc_duration_seconds_count",
        "queue saturation": r"memaudit_jobs\{[^}]*queued",
        "model not ready": r"memaudit_model_ready",
        "slow spectra": r"memaudit_spectrum_duration_seconds_bucket",
    }
    for what, pattern in wanted.items():
        R.check(any(re.search(pattern, r["expr"], re.S) for r in alerts),
                f"alert rules cover {what}")
    if base_sts is not None:
        server = next(c for c in pod_spec(base_sts)["containers"] if c["name"] == "memaudit")
        queued = int(flag_map(server.get("args")).get("max_queued_jobs", "0"))
        rule = next((r for r in alerts if "memaudit_jobs" in r["expr"]
                     and "queued" in r["expr"]), None)
        threshold = math.ceil(0.75 * queued)
        R.check(rule and re.search(rf">=?\s*{threshold}\b", rule["expr"]),
                f"queue alert threshold is 75% of --max_queued_jobs={queued} ({threshold})",
                rule and rule["expr"])

    dashboard_path = root / "deploy/monitoring/memaudit-dashboard.json"
    try:
        with open(dashboard_path) as f:
            dash = json.load(f)
        R.check(True, "Grafana dashboard is valid JSON")
    except (OSError, json.JSONDecodeError) as e:
        R.check(False, "Grafana dashboard is valid JSON", repr(e))
        return
    R.check(dash.get("uid") and dash.get("title") and dash.get("panels"),
            "dashboard has uid, title and panels")
    panels = dash.get("panels") or []
    ids = [p.get("id") for p in panels]
    R.check(len(set(ids)) == len(ids) and all(ids), "dashboard panel ids are unique")
    exprs = []
    for panel in panels:
        targets = panel.get("targets") or []
        R.check(targets and panel.get("gridPos"), f"panel '{panel.get('title')}': targets, gridPos")
        for t in targets:
            exprs.append(t["expr"])
            check_promql(f"panel '{panel.get('title')}' {t.get('refId')}", t["expr"])
    for var in (dash.get("templating") or {}).get("list") or []:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.match(r"label_values\((.*),\s*([A-Za-z_]\w*)\)$", query or "")
        if var.get("type") == "query":
            if R.check(m, f"dashboard variable {var['name']}: label_values(metric, label)"):
                check_promql(f"dashboard variable {var['name']}", m.group(1))
                R.check(m.group(2) in ALLOWED_LABELS, f"dashboard variable {var['name']}: "
                        "bounded label")
    wanted = {
        "RPC latency p50 by method":
            r"histogram_quantile\(0\.5.*by \([^)]*method.*memaudit_rpc_duration_seconds_bucket",
        "RPC latency p99 by method":
            r"histogram_quantile\(0\.99.*by \([^)]*method.*memaudit_rpc_duration_seconds_bucket",
        "audits by verdict": r"by \(verdict\).*memaudit_audits_total",
        "jobs queued/running": r"by \(state\).*memaudit_jobs\b",
        "network evaluations rate": r"rate\(memaudit_network_evaluations_total",
    }
    for what, pattern in wanted.items():
        R.check(any(re.search(pattern, e) for e in exprs), f"dashboard shows {what}")


def dockerfile_instructions(path):
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            word, _, rest = current.partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def runtime_libraries(binary):
    """Debian packages owning the libraries a binary links directly (or None)."""
    try:
        dynamic = subprocess.run(["readelf", "-d", str(binary)], check=True,
                                 capture_output=True, text=True).stdout
        resolved = subprocess.run(["ldd", str(binary)], check=True,
                                  capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = {}
    for line in resolved.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            paths[m.group(1)] = m.group(2)
        elif m := re.match(r"\s*(/\S+) \(0x", line):
            # The dynamic loader, listed by path (a NEEDED entry of binaries
            # that call __tls_get_addr).
            paths[os.path.basename(m.group(1))] = m.group(1)
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic)
    candidates = {}
    for soname in needed:
        path = paths.get(soname)
        if path and path != "not":
            candidates[soname] = [path, os.path.realpath(path), re.sub(r"^/usr", "", path)]
    # One dpkg query for every candidate path: each `dpkg -S` reads the whole
    # package database (0.2 s), and a LibTorch binary needs dozens.
    owners = {}
    queried = sorted({c for cs in candidates.values() for c in cs})
    if queried:
        listing = subprocess.run(["dpkg", "-S", *queried], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            package, sep, owned = line.partition(": ")
            if sep and not package.startswith("diversion"):
                owners.setdefault(owned.strip(), package.split(":", 1)[0])
    packages, unowned = set(), []
    for soname in needed:
        owner = next((owners[c] for c in candidates.get(soname, []) if c in owners), None)
        if owner:
            packages.add(owner)
        else:
            unowned.append(soname)
    return packages, unowned


def check_dockerfile(root, base_sts):
    path = root / "Dockerfile"
    if not R.check(path.is_file(), "Dockerfile exists"):
        return
    instructions = dockerfile_instructions(path)
    text = path.read_text()
    stages = [rest for word, rest in instructions if word == "FROM"]
    R.check(len(stages) >= 2 and any(re.search(r"\bAS build\b", s, re.I) for s in stages[:-1]),
            "Dockerfile is multi-stage with a build stage", f"{stages}")
    args = dict(re.findall(r"^ARG (\w+)=?(.*)$", text, re.M))
    R.check("bookworm" in args.get("BUILD_IMAGE", "") and "bookworm" in
            args.get("RUNTIME_IMAGE", ""), "Dockerfile: Debian 12 (bookworm) bases by default")
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    R.check("LIBTORCH_VARIANT" in args and "debian:trixie" in text
            and 'MEMAUDIT_LIBTORCH="$libtorch" scripts/setup.sh' in runs and "contrib non-free" in runs,
            "Dockerfile: the CUDA variant builds on Debian 13 with contrib/non-free through "
            "MEMAUDIT_LIBTORCH=cuda scripts/setup.sh")
    R.check(not re.search(r"\bpip3?\b|\bcurl\b|\bwget\b", runs),
            "Dockerfile installs only Debian packages (no pip, curl or wget)")
    for script in ("scripts/setup.sh", "scripts/build.sh"):
        R.check(script in runs and os.access(root / script, os.X_OK),
                f"Dockerfile runs {script}, which exists and is executable")
    referenced = set(re.findall(r"\bscripts/[\w.-]+", text))
    missing = sorted(s for s in referenced if not (root / s).is_file())
    R.check(not missing, "every scripts/ file the Dockerfile names exists", f"missing {missing}")
    R.check("-DMEMAUDIT_BUILD_TESTS=OFF" in runs, "Dockerfile builds without tests")
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            missing = [s for s in sources if not (root / s).exists()]
            R.check(not missing, f"COPY {rest}: sources exist", f"missing {missing}")

    exposed = {int(p.split("/")[0]) for word, rest in instructions if word == "EXPOSE"
               for p in rest.split()}
    R.check(exposed == {GRPC_PORT, METRICS_PORT}, f"EXPOSE {sorted(exposed)} == "
            f"[{GRPC_PORT}, {METRICS_PORT}]")
    if base_sts is not None:
        server = next(c for c in pod_spec(base_sts)["containers"] if c["name"] == "memaudit")
        ports = {p["containerPort"] for p in server.get("ports") or []}
        R.check(exposed == ports, "EXPOSE matches the StatefulSet's container ports",
                f"{sorted(exposed)} vs {sorted(ports)}")

    final = []
    for word, rest in instructions:
        final = [] if word == "FROM" else final + [(word, rest)]
    users = [rest for word, rest in final if word == "USER"]
    R.check(users and users[-1].split(":")[0] not in ("0", "root"),
            "runtime stage runs as a non-root USER", f"{users}")
    R.check(users and re.fullmatch(r"\d+(:\d+)?", users[-1]),
            "runtime USER is numeric (runAsNonRoot can verify it)", f"{users}")
    if base_sts is not None:
        uid = (pod_spec(base_sts).get("securityContext") or {}).get("runAsUser")
        R.check(users and str(uid) == users[-1].split(":")[0],
                "StatefulSet runAsUser equals the image's USER", f"{uid} vs {users}")
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in final if word == "CMD"]
    try:
        entry_argv = json.loads(entry[-1])
        cmd_argv = json.loads(cmd[-1]) if cmd else []
        R.check(entry_argv[0].endswith("/memaudit-server"),
                "ENTRYPOINT is memaudit-server (exec form)", f"{entry_argv}")
        flags = flag_map(entry_argv[1:] + cmd_argv)
        R.check(flags.get("model_repository") == "/models"
                and port_of(flags.get("listen")) == GRPC_PORT
                and flags.get("listen", "").startswith("0.0.0.0:")
                and port_of(flags.get("metrics_listen")) == METRICS_PORT,
                "default flags: /models, 0.0.0.0:8500, metrics :9090", f"{flags}")
        R.check(set(flags) <= SERVER_FLAGS, "default flags are server flags", f"{flags}")
    except (IndexError, ValueError) as e:
        R.check(False, "ENTRYPOINT/CMD are JSON exec form", repr(e))

    # The binaries the Dockerfile copies are targets of the CMake build.
    for binary in re.findall(r"\bbuild/([\w/-]+)/([\w-]+)\b", runs):
        directory, name = binary
        cmake = root / directory / "CMakeLists.txt"
        if not R.check(cmake.is_file(), f"{directory}/CMakeLists.txt exists (builds {name})"):
            continue
        source = cmake.read_text()
        R.check(re.search(rf"add_executable\(\s*{re.escape(name)}\s", source)
                or re.search(rf"OUTPUT_NAME\s+\"?{re.escape(name)}\b", source),
                f"{directory}/CMakeLists.txt builds {name}")

    ignore = {line.strip().strip("/") for line in
              (root / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")} \
        if (root / ".dockerignore").is_file() else set()
    R.check({"build", "models", ".git"} <= ignore, ".dockerignore excludes build, models, .git",
            f"{sorted(ignore)}")
    needed = {"CMakeLists.txt", "cmake", "core", "proto", "server", "client", "tools", "scripts"}
    R.check(not needed & ignore, ".dockerignore keeps the sources the build needs",
            f"{sorted(needed & ignore)}")

    # Runtime packages: every package that owns a library the built binaries
    # link directly is installed by the runtime stage (or is in the base image).
    m = re.search(r'^ARG RUNTIME_PACKAGES="([^"]*)"', text, re.M)
    if not R.check(m, "Dockerfile lists RUNTIME_PACKAGES explicitly"):
        return
    runtime = set(m.group(1).split())
    in_base_image = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
    R.check("libopenblas0-openmp" in runtime, "runtime installs OpenBLAS for LibTorch")
    # The list names the packages of the image's Debian release; this host's
    # packages and binaries only say something about it on the same release.
    image_release = re.search(r"debian:(\w+)", args.get("RUNTIME_IMAGE", ""))
    host_release = None
    if Path("/etc/os-release").is_file():
        found = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), re.M)
        host_release = found.group(1) if found else None
    if image_release and host_release and image_release.group(1) != host_release:
        R.skip("RUNTIME_PACKAGES against this host's packages and binaries",
               f"the image is Debian {image_release.group(1)}, this host {host_release}")
        return
    if shutil.which("dpkg-query"):
        unknown = []
        for package in sorted(runtime):
            installed = subprocess.run(["dpkg-query", "-W", package], capture_output=True)
            if installed.returncode != 0 and subprocess.run(
                    ["apt-cache", "show", package], capture_output=True).returncode != 0:
                unknown.append(package)
        if unknown and not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
            R.skip("RUNTIME_PACKAGES are Debian packages", f"{unknown} not installed and no "
                   "apt lists here (apt-get update) to look them up")
        else:
            R.check(not unknown, "RUNTIME_PACKAGES are Debian packages (dpkg/apt-cache know "
                    "them)", f"unknown here: {unknown}")
    binaries = [root / "build" / d / n for d, n in re.findall(r"\bbuild/([\w/-]+)/([\w-]+)\b",
                                                               runs)]
    if not shutil.which("dpkg") or not shutil.which("readelf"):
        R.skip("runtime packages cover the binaries' libraries", "no dpkg/readelf")
        return
    for binary in binaries:
        rel = binary.relative_to(root)
        if not binary.is_file():
            R.skip(f"runtime packages cover {rel}", "not built")
            continue
        found = runtime_libraries(binary)
        if found is None:
            R.check(False, f"runtime packages cover {rel}", "readelf/ldd failed")
            continue
        packages, unowned = found
        R.check(packages <= runtime | in_base_image and not unowned,
                f"runtime packages cover {rel} ({', '.join(sorted(packages))})",
                f"missing {sorted(packages - runtime - in_base_image)}, "
                f"unresolved {unowned}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=Path(__file__).resolve().parents[2], type=Path)
    parser.add_argument("--kubectl", default=None, help="kubectl to cross-check rendering")
    parser.add_argument("--promtool", default=shutil.which("promtool"),
                        help="promtool, for prometheus-adapter's queries")
    options = parser.parse_args()
    root = options.root.resolve()

    load_server_facts(root)
    load_drain_facts(root)
    docs = check_yaml_files(root)
    check_kustomizations(root, docs)
    rendered = render(root, options.kubectl)
    base_sts = check_base(root, rendered[CPU]) if rendered.get(CPU) else None
    for overlay in ONLINE:
        if rendered.get(overlay):
            check_rendering(f"{overlay}/", rendered[overlay])
    # A rendering that failed, or a base that failed its checks, has a failed
    # check already: the overlay checks cannot run without them.
    if base_sts is not None and rendered.get(GPU):
        check_gpu(base_sts, rendered[GPU])
    if base_sts is not None and rendered.get(SECURE):
        check_secure(root, base_sts, rendered[SECURE])
    if base_sts is not None and rendered.get(AUTOSCALED):
        check_autoscaling(root, rendered[AUTOSCALED], base_sts, options.promtool)
    if rendered.get(BATCH):
        check_batch(root, rendered[BATCH], rendered.get(MERGE))
    check_schemas(root, rendered)
    check_docs(root, rendered)
    check_no_committed_secrets(root)
    check_monitoring(root, base_sts)
    check_dockerfile(root, base_sts)
    print(f"# python: {R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
