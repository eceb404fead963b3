"""The Python peer of memaudit's early (first-step) metrics: what a
researcher would write with Debian's python3-torch.

Usage: /usr/bin/python3 bench/peer_early.py MODEL_DIR XT.pt LABELS.pt PROBES.pt K NUM_STEPS
                                            GUIDANCE OUT.pt

XT.pt [C, n, *sample_shape] holds the initial noise x_T of n generations
for each of C conditions, LABELS.pt [C] their class labels (ignored for an
unconditional model) or, for a text-to-image model, [C + 1, *embedding]
their prompts' embeddings with the null condition's last, PROBES.pt [K, n·P, *sample_shape] the Rademacher
probes of each step (unconditional models; "-" otherwise), all saved by
memaudit-bench-peer --method early. For each condition: a plain DDIM loop
(η = 0, leading spacing, classifier-free guidance w = GUIDANCE) over the
first K of NUM_STEPS steps, and at each step
  conditional:   one batched call of [x; x] with [c; ∅] gives ε̂_c, ε̂_∅:
                 Wen ‖ε̂_c − ε̂_∅‖, s^Δ = −(ε̂_c − ε̂_∅)/σ_t, and the guided step;
                 Jeon ‖H^Δ s^Δ‖ is one JVP of the difference field at s^Δ
  unconditional: one call gives ε̂ (‖s‖², the step); ‖H s‖² one JVP at s;
                 Hutchinson tr H = mean zᵀHz, one JVP on the n·P probes
each averaged over the K steps. JVPs by forward-mode AD
(torch.autograd.forward_ad) when it agrees with
torch.autograd.functional.jvp on a probe, that double-backward JVP
otherwise. Conditional models also get the anisotropy metric (Asthana &
Belagiannis, ICLR 2026) as their code computes it, in a loop of its own:
at x_T, one call of [x; x] with [c; ∅] at the first timestep (the norm
‖ε̂_c − ε̂_∅‖) and one at the third-to-last timestep (the alignment
cos(ε̂_∅, ε̂_c − ε̂_∅), here over the whole sample). Writes the per-sample
values [C, M, n] float64 (M = 4: wen, jeon, anisotropy norm, alignment;
M = 3: ‖s‖², ‖Hs‖², tr H) and prints "seconds_per_condition S" (Wen and
Jeon's loop; median, first condition discarded as warm-up),
"anisotropy_seconds_per_condition S" (conditional), "calls_per_condition N
rows_per_condition R" (network calls and batch rows of the Wen/Jeon loop),
"timesteps ..." and "jvp MODE".
"""
import math
import sys
import time

import torch
import torch.autograd.forward_ad as fwAD

from peer_model import alpha_bars, load_config

model_dir, xt_path, labels_path, probes_path, K, num_steps, guidance, out_path = sys.argv[1:9]
K, num_steps, guidance = int(K), int(num_steps), float(guidance)

torch._C._set_graph_executor_optimize(False)  # as memaudit (docs/DESIGN.md §6)
model = torch.jit.load(f"{model_dir}/model.pt").eval()
config = load_config(model_dir)
if config["prediction_type"] != "EPSILON":
    raise SystemExit("the peer handles EPSILON models only")
conditional = config["conditional"]
alpha_bar = alpha_bars(config)
T = config["num_train_timesteps"]
ratio = T // num_steps
timesteps = [i * ratio for i in range(num_steps - 1, -1, -1)]  # leading spacing, offset 0

x_T = torch.load(xt_path)
labels = torch.load(labels_path)
probes = None if probes_path == "-" else torch.load(probes_path)
C, n = x_T.shape[0], x_T.shape[1]
embedded = labels.dim() > 1  # prompt embeddings, the null one last
conditional = conditional or embedded


def conditions(c):
    """[c; ∅] for the n generations of condition c: 2n rows."""
    if embedded:
        return torch.cat([labels[c].expand(n, *labels.shape[1:]),
                          labels[-1].expand(n, *labels.shape[1:])])
    return torch.cat([torch.full((n,), int(labels[c])), torch.full((n,), config["num_classes"])])


def forward_jvp(f, x, v):
    with fwAD.dual_level():
        return fwAD.unpack_dual(f(fwAD.make_dual(x, v))).tangent


def backward_jvp(f, x, v):
    return torch.autograd.functional.jvp(f, x, v)[1]


counts = [0, 0]  # network calls, rows


