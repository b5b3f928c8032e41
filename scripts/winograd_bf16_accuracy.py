"""Would Winograd with bfloat16 dot products be accurate enough? The error of one 3x3 layer when
the transformed input V = B^T d B and weights U = G g G^T are rounded to bfloat16 (what a
``vdpbf16ps`` micro-kernel multiplies) and the products summed in float32, against float64
``F.conv2d``; beside it a direct convolution of bfloat16-rounded input and weights (what oneDNN's
bfloat16 convolution computes).

    python scripts/winograd_bf16_accuracy.py [--channels 128] [--size 128] [--seed 0]

The input is ReLU(N(0, 1)) (a normalised activation), the weights He-scaled. Printed: max and
RMS error relative to the output's max / RMS, per method. Findings in docs/experiments.md.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

# Lavin & Gray's transforms: F(4x4, 3x3) (points 0, +-1, +-2, inf) and F(2x2, 3x3).
F43 = (
    [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
     [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
     [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)
F23 = (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
)


def winograd(x: torch.Tensor, w: torch.Tensor, transforms, bf16: bool) -> torch.Tensor:
    """Valid 3x3 convolution of x (C, H, W) by w (O, C, 3, 3) through the transforms, V and U
    rounded to bfloat16 when asked, products summed in float32."""
    bt, g, at = (torch.tensor(t, dtype=torch.float64) for t in transforms)
    m, tile = at.shape[0], bt.shape[0]
    c, h, width = x.shape
    d = x.unfold(1, tile, m).unfold(2, tile, m)                     # C, th, tw, t, t
    v = torch.einsum("ij,cabjk,lk->cabil", bt, d, bt)
    u = torch.einsum("ij,ocjk,lk->ocil", g, w, g)
    if bf16:
        v, u = v.to(torch.bfloat16), u.to(torch.bfloat16)
    prod = torch.einsum("cabil,ocil->oabil", v.float(), u.float()).double()
    y = torch.einsum("ij,oabjk,lk->oabil", at, prod, at)
    o, th, tw = y.shape[:3]
    return y.permute(0, 1, 3, 2, 4).reshape(o, th * m, tw * m)


def errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    diff = actual - expected
    return ((diff.abs().max() / expected.abs().max()).item(),
            (diff.pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item())


def run(channels: int = 128, size: int = 128, seed: int = 0) -> dict[str, tuple[float, float]]:
    """(max, RMS) relative error per method; ``size`` must be a multiple of 4."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(1, channels, size + 2, size + 2, generator=gen,
                               dtype=torch.float64))
    w = torch.randn(channels, channels, 3, 3, generator=gen, dtype=torch.float64) * \
        (2.0 / (channels * 9)) ** 0.5
    expected = F.conv2d(x, w)[0]
    direct = F.conv2d(x.to(torch.bfloat16).double(), w.to(torch.bfloat16).double())[0]
    return {
        "direct, bf16 input and weights": errors(direct, expected),
        "F(4x4,3x3), float32 V and U": errors(winograd(x[0], w, F43, False), expected),
        "F(4x4,3x3), bf16 V and U": errors(winograd(x[0], w, F43, True), expected),
        "F(2x2,3x3), bf16 V and U": errors(winograd(x[0], w, F23, True), expected),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--size", type=int, default=128, help="output side, a multiple of 4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size % 4 or args.size <= 0 or args.channels <= 0:
        parser.error("--size must be a positive multiple of 4 and --channels positive")
    print(f"{'method':34s} {'max rel':>10s} {'RMS rel':>10s}")
    for name, (mx, rms) in run(args.channels, args.size, args.seed).items():
        print(f"{name:34s} {mx:10.2e} {rms:10.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
