"""Where does the branch-check overhead go on a GPU? A measurement record, not part of the package.

A random HuBERT Base (random branches), 4 s clips of equal length, batch 1 / 8 / 32: the full
forward; every branch checked and none fires (tau -1); and the same branch kernels run on
every layer's output with no host read of the decisions (``family.layer`` wrapped). Medians of
REPS timed forwards after 3 warm-ups; CUDA kernels per forward from ``torch.profiler``.

    python docs/results/gpu_branch_overhead_probe.py cuda fp32 30   # DEVICE PRECISION REPS

Its output on an H200 (torch 2.11.0+cu130, 29 Nov 2026) is ``gpu_branch_overhead_probe.txt``
beside it; docs/measurement.md reads it.
"""
import statistics, sys, tempfile, time
from pathlib import Path
import torch
from daisy_upstream.atomic import atomic_torch_save
from daisy_upstream.core.policy import make_plan
from daisy_upstream.integration.hubconf import daisy_hubert_local
from daisy_upstream.testing import make_random_family_checkpoint, sharpen_branches

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
prec = sys.argv[2] if len(sys.argv) > 2 else "fp32"
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
tmp = Path(tempfile.mkdtemp()) / "m.pt"
atomic_torch_save(sharpen_branches(make_random_family_checkpoint("hubert", base=True, num_classes=500, seed=0), 1.0), tmp)
up = daisy_hubert_local(str(tmp), model_config={"strategy": "none", "tau": 1.0, "precision": prec}).eval().to(dev)
net = up.net
L = net.num_layers
g = torch.Generator().manual_seed(0)
def sync():
    if dev.type == "cuda": torch.cuda.synchronize()
def timeit(fn):
    for _ in range(3): fn()
    sync(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)
full, noexit = make_plan([L], None), make_plan(range(1, L + 1), -1.0)
fam = net.family
orig_layer = fam.layer
def kernels_only_layer(model, i, x, padding, carry):  # the branch kernels, no host read
    out = orig_layer(model, i, x, padding, carry)
    if i + 1 < L:
        net.branches.entropy(i + 1, out[0].transpose(0, 1), None)
    return out
def kernels(fn):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CUDA] if dev.type == "cuda" else [ProfilerActivity.CPU]) as p:
        fn(); sync()
    return sum(1 for e in p.events() if e.device_type.name == "CUDA")
print(f"device {dev} {torch.cuda.get_device_name() if dev.type=='cuda' else ''} precision {prec} torch {torch.__version__}")
with torch.no_grad():
    for B in (1, 8, 32):
        wavs = [0.1 * torch.randn(64000, generator=g).to(dev) for _ in range(B)]  # 4 s each, equal lengths
        f = lambda: net(wavs, full)
        n = lambda: net(wavs, noexit)
        t_full, t_noexit = timeit(f), timeit(n)
        fam.layer = kernels_only_layer
        try:
            t_kern = timeit(f); k_kern = kernels(f)
        finally:
            fam.layer = orig_layer
        k_full, k_noexit = kernels(f), kernels(n)
        print(f"batch {B:2d}: full {t_full*1e3:7.2f} ms | checks, no exit {t_noexit*1e3:7.2f} ms (+{(t_noexit/t_full-1)*100:5.1f}%) "
              f"| branch kernels, no host read {t_kern*1e3:7.2f} ms (+{(t_kern/t_full-1)*100:5.1f}%) "
              f"| CUDA kernels per forward: full {k_full}, checks {k_noexit}, kernels-only {k_kern}")
