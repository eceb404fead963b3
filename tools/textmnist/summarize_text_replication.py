#!/usr/bin/python3
"""Summarizes scripts/text_replication.sh's reports as markdown tables.

    /usr/bin/python3 tools/textmnist/summarize_text_replication.py \\
        --audit out/textmnist/audit.json \\
        --prompts checkpoints/textmnist/prompts/eval.jsonl \\
        --early-dir out/textmnist --calibration out/textmnist/calibrate_n1_k1.json

Prints:

1. per prompt: its label in eval.jsonl, the truth measured on its own
   generations (how many are copies: nearest training image with d1/d2 <
   1/3) and the audit's verdict with its per-sample counts;
2. confusion tables of the prompt verdicts against the label and against
   the measured truth (a prompt "copies" when at least half of its
   generations are copies);
3. the paper-shaped table of the first-step metrics (Wen ‖ε̂_c − ε̂_∅‖,
   Jeon ‖H^Δ s^Δ‖): AUC / TPR at 1% FPR for n generations and K steps, from
   early_k{K}.jsonl (`memaudit early --count 4` per prompt; n = 1 is the
   first generation, n = 4 the mean), cross-checked against `memaudit
   calibrate`'s own AUC for n = 1, K = 1.

Reads `memaudit audit --json` and `memaudit calibrate --json` output
(client/report_format.cc); a sample's truth is its "copy" field, or
nearest_ratio / nearest.ratio < 1/3.
"""
import argparse
import json
import os

VERDICTS = ["MEMORIZED", "PARTIAL", "NOT_MEMORIZED"]
METRICS = [("wen_noise_difference", "Wen ‖ε̂_c − ε̂_∅‖"), ("jeon_sharpness", "Jeon ‖H^Δ s^Δ‖")]
SETTINGS = [(1, 1), (1, 10), (4, 1), (4, 10)]


def is_copy(sample):
    if "copy" in sample:
        return bool(sample["copy"])
    if "nearest_ratio" in sample:
        return sample["nearest_ratio"] < 1 / 3
    nearest = sample.get("nearest")
    if isinstance(nearest, dict) and "ratio" in nearest:
        return nearest["ratio"] < 1 / 3
    return None


def condition_keys(condition):
    """The names a report condition may carry: its JSONL id and its prompt."""
    keys = []
    inner = condition.get("condition") or {}
    for field in ("name", "prompt"):
        for source in (inner, condition):
            if isinstance(source.get(field), str):
                keys.append(source[field])
    if isinstance(condition.get("label"), str):
        keys.append(condition["label"])
    return keys


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def audit_section(audit, entries):
    by_key = {}
    for entry in entries:
        by_key[entry["id"]] = entry
        by_key.setdefault(entry["prompt"], entry)
    rows, matched = [], []
    for condition in audit["conditions"]:
        entry = next((by_key[k] for k in condition_keys(condition) if k in by_key), None)
        if entry is None:
            continue
        samples = condition.get("samples", [])
        flags = [is_copy(s) for s in samples]
        copies = sum(1 for f in flags if f)
        known = sum(1 for f in flags if f is not None)
        copies_truth = known > 0 and 2 * copies >= known
        matched.append((entry, condition["verdict"], copies_truth))
        rows.append([entry["id"], "memorized" if entry["memorized"] else "not memorized",
                     f"{copies}/{known}", condition["verdict"],
                     f"{condition.get('memorized', 0)} / {condition.get('partial', 0)} / "
                     f"{condition.get('not_memorized', 0)}", entry["prompt"]])
    missing = [e["id"] for e in entries if e["id"] not in {m[0]["id"] for m in matched}]
    out = [f"## Audit: model {audit.get('model', '?')}, verdict {audit.get('verdict', '?')}, "
           f"{audit.get('total_samples', '?')} samples, "
           f"{audit.get('timing', {}).get('total_seconds', 0):.0f} s", ""]
    out.append(table(["id", "label", "copies", "verdict", "samples M / P / N", "prompt"], rows))
    if missing:
        out += ["", f"Not in the report: {', '.join(missing)}"]

    def confusion(title, truth_of, truth_names):
        header = [title] + VERDICTS
        body = []
        for name, value in truth_names:
            chosen = [m for m in matched if truth_of(m) == value]
            body.append([f"{name} ({len(chosen)})"] +
                        [sum(1 for m in chosen if m[1] == v) for v in VERDICTS])
        return table(header, body)

    out += ["", "Prompt verdicts against the label:", ""]
    out.append(confusion("label", lambda m: m[0]["memorized"],
                         [("memorized", True), ("not memorized", False)]))
    out += ["", "Prompt verdicts against the truth (at least half of the generations copy):", ""]
    out.append(confusion("truth", lambda m: m[2], [("copies", True), ("does not copy", False)]))
    copies_mem = [m for m in matched if m[0]["memorized"]]
    copies_not = [m for m in matched if not m[0]["memorized"]]
    out += ["", f"Labels against truth: {sum(m[2] for m in copies_mem)}/{len(copies_mem)} "
                f"memorized prompts copy; {sum(m[2] for m in copies_not)}/{len(copies_not)} "
                f"not-memorized prompts copy."]
    return "\n".join(out)


