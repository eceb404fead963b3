"""Summarizes a `memaudit audit --json` report of the MNIST experiment.

Usage: /usr/bin/python3 tools/mnist/summarize_audit.py REPORT.json

Prints, per class: nearest-neighbour truth (copies of the duplicated
training 9 by the ratio test), n+ / flat-count / width distributions at each
evaluation timestep, verdict counts, and the ROC AUC of each metric for
telling the generated 9s from the generated 3s (Mann-Whitney, ties 1/2).
"""
import json
import math
import sys


def quantiles(values):
    values = sorted(values)
    if not values:
        return "-"
    pick = lambda q: values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]
    fmt = lambda v: "inf" if v is None or (isinstance(v, float) and math.isinf(v)) else f"{v:.3g}"
    return f"{fmt(pick(0))} / {fmt(pick(0.5))} / {fmt(pick(1))}"


def auc(positive, negative):
    """P(positive > negative), ties half; None (infinite width) ranks highest."""
    key = lambda v: math.inf if v is None else v
    wins = sum((key(p) > key(n)) + 0.5 * (key(p) == key(n)) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def main():
    report = json.load(open(sys.argv[1]))
    by_class = {c["label"]: c for c in report["conditions"]}
    nines, threes = by_class["class 9"], by_class["class 3"]
    print(f"model {report['model']}, {len(nines['samples'])} samples per class, "
          f"{report['timing']['total_seconds']:.0f} s")
    for label, condition in (("9", nines), ("3", threes)):
        samples = condition["samples"]
        copies = sum(s["copy"] and s["nearest_multiplicity"] > 1 for s in samples)
        any_copy = sum(s["copy"] for s in samples)
        print(f"\nclass {label}: copies of the duplicated 9: {copies}/{len(samples)} "
              f"(any d1/d2 < 1/3: {any_copy}); verdicts MEMORIZED {condition['memorized']}, "
              f"PARTIAL {condition['partial']}, NOT_MEMORIZED {condition['not_memorized']}")
        points = [(samples[0]["t"], [s for s in samples])]
        for k, _ in enumerate(samples[0].get("profile", [])):
            points.append((samples[0]["profile"][k]["t"], [s["profile"][k] for s in samples]))
        for t, rows in points:
            print(f"  t = {t:4d}: n+ {quantiles([r['positive_eigenvalues'] for r in rows])} "
                  f"(min/median/max), zero n+ in {sum(r['positive_eigenvalues'] == 0 for r in rows)}; "
                  f"flat {quantiles([r['flat_directions'] for r in rows])}; "
                  f"kappa_max {quantiles([r['max_kappa'] for r in rows])}; "
                  f"width {quantiles([math.inf if r['width'] is None else r['width'] for r in rows])}")
        early = condition.get("early")
        if early:
            for name in ("wen_noise_difference", "jeon_sharpness"):
                if name in early:
                    print(f"  {name} (t = {early['timesteps'][0]}): {quantiles(early[name]['values'])}")
    print("\nAUC for telling generated 9s from 3s (the 9s taken as memorized):")
    nine_rows, three_rows = nines["samples"], threes["samples"]
    profiles = [None] + list(range(len(nine_rows[0].get("profile", []))))
    for index in profiles:
        pick = (lambda s: s) if index is None else (lambda s, i=index: s["profile"][i])
        t = pick(nine_rows[0])["t"]
        for metric, lower_is_memorized in (("positive_eigenvalues", True),
                                           ("flat_directions", True), ("max_kappa", True),
                                           ("width", True)):
            p = [pick(s)[metric] for s in nine_rows]
            n = [pick(s)[metric] for s in three_rows]
            value = auc(n, p) if lower_is_memorized else auc(p, n)
            print(f"  t = {t:4d} {metric:22s} {value:.3f}")
    for name in ("wen_noise_difference", "jeon_sharpness"):
        if "early" in nines and name in nines["early"]:
            value = auc(nines["early"][name]["values"], threes["early"][name]["values"])
            print(f"  first step {name:17s} {value:.3f}")


if __name__ == "__main__":
    main()
