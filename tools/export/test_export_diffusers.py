"""Tests for tools/export/export_diffusers.py.

Run: /usr/bin/python3 tools/export/test_export_diffusers.py -v

diffusers and transformers are not installed on the build machines, so the
exporter is tested on tiny torch modules with their call signatures
(make_tiny_pipeline_dir.py) and, for main(), a stand-in `diffusers` module.
config.pbtxt is read twice: by a small text-format reader checked against
the field names and enum values declared in model_config.proto, and, when
python3-protobuf is importable and protoc is on PATH, by protobuf itself
from code protoc generates at test time; both readings must agree.
"""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import unittest
from unittest import mock

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_diffusers as ed  # noqa: E402
import make_tiny_pipeline_dir as tiny  # noqa: E402

PROTO_ROOT = os.path.join(tiny.REPO_ROOT, "proto")
PROTO = os.path.join(PROTO_ROOT, "memaudit", "v1", "model_config.proto")


@contextlib.contextmanager
def quiet():
    """Keeps the exporter's progress lines out of the test output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


# --------------------------------------------------------------------------
# Reading config.pbtxt.


def parse_text_format(text):
    """A text-format message as {field: [values]}; messages are dicts, enums
    and identifiers strings. Enough for config.pbtxt: fields, nested
    messages, [a, b] lists, strings, numbers, # comments."""
    tokens = [t for t in re.findall(r'"(?:[^"\\]|\\.)*"|#[^\n]*|[{}\[\]:,]|[^\s{}\[\]:,"#]+',
                                    text) if not t.startswith("#")]
    position = 0

    def scalar(token):
        if token.startswith('"'):
            return json.loads(token)
        for kind in (int, float):
            try:
                return kind(token)
            except ValueError:
                pass
        if not re.fullmatch(r"[A-Za-z_]\w*", token):
            raise ValueError(f"not a value: {token!r}")
        return token

    def message(closing):
        nonlocal position
        fields = {}
        while position < len(tokens) and tokens[position] != closing:
            name = tokens[position]
            if not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise ValueError(f"not a field name: {name!r}")
            position += 1
            if tokens[position] == ":":
                position += 1
            token = tokens[position]
            if token == "{":
                position += 1
                fields.setdefault(name, []).append(message("}"))
                position += 1
            elif token == "[":
                position += 1
                values = []
                while tokens[position] != "]":
                    values.append(scalar(tokens[position]))
                    position += 1
                    if tokens[position] == ",":
                        position += 1
                position += 1
                fields.setdefault(name, []).extend(values)
            else:
                fields.setdefault(name, []).append(scalar(token))
                position += 1
        if closing is None and position != len(tokens):
            raise ValueError(f"unexpected {tokens[position]!r}")
        return fields

    return message(None)


def proto_schema(path):
    """(messages, enums) declared in a .proto: messages[name][field] =
    (type, repeated); enums[qualified name] = set of value names."""
    messages, enums, stack = {}, {}, []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        line = line.split("//")[0]
        opened = re.match(r"\s*(message|enum)\s+(\w+)\s*\{", line)
        if opened:
            kind, name = opened.groups()
            qualified = ".".join([n for _, n in stack] + [name])
            stack.append((kind, name))
            if kind == "message":
                messages[qualified] = {}
            else:
                enums[qualified] = set()
            continue
        if re.match(r"\s*\}", line):
            stack.pop()
            continue
        if not stack:
            continue
        scope = ".".join(n for _, n in stack)
        if stack[-1][0] == "enum":
            value = re.match(r"\s*(\w+)\s*=\s*-?\d+\s*;", line)
            if value:
                enums[scope].add(value.group(1))
        else:
            field = re.match(r"\s*(optional\s+|repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+", line)
            if field:
                label, kind, name = field.groups()
                messages[scope][name] = (kind, (label or "").strip() == "repeated")
    return messages, enums


def check_schema(fields, message, schema):
    """Every field of the parsed text exists in `message` with a value of its type."""
    messages, enums = schema
    for name, values in fields.items():
        declared = messages[message]
        if name not in declared:
            raise AssertionError(f"{message} has no field {name!r}")
        kind, repeated = declared[name]
        if not repeated and len(values) != 1:
            raise AssertionError(f"{message}.{name} is not repeated but set {len(values)} times")
        for enum in (f"{message}.{kind}", kind):
            if enum in enums:
                for value in values:
                    if value not in enums[enum]:
                        raise AssertionError(f"{message}.{name}: {value!r} is not a {enum}")
                break
        else:
            if kind in messages:
                for value in values:
                    check_schema(value, kind, schema)
            elif kind in ("int64", "int32"):
                if not all(isinstance(v, int) for v in values):
                    raise AssertionError(f"{message}.{name}: {values} are not integers")
            elif kind in ("double", "float"):
                if not all(isinstance(v, (int, float)) for v in values):
                    raise AssertionError(f"{message}.{name}: {values} are not numbers")
            elif kind == "string":
                if not all(isinstance(v, str) for v in values):
                    raise AssertionError(f"{message}.{name}: {values} are not strings")
            else:
                raise AssertionError(f"{message}.{name}: type {kind} not known to this test")


