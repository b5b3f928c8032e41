"""Per-layer timing of JohnsonNet's padded convs (channels_last, batch 4, float32, 2 threads):
forward, input gradient, weight gradient (auto choice), and the library's weight gradient
(conv_algo=library), interleaved rounds, medians. Usage: python layers.py [rounds] [dtype]"""
import statistics
import sys
import time

import torch

import stylize_fast as sf
from stylize_fast.ops import padded_conv

torch.set_num_threads(2)
ops = torch.ops.stylize_fast
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
DTYPE = getattr(torch, sys.argv[2]) if len(sys.argv) > 2 else torch.float32
ONLY = sys.argv[3].split(",") if len(sys.argv) > 3 else None
N = 4
# name, C, O, k, stride, H (input), count
LAYERS = [("conv1 9x9 3->32", 3, 32, 9, 1, 256, 1),
          ("conv2 3x3s2 32->64", 32, 64, 3, 2, 256, 1),
          ("conv3 3x3s2 64->128", 64, 128, 3, 2, 128, 1),
          ("res 3x3 128->128", 128, 128, 3, 1, 64, 10),
          ("up1 3x3 128->64", 128, 64, 3, 1, 128, 1),
          ("up2 3x3 64->32", 64, 32, 3, 1, 256, 1),
          ("conv4 9x9 32->3", 32, 3, 9, 1, 256, 1)]


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


print(f"{'layer':24s} {'fwd ms':>8s} {'dgrad ms':>8s} {'wgrad lib ms':>12s} {'wgrad ms':>9s}"
      f" {'algo':>9s} {'lib/new':>8s}")
for name, c, o, k, s, h, count in LAYERS:
    if ONLY and not any(t in name for t in ONLY):
        continue
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, c, h, h, generator=g).to(DTYPE).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(o, c, k, k, generator=g) * (c * k * k) ** -0.5).to(DTYPE)
    p = k // 2
    y = ops.padded_conv2d_fwd(x, w, None, [s, s], [p, p], 1)
    gy = torch.randn(y.shape, generator=g).to(DTYPE).contiguous(memory_format=torch.channels_last)
    algo = padded_conv.cpu_algorithm(x, w, (s, s), (p, p), 1, weight_grad=True)

    def fwd():
        ops.padded_conv2d_fwd(x, w, None, [s, s], [p, p], 1)

    def dgrad():
        ops.padded_conv2d_bwd(gy, x, w, [s, s], [p, p], 1, [True, False, False])

    def wgrad():
        ops.padded_conv2d_bwd(gy, x, w, [s, s], [p, p], 1, [False, True, False])

    def wgrad_lib():
        with sf.config.override(conv_algo="library"):
            wgrad()
    for f in (fwd, dgrad, wgrad, wgrad_lib):
        f()
    times = {f: [] for f in ("fwd", "dgrad", "wgrad", "lib")}
    ratios = []
    for _ in range(ROUNDS):
        times["fwd"].append(timed(fwd))
        times["dgrad"].append(timed(dgrad))
        a = timed(wgrad_lib)
        b = timed(wgrad)
        times["lib"].append(a)
        times["wgrad"].append(b)
        ratios.append(a / b)
    med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    print(f"{name:18s} x{count:<3d} {med['fwd']:8.2f} {med['dgrad']:8.2f} {med['lib']:12.2f}"
          f" {med['wgrad']:9.2f} {algo:>9s} {statistics.median(ratios):8.2f}", flush=True)
