#!/usr/bin/env python3
"""Checks that a LibTorch build returns finite input gradients through a
TorchScript U-Net, at 1 and at N threads (the engine's curvature is built
from such products).

  /usr/bin/python3 tools/platform/torch_gradient_check.py [MODEL_PT] [--calls 30] [--threads 2]

Found on Debian 13's python3-torch / libtorch 2.6 (CPU build, "CPU capability
usage: NO AVX"), 2026-12-06: through checkpoints/mnist39/model.pt, VJPs at
batch 2, 4 and 8 came back all-NaN in 2 of 30 calls at 2 threads and in 0 of
30 at 1 thread; the same forward replayed op by op was finite. Debian 12's
torch 1.13 gives 0 of 30 at both. Exit status 1 when any call is non-finite.
"""
import argparse
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def count_nonfinite(model, threads, calls):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bad = 0
    for call in range(calls):
        batch = (2, 4, 8)[call % 3]
        x = torch.randn(batch, 1, 28, 28, requires_grad=True)
        out = model(x, torch.full((batch,), 20), torch.full((batch,), 9))
        grad = torch.autograd.grad(out, x, torch.randn_like(out))[0]
        bad += int(not torch.isfinite(grad).all())
    return bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?",
                        default=os.path.join(REPO, "checkpoints", "mnist39", "model.pt"))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = torch.jit.load(args.model).eval()
    print(f"torch {torch.__version__}")
    failed = False
    for threads in sorted({1, args.threads}):
        bad = count_nonfinite(model, threads, args.calls)
        failed |= bad > 0
        print(f"{threads} thread(s): {bad} of {args.calls} VJPs non-finite")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
