"""Exports a diffusers Stable Diffusion pipeline to a memaudit model directory.

Usage:
  /usr/bin/python3 tools/export/export_diffusers.py --pipeline PATH_OR_ID \\
      --out REPOSITORY --name NAME [--dtype float32|float16|bfloat16] [--device cpu|cuda[:N]] \\
      [--batch 2] [--no-vae] [--force]

Writes REPOSITORY/NAME/ with config.pbtxt, model.pt (the UNet, forward(x, t, c)),
text_encoder.pt (forward(ids)), the tokenizer (tokenizer.json, or vocab.json and
merges.txt), vae_decoder.pt (forward(z), unless --no-vae) and README.md; see
docs/TEXT_TO_IMAGE.md §4. Every module is traced with torch.jit.trace, saved,
loaded back and compared with the eager module on new random inputs at batch
sizes other than the tracing one; the export fails, writing nothing, when they
disagree by more than the dtype's tolerance.

The core, export_pipeline(), takes plain torch modules with diffusers' and
transformers' call signatures and plain config dicts, so it runs (and is
tested, tools/export/test_export_diffusers.py) without diffusers; only main()
imports diffusers, to load the pipeline.
"""
import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

import torch

EXPORTER_VERSION = "1"

# The directory name rule of server/model_registry.cc (IsValidModelName).
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,128}")

PREDICTION_TYPES = {"epsilon": "EPSILON", "v_prediction": "V_PREDICTION", "sample": "SAMPLE"}
BETA_SCHEDULES = {
    "linear": "LINEAR",
    "scaled_linear": "SCALED_LINEAR",
    "squaredcos_cap_v2": "COSINE",
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Largest max|traced - eager| / max|eager| accepted. float32: the traced graph
# runs the same kernels as the eager module, so the two agree to rounding
# (~1e-7) unless a fuser reorders arithmetic; 1e-4 leaves three orders of
# magnitude for that. float16 has a unit roundoff of 2^-11 ≈ 4.9e-4, and a
# fuser that keeps a fused chain in float32 rounds once where eager rounds
# after every op, so through a network dozens of layers deep the two can drift
# by a few tens of ulps; 1e-2 (about 20 ulps of the output's scale) allows
# that while a baked batch size or a wrong data-dependent branch, which changes
# outputs by O(1) relative to their scale, still fails. bfloat16 keeps 8
# significant bits (unit roundoff 2^-8 ≈ 3.9e-3), 8× coarser than float16:
# the same argument gives 8e-2.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 8e-2}

# How messages name each traced file's module.
LABELS = {"model.pt": "model.pt (unet)", "text_encoder.pt": "text_encoder.pt (text encoder)",
          "vae_decoder.pt": "vae_decoder.pt (vae decoder)"}


class ExportError(Exception):
    """An export that cannot be done; the message says why."""


# --------------------------------------------------------------------------
# Configuration: diffusers / transformers config dicts to memaudit's contract.


def _as_dict(config, where):
    try:
        return dict(config)
    except (TypeError, ValueError):
        raise ExportError(f"{where}: expected a config dict, got {type(config).__name__}") \
            from None


def _get(config, key, where, kinds, hint=""):
    if not isinstance(config, dict):
        raise ExportError(f"{where}: expected a config dict, got {type(config).__name__}")
    if key not in config or config[key] is None:
        raise ExportError(f"{where}: missing key '{key}'{hint}")
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ExportError(f"{where}: '{key}' must be {names}, got {value!r}")
    return value


def _positive_int(config, key, where, hint=""):
    value = _get(config, key, where, (int, float), hint)
    if value != int(value) or value <= 0:
        raise ExportError(f"{where}: '{key}' must be a positive integer, got {value!r}")
    return int(value)


def translate_scheduler(scheduler_config):
    """prediction_type and noise_schedule fields from diffusers' scheduler config."""
    where = "scheduler config"
    if scheduler_config.get("trained_betas") is not None:
        raise ExportError(f"{where}: 'trained_betas' is set; memaudit's noise schedules are "
                          "LINEAR, SCALED_LINEAR and COSINE only, not an explicit beta list")
    if scheduler_config.get("rescale_betas_zero_snr"):
        raise ExportError(f"{where}: 'rescale_betas_zero_snr' is true; memaudit's schedules do "
                          "not rescale to zero terminal SNR")
    prediction = _get(scheduler_config, "prediction_type", where, str,
                      " (diffusers assumes 'epsilon' when it is absent; add the key to "
                      "scheduler_config.json if that is what the model was trained with)")
    if prediction not in PREDICTION_TYPES:
        raise ExportError(f"{where}: 'prediction_type' {prediction!r} is not supported "
                          f"(supported: {', '.join(sorted(PREDICTION_TYPES))})")
    schedule = _get(scheduler_config, "beta_schedule", where, str)
    if schedule not in BETA_SCHEDULES:
        raise ExportError(f"{where}: 'beta_schedule' {schedule!r} is not supported "
                          f"(supported: {', '.join(sorted(BETA_SCHEDULES))})")
    fields = {
        "prediction_type": PREDICTION_TYPES[prediction],
        "kind": BETA_SCHEDULES[schedule],
        "num_train_timesteps": _positive_int(scheduler_config, "num_train_timesteps", where),
    }
    if fields["num_train_timesteps"] < 2:
        raise ExportError(f"{where}: 'num_train_timesteps' must be at least 2")
    if fields["kind"] != "COSINE":
        for key in ("beta_start", "beta_end"):
            value = float(_get(scheduler_config, key, where, (int, float)))
            if not 0.0 < value < 1.0:
                raise ExportError(f"{where}: '{key}' must be in (0, 1), got {value!r}")
            fields[key] = value
        if fields["beta_start"] > fields["beta_end"]:
            raise ExportError(f"{where}: 'beta_start' ({fields['beta_start']}) exceeds "
                              f"'beta_end' ({fields['beta_end']})")
    return fields


def sample_shape_from(unet_config):
    where = "unet config"
    channels = _positive_int(unet_config, "in_channels", where)
    out_channels = unet_config.get("out_channels")
    if out_channels is not None and out_channels != channels:
        raise ExportError(f"{where}: 'out_channels' ({out_channels}) differs from 'in_channels' "
                          f"({channels}); memaudit needs an output of the input's shape")
    size = _get(unet_config, "sample_size", where, (int, list, tuple))
    if isinstance(size, int):
        size = [size, size]
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                 for s in size):
        raise ExportError(f"{where}: 'sample_size' must be a positive integer or [height, "
                          f"width], got {unet_config['sample_size']!r}")
    return [channels, size[0], size[1]]


