#!/usr/bin/python3
"""Prints the verdict zoo table from memaudit-zoo-eval's JSON lines.

  summarize.py RESULTS.jsonl [...]  [--markdown]

Per model, sampler and guidance: the sample count, how many are copies by the
nearest-neighbour ratio test (d1/d2 < 1/3) of an item the training data
repeats (ReferenceSet::Nearest takes the test on the images as a pipeline
saves them, clamped to the training data's value range: a guided sample
whose pixels overshoot [-1, 1] is compared as it would be shown), how many are "ambiguous" (d1/d2 < 1/3 to an item that appears once:
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


def is_copy(row):
    return row["truth_copy"]


def multiplicity(row):
    return row["multiplicity"]


def is_reproduction(row):
    """A non-copy whose nearest training item is one the data repeats: the
    ratio test's 1/3 rejects it, but it is closer to a memorized item than to
    anything else — typically a guided reproduction distorted by the
    overshoot. "Novel" samples are the rest of the non-copies."""
    return not row["truth_copy"] and row["multiplicity"] > 1


def span(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return f"{min(values):.2f}–{max(values):.2f}" if values else "-"


def rate(rows, verdict_key, truth):
    group = [r for r in rows if is_copy(r) == truth]
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
                    key = (row["model"], row["sampler"], row.get("guidance", 1.0))
                    models.setdefault(key, []).append(row)
    header = ["model", "sampler", "w", "t", "σ", "d", "n", "copies", "ambiguous",
              "TPR ref", "FPR ref", "TPR no-ref", "FPR no-ref", "partial(ref)",
              "copies ρ", "copies r/gap", "reproductions flagged", "novel flagged",
              "TPR old", "FPR old"]
    header += ["AUC " + k for k in STATISTICS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (name, sampler, guidance), all_rows in models.items():
        add_label_free(all_rows)
        ambiguous = [r for r in all_rows if is_copy(r) and multiplicity(r) == 1]
        rows = [r for r in all_rows if not (is_copy(r) and multiplicity(r) == 1)]
        copies = sum(is_copy(r) for r in rows)
        copy_rows = [r for r in rows if is_copy(r)]
        rho = span([value(r, "noise_radius") for r in copy_rows])
        radius_gap = span([value(r, "radius") / r["gap"] for r in copy_rows])
        tpr_r, _ = rate(rows, "verdict_reference", True)
        fpr_r, _ = rate(rows, "verdict_reference", False)
        tpr_n, _ = rate(rows, "verdict_no_reference", True)
        fpr_n, _ = rate(rows, "verdict_no_reference", False)
        partial = sum(r["verdict_reference"] == "PARTIAL" for r in rows)
        near = [r for r in rows if is_reproduction(r)]
        far = [r for r in rows if not is_copy(r) and not is_reproduction(r)]
        near_flagged = sum(r["verdict_reference"] == "MEMORIZED" for r in near)
        far_flagged = sum(r["verdict_reference"] == "MEMORIZED" for r in far)
        tpr_o, _ = rate(rows, "old", True)
        fpr_o, _ = rate(rows, "old", False)
        cells = [name, sampler, f"{guidance:g}", str(rows[0]["t"]), f"{rows[0]['sigma']:.3f}",
                 str(rows[0]["dimension"]), str(len(rows)), str(copies),
                 str(len(ambiguous)),
                 fmt(tpr_r), fmt(fpr_r), fmt(tpr_n), fmt(fpr_n), str(partial), rho, radius_gap,
                 f"{near_flagged}/{len(near)}", f"{far_flagged}/{len(far)}",
                 fmt(tpr_o), fmt(fpr_o)]
        for stat, score in STATISTICS.items():
            scored = [(score(r), is_copy(r)) for r in rows]
            if any(s is None for s, _ in scored):
                cells.append("-")
                continue
            cells.append(fmt(auc([s for s, c in scored if c], [s for s, c in scored if not c])))
        print("| " + " | ".join(cells) + " |")
    condition_table(models)


def condition_table(models):
    """Per condition (class or prompt): MEMORIZED when at least half its
    samples are (the service's default condition rule), PARTIAL when any is
    flagged. Its truth: "copying" when at least half its samples copy;
    otherwise "reproducing" when at least half are copies or reproductions
    (nearest to a repeated item: a memorized item regenerated, distorted
    past the ratio test); otherwise "novel"."""
    print()
    print("| model | sampler | w | conditions | copying | copying MEMORIZED | copying PARTIAL "
          "| reproducing | reproducing MEMORIZED | novel | novel MEMORIZED | novel PARTIAL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, sampler, guidance), rows in models.items():
        groups = OrderedDict()
        for r in rows:
            groups.setdefault(r["condition"], []).append(r)
        cells = {k: 0 for k in ("c", "cm", "cp", "r", "rm", "rp", "n", "nm", "np")}
        for members in groups.values():
            copies = sum(is_copy(r) for r in members)
            repeated = copies + sum(is_reproduction(r) for r in members)
            kind = ("c" if 2 * copies >= len(members)
                    else "r" if 2 * repeated >= len(members) else "n")
            memorized = sum(r["verdict_reference"] == "MEMORIZED" for r in members)
            partial = sum(r["verdict_reference"] == "PARTIAL" for r in members)
            verdict = "m" if 2 * memorized >= len(members) else "p" if memorized + partial else ""
            cells[kind] += 1
            if verdict:
                cells[kind + verdict] += 1
        print(f"| {name} | {sampler} | {guidance:g} | {len(groups)} | {cells['c']} | "
              f"{cells['cm']} | {cells['cp']} | {cells['r']} | {cells['rm']} | {cells['n']} | "
              f"{cells['nm']} | {cells['np']} |")


if __name__ == "__main__":
    main()
