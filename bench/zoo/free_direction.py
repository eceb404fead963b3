#!/usr/bin/python3
"""Recomputes the default verdict from memaudit-zoo-eval --kappas lines with
the FREE flattest directions of each spectrum left out (docs/VERDICTS.md,
the textmnist reading: a measured candidate for copies whose peak leaves one
direction flat). FREE = 0 is the default rule itself; on the 1,120 samples
it was measured on it reproduces the engine's verdict for every sample.

  free_direction.py RUN.jsonl [...]    # prints FREE = 0, 1, 2 per file

Per file and FREE: copies MEMORIZED, reproductions (non-copies nearest a
repeated item) MEMORIZED, novel samples MEMORIZED, and copying conditions
MEMORIZED by the service's condition rule (at least half the samples).
"""
import json
import math
import sys


def verdict(row, free):
    """The default rule (dense spectra) on all but the `free` largest κ."""
    kappas = sorted(row["kappas"], reverse=True)[free:]
    if any(k >= 0 for k in kappas):
        return "NOT_MEMORIZED"  # a saddle, or a flat direction: no bounded peak
    variances = [max(-1.0 / k - 1.0, 0.0) for k in kappas]
    noise_radius = math.sqrt(sum(variances) / len(variances))
    radius = math.sqrt(sum(variances)) * row["sigma"] / row["sqrt_alpha_bar"]
    to_gap = radius / row["gap"]
    if noise_radius < 1 and to_gap < 1 / 3:
        return "MEMORIZED"
    if noise_radius < 2 and to_gap < 2 / 3:
        return "PARTIAL"
    return "NOT_MEMORIZED"


def kind(row):
    if row["truth_copy"]:
        return "copy" if row["multiplicity"] > 1 else "ambiguous"
    return "reproduction" if row["multiplicity"] > 1 else "novel"


def main():
    for path in sys.argv[1:]:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for free in (0, 1, 2):
            counts = {k: [0, 0] for k in ("copy", "reproduction", "novel")}
            conditions = {}
            for row in rows:
                k = kind(row)
                if k == "ambiguous":
                    continue
                memorized = verdict(row, free) == "MEMORIZED"
                counts[k][0] += memorized
                counts[k][1] += 1
                conditions.setdefault(row["condition"], []).append((k == "copy", memorized))
            copying = [c for c in conditions.values() if 2 * sum(x for x, _ in c) >= len(c)]
            copying_memorized = sum(2 * sum(m for _, m in c) >= len(c) for c in copying)
            print(f"{path}: free {free}: copies {counts['copy'][0]}/{counts['copy'][1]}, "
                  f"reproductions {counts['reproduction'][0]}/{counts['reproduction'][1]}, "
                  f"novel {counts['novel'][0]}/{counts['novel'][1]}, "
                  f"copying conditions MEMORIZED {copying_memorized}/{len(copying)}")


if __name__ == "__main__":
    main()