def latent_from(vae_config, sample_shape):
    """(scaling_factor, image_shape) from diffusers' AutoencoderKL config."""
    where = "vae config"
    scaling = float(_get(vae_config, "scaling_factor", where, (int, float),
                         " (Stable Diffusion 1.x and 2.x VAEs use 0.18215; add the key to "
                         "vae/config.json if the checkpoint predates it)"))
    if not (math.isfinite(scaling) and scaling > 0):
        raise ExportError(f"{where}: 'scaling_factor' must be > 0, got {scaling!r}")
    blocks = _get(vae_config, "block_out_channels", where, (list, tuple))
    if not blocks:
        raise ExportError(f"{where}: 'block_out_channels' must not be empty")
    latent_channels = vae_config.get("latent_channels")
    if latent_channels is not None and latent_channels != sample_shape[0]:
        raise ExportError(f"{where}: 'latent_channels' ({latent_channels}) differs from the "
                          f"unet's 'in_channels' ({sample_shape[0]})")
    image_channels = vae_config.get("out_channels", 3)  # diffusers' AutoencoderKL default
    factor = 2 ** (len(blocks) - 1)
    return scaling, [int(image_channels), sample_shape[1] * factor, sample_shape[2] * factor]


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path}: not found ({what})") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: cannot read {what}: {e}") from None


def _token_text(token):
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(token, dict):
        return token.get("content")
    return token


