#!/usr/bin/python3
"""Summarizes scripts/text_replication.sh's reports as markdown tables.

    /usr/bin/python3 tools/textmnist/summarize_text_replication.py \\
        --audit out/textmnist/audit.json \\
        --prompts checkpoints/textmnist/prompts/eval.jsonl \\
        --calibration-dir out/textmnist

Prints:

1. per prompt: its label in eval.jsonl, the truth measured on its own
   generations (how many are copies: nearest training image with d1/d2 <
   1/3) and the audit's verdict with its per-sample counts;
2. confusion tables of the prompt verdicts against the label and against
   the measured truth (a prompt "copies" when at least half of its
   generations are copies);
3. the paper-shaped table of the first-step metrics (Wen ‖ε̂_c − ε̂_∅‖,
   Jeon ‖H^Δ s^Δ‖): AUC / TPR at 1% FPR for n generations and K steps, from
   calibrate_n{n}_k{K}.json (n ∈ {1, 4}, K ∈ {1, 10}).

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


def calibration_section(directory):
    cells = {}
    for n, k in SETTINGS:
        path = os.path.join(directory, f"calibrate_n{n}_k{k}.json")
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        for metric in report.get("metrics", []):
            cells[(metric["name"], n, k)] = metric
    header = ["metric"] + [f"n = {n}, K = {k}" for n, k in SETTINGS]
    rows = []
    for name, title in METRICS:
        row = [title]
        for n, k in SETTINGS:
            metric = cells.get((name, n, k))
            row.append("–" if metric is None else
                       f"{metric['auc']:.3f} / {metric['tpr_at_1pct_fpr']:.3f}")
        rows.append(row)
    return ("## First-step metrics: AUC / TPR at 1% FPR (memorized against not-memorized "
            "prompts)\n\n" + table(header, rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audit", help="memaudit audit --json output")
    parser.add_argument("--prompts", required=True, help="eval.jsonl (id, prompt, memorized)")
    parser.add_argument("--calibration-dir", help="directory of calibrate_n{n}_k{K}.json")
    args = parser.parse_args()
    entries = [json.loads(line) for line in open(args.prompts) if line.strip()]
    sections = []
    if args.audit:
        sections.append(audit_section(json.load(open(args.audit)), entries))
    if args.calibration_dir:
        sections.append(calibration_section(args.calibration_dir))
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
