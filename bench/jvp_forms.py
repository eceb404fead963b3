"""What one step of the class-conditional early metrics costs, by part, on
a TorchScript ε-model with Debian's python3-torch: the plain forward of
[x; x] with [c; ∅] (the sampling step, Wen's metric), the forward-mode JVP
of the difference field at s^Δ (Jeon's ‖H^Δ s^Δ‖, what memaudit and
bench/peer_early.py both run), and the same JVP by the double-backward
identity over a forward with its graph kept. Also counts the convolutions
LibTorch runs in one forward-mode pass against the model's conv layers.

Usage: /usr/bin/python3 bench/jvp_forms.py MODEL_DIR [N ...]   (N generations; default 1 4)
"""
import os
import re
import sys
import time

import torch
import torch.autograd.forward_ad as fwAD
from torch.profiler import profile

from peer_model import load_config

torch._C._set_graph_executor_optimize(False)  # as memaudit (docs/DESIGN.md §6)
# Every core, as memaudit (python3-torch defaults to 1 thread here).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
model_dir = sys.argv[1]
sizes = [int(a) for a in sys.argv[2:]] or [1, 4]
model = torch.jit.load(f"{model_dir}/model.pt").eval()
config = load_config(model_dir)
if not config["conditional"]:
    raise SystemExit("a class-conditional model is needed")
shape = tuple(int(d) for d in re.findall(r"sample_shape:\s*(\d+)",
                                         open(f"{model_dir}/config.pbtxt").read()))


def median_ms(f, repeats=15):
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


print(f"model {model_dir}, threads {torch.get_num_threads()}")
for n in sizes:
    x = torch.randn((n,) + shape, generator=torch.Generator().manual_seed(0))
    y = torch.cat([torch.zeros(n, dtype=torch.long), torch.full((n,), config["num_classes"])])
    t = torch.full((2 * n,), 999, dtype=torch.long)

    def difference(x):
        e = model(torch.cat([x, x]), t, y)
        return e[:n] - e[n:]

    with torch.no_grad():
        s = difference(x)

    def forward():
        with torch.no_grad():
            return difference(x)

    def dual():
        with fwAD.dual_level():
            return fwAD.unpack_dual(difference(fwAD.make_dual(x, s))).tangent

    def double_backward():  # forward with graph, then d/du <J^T u, s>
        xr = x.detach().requires_grad_(True)
        out = difference(xr)
        u = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, xr, u, create_graph=True)
        return torch.autograd.grad(g, u, s)[0]

    gap = (dual() - double_backward()).abs().max().item()
    f, d, b = median_ms(forward), median_ms(dual), median_ms(double_backward)
    print(f"n = {n}: forward {f:.2f} ms, forward-mode JVP {d:.2f} ms ({d / f:.1f}x the forward), "
          f"double-backward JVP incl. its forward {b:.2f} ms; step forward + JVP: "
          f"{f + d:.2f} ms forward-mode, {b:.2f} ms double-backward; forms differ by {gap:.1e}")

with profile() as prof:
    with fwAD.dual_level():
        difference(fwAD.make_dual(x, s))
counts = {e.key: e.count for e in prof.key_averages()}
print(f"one forward-mode pass: {counts.get('aten::conv2d', 0)} conv2d calls ran "
      f"{counts.get('aten::mkldnn_convolution', 0) + counts.get('aten::thnn_conv2d', 0) + counts.get('aten::_slow_conv2d_forward', 0)} convolutions")