def read_tokenizer(tokenizer_dir):
    """What the model directory needs from a transformers tokenizer folder.

    Returns a dict: files (names to copy), max_length, pad_token, pad_token_id,
    pad_source (where the pad token came from) and vocab_size (largest id + 1).
    """
    if not os.path.isdir(tokenizer_dir):
        raise ExportError(f"{tokenizer_dir}: tokenizer folder not found")
    config_path = os.path.join(tokenizer_dir, "tokenizer_config.json")
    config = _read_json(config_path, "the tokenizer's configuration")
    where = config_path
    max_length = _get(config, "model_max_length", where, (int, float))
    if max_length != int(max_length) or not 1 <= max_length <= 65536:
        raise ExportError(f"{where}: 'model_max_length' must be the text encoder's context "
                          f"length (77 for CLIP), got {max_length!r}")
    max_length = int(max_length)

    pad, pad_source = _token_text(config.get("pad_token")), "tokenizer_config.json pad_token"
    if pad is None:
        map_path = os.path.join(tokenizer_dir, "special_tokens_map.json")
        if os.path.exists(map_path):
            pad = _token_text(_read_json(map_path, "the special tokens").get("pad_token"))
            pad_source = "special_tokens_map.json pad_token"
    if pad is None:
        pad, pad_source = "<|endoftext|>", "CLIPTokenizer's default pad token (none declared)"

    vocab = {}
    tokenizer_json = os.path.join(tokenizer_dir, "tokenizer.json")
    if os.path.exists(tokenizer_json):
        files = ["tokenizer.json"]
        data = _read_json(tokenizer_json, "the tokenizer")
        model_vocab = (data.get("model") or {}).get("vocab")
        if not isinstance(model_vocab, dict):
            raise ExportError(f"{tokenizer_json}: 'model.vocab' is not a token -> id object")
        vocab.update(model_vocab)
        for added in data.get("added_tokens") or []:
            vocab[added["content"]] = added["id"]
    else:
        files = ["vocab.json", "merges.txt"]
        for name in files:
            if not os.path.exists(os.path.join(tokenizer_dir, name)):
                raise ExportError(f"{tokenizer_dir}: has neither tokenizer.json nor {name} "
                                  "(memaudit reads a tokenizer.json, or CLIP's vocab.json and "
                                  "merges.txt)")
        vocab.update(_read_json(os.path.join(tokenizer_dir, "vocab.json"), "the vocabulary"))
    for id_text, added in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(added, dict) and "content" in added:
            vocab.setdefault(added["content"], int(id_text))
    if pad not in vocab:
        raise ExportError(f"{tokenizer_dir}: the pad token {pad!r} ({pad_source}) is not in the "
                          "tokenizer's vocabulary")
    return {
        "files": files,
        "max_length": max_length,
        "pad_token": pad,
        "pad_token_id": int(vocab[pad]),
        "pad_source": pad_source,
        "vocab_size": max(int(i) for i in vocab.values()) + 1,
    }


def check_name(name):
    if not _NAME_PATTERN.fullmatch(name or "") or name in (".", ".."):
        raise ExportError(f"--name {name!r}: a model name is 1 to 128 characters from "
                          "A-Z a-z 0-9 _ . - and not '.' or '..' (the server's rule for "
                          "model directories)")


