"""Generator inference on CPU: fused JohnsonNet / TextureNet (float32, bfloat16) vs the eager
plain-PyTorch model (norm="instance") with the same weights, as ratios measured in one run.

    python benchmarks/bench_generators.py [--arch johnson|texture] [--size 512] [--repeats 7]

The full comparison with torch.compile, onnxruntime and OpenVINO is `stylize-fast bench --full`.
"""

from __future__ import annotations

import argparse
import time

import torch

import stylize_fast as sf
from stylize_fast.bench.allocator import pin as pin_allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("johnson", "texture"), default="johnson")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    allocator = pin_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cls = sf.models.JohnsonNet if args.arch == "johnson" else sf.models.TextureNet
    plain = cls(norm="instance").eval()
    fused = cls(norm="fused").eval()
    fused.load_state_dict(plain.state_dict())
    fused_bf16 = cls(norm="fused").eval()
    fused_bf16.load_state_dict(plain.state_dict())
    fused_bf16 = fused_bf16.to(torch.bfloat16)
    x = torch.rand(args.batch, 3, args.size, args.size) * 255
    x_bf16 = x.to(torch.bfloat16)
    providers = {"instance float32 (eager)": lambda: plain(x), "fused float32": lambda: fused(x),
                 "fused bfloat16": lambda: fused_bf16(x_bf16)}
    times: dict[str, list[float]] = {name: [] for name in providers}
    with torch.no_grad():
        for fn in providers.values():
            fn()
        for _ in range(args.repeats):  # interleaved, so machine noise hits all alike
            for name, fn in providers.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        reference = plain(x)
        mse = (fused_bf16(x_bf16).float() - reference).pow(2).mean()
        psnr = 10 * torch.log10((reference.max() - reference.min()) ** 2 / mse)

    def median(v):
        return sorted(v)[len(v) // 2]

    base = median(times["instance float32 (eager)"])
    print(f"{args.arch} {args.batch}x3x{args.size}x{args.size}, torch {torch.__version__}, "
          f"{args.threads} threads, allocator {allocator}, median of {args.repeats}")
    for name, v in times.items():
        print(f"  {name:26s} {median(v) * 1e3:9.1f} ms   ratio to eager float32 "
              f"{median(v) / base:.2f}")
    print(f"  bfloat16 PSNR against eager float32: {psnr:.1f} dB")


if __name__ == "__main__":
    main()
