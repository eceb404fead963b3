#!/usr/bin/python3
"""Re-exports a zoo U-Net (zoo_python.py) in bfloat16 or float16, as large
checkpoints ship.

  export_reduced.py SRC_DIR DST_DIR [--dtype bfloat16|float16]

A traced archive records the dtypes of its inputs and constants, so a U-Net
traced in float32 does not run once its weights are converted (its time
embedding stays float32; memaudit refuses such a load with
FAILED_PRECONDITION). This script does what a release pipeline does instead:
rebuilds the network from zoo_python.py's class, loads SRC_DIR/model.pt's
weights, converts them, and traces again with inputs in the reduced
precision. DST_DIR gets the new model.pt, SRC_DIR's config.pbtxt (its name
changed to DST_DIR's) and reference.pt. The weights are exactly SRC_DIR's,
rounded: a comparison of the two directories measures the precision alone.
"""
import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_python  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    traced = torch.jit.load(os.path.join(args.src, "model.pt"))
    state = traced.state_dict()
    conditional = any(k.startswith("label.") for k in state)
    if not conditional:  # zoo_python.Unconditional wraps the U-Net as `inner`
        state = {k[len("inner."):]: v for k, v in state.items()}
    model = zoo_python.UNet(
        channels=state["inp.weight"].shape[0],
        num_classes=state["label.weight"].shape[0] - 1 if conditional else 0,
        emb=state["t1.weight"].shape[0],
        frequencies=state["freqs"].numel())
    model.load_state_dict(state)
    model = model.eval().to(dtype)

    xs, ts = torch.randn(2, 1, 28, 28, dtype=dtype), torch.tensor([10, 500])
    with torch.no_grad():
        if conditional:
            reduced = torch.jit.trace(model, (xs, ts, torch.tensor([0, 1])))
        else:
            reduced = torch.jit.trace(zoo_python.Unconditional(model), (xs, ts))
        # The same inputs through the float32 archive: the rounding's size.
        xb, tb = torch.randn(4, 1, 28, 28), torch.tensor([1, 20, 400, 999])
        extra = (torch.tensor([0, 1, 0, 1]),) if conditional else ()
        full = traced(xb, tb, *extra)
        rounded = reduced(xb.to(dtype), tb, *extra).float()
        error = ((rounded - full).norm() / full.norm()).item()

    os.makedirs(args.dst, exist_ok=True)
    reduced.save(os.path.join(args.dst, "model.pt"))
    name = os.path.basename(os.path.normpath(args.dst))
    with open(os.path.join(args.src, "config.pbtxt")) as f:
        lines = f.read().splitlines()
    lines = [f'name: "{name}"' if line.startswith("name:") else line for line in lines]
    with open(os.path.join(args.dst, "config.pbtxt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if os.path.exists(os.path.join(args.src, "reference.pt")):
        shutil.copy(os.path.join(args.src, "reference.pt"), os.path.join(args.dst, "reference.pt"))
    print(f"{args.dst}: {args.dtype} export of {args.src}; output relative error against the "
          f"float32 archive {error:.2e}")


if __name__ == "__main__":
    main()