def eps_fn(t, y):
    """ε̂(x) at timestep t for conditions y (None: unconditional model)."""
    def eps(x):
        counts[0] += 1
        counts[1] += x.shape[0]
        steps = torch.full((x.shape[0],), t, dtype=torch.long)
        return model(x, steps, y) if y is not None else model(x, steps)
    return eps


# Forward mode when it works through this archive.
probe_x = x_T[0, :1].clone()
probe_v = torch.randn(probe_x.shape, generator=torch.Generator().manual_seed(0))
probe_f = eps_fn(timesteps[0], conditions(0)[:1] if conditional else None)
try:
    tangent = forward_jvp(probe_f, probe_x, probe_v)
    reference = backward_jvp(probe_f, probe_x, probe_v)
    use_forward = tangent is not None and torch.allclose(tangent, reference, rtol=1e-3, atol=1e-5)
except RuntimeError:
    use_forward = False
jvp = forward_jvp if use_forward else backward_jvp


def norms(v, squared):
    values = v.reshape(v.shape[0], -1).double().pow(2).sum(1)
    return values if squared else values.sqrt()


results, seconds = [], []
counts[:] = [0, 0]
for c in range(C):
    start = time.perf_counter()
    x = x_T[c].clone()
    sums = torch.zeros(2 if conditional else 3, n, dtype=torch.float64)
    if conditional:
        y = conditions(c)
    for k, t in enumerate(timesteps[:K]):
        sigma = math.sqrt(1.0 - alpha_bar[t].item())
        prev = t - ratio
        a, a_prev = alpha_bar[t].item(), alpha_bar[prev].item() if prev >= 0 else 1.0
        if conditional:
            eps2 = eps_fn(t, y)

            def difference(x):  # s_c − s_∅
                e = eps2(torch.cat([x, x]))
                return -(e[:n] - e[n:]) / sigma

            with torch.no_grad():
                e = eps2(torch.cat([x, x]))
            e_c, e_u = e[:n], e[n:]
            sums[0] += norms(e_c - e_u, squared=False)
            s_delta = -(e_c - e_u) / sigma
            sums[1] += norms(jvp(difference, x, s_delta), squared=False)
            epsilon = e_u + guidance * (e_c - e_u)
        else:
            eps1 = eps_fn(t, None)

            def score(x):
                return -eps1(x) / sigma

            with torch.no_grad():
                epsilon = eps1(x)
            s = -epsilon / sigma
            sums[0] += norms(s, squared=True)
            sums[1] += norms(jvp(score, x, s), squared=True)
            z = probes[k]
            hz = jvp(score, x.repeat_interleave(z.shape[0] // n, 0), z)
            sums[2] += (z * hz).reshape(n, -1).double().sum(1) / (z.shape[0] // n)
        with torch.no_grad():  # DDIM, η = 0
            x0 = (x - math.sqrt(1.0 - a) * epsilon) / math.sqrt(a)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * epsilon
    results.append(sums / K)
    seconds.append(time.perf_counter() - start)
calls_per_condition = (counts[0] / C, counts[1] / C)


def median_time(values):
    timed = sorted(values[1:] if len(values) > 1 else values)
    return timed[len(timed) // 2]


anisotropy_seconds = []
if conditional:
    t_first, t_low = timesteps[0], timesteps[max(len(timesteps) - 3, 0)]
    for c in range(C):
        start = time.perf_counter()
        x = x_T[c]
        y = conditions(c)
        with torch.no_grad():
            e = eps_fn(t_first, y)(torch.cat([x, x]))
            norm = norms(e[:n] - e[n:], squared=False)
            e = eps_fn(t_low, y)(torch.cat([x, x]))
            e_c, e_u = e[:n].reshape(n, -1).double(), e[n:].reshape(n, -1).double()
            alignment = torch.nn.functional.cosine_similarity(e_u, e_c - e_u, dim=1)
        anisotropy_seconds.append(time.perf_counter() - start)
        results[c] = torch.cat([results[c], norm.unsqueeze(0), alignment.unsqueeze(0)])
torch.save(torch.stack(results), out_path)
print(f"seconds_per_condition {median_time(seconds)}")
if conditional:
    print(f"anisotropy_seconds_per_condition {median_time(anisotropy_seconds)}")
print(f"calls_per_condition {calls_per_condition[0]} rows_per_condition {calls_per_condition[1]}")
print("timesteps " + " ".join(str(t) for t in timesteps[:K]))
print(f"jvp {'forward' if use_forward else 'double-backward'}")
print(f"threads {torch.get_num_threads()}")  # OMP_NUM_THREADS, set by memaudit-bench-peer