def normalize_text(fields):
    """The fields the exporter writes, proto3 defaults filled in."""
    def one(message, name, default):
        return message.get(name, [default])[0]

    schedule = one(fields, "noise_schedule", {})
    conditioning = one(fields, "conditioning", {})
    encoder = one(conditioning, "text_encoder", {})
    latent = fields.get("latent")
    return {
        "name": one(fields, "name", ""),
        "sample_shape": fields.get("sample_shape", []),
        "prediction_type": one(fields, "prediction_type", "PREDICTION_TYPE_UNSPECIFIED"),
        "noise_schedule": {
            "kind": one(schedule, "kind", "KIND_UNSPECIFIED"),
            "beta_start": float(one(schedule, "beta_start", 0.0)),
            "beta_end": float(one(schedule, "beta_end", 0.0)),
            "num_train_timesteps": one(schedule, "num_train_timesteps", 0),
        },
        "conditioning": {
            "kind": one(conditioning, "kind", "KIND_UNSPECIFIED"),
            "embedding_shape": conditioning.get("embedding_shape", []),
            "max_length": one(encoder, "max_length", 0) if encoder else None,
            "pad_token_id": one(encoder, "pad_token_id", None) if encoder else None,
        },
        "latent": None if latent is None else {
            "scaling_factor": float(one(latent[0], "scaling_factor", 0.0)),
            "image_shape": latent[0].get("image_shape", []),
        },
    }


_PROTOBUF = {}


def protobuf_module():
    """model_config_pb2 generated by protoc at test time, or None when
    python3-protobuf or protoc is missing."""
    if "module" in _PROTOBUF:
        return _PROTOBUF["module"]
    _PROTOBUF["module"] = None
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        return None
    protoc = shutil.which("protoc")
    if not protoc:
        return None
    out = tempfile.mkdtemp(prefix="memaudit-export-test-pb-")
    _PROTOBUF["dir"] = out
    subprocess.run([protoc, f"--proto_path={PROTO_ROOT}", f"--python_out={out}",
                    "memaudit/v1/model_config.proto"], check=True)
    sys.path.insert(0, out)
    from memaudit.v1 import model_config_pb2
    _PROTOBUF["module"] = model_config_pb2
    return model_config_pb2


def normalize_protobuf(message, pb):
    schedule, conditioning = message.noise_schedule, message.conditioning
    encoder = conditioning.text_encoder
    return {
        "name": message.name,
        "sample_shape": list(message.sample_shape),
        "prediction_type": pb.PredictionType.Name(message.prediction_type),
        "noise_schedule": {
            "kind": pb.NoiseSchedule.Kind.Name(schedule.kind),
            "beta_start": schedule.beta_start,
            "beta_end": schedule.beta_end,
            "num_train_timesteps": schedule.num_train_timesteps,
        },
        "conditioning": {
            "kind": pb.Conditioning.Kind.Name(conditioning.kind),
            "embedding_shape": list(conditioning.embedding_shape),
            "max_length": encoder.max_length if conditioning.HasField("text_encoder") else None,
            "pad_token_id": encoder.pad_token_id if encoder.HasField("pad_token_id") else None,
        },
        "latent": None if not message.HasField("latent") else {
            "scaling_factor": message.latent.scaling_factor,
            "image_shape": list(message.latent.image_shape),
        },
    }


