"""The matrix-free Python peer of memaudit's Arnoldi spectrum: what a
researcher would write with Debian's python3-torch and python3-scipy.

Usage: /usr/bin/python3 bench/peer_arnoldi.py MODEL_DIR POINTS.pt T SIGMA LABEL K TOL OUT.pt [NCV]

For each point x (a [N, *sample_shape] tensor saved by memaudit-bench-peer),
scipy.sparse.linalg.eigs (ARPACK) finds the K eigenvalues of largest real
part of the score's Jacobian J = ∂s/∂x, s = −ε̂(x, t, y)/σ_t, with relative
tolerance TOL and Krylov subspace size NCV (default max(2K + 1, K + 16),
ARPACK's customary 2K + 1 and at least scipy's 20), over a LinearOperator whose matvec is a JVP of the
same TorchScript model: forward-mode AD when it agrees with
torch.autograd.functional.jvp on a probe vector, that double-backward JVP
otherwise. Writes the eigenvalues [N, K] complex128 and prints
"seconds_per_spectrum S", "matvecs_per_spectrum M", "jvp MODE" and
"peak_kib KIB" (this process's peak resident memory).
"""
import math
import resource
import sys
import time

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from scipy.sparse.linalg import LinearOperator, eigs

from peer_model import load_score

model_dir, points_path, t, sigma, label, k, tol, out_path = sys.argv[1:9]
k, tol = int(k), float(tol)
ncv = int(sys.argv[9]) if len(sys.argv) > 9 and int(sys.argv[9]) > 0 else max(2 * k + 1, k + 16)
score = load_score(model_dir, int(t), float(sigma), int(label))
points = torch.load(points_path)


def forward_jvp(x, v):
    with fwAD.dual_level():
        out = score(fwAD.make_dual(x, v))
        return fwAD.unpack_dual(out).tangent


def backward_jvp(x, v):
    return torch.autograd.functional.jvp(score, x, v)[1]


# Forward mode when it works through this archive (it is one network call
# per JVP; the double-backward trick costs about three).
probe_x = points[0].clone()
probe_v = torch.randn(probe_x.shape, generator=torch.Generator().manual_seed(0))
try:
    tangent = forward_jvp(probe_x, probe_v)
    reference = backward_jvp(probe_x, probe_v)
    use_forward = tangent is not None and torch.allclose(tangent, reference, rtol=1e-3, atol=1e-5)
except RuntimeError:
    use_forward = False
jvp = forward_jvp if use_forward else backward_jvp

values, seconds, matvecs = [], [], []
for x in points:
    d = x.numel()
    count = [0]

    def matvec(v, x=x, count=count):
        count[0] += 1
        vector = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return jvp(x, vector.to(x.dtype).view_as(x)).double().reshape(-1).numpy()

    operator = LinearOperator((d, d), matvec=matvec, dtype=np.float64)
    start = time.perf_counter()
    found = eigs(operator, k=k, which="LR", tol=tol, ncv=min(d, ncv),
                 v0=np.full(d, 1.0 / math.sqrt(d)), return_eigenvectors=False)
    seconds.append(time.perf_counter() - start)
    matvecs.append(count[0])
    values.append(torch.from_numpy(np.sort_complex(found)[::-1].copy()))
torch.save(torch.stack(values), out_path)
timed = sorted(seconds[1:] if len(seconds) > 1 else seconds)  # first call warms up
print(f"seconds_per_spectrum {timed[len(timed) // 2]}")
print(f"matvecs_per_spectrum {sorted(matvecs)[len(matvecs) // 2]}")
print(f"jvp {'forward' if use_forward else 'double-backward'}")
print(f"peak_kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
print(f"threads {torch.get_num_threads()}")  # OMP_NUM_THREADS, set by memaudit-bench-peer
