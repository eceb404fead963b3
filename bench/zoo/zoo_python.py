#!/usr/bin/python3
"""Python-made members of the verdict zoo (bench/zoo/README.md).

Writes model directories the way a researcher outside this project would:
U-Nets trained and traced with Debian's python3-torch, and exact Gaussian
mixtures scripted in float64 (their buffers stay float64 and forward casts x
to float64, so loading them also checks that checkpoints load in the
precision they were saved in).

  zoo_python.py unet --out DIR --name N --kind {classes,unconditional}
                     [--prediction epsilon|v_prediction]
                     [--schedule linear|scaled_linear|cosine]
                     [--steps S] [--seed K] [--digits MNIST_DIGITS_DIR]
  zoo_python.py gmm  --out DIR --name N --shape 16 | 4,64,64 [--seed K]

Every model directory gets config.pbtxt, model.pt and reference.pt (the
training set, including its duplicates); --no-reference is left to the
evaluator, which simply ignores reference.pt.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

T = 1000


def schedule_alpha_bars(kind):
    if kind == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    elif kind == "scaled_linear":
        # Stable Diffusion's: betas linear in sqrt between 0.00085 and 0.012.
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=torch.float64) ** 2
    elif kind == "cosine":
        s = 0.008
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)],
                             dtype=torch.float64)
    else:
        raise SystemExit(f"unknown schedule {kind}")
    return torch.cumprod(1 - betas, 0)


def schedule_block(kind):
    if kind == "linear":
        return ("noise_schedule {\n  kind: LINEAR\n  beta_start: 0.0001\n  beta_end: 0.02\n"
                f"  num_train_timesteps: {T}\n}}\n")
    if kind == "scaled_linear":
        return ("noise_schedule {\n  kind: SCALED_LINEAR\n  beta_start: 0.00085\n"
                f"  beta_end: 0.012\n  num_train_timesteps: {T}\n}}\n")
    return f"noise_schedule {{\n  kind: COSINE\n  num_train_timesteps: {T}\n}}\n"


def write_config(directory, name, shape, prediction, schedule, conditioning):
    with open(os.path.join(directory, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\n')
        for d in shape:
            f.write(f"sample_shape: {d}\n")
        f.write(f"prediction_type: {prediction.upper()}\n")
        f.write(schedule_block(schedule))
        f.write(f"conditioning {{\n  {conditioning}\n}}\n")


# ----------------------------------------------------------------------------
# U-Net (1×28×28), time and class embedding as per-channel biases.

class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.e = nn.Linear(emb, cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(F.silu(self.n1(x))) + self.e(e)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    def __init__(self, channels=16, num_classes=0, emb=64, frequencies=16):
        super().__init__()
        c = channels
        self.num_classes = num_classes
        self.register_buffer(
            "freqs", torch.exp(-math.log(1000.0) * torch.arange(frequencies) / frequencies))
        self.t1 = nn.Linear(2 * frequencies, emb)
        self.t2 = nn.Linear(emb, emb)
        self.label = nn.Embedding(num_classes + 1, emb) if num_classes > 0 else None
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.d1 = ResBlock(c, c, emb)
        self.d2 = ResBlock(c, 2 * c, emb)
        self.d3 = ResBlock(2 * c, 2 * c, emb)
        self.mid = ResBlock(2 * c, 2 * c, emb)
        self.u2 = ResBlock(4 * c, 2 * c, emb)
        self.u1 = ResBlock(3 * c, c, emb)
        self.out_norm = nn.GroupNorm(8, c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def embed(self, t, y):
        # In the buffers' precision, so that an export in bfloat16/float16
        # (export_reduced.py) has no float32 baked into its graph.
        angles = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        e = self.t2(F.silu(self.t1(torch.cat([angles.sin(), angles.cos()], 1))))
        if self.label is not None:
            e = e + self.label(y)
        return F.silu(e)

    def forward(self, x, t, y=None):
        e = self.embed(t, y)
        h1 = self.d1(self.inp(x), e)                  # 28
        h2 = self.d2(F.avg_pool2d(h1, 2), e)          # 14
        h3 = self.d3(F.avg_pool2d(h2, 2, ceil_mode=True), e)  # 7
        h = self.mid(h3, e)
        h = self.u2(torch.cat([F.interpolate(h, size=(14, 14)), h2], 1), e)
        h = self.u1(torch.cat([F.interpolate(h, size=(28, 28)), h1], 1), e)
        return self.out(F.silu(self.out_norm(h)))


def load_digits(directory, digit):
    with open(os.path.join(directory, f"{digit}.json")) as f:
        rows = json.load(f)["data"]
    return torch.tensor(rows, dtype=torch.float32).view(-1, 1, 28, 28) * 2 - 1


def unet_data(kind, digits, seed):
    """Training images [N,1,28,28] in [-1,1] and labels (or None)."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.cat([load_digits(digits, k) for k in range(10)])
    pool = pool[torch.randperm(pool.size(0), generator=g)]
    if kind == "classes":
        # class 0: 1,500 distinct digits (generalizes); class 1: one digit
        # ×100 (memorized); class 2: ten digits ×10 (partly memorized).
        distinct, one, ten = pool[:1500], pool[1500:1501], pool[1501:1511]
        images = torch.cat([distinct, one.expand(100, -1, -1, -1), ten.repeat(10, 1, 1, 1)])
        labels = torch.cat([torch.zeros(1500), torch.ones(100), torch.full((100,), 2)]).long()
        return images.contiguous(), labels
    # unconditional: 5,000 digits of which 3 appear 200 times each.
    distinct, dup = pool[:4997], pool[4997:5000]
    images = torch.cat([distinct, dup.repeat(200, 1, 1, 1)])
    return images.contiguous(), None