def read_config(path):
    """config.pbtxt as normalize_text's dict, checked against the .proto."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fields = parse_text_format(text)
    check_schema(fields, "ModelConfig", proto_schema(PROTO))
    config = normalize_text(fields)
    pb = protobuf_module()
    if pb is not None:
        from google.protobuf import text_format
        message = text_format.Parse(text, pb.ModelConfig())
        assert normalize_protobuf(message, pb) == config, (normalize_protobuf(message, pb), config)
    return config


# --------------------------------------------------------------------------
# Modules the check must catch.


def _wrap(out, return_dict):
    return tiny.UNet2DConditionOutput(sample=out) if return_dict else (out,)


class BakedBatchUNet(tiny.TinyUNet):
    """Adds a zero tensor whose batch size int() turns into a trace constant."""

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        out = super().forward(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        return _wrap(out + torch.zeros(int(sample.shape[0]), *out.shape[1:]), return_dict)


class DividedByBatchUNet(tiny.TinyUNet):
    """Divides by the batch size as a Python float: right shape, wrong values."""

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        out = super().forward(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        return _wrap(out / float(sample.shape[0]), return_dict)


class TimestepBranchUNet(tiny.TinyUNet):
    """A Python branch on the timesteps: the trace keeps one side."""

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        out = super().forward(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        if float(timestep.float().mean()) > 500:
            out = -out
        return _wrap(out, return_dict)


class IdsBranchTextEncoder(tiny.TinyTextEncoder):
    """A Python branch on the ids (padded prompts have a high mean id)."""

    def forward(self, input_ids, return_dict=True):
        h, pooled = super().forward(input_ids, return_dict=False)
        if float(input_ids.float().mean()) > 1000:
            h = h * 2
        return (h, pooled) if not return_dict else tiny.BaseModelOutputWithPooling(h, pooled)


class BakedBatchVae(tiny.TinyVae):
    def decode(self, z, return_dict=True):
        image = super().decode(z, return_dict=False)[0]
        image = image + torch.zeros(int(z.shape[0]), *image.shape[1:])
        return tiny.DecoderOutput(sample=image) if return_dict else (image,)


# --------------------------------------------------------------------------
# A stand-in for the diffusers package, for main().


class FrozenDict(dict):
    """diffusers' FrozenDict: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class PretrainedConfig:
    def __init__(self, values):
        self._values = dict(values)

    def to_dict(self):
        return dict(self._values)


class FakeTokenizer:
    def save_pretrained(self, directory):
        tiny.write_tokenizer_dir(directory)


def fake_diffusers(calls):
    module = types.ModuleType("diffusers")
    module.__version__ = "0.0.0-test"

    class StableDiffusionPipeline:
        @classmethod
        def from_pretrained(cls, path_or_id, torch_dtype=None, safety_checker=None):
            calls.append((path_or_id, torch_dtype))
            pipeline = cls()
            pipeline.unet, pipeline.text_encoder, pipeline.vae = tiny.tiny_modules()
            pipeline.unet.config = FrozenDict(tiny.unet_config())
            pipeline.vae.config = FrozenDict(tiny.vae_config())
            pipeline.text_encoder.config = PretrainedConfig(tiny.text_encoder_config())
            pipeline.scheduler = types.SimpleNamespace(config=FrozenDict(tiny.scheduler_config()))
            pipeline.tokenizer = FakeTokenizer()
            return pipeline

    module.StableDiffusionPipeline = StableDiffusionPipeline
    return module


# --------------------------------------------------------------------------


