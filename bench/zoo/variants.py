#!/usr/bin/python3
"""Compares evaluation variants (memaudit-zoo-eval --variant) per model,
sampler and guidance: TPR/FPR of the default rule (MEMORIZED counts), the
copies judged PARTIAL, and the copies' margins (noise radius ρ, n₊, κ_max).

  variants.py RESULTS.jsonl [...]

Truth as in summarize.py: copies are d1/d2 < 1/3 to an item the training
data repeats; d1/d2 < 1/3 to a single item is ambiguous and left out.
"""
import json
import sys
from collections import OrderedDict


def span(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{min(values):.2f}–{max(values):.2f}"


def main():
    groups = OrderedDict()
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    key = (row["model"], row["sampler"], row.get("guidance", 1.0))
                    groups.setdefault(key, []).append(row)
    print("| model | sampler | w | variant | t | σ | copies | TPR | copies PARTIAL | FPR "
          "| non-copies flagged (M/P) | copies ρ | copies n₊>0 | non-copies min ρ (n₊=0) |")
    print("|" + "---|" * 14)
    for (model, sampler, w), all_rows in groups.items():
        rows = [r for r in all_rows if not (r["truth_copy"] and r["multiplicity"] == 1)]
        copies = [r for r in rows if r["truth_copy"]]
        others = [r for r in rows if not r["truth_copy"]]
        names = ["default"] + list(rows[0].get("variants", {}).keys())
        for name in names:
            def get(r):
                if name == "default":
                    return r
                return r["variants"][name]
            tp = sum(get(r)["verdict_reference"] == "MEMORIZED" for r in copies)
            cp = sum(get(r)["verdict_reference"] == "PARTIAL" for r in copies)
            fp = sum(get(r)["verdict_reference"] == "MEMORIZED" for r in others)
            fpp = sum(get(r)["verdict_reference"] == "PARTIAL" for r in others)
            saddles = sum(get(r)["positive"] > 0 for r in copies)
            other_rho = [get(r)["noise_radius"] for r in others if get(r)["positive"] == 0]
            tpr = f"{tp / len(copies):.2f}" if copies else "-"
            fpr = f"{fp / len(others):.2f}" if others else "-"
            print(f"| {model} | {sampler} | {w:g} | {name} | {get(rows[0])['t']} | "
                  f"{get(rows[0])['sigma']:.3f} | {len(copies)} | {tpr} | {cp} | {fpr} | "
                  f"{fp}/{fpp} of {len(others)} | {span([get(r)['noise_radius'] for r in copies])} | "
                  f"{saddles} | {span(other_rho)} |")


if __name__ == "__main__":
    main()
