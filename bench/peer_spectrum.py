"""The Python peer of memaudit's dense spectrum: what a researcher would write.

Usage: /usr/bin/python3 bench/peer_spectrum.py MODEL_DIR POINTS.pt T SIGMA LABEL OUT.pt

For each point x (a [N, *sample_shape] tensor saved by
memaudit-bench-peer), the score's Jacobian by
torch.autograd.functional.jacobian(vectorize=True) and its eigenvalues by
torch.linalg.eigvals (float64), timed per point. Writes the eigenvalues
[N, d] complex128 and prints one line "seconds_per_spectrum <value>".
"""
import sys
import time

import torch

from peer_model import load_score

model_dir, points_path, t, sigma, label, out_path = sys.argv[1:7]
score = load_score(model_dir, int(t), float(sigma), int(label))
points = torch.load(points_path)

values, seconds = [], []
for x in points:
    start = time.perf_counter()
    jacobian = torch.autograd.functional.jacobian(score, x, vectorize=True)
    d = x.numel()
    eigenvalues = torch.linalg.eigvals(jacobian.reshape(d, d).double())
    seconds.append(time.perf_counter() - start)
    values.append(eigenvalues)
torch.save(torch.stack(values), out_path)
seconds = sorted(seconds[1:] if len(seconds) > 1 else seconds)  # first call warms up
print(f"seconds_per_spectrum {seconds[len(seconds) // 2]:.4f}")
print(f"threads {torch.get_num_threads()}")  # OMP_NUM_THREADS, set by memaudit-bench-peer