class ExportTestCase(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="memaudit-export-test-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.repo = os.path.join(self.work, "repo")
        self.tokenizer_dir = tiny.write_tokenizer_dir(os.path.join(self.work, "tokenizer"))

    def export(self, name="tiny", modules=None, scheduler=None, unet_cfg=None, vae_cfg=None,
               tokenizer_dir=None, **options):
        unet, text_encoder, vae = tiny.tiny_modules()
        if modules:
            unet = modules.get("unet", unet)
            text_encoder = modules.get("text_encoder", text_encoder)
            vae = modules.get("vae", vae)
        options.setdefault("text_encoder_config", tiny.text_encoder_config())
        with quiet() as (out, _):
            path = ed.export_pipeline(
                unet, text_encoder, vae, scheduler or tiny.scheduler_config(),
                unet_cfg or tiny.unet_config(), vae_cfg or tiny.vae_config(),
                tokenizer_dir or self.tokenizer_dir, self.repo, name, **options)
        self.last_output = out.getvalue()
        return path

    def assertExportFails(self, *patterns, **kwargs):
        before = sorted(os.listdir(self.repo)) if os.path.isdir(self.repo) else None
        with self.assertRaises(ed.ExportError) as raised:
            self.export(**kwargs)
        message = str(raised.exception)
        for pattern in patterns:
            self.assertIn(pattern, message)
        after = sorted(os.listdir(self.repo)) if os.path.isdir(self.repo) else None
        self.assertEqual(before, after, "a failed export left something in the repository")
        return message


class ExportTest(ExportTestCase):
    def test_writes_the_model_directory(self):
        path = self.export()
        self.assertEqual(path, os.path.join(self.repo, "tiny"))
        self.assertEqual(sorted(os.listdir(self.repo)), ["tiny"], "temporary directories left")
        self.assertEqual(sorted(os.listdir(path)),
                         ["README.md", "config.pbtxt", "model.pt", "text_encoder.pt",
                          "tokenizer.json", "vae_decoder.pt"])
        with open(os.path.join(path, "tokenizer.json"), "rb") as a, \
                open(tiny.CLIP_STYLE_TOKENIZER, "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o777 & ~_umask())

    def test_config_values_sd1_like(self):
        config = read_config(os.path.join(self.export(name="sd1-like"), "config.pbtxt"))
        self.assertEqual(config, {
            "name": "sd1-like",
            "sample_shape": [4, 8, 8],
            "prediction_type": "EPSILON",
            "noise_schedule": {"kind": "SCALED_LINEAR", "beta_start": 0.00085,
                               "beta_end": 0.012, "num_train_timesteps": 1000},
            "conditioning": {"kind": "EMBEDDING", "embedding_shape": [77, 32],
                             "max_length": 77, "pad_token_id": 1898},
            "latent": {"scaling_factor": 0.18215, "image_shape": [3, 32, 32]},
        })

    def test_config_values_sd2_like(self):
        # SD 2.x: v-prediction, CLIP's vocab.json + merges.txt, pad "!" = 0
        # declared in special_tokens_map.json only.
        folder = os.path.join(self.work, "sd2_tokenizer")
        os.makedirs(folder)
        with open(tiny.CLIP_STYLE_TOKENIZER, encoding="utf-8") as f:
            model = json.load(f)["model"]
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(model["vocab"], f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(model["merges"]) + "\n")
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"model_max_length": 77, "unk_token": "<|endoftext|>"}, f)
        with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump({"pad_token": {"content": "!", "lstrip": False}}, f)
        scheduler = tiny.scheduler_config(prediction_type="v_prediction", beta_schedule="linear",
                                          beta_start=0.0001, beta_end=0.02)
        path = self.export(name="sd2", scheduler=scheduler, tokenizer_dir=folder,
                           unet_cfg=tiny.unet_config(sample_size=[8, 12]))
        self.assertEqual(sorted(f for f in os.listdir(path) if not f.endswith(".pt")),
                         ["README.md", "config.pbtxt", "merges.txt", "vocab.json"])
        config = read_config(os.path.join(path, "config.pbtxt"))
        self.assertEqual(config["prediction_type"], "V_PREDICTION")
        self.assertEqual(config["noise_schedule"], {"kind": "LINEAR", "beta_start": 0.0001,
                                                    "beta_end": 0.02,
                                                    "num_train_timesteps": 1000})
        self.assertEqual(config["conditioning"]["pad_token_id"], 0)
        self.assertEqual(config["sample_shape"], [4, 8, 12])
        self.assertEqual(config["latent"]["image_shape"], [3, 32, 48])

    def test_cosine_and_sample_prediction(self):
        scheduler = tiny.scheduler_config(beta_schedule="squaredcos_cap_v2",
                                          prediction_type="sample", num_train_timesteps=500)
        config = read_config(os.path.join(self.export(scheduler=scheduler), "config.pbtxt"))
        self.assertEqual(config["prediction_type"], "SAMPLE")
        self.assertEqual(config["noise_schedule"], {"kind": "COSINE", "beta_start": 0.0,
                                                    "beta_end": 0.0, "num_train_timesteps": 500})

    def test_no_vae(self):
        path = self.export(no_vae=True, vae_cfg={"unused": True})
        self.assertNotIn("vae_decoder.pt", os.listdir(path))
        self.assertIsNone(read_config(os.path.join(path, "config.pbtxt"))["latent"])

    def test_saved_modules_equal_eager_on_new_batch_sizes(self):
        path = self.export()
        unet, text_encoder, vae = tiny.tiny_modules()
        generator = torch.Generator().manual_seed(1234)
        model = torch.jit.load(os.path.join(path, "model.pt"))
        encoder = torch.jit.load(os.path.join(path, "text_encoder.pt"))
        decoder = torch.jit.load(os.path.join(path, "vae_decoder.pt"))
        self.assertEqual([a.name for a in model.forward.schema.arguments], ["self", "x", "t", "c"])
        self.assertEqual(len(encoder.forward.schema.arguments), 2)
        self.assertEqual(len(decoder.forward.schema.arguments), 2)
        with torch.no_grad():
            for batch in (4, 5):
                ids = torch.randint(0, tiny.VOCAB, (batch, 77), generator=generator)
                embedding = text_encoder(ids).last_hidden_state
                torch.testing.assert_close(encoder(ids), embedding, rtol=1e-5, atol=1e-6)
                x = torch.randn(batch, 4, 8, 8, generator=generator)
                for t in (torch.full((batch,), 3), torch.full((batch,), 987)):
                    torch.testing.assert_close(model(x, t, embedding), unet(x, t, embedding).sample,
                                               rtol=1e-5, atol=1e-6)
                z = torch.randn(batch, 4, 8, 8, generator=generator) / 0.18215
                image = decoder(z)
                self.assertEqual(list(image.shape), [batch, 3, 32, 32])
                torch.testing.assert_close(image, vae.decode(z).sample, rtol=1e-5, atol=1e-6)

    def test_tiny_modules_use_every_input(self):
        unet, text_encoder, _ = tiny.tiny_modules()
        x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.randn(2, 77, 32)
        with torch.no_grad():
            base = unet(x, t, c).sample
            for changed in ((x + 1, t, c), (x, t + 50, c), (x, t, c + 1)):
                self.assertFalse(torch.allclose(unet(*changed).sample, base))
            ids = torch.randint(0, tiny.VOCAB, (2, 77))
            self.assertIsInstance(text_encoder(ids), tiny.BaseModelOutputWithPooling)
            self.assertIsInstance(text_encoder(ids, return_dict=False), tuple)

    def test_other_tracing_batch_sizes(self):
        self.assertEqual(ed._check_batches(2), [1, 3])
        self.assertEqual(ed._check_batches(1), [2, 3])
        self.assertEqual(ed._check_batches(3), [1, 2])
        self.export(batch=1)
        self.assertIn("at batch sizes [2, 3] (traced at 1)", self.last_output)
        self.assertIn("batch 3, high t", self.last_output)

    def test_readme(self):
        with open(os.path.join(self.export(), "README.md"), encoding="utf-8") as f:
            readme = f.read()
        for expected in ("- source: `unknown`", "dtype: float32", "traced on device: cpu",
                         f"exporter: version {ed.EXPORTER_VERSION}, commit ",
                         "`steps_offset: 1`", "SamplingOptions.steps_offset = 1",
                         f"torch {torch.__version__}"):
            self.assertIn(expected, readme)
        for file_name in ("model.pt", "text_encoder.pt", "vae_decoder.pt"):
            self.assertRegex(readme, rf"\| {file_name} \| [0-9.e+-]+ \| [0-9.e+-]+ \| 0.0001 \|")


