"""The bytes-moved model of a generator's between-layer traffic, per layer, for three schedules:
eager PyTorch (``nn.InstanceNorm2d``, ``nn.ReLU``, ``F.interpolate``, ``nn.ReflectionPad2d``,
``+``), the per-layer fused schedule (``FusedInstanceNorm2d`` then ``PaddedConv2d`` with padding
and upsampling folded) and normalize-on-load (``ops.norm_conv2d``: the norm applied by the next
convolution's loads, statistics from the producer's epilogue).

Counted: DRAM reads and writes of activation-sized tensors from the producing convolution's
store to the consuming convolution's load, inclusive; nothing is assumed to stay in cache.
Weights, statistics and partials are O(N*C) and not counted. This is a model (a prediction of
where the time goes on a bandwidth-bound machine such as a GPU), not a measurement:
``python -m stylize_fast.bench.bytes_moved`` prints the table docs/gpu.md holds.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple


class Edge(NamedTuple):
    """A tensor between two layers of JohnsonNet: produced by ``producer`` with ``channels``
    at ``scale`` of the input size, normalised by ``norm`` and consumed by ``consumer``."""

    producer: str
    norm: str
    consumer: str
    channels: int
    scale: float          # side of the tensor / side of the input image
    upsample: int = 1     # the consumer upsamples its (normalised) input
    activation: bool = True
    residual: bool = False  # the norm's output is summed with a residual (materialised)
    epilogue_stats: bool = True  # normalize-on-load: statistics from the producer's epilogue


def johnson_edges(num_residual: int = 5) -> list[Edge]:
    """JohnsonNet's norm edges (the PyTorch examples' TransformerNet). On CPU the direct kernel
    (conv1-conv3) gathers no statistics: a read-only statistics pass adds one read there."""
    edges = [Edge("conv1 9x9", "in1", "conv2", 32, 1.0, epilogue_stats=False),
             Edge("conv2 3x3/2", "in2", "conv3", 64, 0.5, epilogue_stats=False),
             Edge("conv3 3x3/2", "in3", "res1 (+ residual)", 128, 0.25, residual=True,
                  epilogue_stats=False)]
    for i in range(1, num_residual + 1):
        edges += [Edge(f"res{i}.conv1", f"res{i}.in1", f"res{i}.conv2", 128, 0.25),
                  Edge(f"res{i}.conv2", f"res{i}.in2", "next (+ residual)", 128, 0.25,
                       activation=False, residual=True)]
    edges += [Edge("deconv1 (x2)", "in4", "deconv2 (x2)", 64, 0.5, upsample=2),
              Edge("deconv2 (x2)", "in5", "deconv3 9x9", 32, 1.0)]
    return edges


def traffic(edge: Edge) -> dict[str, float]:
    """Reads + writes per schedule, in units of the edge's tensor (A = its elements)."""
    up = edge.upsample ** 2
    if edge.residual:
        # producer W, norm, (relu), + residual: read both, write the sum, which the consumer
        # reads (its padding folded in the fused schedules; eager pads a copy, counted next edge).
        eager = 1 + 3 + (2 if edge.activation else 0) + 3 + 1
        fused = 1 + 3 + 3 + 1
        stats = 0 if edge.epilogue_stats else 1
        nol = 1 + stats + 3 + 1
        return {"eager": eager, "fused": fused, "norm_on_load": nol}
    # producer W; IN: 2 R + 1 W; ReLU: R + W; upsample: R + up W; pad: R + W of what it pads;
    # the consumer's read of its input.
    eager = 1 + 3 + (2 if edge.activation else 0) + ((1 + up) if up > 1 else 0) + 2 * up + up
    fused = 1 + 3 + 1                  # norm in one kernel; padding and upsampling in the loads
    nol = 1 + (0 if edge.epilogue_stats else 1) + 1
    return {"eager": eager, "fused": fused, "norm_on_load": nol}


def table(size: int = 512, batch: int = 1, bytes_per_value: int = 4) -> list[dict]:
    """One row per edge: the tensor's MB and each schedule's traffic in MB."""
    rows = []
    for edge in johnson_edges():
        side = int(size * edge.scale)
        mb = batch * edge.channels * side * side * bytes_per_value / 2 ** 20
        row = {"edge": f"{edge.producer} -> {edge.norm} -> {edge.consumer}",
               "tensor MB": mb}
        row.update({k: v * mb for k, v in traffic(edge).items()})
        rows.append(row)
    return rows


def markdown(size: int = 512, batch: int = 1, bytes_per_value: int = 4) -> str:
    rows = table(size, batch, bytes_per_value)
    lines = ["| edge (JohnsonNet) | tensor MB | eager MB | per-layer fused MB | "
             "normalize-on-load MB |", "|---|---:|---:|---:|---:|"]
    totals = {"eager": 0.0, "fused": 0.0, "norm_on_load": 0.0}
    for r in rows:
        lines.append(f"| {r['edge']} | {r['tensor MB']:.1f} | {r['eager']:.0f} | "
                     f"{r['fused']:.0f} | {r['norm_on_load']:.0f} |")
        for k in totals:
            totals[k] += r[k]
    lines.append(f"| **total** | | **{totals['eager']:.0f}** | **{totals['fused']:.0f}** | "
                 f"**{totals['norm_on_load']:.0f}** |")
    lines.append("")
    lines.append(f"Normalize-on-load moves {totals['norm_on_load'] / totals['fused']:.2f}x the "
                 f"per-layer fused schedule's between-layer bytes and "
                 f"{totals['norm_on_load'] / totals['eager']:.2f}x eager's.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--bytes", type=int, default=4, help="bytes per value (4 float32, 2 bf16)")
    args = parser.parse_args(argv)
    print(markdown(args.size, args.batch, args.bytes))


if __name__ == "__main__":
    main()