def _number(value):
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _shape(values):
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def format_config(name, sample_shape, scheduler, embedding_shape, pad_token_id, latent):
    """config.pbtxt's text (text format of memaudit.v1.ModelConfig)."""
    lines = [
        f"# Written by tools/export/export_diffusers.py (exporter version {EXPORTER_VERSION}); "
        "see README.md.",
        f'name: "{name}"',
        f"sample_shape: {_shape(sample_shape)}",
        f"prediction_type: {scheduler['prediction_type']}",
        "noise_schedule {",
        f"  kind: {scheduler['kind']}",
    ]
    if "beta_start" in scheduler:
        lines += [f"  beta_start: {_number(scheduler['beta_start'])}",
                  f"  beta_end: {_number(scheduler['beta_end'])}"]
    lines += [
        f"  num_train_timesteps: {scheduler['num_train_timesteps']}",
        "}",
        "conditioning {",
        "  kind: EMBEDDING",
        f"  embedding_shape: {_shape(embedding_shape)}",
        "  text_encoder {",
        f"    max_length: {embedding_shape[0]}",
        f"    pad_token_id: {pad_token_id}",
        "  }",
        "}",
    ]
    if latent is not None:
        scaling, image_shape = latent
        lines += ["latent {", f"  scaling_factor: {_number(scaling)}",
                  f"  image_shape: {_shape(image_shape)}", "}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Tracing.


def _first(output, attribute):
    """The tensor a diffusers/transformers module returns: a tuple's first
    element (return_dict=False), or the named field of an output object."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    if isinstance(output, dict) and attribute in output:
        return output[attribute]
    return getattr(output, attribute)


class UNetForMemaudit(torch.nn.Module):
    """forward(x [B,C,H,W], t [B] int64, c [B,L,D]) -> unet(x, t, c).sample."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, c):
        return _first(self.unet(x, t, encoder_hidden_states=c, return_dict=False), "sample")


class TextEncoderForMemaudit(torch.nn.Module):
    """forward(ids [B,L] int64) -> text_encoder(ids).last_hidden_state [B,L,D]."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids):
        return _first(self.text_encoder(ids, return_dict=False), "last_hidden_state")


class VaeDecoderForMemaudit(torch.nn.Module):
    """forward(z [B,C,H,W]) -> vae.decode(z).sample; z is already latent / scaling_factor."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return _first(self.vae.decode(z, return_dict=False), "sample")


def parse_device(text):
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError) as e:
        raise ExportError(f"--device {text!r}: not a device ({e}); use cpu, cuda or cuda:N") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ExportError(f"--device {text}: torch {torch.__version__} sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ExportError(f"--device {text}: only {torch.cuda.device_count()} CUDA "
                              "device(s) exist")
    elif device.type != "cpu":
        raise ExportError(f"--device {text}: only cpu and cuda are supported")
    return device


def check_dtype_on_device(dtype, device):
    """Refuses a dtype the device's kernels cannot run (float16 on CPU in older torch)."""
    if dtype == torch.float32:
        return
    try:
        with torch.no_grad():
            x = torch.randn(1, 4, 8, 8, device=device).to(dtype)
            y = torch.nn.functional.conv2d(x, torch.randn(4, 4, 3, 3, device=device).to(dtype))
            y = torch.nn.functional.group_norm(y, 2)
            y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
            y = y.flatten(2)
            y = torch.softmax(torch.bmm(y, y.transpose(1, 2)), -1)
            torch.nn.functional.layer_norm(torch.nn.functional.linear(y, y[0]), [4])
    except RuntimeError as e:
        raise ExportError(f"--dtype {_dtype_name(dtype)} --device {device}: torch "
                          f"{torch.__version__} cannot run {_dtype_name(dtype)} convolutions, "
                          f"norms and attention on {device.type} ({e}); export float32 on cpu, "
                          "or float16 with --device cuda") from None


def _dtype_name(dtype):
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))