class CheckTest(ExportTestCase):
    """Traced modules that do not generalize are caught and named."""

    def setUp(self):
        super().setUp()
        os.makedirs(os.path.join(self.repo, "other"))

    def test_baked_batch_size_that_changes_the_shape(self):
        message = self.assertExportFails("model.pt (unet)", "returns shape [2, 4, 8, 8]",
                                         "batch 1", modules={"unet": BakedBatchUNet()})
        self.assertIn("baked in the tracing batch size", message)

    def test_baked_batch_size_that_changes_the_values(self):
        self.assertExportFails("model.pt (unet)", "differs from the eager one", "batch 1",
                               "tolerance 0.0001", modules={"unet": DividedByBatchUNet()})

    def test_data_dependent_timestep_branch(self):
        self.assertExportFails("model.pt (unet)", "differs from the eager one", " t)",
                               modules={"unet": TimestepBranchUNet()})

    def test_data_dependent_text_encoder_branch(self):
        self.assertExportFails("text_encoder.pt", "padded ids",
                               modules={"text_encoder": IdsBranchTextEncoder()})

    def test_baked_batch_size_in_the_vae(self):
        self.assertExportFails("vae_decoder.pt (vae decoder)", "returns shape [2, 3, 32, 32]",
                               "batch 1", modules={"vae": BakedBatchVae()})

    def test_a_repository_it_created_is_removed_on_failure(self):
        self.repo = os.path.join(self.work, "new_repo")
        self.assertExportFails("model.pt", modules={"unet": DividedByBatchUNet()})
        self.assertFalse(os.path.exists(self.repo))


