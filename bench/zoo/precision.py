#!/usr/bin/python3
"""Compares two memaudit-zoo-eval runs of one model on the same seeds, one
with float32 networks and one reduced (--dtype bfloat16, or a bfloat16
export): what the reduced precision changes in the spectrum and the verdict.

  precision.py FLOAT32.jsonl REDUCED.jsonl   two runs, end to end
  precision.py TWINNED.jsonl                 one run with --twin: both networks
                                             at the same points (the spectrum alone)

Runs need --kappas. Samples are matched by condition and seed. The
reduced run's samples differ end to end: every network call along the
trajectory is rounded, so the state, the spectrum and the truth all move.
Prints, per model:
  kappa error   |κ_i(reduced) − κ_i(float32)| / max_i |κ_i(float32)| over the
                k eigenvalues of each sample (median, 95th percentile, max)
  rho           relative change of the noise radius ρ (median, max)
  n+            samples whose count of upward directions differs
  verdicts      samples with the same verdict (with the reference set), and
                each disagreement with both ρ and d1/d2
"""
import json
import statistics
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "kappas" not in row:
                sys.exit(f"{path}: run memaudit-zoo-eval with --kappas")
            rows[(row["condition"], row["seed"])] = row
    return rows


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rho(row):
    return "-" if row["noise_radius"] is None else f"{row['noise_radius']:.2f}"


def kappa_errors_of(full_kappas, reduced_kappas):
    ka, kb = sorted(full_kappas), sorted(reduced_kappas)
    scale = max(abs(v) for v in ka) or 1.0
    return [abs(x - y) / scale for x, y in zip(ka, kb)]


def twinned(path):
    rows = load(path)
    errors, signs, agree = [], 0, 0
    for row in rows.values():
        if "twin_kappas" not in row:
            sys.exit(f"{path}: run memaudit-zoo-eval with --twin")
        errors += kappa_errors_of(row["kappas"], row["twin_kappas"])
        signs += (max(row["kappas"]) > 0) != (max(row["twin_kappas"]) > 0)
        agree += row.get("twin_verdict_reference") == row["verdict_reference"]
    first = next(iter(rows.values()))
    print(f"{first['model']}: {len(rows)} samples, the twin network at the same points, "
          f"guidance {first['guidance']}, {first['sampler']}, k = {len(first['kappas'])}")
    print(f"  kappa error: median {statistics.median(errors):.2e}, "
          f"p95 {percentile(errors, 0.95):.2e}, max {max(errors):.2e}")
    print(f"  the sign of kappa_max differs on {signs} of {len(rows)}")
    if "twin_verdict_reference" in first:
        print(f"  verdicts agree on {agree} of {len(rows)}")


def main():
    if len(sys.argv) == 2:
        return twinned(sys.argv[1])
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    full, reduced = load(sys.argv[1]), load(sys.argv[2])
    keys = sorted(set(full) & set(reduced))
    if not keys:
        sys.exit("no sample (condition, seed) in both runs")
    kappa_errors, rho_changes, positive_changes, agree, disagreements = [], [], 0, 0, []
    for key in keys:
        a, b = full[key], reduced[key]
        kappa_errors += kappa_errors_of(a["kappas"], b["kappas"])
        if a["noise_radius"] and b["noise_radius"]:
            rho_changes.append(abs(b["noise_radius"] - a["noise_radius"]) / a["noise_radius"])
        positive_changes += a["positive"] != b["positive"]
        if a["verdict_reference"] == b["verdict_reference"]:
            agree += 1
        else:
            disagreements.append(
                f"    condition {key[0]} seed {key[1]}: {a['verdict_reference']} "
                f"(rho {rho(a)}, d1/d2 {a['truth_ratio']:.2f}) -> "
                f"{b['verdict_reference']} (rho {rho(b)}, d1/d2 {b['truth_ratio']:.2f})")
    model = full[keys[0]]["model"]
    print(f"{model}: {len(keys)} samples, {full[keys[0]]['network_dtype']} vs "
          f"{reduced[keys[0]]['network_dtype']}, guidance {full[keys[0]]['guidance']}, "
          f"{full[keys[0]]['sampler']}, k = {len(full[keys[0]]['kappas'])}")
    print(f"  kappa error: median {statistics.median(kappa_errors):.2e}, "
          f"p95 {percentile(kappa_errors, 0.95):.2e}, max {max(kappa_errors):.2e}")
    if rho_changes:
        print(f"  rho: median change {statistics.median(rho_changes):.2%}, "
              f"max {max(rho_changes):.2%}")
    print(f"  n+ differs on {positive_changes} of {len(keys)}")
    print(f"  verdicts agree on {agree} of {len(keys)}")
    for line in disagreements:
        print(line)


if __name__ == "__main__":
    main()
