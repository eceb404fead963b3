"""What the Python peers (peer_spectrum.py, peer_arnoldi.py) share: the
model's score at one point, set up as memaudit runs it."""
import torch


def load_score(model_dir, t, sigma, label):
    """s(x) = −ε̂(x, t, label)/σ_t for one sample x [*sample_shape], of the
    TorchScript model.pt in model_dir, with graph-executor optimization off
    as memaudit does (docs/DESIGN.md §6)."""
    torch._C._set_graph_executor_optimize(False)
    model = torch.jit.load(f"{model_dir}/model.pt").eval()
    steps = torch.tensor([t])
    labels = torch.tensor([label])

    def score(x):
        return -model(x.unsqueeze(0), steps, labels).squeeze(0) / sigma

    return score
