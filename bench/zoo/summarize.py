#!/usr/bin/python3
"""Prints the verdict zoo table from memaudit-zoo-eval's JSON lines.

  summarize.py RESULTS.jsonl [...]  [--markdown]

Per model (and sampler): the sample count, how many are copies by the
nearest-neighbour ratio test (d1/d2 < 1/3) of an item the training data
repeats, how many are "ambiguous" (d1/d2 < 1/3 to an item that appears once:
in low dimension the ratio test fires by chance, with probability about
(1/3)^d for a sample among dense data, 11% in 2-D; they count as neither
class), the default verdict's TPR and
FPR against that truth with the model's reference set and without it
(MEMORIZED counts as positive; PARTIAL is reported apart), the same for the
former default (n+ = 0 and width < 0.1 x the per-element spread of the
reference set, "old"), and the ROC AUC
of each statistic for separating copies from the rest (0.5 = chance;
statistics oriented so that larger AUC is better; '-' where one class is
empty or the statistic is absent).
"""
import json
import math
import sys
from collections import OrderedDict

INF = float("inf")


def auc(pos, neg):
    """Mann-Whitney AUC that a positive scores above a negative (ties 1/2)."""
    if not pos or not neg:
        return None
    wins = 0.0
    for p in pos:
        for n in neg:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


def value(row, key):
    v = row.get(key)
    return INF if v is None else v


def median(values):
    s = sorted(values)
    n = len(s)
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


def robust_z(values):
    m = median(values)
    mad = median([abs(v - m) for v in values]) * 1.4826
    return [(v - m) / mad if mad > 0 else 0.0 for v in values]


# statistic -> (score function: larger means "memorized")
STATISTICS = OrderedDict([
    ("n+", lambda r: -r["positive"]),
    ("kappa_max", lambda r: -r["max_kappa"]),
    ("width", lambda r: -value(r, "width")),
    ("radius/gap", lambda r: -value(r, "radius") / r["gap"]),
    ("noise radius", lambda r: -value(r, "noise_radius")),
    ("flat", lambda r: -r["flat"]),
    ("wen", lambda r: r.get("wen")),
    ("jeon", lambda r: r.get("jeon")),
    ("‖Hs‖²", lambda r: r.get("hessian_score_squared")),
    ("label-free z", lambda r: r.get("early_z")),
])


def add_label_free(rows):
    """Robust z of each sample's early metric against its model's samples."""
    key = "jeon" if "jeon" in rows[0] else "hessian_score_squared"
    zs = robust_z([math.log(r[key]) for r in rows])
    for r, z in zip(rows, zs):
        r["early_z"] = z


def old_default(row):
    """The former default rule: n+ = 0 and width < 0.1 x per-element spread."""
    width = value(row, "width")
    return "MEMORIZED" if row["positive"] == 0 and width < 0.1 * row["data_scale"] else "-"


def rate(rows, verdict_key, truth):
    group = [r for r in rows if r["truth_copy"] == truth]
    if not group:
        return None, 0
    judge = old_default if verdict_key == "old" else (lambda r: r[verdict_key])
    flagged = sum(judge(r) == "MEMORIZED" for r in group)
    partial = sum(judge(r) == "PARTIAL" for r in group)
    return flagged / len(group), partial


def fmt(x):
    return "-" if x is None else f"{x:.2f}"


def main():
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    models = OrderedDict()
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    models.setdefault((row["model"], row["sampler"]), []).append(row)
    header = ["model", "sampler", "d", "n", "copies", "ambiguous",
              "TPR ref", "FPR ref", "TPR no-ref", "FPR no-ref", "partial(ref)",
              "TPR old", "FPR old"]
    header += ["AUC " + k for k in STATISTICS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (name, sampler), all_rows in models.items():
        add_label_free(all_rows)
        ambiguous = [r for r in all_rows if r["truth_copy"] and r["multiplicity"] == 1]
        rows = [r for r in all_rows if not (r["truth_copy"] and r["multiplicity"] == 1)]
        copies = sum(r["truth_copy"] for r in rows)
        tpr_r, _ = rate(rows, "verdict_reference", True)
        fpr_r, _ = rate(rows, "verdict_reference", False)
        tpr_n, _ = rate(rows, "verdict_no_reference", True)
        fpr_n, _ = rate(rows, "verdict_no_reference", False)
        partial = sum(r["verdict_reference"] == "PARTIAL" for r in rows)
        tpr_o, _ = rate(rows, "old", True)
        fpr_o, _ = rate(rows, "old", False)
        cells = [name, sampler, str(rows[0]["dimension"]), str(len(rows)), str(copies),
                 str(len(ambiguous)),
                 fmt(tpr_r), fmt(fpr_r), fmt(tpr_n), fmt(fpr_n), str(partial),
                 fmt(tpr_o), fmt(fpr_o)]
        for stat, score in STATISTICS.items():
            scored = [(score(r), r["truth_copy"]) for r in rows]
            if any(s is None for s, _ in scored):
                cells.append("-")
                continue
            cells.append(fmt(auc([s for s, c in scored if c], [s for s, c in scored if not c])))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
