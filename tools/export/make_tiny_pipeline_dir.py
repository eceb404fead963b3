"""Writes a memaudit model directory from a tiny Stable-Diffusion-shaped pipeline.

Usage: /usr/bin/python3 tools/export/make_tiny_pipeline_dir.py REPOSITORY NAME

Builds small torch modules with diffusers' and transformers' call signatures
(a UNet with a timestep embedding and cross-attention, a CLIP-like text
encoder, a VAE decoder upsampling ×4), seeded so the weights are the same on
every run, and exports them with export_diffusers.export_pipeline to
REPOSITORY/NAME (replacing it if present). Prints the directory's path.

The model: latents [4, 8, 8], embeddings [77, 32], images [3, 32, 32],
epsilon prediction on SD's scaled_linear schedule, the tokenizer
tests/tokenizer/clip_style/tokenizer.json (pad id 1898, <|endoftext|>). The
test module (test_export_diffusers.py) imports the classes from here.
"""
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_diffusers  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIP_STYLE_TOKENIZER = os.path.join(REPO_ROOT, "tests", "tokenizer", "clip_style",
                                    "tokenizer.json")

LATENT_CHANNELS = 4
SAMPLE_SIZE = 8
HIDDEN = 32
MAX_LENGTH = 77
VOCAB = 1899  # clip_style's vocabulary: ids 0..1898, <|endoftext|> = 1898


# Output classes shaped like diffusers' UNet2DConditionOutput / DecoderOutput
# and transformers' BaseModelOutputWithPooling.
@dataclasses.dataclass
class UNet2DConditionOutput:
    sample: torch.Tensor


@dataclasses.dataclass
class DecoderOutput:
    sample: torch.Tensor


@dataclasses.dataclass
class BaseModelOutputWithPooling:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