class ConfigErrorTest(ExportTestCase):
    def test_unknown_scheduler_values(self):
        for key, value in (("beta_schedule", "sigmoid"), ("prediction_type", "flow"),
                           ("prediction_type", "v-prediction")):
            with self.subTest(key=key, value=value):
                self.assertExportFails(f"'{key}' {value!r} is not supported",
                                       scheduler=tiny.scheduler_config(**{key: value}))

    def test_unsupported_scheduler_features(self):
        self.assertExportFails("'trained_betas'",
                               scheduler=tiny.scheduler_config(trained_betas=[0.1] * 1000))
        self.assertExportFails("'rescale_betas_zero_snr'",
                               scheduler=tiny.scheduler_config(rescale_betas_zero_snr=True))

    def test_bad_scheduler_values(self):
        for changes, pattern in (({"beta_start": 0.0}, "'beta_start' must be in (0, 1)"),
                                 ({"beta_end": 1.5}, "'beta_end' must be in (0, 1)"),
                                 ({"beta_start": 0.1}, "'beta_start' (0.1) exceeds"),
                                 ({"num_train_timesteps": 1.5}, "positive integer"),
                                 ({"beta_schedule": 3}, "'beta_schedule' must be str")):
            with self.subTest(changes=changes):
                self.assertExportFails(pattern, scheduler=tiny.scheduler_config(**changes))

    def test_missing_keys_are_named(self):
        def without(config, key):
            config = dict(config)
            del config[key]
            return config

        for key in ("prediction_type", "beta_schedule", "num_train_timesteps", "beta_start",
                    "beta_end"):
            with self.subTest(config="scheduler", key=key):
                self.assertExportFails("scheduler config: missing key", repr(key),
                                       scheduler=without(tiny.scheduler_config(), key))
        for key in ("in_channels", "sample_size"):
            with self.subTest(config="unet", key=key):
                self.assertExportFails("unet config: missing key", repr(key),
                                       unet_cfg=without(tiny.unet_config(), key))
        for key in ("scaling_factor", "block_out_channels"):
            with self.subTest(config="vae", key=key):
                self.assertExportFails("vae config: missing key", repr(key),
                                       vae_cfg=without(tiny.vae_config(), key))
        folder = os.path.join(self.work, "no_max_length")
        tiny.write_tokenizer_dir(folder)
        os.remove(os.path.join(folder, "tokenizer_config.json"))
        self.assertExportFails("tokenizer_config.json: not found", tokenizer_dir=folder)
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"pad_token": "<|endoftext|>"}, f)
        self.assertExportFails("missing key 'model_max_length'", tokenizer_dir=folder)

    def test_prediction_type_has_no_silent_default(self):
        message = self.assertExportFails(
            "'prediction_type'", scheduler={k: v for k, v in tiny.scheduler_config().items()
                                            if k != "prediction_type"})
        self.assertIn("diffusers assumes 'epsilon'", message)

    def test_tokenizer_problems(self):
        folder = tiny.write_tokenizer_dir(os.path.join(self.work, "t1"), max_length=int(1e30))
        self.assertExportFails("'model_max_length' must be", tokenizer_dir=folder)
        folder = tiny.write_tokenizer_dir(os.path.join(self.work, "t2"), pad_token="<pad>")
        self.assertExportFails("the pad token '<pad>'", "not in the tokenizer's vocabulary",
                               tokenizer_dir=folder)
        folder = os.path.join(self.work, "t3")
        tiny.write_tokenizer_dir(folder)
        os.remove(os.path.join(folder, "tokenizer.json"))
        self.assertExportFails("neither tokenizer.json nor vocab.json", tokenizer_dir=folder)
        folder = tiny.write_tokenizer_dir(os.path.join(self.work, "t4"), pad_token=None)
        config = read_config(os.path.join(self.export(tokenizer_dir=folder), "config.pbtxt"))
        self.assertEqual(config["conditioning"]["pad_token_id"], 1898)  # CLIPTokenizer's default

    def test_inconsistent_configs(self):
        self.assertExportFails("'cross_attention_dim' (768) differs",
                               unet_cfg=tiny.unet_config(cross_attention_dim=768))
        self.assertExportFails("'hidden_size' is 768",
                               text_encoder_config=tiny.text_encoder_config(hidden_size=768))
        self.assertExportFails("'out_channels' (8) differs",
                               unet_cfg=tiny.unet_config(out_channels=8))
        self.assertExportFails("'latent_channels' (16) differs",
                               vae_cfg=tiny.vae_config(latent_channels=16))
        self.assertExportFails("vae_decoder.pt (vae decoder): returns shape [2, 3, 32, 32]",
                               "block_out_channels",
                               vae_cfg=tiny.vae_config(block_out_channels=[8, 8]))


