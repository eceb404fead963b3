#!/usr/bin/python3
"""Offline structural checks of the container and cluster files.

Run by tests/deploy/check_manifests.sh (which also runs yamllint, promtool and,
when present, kubectl); usable alone:

    /usr/bin/python3 tests/deploy/check_manifests.py [--root DIR] [--kubectl PATH]

Prints one line per check: "ok - ...", "not ok - ...: why", or "skip - ...: why"
(skips are not counted). Exits 1 if any check failed. Needs only the Python
standard library and PyYAML (Debian: python3-yaml).

What it checks:
  * every YAML file under deploy/ parses; every file a kustomization names exists;
  * deploy/, deploy/gpu/ and deploy/secure/ render (kubectl kustomize when
    --kubectl is given, and always with a small built-in kustomize: resources,
    strategic-merge and JSON 6902 patches, images, labels), and the two
    renderings agree;
  * the Deployment: gRPC probes on 8500, ports 8500/9090, CPU/memory requests and
    limits, non-root, read-only root filesystem with an emptyDir /tmp, the model
    repository mounted where --model_repository points, flags the server knows;
  * the Services select the Deployment's pods and reach ports 8500 (gRPC) and
    9090 (metrics, with prometheus.io annotations);
  * in every rendering: terminationGracePeriodSeconds exceeds
    --shutdown_grace_seconds + --shutdown_watchdog_seconds (the server's
    defaults when absent); probes are gRPC on 8500, or httpGet on 9090
    (/readyz, /healthz; HTTPS with --metrics_tls), and must be httpGet when
    the gRPC port speaks TLS; one NetworkPolicy selects the pods and allows
    ingress to 8500 from memaudit.io/client pods and to 9090 from the
    monitoring namespace only (egress, if restricted, DNS only); no Secret
    objects and no private keys or token hashes are committed;
  * the GPU overlay: nvidia.com/gpu, --device=cuda:0, node selection, CUDA image;
  * the secure overlay: args are the base's plus exactly the security flags;
    every flag naming a file points into a read-only Secret volume mount whose
    items provide it (memaudit-tls: tls.crt, tls.key, ca.crt; memaudit-tokens:
    tokens), mode 0440 with the pod's fsGroup; HTTPS metrics Service; the
    README's commands create those Secrets with those keys;
  * alert rules and the Grafana dashboard: metric names (memaudit_*, process_*,
    up) and bounded aggregation labels;
  * the Dockerfile: the scripts it runs exist, EXPOSE matches the ports, the
    runtime stage runs as non-root, and (when the binaries are built) its
    runtime packages cover the libraries they link.
"""

import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

GRPC_PORT = 8500
METRICS_PORT = 9090
# The kustomizations that are applied (deploy/base/ is only their base).
RENDERINGS = ("deploy", "deploy/gpu", "deploy/secure")

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


def kustomize(directory):
    """Renders a kustomization directory into a list of objects."""
    directory = Path(directory)
    with open(directory / "kustomization.yaml") as f:
        k = yaml.safe_load(f)
    objects = []
    for resource in k.get("resources") or []:
        path = directory / resource
        if path.is_dir():
            objects.extend(kustomize(path))
        else:
            with open(path) as f:
                objects.extend(d for d in yaml.safe_load_all(f) if d)
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
        R.check(k.get("kind") == "Kustomization"
                and k.get("apiVersion", "").startswith("kustomize.config.k8s.io/"),
                f"{rel}: is a Kustomization")
        R.check("namespace" not in k, f"{rel}: namespace-agnostic (no namespace:)")
        directory = root / rel.parent
        names = list(k.get("resources") or []) + list(k.get("patchesStrategicMerge") or [])
        names += [p["path"] for p in k.get("patches") or [] if "path" in p]
        for generator in k.get("configMapGenerator") or []:
            names += [f.split("=", 1)[-1] for f in generator.get("files") or []]
        missing = [n for n in names if not (directory / n).exists()]
        R.check(not missing, f"{rel}: the {len(names)} files it names exist", f"missing {missing}")
    for rel, content in docs.items():
        if rel.name == "kustomization.yaml" or rel.parts[1] == "monitoring":
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