def train_unet(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count())
    images, labels = unet_data(args.kind, args.digits, args.seed)
    num_classes = 3 if labels is not None else 0
    model = UNet(args.channels, num_classes)
    ab = schedule_alpha_bars(args.schedule).to(torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    lr_end = args.steps * 0.8
    start = time.time()
    running = None
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, images.size(0), (args.batch,))
        x0 = images[idx]
        t = torch.randint(0, T, (args.batch,))
        eps = torch.randn_like(x0)
        a = ab[t].sqrt()[:, None, None, None]
        s = (1 - ab[t]).sqrt()[:, None, None, None]
        xt = a * x0 + s * eps
        y = None
        if labels is not None:
            y = labels[idx].clone()
            y[torch.rand(args.batch) < 0.2] = num_classes  # classifier-free dropout
        out = model(xt, t, y)
        target = eps if args.prediction == "epsilon" else a * eps - s * x0
        loss = F.mse_loss(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step > lr_end:  # linear decay over the last 20%
            for group in opt.param_groups:
                group["lr"] = args.lr * (args.steps - step + 1) / (args.steps - lr_end)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 500 == 0 or step == args.steps:
            print(f"{args.name}: step {step}/{args.steps} loss {running:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    model.eval()
    directory = os.path.join(args.out, args.name)
    os.makedirs(directory, exist_ok=True)
    with torch.no_grad():
        xs, ts = torch.randn(2, 1, 28, 28), torch.tensor([10, 500])
        if labels is not None:
            ys = torch.tensor([1, num_classes])
            traced = torch.jit.trace(model, (xs, ts, ys))
            xb, tb, yb = torch.randn(5, 1, 28, 28), torch.tensor([1, 2, 3, 999, 0]), torch.tensor([0, 1, 2, 3, 0])
            err = (traced(xb, tb, yb) - model(xb, tb, yb)).abs().max().item()
        else:
            traced = torch.jit.trace(lambda x, t: model(x, t), (xs, ts)) if False else \
                torch.jit.trace(Unconditional(model), (xs, ts))
            xb, tb = torch.randn(5, 1, 28, 28), torch.tensor([1, 2, 3, 999, 0])
            err = (traced(xb, tb) - model(xb, tb)).abs().max().item()
    if err > 1e-4:
        raise SystemExit(f"traced module differs from the eager one by {err}")
    traced.save(os.path.join(directory, "model.pt"))
    torch.save(images, os.path.join(directory, "reference.pt"))
    conditioning = f"kind: CLASS_LABEL\n  num_classes: {num_classes}" if labels is not None else "kind: NONE"
    write_config(directory, args.name, [1, 28, 28], args.prediction, args.schedule, conditioning)
    with open(os.path.join(directory, "TRAINING.txt"), "w") as f:
        f.write(" ".join(sys.argv) + f"\nfinal loss {running:.4f}, {time.time() - start:.0f} s\n")
    print(f"{args.name}: wrote {directory} ({time.time() - start:.0f} s, loss {running:.4f})")


class Unconditional(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, t):
        return self.inner(x, t)


# ----------------------------------------------------------------------------
# Exact diagonal Gaussian mixtures in float64 (any sample shape).

class ExactDiagonalMixture(nn.Module):
    """ε̂ of p_0 = Σ w_k N(μ_k, diag(v_k)) under the schedule, exactly."""

    def __init__(self, weights, means, variances, alpha_bars):
        super().__init__()
        self.register_buffer("log_w", weights.log())      # [K] float64
        self.register_buffer("means", means)              # [K, d]
        self.register_buffer("variances", variances)      # [K, d]
        self.register_buffer("alpha_bars", alpha_bars)    # [T]

    def forward(self, x, t):
        shape = x.shape
        xd = x.reshape(shape[0], -1).to(torch.float64)
        ab = self.alpha_bars[t][:, None, None]                     # [B,1,1]
        var = ab * self.variances[None] + (1 - ab)                 # [B,K,d]
        diff = xd[:, None, :] - ab.sqrt() * self.means[None]       # [B,K,d]
        logp = self.log_w[None] - 0.5 * (diff * diff / var + var.log()).sum(-1)
        r = torch.softmax(logp, 1)                                 # [B,K]
        score = -torch.einsum("bk,bkd->bd", r, diff / var)
        eps = -(1 - ab[:, 0]).sqrt() * score
        return eps.to(x.dtype).reshape(shape)


def build_gmm(args):
    shape = [int(s) for s in args.shape.split(",")]
    d = 1
    for s in shape:
        d *= s
    g = torch.Generator().manual_seed(args.seed)
    broad = 3
    # Broad components: means ~ N(0, 0.25 I), per-direction variances in
    # [0.02, 0.3] with a fifth of the directions collapsed (a flat-free
    # direction of zero variance); one point mass (variance 1e-6) per
    # memorized point, which the reference set repeats 50 times.
    memorized = 2
    means = torch.randn(broad + memorized, d, generator=g, dtype=torch.float64) * 0.5
    variances = 0.02 + 0.28 * torch.rand(broad + memorized, d, generator=g, dtype=torch.float64)
    variances[:broad][torch.rand(broad, d, generator=g) < 0.2] = 1e-6
    variances[broad:] = 1e-6
    weights = torch.tensor([0.3] * broad + [0.05] * memorized, dtype=torch.float64)
    alpha_bars = schedule_alpha_bars("linear")
    module = torch.jit.script(ExactDiagonalMixture(weights, means, variances, alpha_bars))
    directory = os.path.join(args.out, args.name)
    os.makedirs(directory, exist_ok=True)
    module.save(os.path.join(directory, "model.pt"))
    # Reference: 300 draws per broad component plus each point ×50.
    draws = []
    for k in range(broad):
        draws.append(means[k] + variances[k].sqrt() * torch.randn(300, d, generator=g, dtype=torch.float64))
    for k in range(broad, broad + memorized):
        draws.append(means[k].expand(50, d))
    reference = torch.cat(draws).to(torch.float32).reshape([-1] + shape)
    torch.save(reference.contiguous(), os.path.join(directory, "reference.pt"))
    write_config(directory, args.name, shape, "epsilon", "linear", "kind: NONE")
    print(f"{args.name}: wrote {directory} (d = {d})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("unet")
    u.add_argument("--out", required=True)
    u.add_argument("--name", required=True)
    u.add_argument("--kind", choices=["classes", "unconditional"], required=True)
    u.add_argument("--prediction", choices=["epsilon", "v_prediction"], default="epsilon")
    u.add_argument("--schedule", choices=["linear", "scaled_linear", "cosine"],
                   default="linear")
    u.add_argument("--steps", type=int, default=4000)
    u.add_argument("--batch", type=int, default=64)
    u.add_argument("--lr", type=float, default=2e-3)
    u.add_argument("--channels", type=int, default=16)
    u.add_argument("--seed", type=int, default=1)
    u.add_argument("--threads", type=int, default=0)
    u.add_argument("--digits", default=os.path.join(
        os.environ.get("MEMAUDIT_DATA", os.path.expanduser("~/.cache/memaudit")), "mnist", "digits"))
    m = sub.add_parser("gmm")
    m.add_argument("--out", required=True)
    m.add_argument("--name", required=True)
    m.add_argument("--shape", required=True)
    m.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "unet":
        train_unet(args)
    else:
        build_gmm(args)


if __name__ == "__main__":
    main()