class DirectoryTest(ExportTestCase):
    def test_existing_directory_needs_force(self):
        target = os.path.join(self.repo, "tiny")
        os.makedirs(target)
        with open(os.path.join(target, "old.txt"), "w") as f:
            f.write("keep me")
        self.assertExportFails("already exists (pass --force", batch=2)
        self.assertEqual(os.listdir(target), ["old.txt"])
        self.export(force=True)
        self.assertNotIn("old.txt", os.listdir(target))
        self.assertIn("model.pt", os.listdir(target))
        self.assertEqual(os.listdir(self.repo), ["tiny"])

    def test_failed_forced_export_keeps_the_old_directory(self):
        target = os.path.join(self.repo, "tiny")
        os.makedirs(target)
        with open(os.path.join(target, "old.txt"), "w") as f:
            f.write("keep me")
        self.assertExportFails("model.pt", force=True, modules={"unet": DividedByBatchUNet()})
        self.assertEqual(os.listdir(target), ["old.txt"])

    def test_name_rules(self):
        for name in ("", ".", "..", "a/b", "../x", "with space", "tilde~", "x" * 129, "é"):
            with self.subTest(name=name):
                with self.assertRaises(ed.ExportError) as raised:
                    ed.check_name(name)
                self.assertIn("a model name is 1 to 128 characters", str(raised.exception))
        for name in ("sd-1.5_fp16", "A", "x" * 128, ".hidden"):
            with self.subTest(name=name):
                ed.check_name(name)
        self.assertExportFails("--name 'a/b'", name="a/b")
        self.assertFalse(os.path.exists(self.repo))
        self.export(name="sd-1.5_fp32")
        self.assertTrue(os.path.isdir(os.path.join(self.repo, "sd-1.5_fp32")))

    def test_out_is_a_file(self):
        with open(os.path.join(self.work, "file"), "w") as f:
            f.write("x")
        self.repo = os.path.join(self.work, "file")
        self.assertExportFails("not a directory")


class PrecisionTest(ExportTestCase):
    def test_float16_on_cpu(self):
        try:
            ed.check_dtype_on_device(torch.float16, torch.device("cpu"))
        except ed.ExportError:
            # This torch has no float16 CPU kernels: a clear error, nothing written.
            self.assertExportFails("--dtype float16 --device cpu", "cannot run float16",
                                   "--device cuda", dtype="float16", device="cpu")
            return
        path = self.export(dtype="float16", device="cpu")
        model = torch.jit.load(os.path.join(path, "model.pt"))
        self.assertTrue(all(p.dtype == torch.float16 for p in model.parameters()))
        with open(os.path.join(path, "README.md"), encoding="utf-8") as f:
            self.assertIn("| 0.01 |", f.read())

    def test_bfloat16_on_cpu(self):
        # Stable Diffusion checkpoints ship in half precision; bfloat16 runs
        # on the CPU (memaudit-server --dtype, docs/DESIGN.md §4.3).
        path = self.export(dtype="bfloat16", device="cpu")
        for name in ("model.pt", "text_encoder.pt", "vae_decoder.pt"):
            module = torch.jit.load(os.path.join(path, name))
            self.assertTrue(all(p.dtype == torch.bfloat16 for p in module.parameters()), name)
        with open(os.path.join(path, "README.md"), encoding="utf-8") as f:
            self.assertIn("| 0.08 |", f.read())

    def test_bad_dtype_and_device(self):
        self.assertExportFails("--dtype 'int8'", dtype="int8")
        self.assertExportFails("--device 'tpu'", device="tpu")
        if not torch.cuda.is_available():
            self.assertExportFails("sees no CUDA device", device="cuda")