def auc_and_tpr(positives, negatives):
    """ROC AUC (ties count half) and the TPR at FPR <= 1%: the highest TPR of
    a cut flagging scores at or above it, as memaudit calibrate rules."""
    pairs = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in positives for q in negatives)
    auc = pairs / (len(positives) * len(negatives))
    best = 0.0
    for cut in sorted(set(positives + negatives)):
        fpr = sum(q >= cut for q in negatives) / len(negatives)
        if fpr <= 0.01:
            best = max(best, sum(p >= cut for p in positives) / len(positives))
    return auc, best


def early_section(directory, entries, calibration):
    """The paper-shaped table from early_k{K}.jsonl (memaudit early per
    prompt, 4 generations): n = 1 is the first generation, n = 4 the mean."""
    label = {str(e["id"]): e["memorized"] for e in entries}
    cells = {}
    for k in (1, 10):
        path = os.path.join(directory, f"early_k{k}.jsonl")
        if not os.path.exists(path):
            continue
        records = [json.loads(line) for line in open(path) if line.strip()]
        for name, _ in METRICS:
            for n in (1, 4):
                scores = {True: [], False: []}
                for record in records:
                    values = record["early"][name]["values"][:n]
                    scores[label[str(record["id"])]].append(sum(values) / len(values))
                cells[(name, n, k)] = auc_and_tpr(scores[True], scores[False])
    header = ["metric"] + [f"n = {n}, K = {k}" for n, k in SETTINGS]
    rows = []
    for name, title in METRICS:
        row = [title]
        for n, k in SETTINGS:
            cell = cells.get((name, n, k))
            row.append("–" if cell is None else f"{cell[0]:.3f} / {cell[1]:.2f}")
        rows.append(row)
    positives = sum(1 for v in label.values() if v)
    out = [f"## First-step metrics: AUC / TPR at 1% FPR ({positives} memorized against "
           f"{len(label) - positives} not-memorized prompts)", "", table(header, rows)]
    if calibration:
        report = json.load(open(calibration))
        found = {m["name"]: m for m in report.get("metrics", [])}
        checks = []
        for name, title in METRICS:
            if name in found and (name, 1, 1) in cells:
                checks.append(f"{title}: calibrate {found[name]['auc']:.3f} / "
                              f"{found[name]['tpr_at_1pct_fpr']:.2f}, table "
                              f"{cells[(name, 1, 1)][0]:.3f} / {cells[(name, 1, 1)][1]:.2f}")
        out += ["", "Cross-check, n = 1, K = 1 from `memaudit calibrate` (same seeds): " +
                "; ".join(checks) + "."]
        curvature = [m for m in report.get("metrics", []) if m["name"] not in dict(METRICS)]
        if curvature:
            out += ["", "The calibration's curvature metrics at the default step (n = 1): " +
                    "; ".join(f"{m['name']} {m['auc']:.3f} / {m['tpr_at_1pct_fpr']:.2f}"
                              for m in curvature) + "."]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audit", help="memaudit audit --json output")
    parser.add_argument("--prompts", required=True, help="eval.jsonl (id, prompt, memorized)")
    parser.add_argument("--early-dir", help="directory of early_k{K}.jsonl (K = 1, 10)")
    parser.add_argument("--calibration", help="calibrate --json output for n = 1, K = 1")
    args = parser.parse_args()
    entries = [json.loads(line) for line in open(args.prompts) if line.strip()]
    sections = []
    if args.audit:
        sections.append(audit_section(json.load(open(args.audit)), entries))
    if args.early_dir:
        sections.append(early_section(args.early_dir, entries, args.calibration))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
