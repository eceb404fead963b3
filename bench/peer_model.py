"""What the Python peers (peer_spectrum.py, peer_arnoldi.py, peer_early.py)
share: the model's score at one point, set up as memaudit runs it, and the
model's config and noise schedule."""
import torch


def load_score(model_dir, t, sigma, label):
    """s(x) = −ε̂(x, t, label)/σ_t for one sample x [*sample_shape], of the
    TorchScript model.pt in model_dir, with graph-executor optimization off
    as memaudit does (docs/DESIGN.md §6). label < 0: an unconditional model
    (forward(x, t))."""
    torch._C._set_graph_executor_optimize(False)
    model = torch.jit.load(f"{model_dir}/model.pt").eval()
    steps = torch.tensor([t])
    labels = torch.tensor([label])

    def score(x):
        if label < 0:
            return -model(x.unsqueeze(0), steps).squeeze(0) / sigma
        return -model(x.unsqueeze(0), steps, labels).squeeze(0) / sigma

    return score


def load_config(model_dir):
    """The fields of model_dir/config.pbtxt the early-metric peer needs, read
    with a regex (a researcher's shortcut, not a protobuf parser): the
    schedule's kind, betas and T, prediction_type, the conditioning kind and
    num_classes."""
    import re

    text = open(f"{model_dir}/config.pbtxt").read()

    def field(name, default=None):
        match = re.search(rf"\b{name}:\s*\"?([\w.+-]+)", text)
        return match.group(1) if match else default

    schedule = text[text.index("noise_schedule"):]
    return {
        "schedule": re.search(r"kind:\s*(\w+)", schedule).group(1),
        "beta_start": float(field("beta_start")),
        "beta_end": float(field("beta_end")),
        "num_train_timesteps": int(field("num_train_timesteps")),
        "prediction_type": field("prediction_type", "EPSILON"),
        "conditional": "CLASS_LABEL" in text,
        "num_classes": int(field("num_classes", 0)),
    }


def alpha_bars(config):
    """ᾱ_t, float64, for LINEAR and SCALED_LINEAR schedules (as diffusers,
    in float64)."""
    T = config["num_train_timesteps"]
    start, end = config["beta_start"], config["beta_end"]
    if config["schedule"] == "LINEAR":
        betas = torch.linspace(start, end, T, dtype=torch.float64)
    elif config["schedule"] == "SCALED_LINEAR":
        betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"schedule {config['schedule']} not supported by the peer")
    return torch.cumprod(1.0 - betas, 0)