def timestep_embedding(timesteps, dim):
    """diffusers' get_timestep_embedding (flip_sin_to_cos, shift 0)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32,
                                               device=timesteps.device) / half
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)


def attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


class TinyUNet(torch.nn.Module):
    """forward(sample, timestep, encoder_hidden_states, return_dict=True) as
    diffusers' UNet2DConditionModel: conv, timestep embedding, cross-attention
    over the text embedding, conv out."""

    def __init__(self, channels=LATENT_CHANNELS, width=16, context=HIDDEN):
        super().__init__()
        self.width = width
        self.conv_in = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.time_mlp = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(),
                                            torch.nn.Linear(width, width))
        self.norm = torch.nn.GroupNorm(4, width)
        self.to_q = torch.nn.Linear(width, width)
        self.to_k = torch.nn.Linear(context, width)
        self.to_v = torch.nn.Linear(context, width)
        self.to_out = torch.nn.Linear(width, width)
        self.norm_out = torch.nn.GroupNorm(4, width)
        self.conv_out = torch.nn.Conv2d(width, channels, 3, padding=1)

    def embed_time(self, sample, timestep):
        if timestep.dim() == 0:
            timestep = timestep[None]
        timestep = timestep.expand(sample.shape[0])
        return self.time_mlp(timestep_embedding(timestep, self.width).to(sample.dtype))

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        h = self.conv_in(sample) + self.embed_time(sample, timestep)[:, :, None, None]
        b, c, height, width = h.shape
        tokens = self.norm(h).flatten(2).transpose(1, 2)  # [B, HW, C]
        attended = attention(self.to_q(tokens), self.to_k(encoder_hidden_states),
                             self.to_v(encoder_hidden_states))
        h = h + self.to_out(attended).transpose(1, 2).reshape(b, c, height, width)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


class TinyTextEncoder(torch.nn.Module):
    """forward(input_ids, return_dict=True) as transformers' CLIPTextModel:
    token + position embedding, one causal self-attention block, final norm."""

    def __init__(self, vocab=VOCAB, length=MAX_LENGTH, hidden=HIDDEN):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(vocab, hidden)
        self.position_embedding = torch.nn.Embedding(length, hidden)
        self.register_buffer("position_ids", torch.arange(length)[None, :], persistent=False)
        self.norm1 = torch.nn.LayerNorm(hidden)
        self.qkv = torch.nn.Linear(hidden, 3 * hidden)
        self.proj = torch.nn.Linear(hidden, hidden)
        self.norm2 = torch.nn.LayerNorm(hidden)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(hidden, 2 * hidden), torch.nn.GELU(),
                                       torch.nn.Linear(2 * hidden, hidden))
        self.final_norm = torch.nn.LayerNorm(hidden)

    def forward(self, input_ids, return_dict=True):
        length = input_ids.shape[-1]
        h = self.token_embedding(input_ids) + self.position_embedding(
            self.position_ids[:, :length])
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        h = h + self.proj(torch.softmax(scores, dim=-1) @ v)
        h = self.final_norm(h + self.mlp(self.norm2(h)))
        pooled = h[torch.arange(h.shape[0], device=h.device), input_ids.argmax(dim=-1)]
        if not return_dict:
            return (h, pooled)
        return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=pooled)


class TinyVae(torch.nn.Module):
    """decode(z, return_dict=True).sample as diffusers' AutoencoderKL: post-quant
    conv, two nearest ×2 upsampling stages (block_out_channels of length 3),
    image channels out."""

    def __init__(self, channels=LATENT_CHANNELS, width=8, image_channels=3):
        super().__init__()
        self.post_quant_conv = torch.nn.Conv2d(channels, channels, 1)
        self.conv_in = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.up1 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.up2 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, width)
        self.conv_out = torch.nn.Conv2d(width, image_channels, 3, padding=1)

    def decode(self, z, return_dict=True):
        h = self.conv_in(self.post_quant_conv(z))
        h = F.silu(self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        h = F.silu(self.up2(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        image = torch.tanh(self.conv_out(F.silu(self.norm(h))))
        if not return_dict:
            return (image,)
        return DecoderOutput(sample=image)

    def forward(self, z):
        return self.decode(z).sample


def scheduler_config(**changes):
    """Stable Diffusion 1.5's scheduler_config.json (PNDMScheduler)."""
    config = {
        "_class_name": "PNDMScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }
    config.update(changes)
    return config


def unet_config(**changes):
    config = {"in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
              "sample_size": SAMPLE_SIZE, "cross_attention_dim": HIDDEN}
    config.update(changes)
    return config


def vae_config(**changes):
    config = {"in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS,
              "block_out_channels": [8, 8, 8], "scaling_factor": 0.18215}
    config.update(changes)
    return config


def text_encoder_config(**changes):
    config = {"hidden_size": HIDDEN, "vocab_size": VOCAB,
              "max_position_embeddings": MAX_LENGTH}
    config.update(changes)
    return config


def write_tokenizer_dir(directory, pad_token="<|endoftext|>", max_length=MAX_LENGTH):
    """A transformers tokenizer folder: clip_style's tokenizer.json and a
    tokenizer_config.json as CLIPTokenizer writes it."""
    os.makedirs(directory, exist_ok=True)
    shutil.copyfile(CLIP_STYLE_TOKENIZER, os.path.join(directory, "tokenizer.json"))
    config = {"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer",
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>"}
    if pad_token is not None:
        config["pad_token"] = pad_token
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return directory


def tiny_modules(seed=0):
    """(unet, text_encoder, vae), the same weights for the same seed."""
    torch.manual_seed(seed)
    return TinyUNet(), TinyTextEncoder(), TinyVae()


def make_tiny_pipeline_dir(repository, name, **options):
    """Exports the tiny pipeline to repository/name; returns the path.
    options go to export_pipeline (default: force=True)."""
    options.setdefault("force", True)
    unet, text_encoder, vae = tiny_modules()
    with tempfile.TemporaryDirectory(prefix="memaudit-tiny-tokenizer-") as tokenizer_dir:
        write_tokenizer_dir(tokenizer_dir)
        return export_diffusers.export_pipeline(
            unet, text_encoder, vae, scheduler_config(), unet_config(), vae_config(),
            tokenizer_dir, repository, name, text_encoder_config=text_encoder_config(),
            source="tools/export/make_tiny_pipeline_dir.py (tiny test modules)", **options)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        path = make_tiny_pipeline_dir(argv[1], argv[2])
    except export_diffusers.ExportError as e:
        print(f"make_tiny_pipeline_dir: error: {e}", file=sys.stderr)
        return 1
    print(os.path.abspath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