def check_base(root, objects):
    for obj in objects:
        meta = obj.get("metadata", {})
        R.check("namespace" not in meta, f"{obj['kind']}/{meta.get('name')}: no namespace")
    deployments = find(objects, "Deployment")
    if not R.check(len(deployments) == 1 and deployments[0].get("apiVersion") == "apps/v1",
                   "deploy/: exactly one apps/v1 Deployment"):
        return None
    dep = deployments[0]
    spec = dep["spec"]
    template_labels = spec["template"]["metadata"].get("labels", {})
    match_labels = spec.get("selector", {}).get("matchLabels", {})
    R.check(match_labels and all(template_labels.get(k) == v for k, v in match_labels.items()),
            "Deployment selector matches its pod template labels")
    pod = spec["template"]["spec"]
    containers = pod.get("containers") or []
    server = next((c for c in containers if "--listen" in " ".join(c.get("args") or [])
                   or c.get("name") == "memaudit"), None)
    if not R.check(server is not None, "Deployment has the memaudit-server container"):
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
        service = grpc.get("service", "")
        R.check(service in ("", "memaudit.v1.ModelService", "memaudit.v1.AuditService"),
                f"{name}: {probe} asks a health service the server registers", repr(service))

    resources = server.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    R.check({"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests),
            f"{name}: cpu and memory requests and limits set", f"{resources}")
    try:
        R.check(all(parse_quantity(requests[r]) <= parse_quantity(limits[r])
                    for r in ("cpu", "memory")), f"{name}: requests <= limits")
    except (KeyError, ValueError) as e:
        R.check(False, f"{name}: requests <= limits", repr(e))

    pod_sc = pod.get("securityContext") or {}
    R.check(pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0,
            "pod securityContext: runAsNonRoot with a non-zero runAsUser", f"{pod_sc}")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in all_containers(dep):
        sc = c.get("securityContext") or {}
        R.check(sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and "ALL" in ((sc.get("capabilities") or {}).get("drop") or []),
                f"container {c['name']}: read-only root fs, no privilege escalation, "
                "capabilities dropped", f"{sc}")
        unknown = [m["name"] for m in c.get("volumeMounts") or [] if m["name"] not in volumes]
        R.check(not unknown, f"container {c['name']}: mounts only declared volumes", f"{unknown}")
        R.check((c.get("resources") or {}).get("limits"), f"container {c['name']}: has limits")
    mounts = {m["mountPath"]: m for m in server.get("volumeMounts") or []}
    tmp = mounts.get("/tmp")
    R.check(tmp and "emptyDir" in volumes.get(tmp["name"], {}),
            f"{name}: /tmp is an emptyDir (root fs is read-only)")

    flags = flag_map(server.get("args"))
    check_flags_known(name, flags)
    R.check(port_of(flags.get("listen")) == GRPC_PORT,
            f"{name}: --listen is on port {GRPC_PORT}", flags.get("listen"))
    R.check(port_of(flags.get("metrics_listen")) == METRICS_PORT,
            f"{name}: --metrics_listen is on port {METRICS_PORT}", flags.get("metrics_listen"))
    repository = flags.get("model_repository")
    R.check(repository in mounts and mounts[repository]["name"] in volumes,
            f"{name}: --model_repository={repository} is a mounted volume")
    R.check(flags.get("device", "cpu") == "cpu", f"{name}: CPU deployment uses --device=cpu")
    try:
        threads = int(flags.get("threads", "0"))
        R.check(threads <= parse_quantity(limits.get("cpu", 0)),
                f"{name}: --threads={threads} within the CPU limit")
    except ValueError as e:
        R.check(False, "numeric flags parse", repr(e))


    # Services
    port_names = {p.get("name"): p.get("containerPort") for p in server.get("ports") or []}

    def target(port):
        t = port.get("targetPort", port.get("port"))
        return port_names.get(t) if isinstance(t, str) else t

    services = find(objects, "Service")
    R.check(len(services) >= 2, "deploy/: a gRPC Service and a metrics Service")
    for svc in services:
        sname = f"Service {svc['metadata']['name']}"
        selector = svc["spec"].get("selector") or {}
        R.check(selector and all(template_labels.get(k) == v for k, v in selector.items()),
                f"{sname} selects the Deployment's pods", f"selector {selector}")
    grpc_svc = [s for s in services if any(target(p) == GRPC_PORT for p in s["spec"]["ports"])]
    metrics_svc = [s for s in services
                   if any(target(p) == METRICS_PORT for p in s["spec"]["ports"])]
    if R.check(len(grpc_svc) == 1, f"one Service reaches container port {GRPC_PORT}"):
        p = next(p for p in grpc_svc[0]["spec"]["ports"] if target(p) == GRPC_PORT)
        R.check(p.get("port") == GRPC_PORT and p.get("appProtocol") == "grpc",
                f"gRPC Service: port {GRPC_PORT}, appProtocol grpc", f"{p}")
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
    return dep


def check_gpu(base_dep, objects):
    deployments = find(objects, "Deployment")
    if not R.check(len(deployments) == 1, "deploy/gpu/: one Deployment"):
        return
    dep = deployments[0]
    pod = pod_spec(dep)
    server = next(c for c in pod["containers"] if c["name"] == "memaudit")
    base_server = next(c for c in pod_spec(base_dep)["containers"] if c["name"] == "memaudit")
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


def server_container(dep):
    return next((c for c in (pod_spec(dep) or {}).get("containers") or []
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


def check_termination(where, dep):
    """The kubelet's SIGKILL comes after the server's own latest exit."""
    server = server_container(dep)
    flags = flag_map(server.get("args"))
    pod = pod_spec(dep)
    period = pod.get("terminationGracePeriodSeconds", 30)
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


def check_network_policy(where, objects, dep):
    """One NetworkPolicy selects the server's pods: ingress to 8500 from
    memaudit.io/client pods (any namespace), to 9090 from the monitoring
    namespace, nothing else; egress, when restricted, DNS only."""
    server = server_container(dep)
    labels = pod_spec(dep) and dep["spec"]["template"]["metadata"].get("labels", {})
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
    """Checks that hold for every rendering that is applied."""
    R.check(not find(objects, "Secret"), f"{where}: renders no Secret (none committed)")
    deployments = find(objects, "Deployment")
    dep = deployments[0] if len(deployments) == 1 else None
    if not R.check(dep is not None and server_container(dep) is not None,
                   f"{where}: one Deployment with the memaudit container"):
        return
    check_termination(where, dep)
    check_probes(where, server_container(dep))
    check_network_policy(where, objects, dep)


def check_secure(root, base_dep, objects):
    deployments = find(objects, "Deployment")
    if not R.check(len(deployments) == 1, "deploy/secure/: one Deployment"):
        return
    dep = deployments[0]
    pod = pod_spec(dep)
    server, base_server = server_container(dep), server_container(base_dep)
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


def check_no_committed_secrets(root):
    found = []
    for path in sorted((root / "deploy").rglob("*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text) or \
                    re.search(r"sha256:[0-9a-fA-F]{64}\b", text):
                found.append(str(path.relative_to(root)))
    R.check(not found, "deploy/ holds no private key and no token hash", f"in {found}")


def check_monitoring(root, base_dep):
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
    if base_dep is not None:
        server = next(c for c in pod_spec(base_dep)["containers"] if c["name"] == "memaudit")
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
    packages, unowned = set(), []
    for soname in re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic):
        path = paths.get(soname)
        if not path or path == "not":
            unowned.append(soname)
            continue
        for candidate in (path, os.path.realpath(path), re.sub(r"^/usr", "", path)):
            owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if owner.returncode == 0:
                packages.add(owner.stdout.split(":", 1)[0])
                break
        else:
            unowned.append(soname)
    return packages, unowned


def check_dockerfile(root, base_dep):
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
    R.check("LIBTORCH_VARIANT" in args and "cmake_prefix_path" in text,
            "Dockerfile: documents the CUDA LibTorch variant (LIBTORCH_VARIANT, "
            "torch.utils.cmake_prefix_path)")
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
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
    if base_dep is not None:
        server = next(c for c in pod_spec(base_dep)["containers"] if c["name"] == "memaudit")
        ports = {p["containerPort"] for p in server.get("ports") or []}
        R.check(exposed == ports, "EXPOSE matches the Deployment's container ports",
                f"{sorted(exposed)} vs {sorted(ports)}")

    final = []
    for word, rest in instructions:
        final = [] if word == "FROM" else final + [(word, rest)]
    users = [rest for word, rest in final if word == "USER"]
    R.check(users and users[-1].split(":")[0] not in ("0", "root"),
            "runtime stage runs as a non-root USER", f"{users}")
    R.check(users and re.fullmatch(r"\d+(:\d+)?", users[-1]),
            "runtime USER is numeric (runAsNonRoot can verify it)", f"{users}")
    if base_dep is not None:
        uid = (pod_spec(base_dep).get("securityContext") or {}).get("runAsUser")
        R.check(users and str(uid) == users[-1].split(":")[0],
                "Deployment runAsUser equals the image's USER", f"{uid} vs {users}")
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
    options = parser.parse_args()
    root = options.root.resolve()

    load_server_facts(root)
    docs = check_yaml_files(root)
    check_kustomizations(root, docs)
    rendered = render(root, options.kubectl)
    base_dep = check_base(root, rendered["deploy"]) if rendered.get("deploy") else None
    for overlay in RENDERINGS:
        if rendered.get(overlay):
            check_rendering(f"{overlay}/", rendered[overlay])
    # A rendering that failed, or a base that failed its checks, has a failed
    # check already: the overlay checks cannot run without them.
    if base_dep is not None and rendered.get("deploy/gpu"):
        check_gpu(base_dep, rendered["deploy/gpu"])
    if base_dep is not None and rendered.get("deploy/secure"):
        check_secure(root, base_dep, rendered["deploy/secure"])
    check_no_committed_secrets(root)
    check_monitoring(root, base_dep)
    check_dockerfile(root, base_dep)
    print(f"# python: {R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
