"""Plain-PyTorch reference for the padded convolution: ``F.pad`` then ``F.conv2d``.

It is the ground truth of every test (run in float64) and the fallback backend. It builds the
padded tensor, which the kernels avoid; differentiable through ordinary autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Activation, PaddingMode

_PAD_MODES = {PaddingMode.ZEROS: "constant", PaddingMode.REFLECT: "reflect",
              PaddingMode.REPLICATE: "replicate"}


def pad(input: torch.Tensor, padding: tuple[int, int], padding_mode: int) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, H + 2 * padding[0], W + 2 * padding[1])``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return input
    return F.pad(input, (pw, pw, ph, ph), mode=_PAD_MODES[PaddingMode(padding_mode)])


def padded_conv2d_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    padding_mode: int,
    activation: int = Activation.NONE,
) -> torch.Tensor:
    """input ``(N, C, H, W)``, weight ``(O, C, KH, KW)``, bias ``(O,)`` or None ->
    ``(N, O, (H + 2 ph - KH) // sh + 1, (W + 2 pw - KW) // sw + 1)``, then the activation
    (code 0 none, 1 relu)."""
    if padding_mode == PaddingMode.ZEROS:
        # F.conv2d's own zero padding is the same arithmetic, without the copy.
        out = F.conv2d(input, weight, bias, tuple(stride), tuple(padding))
    else:
        out = F.conv2d(pad(input, padding, padding_mode), weight, bias, tuple(stride))
    return torch.relu(out) if activation == Activation.RELU else out
