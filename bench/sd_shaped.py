#!/usr/bin/env python3
"""Writes a Stable-Diffusion-shaped text-to-image model directory with random
weights, for timing the engine at SD's sizes (memaudit-bench-sd,
scripts/gpu_check.sh).

  sd_shaped.py OUT NAME [--width 320] [--blocks 24] [--sample-size 64]
                        [--dtype float32|float16|bfloat16] [--device cpu|cuda]

What is SD's and what is not:
  * shapes as SD 1.x: latents 4×64×64 (d = 16,384; --sample-size shrinks
    them for the CPU fallback of scripts/gpu_check.sh), prompts of 77 tokens
    embedded to 77×768, the scaled-linear schedule (β 0.00085–0.012, 1000
    steps, steps_offset 1), ε-prediction;
  * the denoiser is not SD's U-Net: a residual conv net at full 64×64
    resolution, --blocks blocks of two 3×3 convolutions at --width channels
    with a timestep embedding, and one cross-attention over the prompt. Its
    cost per row is about 2·blocks·(64·64·9·width²)·2 FLOPs: 24 blocks at
    width 320 ≈ 360 GFLOPs, the order of SD 1.5's U-Net at 64×64; the script
    prints its own count;
  * the text encoder is one CLIP-shaped transformer block at width 768
    (CLIP ViT-L/14's text model has 12), the tokenizer tests/tokenizer's
    CLIP-style one; no VAE (the engine's figures do not need decoding).
Weights are random (seeded): verdicts mean nothing, costs do. Exported with
tools/export/export_diffusers.export_pipeline in --dtype on --device (float16
needs a device whose torch runs it: CUDA, or a recent torch on the CPU).
"""
import argparse
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tools", "export"))
import export_diffusers  # noqa: E402
import make_tiny_pipeline_dir as tiny  # noqa: E402

LATENT_CHANNELS, MAX_LENGTH, HIDDEN = 4, 77, 768


class Block(torch.nn.Module):
    def __init__(self, width, groups):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(groups, width)
        self.conv1 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.time = torch.nn.Linear(width, width)
        self.norm2 = torch.nn.GroupNorm(groups, width)
        self.conv2 = torch.nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h, emb):
        r = self.conv1(F.silu(self.norm1(h))) + self.time(emb)[:, :, None, None]
        return h + self.conv2(F.silu(self.norm2(r)))


class SdShapedUNet(torch.nn.Module):
    """forward(sample, timestep, encoder_hidden_states, return_dict=True) as
    diffusers' UNet2DConditionModel."""

    def __init__(self, width, blocks):
        super().__init__()
        groups = 32 if width % 32 == 0 else 4
        self.width = width
        self.conv_in = torch.nn.Conv2d(LATENT_CHANNELS, width, 3, padding=1)
        self.time_mlp = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(),
                                            torch.nn.Linear(width, width))
        self.blocks = torch.nn.ModuleList(Block(width, groups) for _ in range(blocks))
        self.norm = torch.nn.GroupNorm(groups, width)
        self.to_q = torch.nn.Linear(width, width)
        self.to_k = torch.nn.Linear(HIDDEN, width)
        self.to_v = torch.nn.Linear(HIDDEN, width)
        self.to_out = torch.nn.Linear(width, width)
        self.norm_out = torch.nn.GroupNorm(groups, width)
        self.conv_out = torch.nn.Conv2d(width, LATENT_CHANNELS, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        if timestep.dim() == 0:
            timestep = timestep[None]
        timestep = timestep.expand(sample.shape[0])
        emb = self.time_mlp(tiny.timestep_embedding(timestep, self.width).to(sample.dtype))
        h = self.conv_in(sample)
        half = len(self.blocks) // 2
        for block in self.blocks[:half]:
            h = block(h, emb)
        b, c, height, width = h.shape
        tokens = self.norm(h).flatten(2).transpose(1, 2)
        attended = tiny.attention(self.to_q(tokens), self.to_k(encoder_hidden_states),
                                  self.to_v(encoder_hidden_states))
        h = h + self.to_out(attended).transpose(1, 2).reshape(b, c, height, width)
        for block in self.blocks[half:]:
            h = block(h, emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if not return_dict:
            return (out,)
        return tiny.UNet2DConditionOutput(sample=out)


def flops_per_row(width, blocks, size):
    pixels = size * size
    conv = 2 * pixels * 9 * width * width
    attention = 2 * pixels * (2 * width * width + 2 * MAX_LENGTH * width)
    return 2 * blocks * conv + attention + 2 * 2 * pixels * 9 * LATENT_CHANNELS * width


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("name")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--blocks", type=int, default=24)
    parser.add_argument("--sample-size", type=int, default=64, help="latent height and width")
    parser.add_argument("--dtype", choices=sorted(export_diffusers.DTYPES), default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    unet = SdShapedUNet(args.width, args.blocks)
    text_encoder = tiny.TinyTextEncoder(hidden=HIDDEN)
    with tempfile.TemporaryDirectory(prefix="memaudit-sd-tokenizer-") as tokenizer_dir:
        tiny.write_tokenizer_dir(tokenizer_dir)
        path = export_diffusers.export_pipeline(
            unet, text_encoder, None, tiny.scheduler_config(),
            tiny.unet_config(sample_size=args.sample_size, cross_attention_dim=HIDDEN), None,
            tokenizer_dir, args.out, args.name, dtype=args.dtype, device=args.device,
            no_vae=True, force=True, text_encoder_config=tiny.text_encoder_config(hidden_size=HIDDEN),
            source=f"bench/sd_shaped.py --width {args.width} --blocks {args.blocks} "
                   f"--sample-size {args.sample_size} (random weights)")
    params = sum(p.numel() for p in unet.parameters())
    print(f"{os.path.abspath(path)}: denoiser {params / 1e6:.1f} M parameters, "
          f"{flops_per_row(args.width, args.blocks, args.sample_size) / 1e9:.1f} GFLOPs per row, "
          f"{args.dtype}")


if __name__ == "__main__":
    main()
