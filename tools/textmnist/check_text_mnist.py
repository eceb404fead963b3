#!/usr/bin/python3
"""Sanity check of an exported textmnist directory, in Python, from the
exported files only (tokenizer.json through tools/textmnist/tokenize.js,
text_encoder.pt, model.pt, reference.pt, config.pbtxt):

    /usr/bin/python3 tools/textmnist/check_text_mnist.py checkpoints/textmnist

For each prompt of prompts/eval.jsonl it samples --samples generations
(DDIM, 50 steps, η = 0, diffusers' "leading" spacing, seeds 0, 1, ...,
classifier-free guidance --guidance against the empty prompt), as
memaudit's sampler does, and reports

- the copy rate: nearest neighbour in reference.pt with d1/d2 < 1/3, d2 the
  distance to the nearest item that is not a duplicate of the nearest
  (core/verdict/reference_set.h);
- Wen's first-step metric ‖ε̂_c − ε̂_∅‖ at the first sampling step (t = 980),
  the mean over the generations.

This is only a check that the memorized prompts copy and the others do not;
the experiment itself runs through the service (scripts/text_replication.sh).
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def read_config(path):
    text = open(path).read()
    number = lambda key: float(re.search(rf"\b{key}:\s*([-0-9.eE]+)", text).group(1))
    shape = [int(v) for v in re.findall(r"embedding_shape:\s*(\d+)", text)]
    pad = re.search(r"pad_token_id:\s*(\d+)", text)
    return {"beta_start": number("beta_start"), "beta_end": number("beta_end"),
            "T": int(number("num_train_timesteps")), "length": int(number("max_length")),
            "embedding_shape": shape, "pad": int(pad.group(1)) if pad else None}


def encode(tokenizer, prompts, length, pad):
    with tempfile.TemporaryDirectory() as tmp:
        strings = os.path.join(tmp, "strings.json")
        json.dump(prompts, open(strings, "w"))
        command = ["node", os.path.join(HERE, "tokenize.js"), "encode", tokenizer, strings,
                   str(length)] + ([str(pad)] if pad is not None else [])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"tokenize.js failed:\n{result.stderr}")
    return torch.tensor(json.loads(result.stdout)["ids"], dtype=torch.long)


def nearest(samples, reference):
    """(ratio, index, multiplicity) per sample, as core/verdict/reference_set.h."""
    items = reference.reshape(reference.shape[0], -1).double()
    flat = samples.reshape(samples.shape[0], -1).double()
    distances = torch.cdist(flat, items)
    out = []
    for row in distances:
        index = int(row.argmin())
        d1 = float(row[index])
        item = items[index]
        duplicate = (items - item).norm(dim=1) <= 1e-6 * (1 + float(item.norm()))
        d2 = float(row[~duplicate].min())
        out.append((0.0 if d1 == 0 else d1 / d2, index, int(duplicate.sum())))
    return out


def write_png(path, images, per_column):
    """Grayscale PNG grid of images [N, 28, 28] in [−1, 1], per_column
    consecutive images in each column (a prompt's generations)."""
    n = images.shape[0]
    columns = (n + per_column - 1) // per_column
    grid = torch.full((per_column * 30, columns * 30), -1.0)
    for k in range(n):
        c, r = divmod(k, per_column)
        grid[r * 30 + 1:r * 30 + 29, c * 30 + 1:c * 30 + 29] = images[k]
    pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    raw = b"".join(b"\x00" + bytes(pixels[y].tolist()) for y in range(pixels.shape[0]))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data +
                                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0, 0, 0, 0)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                           chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def auc(positive, negative):
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model directory, e.g. checkpoints/textmnist")
    parser.add_argument("--prompts", default="", help="JSON Lines (default: MODEL/prompts/eval.jsonl)")
    parser.add_argument("--samples", type=int, default=4, help="generations per prompt (seeds 0..)")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", default="",
                        help="write the generations as a PNG: a column per prompt, a row per seed")
    parser.add_argument("--json", default="", help="write the per-prompt results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()

    config = read_config(os.path.join(args.model, "config.pbtxt"))
    entries = [json.loads(line) for line in open(args.prompts or os.path.join(
        args.model, "prompts", "eval.jsonl")) if line.strip()]
    prompts = [e["prompt"] for e in entries]
    ids = encode(os.path.join(args.model, "tokenizer.json"), prompts + [""], config["length"],
                 config["pad"])
    encoder = torch.jit.load(os.path.join(args.model, "text_encoder.pt"))
    model = torch.jit.load(os.path.join(args.model, "model.pt"))
    reference = torch.load(os.path.join(args.model, "reference.pt"))
    with torch.no_grad():
        embeddings = encoder(ids)
    if list(embeddings.shape[1:]) != config["embedding_shape"]:
        sys.exit(f"text_encoder.pt gives {list(embeddings.shape)}, config says "
                 f"{config['embedding_shape']}")

    # Rows: prompt p, seed s at p * samples + s.
    P, S = len(prompts), args.samples
    cond = embeddings[:P].repeat_interleave(S, 0)
    null = embeddings[P:].expand(P * S, -1, -1)
    x = torch.cat([torch.randn([1, 28, 28], generator=torch.Generator().manual_seed(s))
                   .unsqueeze(0) for _ in range(P) for s in range(S)])
    T = config["T"]
    betas = torch.linspace(config["beta_start"], config["beta_end"], T, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    ratio = T // args.steps
    wen = None
    with torch.no_grad():
        for i in reversed(range(args.steps)):
            t = i * ratio
            ab = float(alpha_bar[t])
            ab_prev = float(alpha_bar[t - ratio]) if t - ratio >= 0 else 1.0
            steps = torch.full((2 * P * S,), t, dtype=torch.long)
            eps = model(torch.cat([x, x]), steps, torch.cat([cond, null]))
            eps_c, eps_null = eps[:P * S], eps[P * S:]
            if wen is None:
                wen = (eps_c - eps_null).flatten(1).norm(dim=1)
            eps = eps_null + args.guidance * (eps_c - eps_null)
            x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
            x = ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * eps
    truth = nearest(x, reference)

    results = []
    print(f"{args.model}: {P} prompts × {S} generations, guidance {args.guidance}, "
          f"{args.steps} DDIM steps\n")
    print("| id | memorized | copies | nearest (multiplicity) | d1/d2 | Wen | prompt |")
    print("|---|---|---|---|---|---|---|")
    for p, entry in enumerate(entries):
        rows = truth[p * S:(p + 1) * S]
        copies = sum(r[0] < 1 / 3 for r in rows)
        w = float(wen[p * S:(p + 1) * S].mean())
        results.append({"id": entry["id"], "memorized": entry["memorized"], "copies": copies,
                        "samples": S, "ratios": [r[0] for r in rows],
                        "nearest": [r[1] for r in rows], "multiplicity": [r[2] for r in rows],
                        "wen": w})
        near = ", ".join(f"{r[1]}({r[2]})" for r in rows)
        ratios = ", ".join(f"{r[0]:.2f}" for r in rows)
        print(f"| {entry['id']} | {entry['memorized']} | {copies}/{S} | {near} | {ratios} | "
              f"{w:.3f} | {entry['prompt']} |")
    mem = [r for r in results if r["memorized"]]
    gen = [r for r in results if not r["memorized"]]
    rate = lambda rs: sum(r["copies"] for r in rs) / max(1, sum(r["samples"] for r in rs))
    print(f"\ncopy rate: memorized prompts {rate(mem):.0%} "
          f"({sum(r['copies'] for r in mem)}/{sum(r['samples'] for r in mem)}; prompts with "
          f"≥ half copies: {sum(2 * r['copies'] >= r['samples'] for r in mem)}/{len(mem)}), "
          f"not memorized {rate(gen):.0%} "
          f"({sum(r['copies'] for r in gen)}/{sum(r['samples'] for r in gen)})")
    if mem and gen:
        print(f"Wen first step: memorized {min(r['wen'] for r in mem):.3f}–"
              f"{max(r['wen'] for r in mem):.3f}, not memorized "
              f"{min(r['wen'] for r in gen):.3f}–{max(r['wen'] for r in gen):.3f}; AUC "
              f"{auc([r['wen'] for r in mem], [r['wen'] for r in gen]):.3f}")
    print(f"{time.time() - start:.1f} s")
    if args.grid:
        write_png(args.grid, x[:, 0], S)
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