class CommandLineTest(ExportTestCase):
    def run_main(self, *args, diffusers=None):
        argv = ["--out", self.repo, "--name", "cli"] + list(args)
        with mock.patch.dict(sys.modules, {"diffusers": diffusers}), quiet() as (out, err):
            code = ed.main(argv)
        return code, out.getvalue(), err.getvalue()

    def test_without_diffusers(self):
        code, _, err = self.run_main("--pipeline", "runwayml/stable-diffusion-v1-5")
        self.assertEqual(code, 1)
        self.assertIn("diffusers is not installed", err)
        self.assertFalse(os.path.exists(self.repo))

    def test_local_folder(self):
        pipeline = os.path.join(self.work, "pipeline")
        tiny.write_tokenizer_dir(os.path.join(pipeline, "tokenizer"))
        calls = []
        code, out, err = self.run_main("--pipeline", pipeline, diffusers=fake_diffusers(calls))
        self.assertEqual(code, 0, err)
        self.assertEqual(calls, [(pipeline, torch.float32)])
        self.assertIn("wrote " + os.path.join(self.repo, "cli"), out)
        with open(os.path.join(self.repo, "cli", "README.md"), encoding="utf-8") as f:
            readme = f.read()
        self.assertIn(f"- source: `{pipeline}`", readme)
        self.assertIn("diffusers 0.0.0-test", readme)
        self.assertEqual(read_config(os.path.join(self.repo, "cli", "config.pbtxt"))["name"],
                         "cli")

    def test_hub_id_saves_the_tokenizer(self):
        calls = []
        before = set(os.listdir(tempfile.gettempdir()))
        code, _, err = self.run_main("--pipeline", "org/model", "--no-vae", "--batch", "3",
                                     diffusers=fake_diffusers(calls))
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(os.listdir(os.path.join(self.repo, "cli"))),
                         ["README.md", "config.pbtxt", "model.pt", "text_encoder.pt",
                          "tokenizer.json"])
        leftover = [n for n in set(os.listdir(tempfile.gettempdir())) - before
                    if n.startswith("memaudit-tokenizer-")]
        self.assertEqual(leftover, [])

    def test_refusals_come_before_loading(self):
        calls = []
        os.makedirs(os.path.join(self.repo, "cli"))
        code, _, err = self.run_main("--pipeline", "x", diffusers=fake_diffusers(calls))
        self.assertEqual((code, calls), (1, []))
        self.assertIn("already exists (pass --force", err)
        code, _, err = self.run_main("--pipeline", "x", "--force", "--name", "a b",
                                     diffusers=fake_diffusers(calls))
        self.assertEqual((code, calls), (1, []))
        self.assertIn("--name 'a b'", err)
        try:
            ed.check_dtype_on_device(torch.float16, torch.device("cpu"))
        except ed.ExportError:
            code, _, err = self.run_main("--pipeline", "x", "--force", "--dtype", "float16",
                                         diffusers=fake_diffusers(calls))
            self.assertEqual((code, calls), (1, []))
            self.assertIn("cannot run float16", err)


class MakeTinyPipelineDirTest(unittest.TestCase):
    def test_command_prints_the_directory(self):
        with tempfile.TemporaryDirectory() as repo:
            result = subprocess.run(
                [sys.executable, os.path.join(HERE, "make_tiny_pipeline_dir.py"), repo, "tiny"],
                capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr)
            path = os.path.join(os.path.realpath(repo), "tiny")
            self.assertEqual(os.path.realpath(result.stdout.strip().splitlines()[-1]), path)
            self.assertIn("config.pbtxt", os.listdir(path))
            with open(os.path.join(path, "model.pt"), "rb") as f:
                first = f.read()
            # Replaces the directory; the weights are seeded, so the model is the same.
            subprocess.run([sys.executable, os.path.join(HERE, "make_tiny_pipeline_dir.py"),
                            repo, "tiny"], capture_output=True, check=True, timeout=120)
            model = torch.jit.load(os.path.join(path, "model.pt"))
            torch.manual_seed(0)
            x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([7]), torch.randn(1, 77, 32)
            reference = torch.jit.load(io.BytesIO(first))
            torch.testing.assert_close(model(x, t, c), reference(x, t, c), rtol=0, atol=0)


class TextFormatReaderTest(unittest.TestCase):
    """The test's own config reader refuses what protobuf would refuse."""

    def test_unknown_field_and_enum(self):
        schema = proto_schema(PROTO)
        self.assertIn("text_encoder", schema[0]["Conditioning"])
        self.assertIn("COSINE", schema[1]["NoiseSchedule.Kind"])
        with self.assertRaises(AssertionError):
            check_schema(parse_text_format('name: "a" sample_shap: [1]'), "ModelConfig", schema)
        with self.assertRaises(AssertionError):
            check_schema(parse_text_format("prediction_type: EPS"), "ModelConfig", schema)
        with self.assertRaises(AssertionError):
            check_schema(parse_text_format("latent { scaling_factor: 1 image_shape: [a] }"),
                         "ModelConfig", schema)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tearDownModule():
    if _PROTOBUF.get("dir"):
        shutil.rmtree(_PROTOBUF["dir"], ignore_errors=True)


if __name__ == "__main__":
    print("config.pbtxt is checked with "
          + ("protobuf (protoc --python_out)" if protobuf_module() else
             "the test's text-format reader and model_config.proto's declarations "
             "(python3-protobuf not importable)"), file=sys.stderr)
    unittest.main()