def _prepare(module, device, dtype):
    module = module.to(device=device, dtype=dtype)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _trace(name, wrapper, inputs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
        except Exception as e:  # noqa: BLE001 - any tracing failure is reported, named
            raise ExportError(f"{name}: torch.jit.trace failed: {type(e).__name__}: {e}") \
                from None
    messages = sorted({str(w.message).split(". ")[0] for w in caught
                       if issubclass(w.category, torch.jit.TracerWarning)})
    if messages:
        # Often harmless (a shape turned into a constant); the check decides.
        print(f"  {name}: tracer warnings (values the trace keeps as constants; the check "
              f"below tests whether that matters): {'; '.join(messages[:5])}"
              + (f"; and {len(messages) - 5} more" if len(messages) > 5 else ""),
              file=sys.stderr)
    return traced


def compare(name, loaded, eager, cases, tolerance):
    """Runs the saved-and-loaded traced module and the eager one on each case
    ((label, inputs)); returns (max_abs, max_rel) over all cases or raises
    ExportError naming the module when they disagree."""
    worst_abs, worst_rel = 0.0, 0.0
    for label, inputs in cases:
        with torch.no_grad():
            expected = eager(*inputs)
            if not torch.isfinite(expected).all():
                raise ExportError(f"{name}: the eager module's output is not finite ({label}); "
                                  "in float16 some VAEs overflow: export float32, or use "
                                  "--no-vae")
            try:
                actual = loaded(*inputs)
            except Exception as e:  # noqa: BLE001 - the traced graph failing is the finding
                first = str(e).strip().splitlines()
                raise ExportError(
                    f"{name}: the traced module fails ({label}): {type(e).__name__}: "
                    f"{first[-1] if first else ''} -- the trace baked in something of the "
                    "tracing inputs (often the batch size)") from None
        if actual.shape != expected.shape:
            raise ExportError(f"{name}: the traced module returns shape {list(actual.shape)} "
                              f"but the eager one {list(expected.shape)} ({label}); the trace "
                              "baked in the tracing batch size")
        difference = (actual.double() - expected.double()).abs().max().item()
        scale = expected.double().abs().max().item()
        relative = difference / scale if scale > 0 else (0.0 if difference == 0 else math.inf)
        if not math.isfinite(difference):
            relative = math.inf
        print(f"  {name} [{label}]: max abs diff {difference:.3g}, rel {relative:.3g}")
        worst_abs, worst_rel = max(worst_abs, difference), max(worst_rel, relative)
        if relative > tolerance:
            raise ExportError(
                f"{name}: the traced module differs from the eager one ({label}): max abs "
                f"diff {difference:.3g}, relative {relative:.3g} > tolerance {tolerance:g}; "
                "the trace baked in a batch size or took one side of a data-dependent branch")
    return worst_abs, worst_rel


def _check_batches(batch):
    return [b for b in (1, 2, 3, batch + 1) if b != batch][:2]


# --------------------------------------------------------------------------
# The export.


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", here],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + (" (with uncommitted changes in tools/export)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _readme(name, source, dtype, device, scheduler_config, scheduler, tokenizer, latent,
            results, versions):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    steps_offset = scheduler_config.get("steps_offset", 0)
    spacing = scheduler_config.get("timestep_spacing", "leading")
    lines = [
        f"# {name}",
        "",
        "A memaudit model directory exported from a diffusers Stable Diffusion pipeline by "
        "tools/export/export_diffusers.py (docs/TEXT_TO_IMAGE.md §4).",
        "",
        f"- source: `{source}`",
        f"- dtype: {_dtype_name(dtype)}; traced on device: {device}. Serve it with "
        f"`memaudit-server --device {device.type}`: traced graphs can hold tensors created on "
        "the tracing device, so a trace made on one device type may fail on the other.",
        f"- exporter: version {EXPORTER_VERSION}, commit {_git_commit()}",
        f"- exported: {now}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        "",
        "## Files",
        "",
        "- `config.pbtxt`: memaudit.v1.ModelConfig",
        "- `model.pt`: the UNet, `forward(x [B,C,H,W], t [B] int64, c [B,L,D]) -> "
        "unet(x, t, encoder_hidden_states=c).sample`",
        "- `text_encoder.pt`: `forward(ids [B,L] int64) -> last_hidden_state [B,L,D]`",
        "- tokenizer: " + ", ".join(f"`{f}`" for f in tokenizer["files"]) +
        f" (pad token {tokenizer['pad_token']!r} = id {tokenizer['pad_token_id']}, "
        f"from {tokenizer['pad_source']})",
    ]
    if latent is not None:
        lines.append("- `vae_decoder.pt`: `forward(z) -> vae.decode(z).sample`; the server "
                     f"passes latent / scaling_factor ({_number(latent[0])})")
    else:
        lines.append("- no VAE decoder (exported with --no-vae): samples stay latents")
    lines += [
        "",
        "## Sampling",
        "",
        f"The scheduler config ({scheduler_config.get('_class_name', 'class not recorded')}) "
        f"has `steps_offset: {steps_offset}` and `timestep_spacing: {spacing}`. To sample on "
        f"the timesteps diffusers uses, request `SamplingOptions.steps_offset = {steps_offset}` "
        f"(the CLI's `--steps-offset {steps_offset}`; memaudit uses the \"leading\" spacing).",
    ]
    if spacing != "leading":
        lines.append(f"memaudit does not implement the {spacing!r} spacing, so its timesteps "
                     "differ from diffusers' for this scheduler.")
    lines += [
        "",
        "## Trace check",
        "",
        "Each traced module was saved, loaded back and compared with the eager module on new "
        "random inputs (batch sizes other than the tracing batch; the UNet at low and high "
        "timesteps). Largest differences, relative to the largest output magnitude:",
        "",
        "| file | max abs diff | max rel diff | tolerance |",
        "|---|---|---|---|",
    ]
    for file_name, (abs_diff, rel_diff, tolerance) in results.items():
        lines.append(f"| {file_name} | {abs_diff:.3g} | {rel_diff:.3g} | {tolerance:g} |")
    return "\n".join(lines) + "\n"


def _install(temp_dir, target, force):
    """Renames temp_dir to target; with force, replaces an existing target."""
    if not os.path.lexists(target):
        os.rename(temp_dir, target)
        return
    if not force:
        raise ExportError(f"{target}: already exists (pass --force to replace it)")
    # '~' is not allowed in model names, so the server never scans these.
    old = tempfile.mkdtemp(prefix=".memaudit-old~", dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(temp_dir, target)
    except OSError:
        os.rename(old, target)
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old)
    else:
        os.remove(old)


def export_pipeline(unet, text_encoder, vae, scheduler_config, unet_config, vae_config,
                    tokenizer_dir, out_dir, name, dtype=torch.float32, device="cpu", batch=2,
                    no_vae=False, force=False, text_encoder_config=None, source="unknown",
                    versions=None, seed=0):
    """Exports the modules to out_dir/name and returns that path.

    unet: called as unet(sample, timestep, encoder_hidden_states=..., return_dict=False)
      and returns a tuple whose first element (or an object whose .sample) is
      the output. text_encoder: text_encoder(ids, return_dict=False)[0] (or
      .last_hidden_state) is [B, L, D]. vae: vae.decode(z, return_dict=False)[0]
      (or .sample) is the image; unused with no_vae. The config dicts are
      diffusers' scheduler, unet and vae configs; text_encoder_config, when
      given, is transformers' (hidden_size is checked against the output).
      tokenizer_dir is a transformers tokenizer folder. dtype is torch.float32,
      torch.float16 or torch.bfloat16; device a torch device or its name.

    Raises ExportError, with nothing written, when a config lacks a key or
    holds an unsupported value, when the target exists (unless force), or when
    a traced module disagrees with its eager module.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ExportError(f"--dtype {dtype!r}: use float32, float16 or bfloat16")
        dtype = DTYPES[dtype]
    if dtype not in TOLERANCES:
        raise ExportError(f"dtype {dtype}: use torch.float32, torch.float16 or torch.bfloat16")
    if not isinstance(batch, int) or batch < 1:
        raise ExportError(f"--batch {batch!r}: must be a positive integer")
    check_name(name)
    target = os.path.join(out_dir, name)
    if os.path.lexists(target) and not force:
        raise ExportError(f"{target}: already exists (pass --force to replace it)")
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir}: not a directory")

    scheduler_config = _as_dict(scheduler_config, "scheduler config")
    unet_config = _as_dict(unet_config, "unet config")
    scheduler = translate_scheduler(scheduler_config)
    sample_shape = sample_shape_from(unet_config)
    latent = None if no_vae else latent_from(_as_dict(vae_config, "vae config"), sample_shape)
    tokenizer = read_tokenizer(tokenizer_dir)
    device = device if isinstance(device, torch.device) else parse_device(device)
    check_dtype_on_device(dtype, device)
    tolerance = TOLERANCES[dtype]

    generator = torch.Generator().manual_seed(seed)
    length = tokenizer["max_length"]
    vocab = tokenizer["vocab_size"]
    if text_encoder_config and text_encoder_config.get("vocab_size"):
        vocab = min(vocab, int(text_encoder_config["vocab_size"]))
    T = scheduler["num_train_timesteps"]

    def ids(b):
        return torch.randint(0, vocab, (b, length), generator=generator).to(device)

    def normal(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(device=device, dtype=dtype)

    def timesteps(b, low, high):
        return torch.randint(low, high, (b,), generator=generator).to(device)

    results = {}
    traced = {}
    with torch.no_grad():
        # Text encoder: its output fixes the embedding shape [L, D].
        label = LABELS["text_encoder.pt"]
        print(f"tracing {label} (batch {batch}, {length} ids) ...")
        text_wrapper = TextEncoderForMemaudit(_prepare(text_encoder, device, dtype))
        try:
            embedding = text_wrapper(ids(batch))
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{label}: the eager module fails on ids [{batch}, {length}]: "
                              f"{type(e).__name__}: {e}") from None
        if embedding.dim() != 3 or list(embedding.shape[:2]) != [batch, length]:
            raise ExportError(f"{label}: returns shape {list(embedding.shape)}, expected "
                              f"[{batch}, {length}, hidden_size]")
        hidden = int(embedding.shape[2])
        if text_encoder_config and text_encoder_config.get("hidden_size") not in (None, hidden):
            raise ExportError(f"text encoder config: 'hidden_size' is "
                              f"{text_encoder_config['hidden_size']} but the encoder returns "
                              f"{hidden} features")
        cross = unet_config.get("cross_attention_dim")
        if isinstance(cross, int) and cross != hidden:
            raise ExportError(f"unet config: 'cross_attention_dim' ({cross}) differs from the "
                              f"text encoder's hidden size ({hidden})")
        embedding_shape = [length, hidden]
        traced["text_encoder.pt"] = (_trace(label, text_wrapper, (ids(batch),)), text_wrapper)

        label = LABELS["model.pt"]
        print(f"tracing {label} (batch {batch}, sample {sample_shape}) ...")
        unet_wrapper = UNetForMemaudit(_prepare(unet, device, dtype))
        x = normal(batch, *sample_shape)
        c = normal(batch, *embedding_shape)
        t = timesteps(batch, 0, T)
        try:
            out = unet_wrapper(x, t, c)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{label}: the eager module fails on x {list(x.shape)}, "
                              f"t [{batch}], c {list(c.shape)}: {type(e).__name__}: {e}") \
                from None
        if out.shape != x.shape:
            raise ExportError(f"{label}: returns shape {list(out.shape)} for input "
                              f"{list(x.shape)}; memaudit needs the input's shape")
        traced["model.pt"] = (_trace(label, unet_wrapper, (x, t, c)), unet_wrapper)

        if latent is not None:
            scaling, image_shape = latent
            label = LABELS["vae_decoder.pt"]
            print(f"tracing {label} (batch {batch}) ...")
            vae_wrapper = VaeDecoderForMemaudit(_prepare(vae, device, dtype))
            z = normal(batch, *sample_shape, scale=1.0 / scaling)
            try:
                image = vae_wrapper(z)
            except Exception as e:  # noqa: BLE001
                raise ExportError(f"{label}: the eager module fails on z {list(z.shape)}: "
                                  f"{type(e).__name__}: {e}") from None
            if list(image.shape) != [batch] + image_shape:
                raise ExportError(f"{label}: returns shape {list(image.shape)}, but the vae "
                                  f"config gives {[batch] + image_shape} (out_channels, "
                                  "sample_size × 2^(len(block_out_channels) − 1))")
            traced["vae_decoder.pt"] = (_trace(label, vae_wrapper, (z,)), vae_wrapper)

    created_repo = not os.path.exists(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # '~' is not allowed in model names, so a server scanning the repository
    # never loads the half-written directory.
    temp_dir = tempfile.mkdtemp(prefix=".memaudit-export~", dir=out_dir)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_dir, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from a server user
        for file_name, (module, _) in traced.items():
            module.save(os.path.join(temp_dir, file_name))
        for file_name in tokenizer["files"]:
            shutil.copyfile(os.path.join(tokenizer_dir, file_name),
                            os.path.join(temp_dir, file_name))

        check_batches = _check_batches(batch)
        print(f"checking the saved modules against the eager ones at batch sizes "
              f"{check_batches} (traced at {batch}); tolerance {tolerance:g} relative")
        low, high = (0, max(1, T // 10)), (T - max(1, T // 10), T)
        for file_name, (_, eager) in traced.items():
            loaded = torch.jit.load(os.path.join(temp_dir, file_name), map_location=device)
            cases = []
            for b in check_batches:
                if file_name == "model.pt":
                    for where, (lo, hi) in (("low t", low), ("high t", high)):
                        cases.append((f"batch {b}, {where}",
                                      (normal(b, *sample_shape), timesteps(b, lo, hi),
                                       normal(b, *embedding_shape))))
                elif file_name == "text_encoder.pt":
                    cases.append((f"batch {b}, random ids", (ids(b),)))
                    padded = torch.full((b, length), tokenizer["pad_token_id"], dtype=torch.long)
                    padded[:, : length // 2] = ids(b)[:, : length // 2].cpu()
                    cases.append((f"batch {b}, padded ids", (padded.to(device),)))
                else:
                    for draw in (1, 2):
                        cases.append((f"batch {b}, draw {draw}",
                                      (normal(b, *sample_shape, scale=1.0 / latent[0]),)))
            with torch.no_grad():
                abs_diff, rel_diff = compare(LABELS[file_name], loaded, eager, cases, tolerance)
            results[file_name] = (abs_diff, rel_diff, tolerance)

        config_text = format_config(name, sample_shape, scheduler, embedding_shape,
                                    tokenizer["pad_token_id"], latent)
        all_versions = {"torch": torch.__version__}
        all_versions.update(versions or {})
        readme = _readme(name, source, dtype, device, scheduler_config, scheduler,
                         tokenizer, latent, results, all_versions)
        with open(os.path.join(temp_dir, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config_text)
        with open(os.path.join(temp_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(readme)
        _install(temp_dir, target, force)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        if created_repo:
            try:
                os.rmdir(out_dir)
            except OSError:
                pass
        raise
    print(f"wrote {target}")
    return target


# --------------------------------------------------------------------------
# Command line: loads the pipeline with diffusers.


def load_pipeline(path_or_id, dtype):
    """The diffusers pipeline and the folder holding its tokenizer files.

    Returns (pipeline, tokenizer_dir, cleanup_dir or None)."""
    try:
        import diffusers  # noqa: F401 - imported lazily: the core does not need it
        from diffusers import StableDiffusionPipeline
    except ImportError as e:
        raise ExportError(f"diffusers is not installed ({e}); install diffusers and "
                          "transformers (pip install diffusers transformers) to load a "
                          "pipeline, or call export_pipeline() with your own modules") from None
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(path_or_id, torch_dtype=dtype,
                                                           safety_checker=None)
    except Exception as e:  # noqa: BLE001 - loading errors are diffusers' own
        raise ExportError(f"--pipeline {path_or_id}: diffusers could not load it: "
                          f"{type(e).__name__}: {e}") from None
    local = os.path.join(path_or_id, "tokenizer")
    if os.path.isfile(os.path.join(local, "tokenizer_config.json")):
        return pipeline, local, None
    # A hub id (or a folder without tokenizer files): let transformers write them.
    temp = tempfile.mkdtemp(prefix="memaudit-tokenizer-")
    pipeline.tokenizer.save_pretrained(temp)
    return pipeline, temp, temp


def _config_dict(config):
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config)


def _versions():
    versions = {}
    for module in ("diffusers", "transformers"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            pass
    return versions


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a diffusers Stable Diffusion pipeline to a memaudit model "
        "directory (docs/TEXT_TO_IMAGE.md §4).")
    parser.add_argument("--pipeline", required=True,
                        help="local diffusers folder or Hugging Face model id")
    parser.add_argument("--out", required=True, help="the model repository directory")
    parser.add_argument("--name", required=True, help="the model's directory name")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch", type=int, default=2, help="tracing batch size (default 2)")
    parser.add_argument("--no-vae", action="store_true",
                        help="do not export vae_decoder.pt (nor the latent config)")
    parser.add_argument("--force", action="store_true", help="replace an existing directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cleanup = None
    try:
        check_name(args.name)
        target = os.path.join(args.out, args.name)
        if os.path.lexists(target) and not args.force:
            raise ExportError(f"{target}: already exists (pass --force to replace it)")
        device = parse_device(args.device)
        dtype = DTYPES[args.dtype]
        check_dtype_on_device(dtype, device)
        pipeline, tokenizer_dir, cleanup = load_pipeline(args.pipeline, dtype)
        export_pipeline(
            pipeline.unet, pipeline.text_encoder, None if args.no_vae else pipeline.vae,
            _config_dict(pipeline.scheduler.config), _config_dict(pipeline.unet.config),
            None if args.no_vae else _config_dict(pipeline.vae.config), tokenizer_dir,
            args.out, args.name, dtype=dtype, device=device, batch=args.batch,
            no_vae=args.no_vae, force=args.force,
            text_encoder_config=_config_dict(pipeline.text_encoder.config),
            source=args.pipeline, versions=_versions())
    except ExportError as e:
        print(f"export_diffusers: error: {e}", file=sys.stderr)
        return 1
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
