#!/usr/bin/env python3
"""A release-pipeline gate: audit a model before it ships.

    release_gate.py --server memaudit:50051 --model my-model \
        --prompts prompts.txt --samples 16 --guidance 7.5 --steps-offset 1 \
        --token-file /run/secrets/memaudit-token --ca-cert ca.pem

Prints progress and a one-line summary per condition, writes the report as
JSON when --report is given, and exits 3 when the model's verdict reaches
--fail-on (memorized by default), 0 when it passes, 1 on an error — the
exit codes of `memaudit audit`.
"""

import argparse
import sys

from google.protobuf import json_format

from memaudit_client import Client, Gate, MemauditError, Verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="memaudit-server HOST:PORT")
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", help="file of prompts, one per line")
    parser.add_argument("--class", dest="classes", type=int, action="append", default=[],
                        help="class label to audit (repeatable)")
    parser.add_argument("--samples", type=int, default=16, help="samples per condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0, help="sampling steps (server default 50)")
    parser.add_argument("--steps-offset", type=int, default=0)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--fail-on", choices=[g.value for g in Gate], default="memorized")
    parser.add_argument("--report", help="write the report here as JSON")
    parser.add_argument("--token-file")
    parser.add_argument("--ca-cert")
    parser.add_argument("--client-cert")
    parser.add_argument("--client-key")
    args = parser.parse_args()

    prompts = []
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    try:
        with Client(args.server, token_file=args.token_file, ca_cert=args.ca_cert,
                    client_cert=args.client_cert, client_key=args.client_key) as client:
            def progress(p):
                print(f"\r{p.samples_done}/{p.samples_total} samples", end="", file=sys.stderr)
            report = client.audit(args.model, prompts=prompts, class_labels=args.classes,
                                  samples_per_condition=args.samples, seed=args.seed,
                                  steps=args.steps, steps_offset=args.steps_offset,
                                  guidance=args.guidance, on_progress=progress)
            print(file=sys.stderr)
    except (MemauditError, ValueError) as e:
        print(f"release_gate: {e}", file=sys.stderr)
        return 1
    for condition in report.conditions:
        print(f"{condition.label}: {Verdict(condition.verdict).name} "
              f"({condition.memorized} memorized, {condition.partial} partial of "
              f"{len(condition.samples)})")
    print(f"model {report.model}: {Verdict(report.verdict).name}, "
          f"{report.memorized_samples} of {report.total_samples} samples memorized")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(json_format.MessageToJson(report))
    gate = Gate(args.fail_on)
    if gate.fails(report):
        print(f"release_gate: verdict {Verdict(report.verdict).name} reaches --fail-on "
              f"{gate.value}", file=sys.stderr)
    return gate.exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
