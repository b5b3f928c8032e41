"""FusedInstanceNorm2d: a drop-in nn.InstanceNorm2d with the activation fused into its kernel."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import instance_norm as _ops
from ..ops import instance_norm_reference as _reference
from ..ops.common import Activation, activation_code


class FusedInstanceNorm2d(nn.InstanceNorm2d):
    """Drop-in replacement for ``nn.InstanceNorm2d`` (same arguments, defaults, ``state_dict``
    keys, train/eval and ``track_running_stats`` behaviour) that applies ``activation``
    (None, ``"relu"`` or ``"leaky_relu"``) inside the same kernel.

    Shapes: input ``(N, C, H, W)`` or unbatched ``(C, H, W)``; output the same, in the input's
    memory format.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        activation: str | None = None,
        negative_slope: float = 0.01,
    ) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"FusedInstanceNorm2d: num_features must be a positive int, "
                             f"got {num_features!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"FusedInstanceNorm2d: eps must be a non-negative number, got {eps!r}")
        code = activation_code(activation)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.activation = None if code == Activation.NONE else code.name.lower()
        self.negative_slope = float(negative_slope)

    @classmethod
    def from_instance_norm(cls, module: nn.InstanceNorm2d, activation: str | None = None,
                           negative_slope: float = 0.01) -> FusedInstanceNorm2d:
        """A FusedInstanceNorm2d with ``module``'s configuration, parameters and buffers."""
        p = module.weight if module.weight is not None else module.running_mean
        fused = cls(module.num_features, module.eps, module.momentum, module.affine,
                    module.track_running_stats,
                    device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None else None,
                    bias=module.bias is not None or not module.affine,
                    activation=activation, negative_slope=negative_slope)
        fused.load_state_dict(module.state_dict())
        fused.train(module.training)
        return fused

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.activation is not None:
            text += f", activation={self.activation!r}"
            if self.activation == "leaky_relu":
                text += f", negative_slope={self.negative_slope}"
        return text

    def _apply_instance_norm(self, input: torch.Tensor) -> torch.Tensor:
        # nn.InstanceNorm2d.forward has checked rank / num_features and unbatched input already.
        code = activation_code(self.activation)
        use_input_stats = self.training or not self.track_running_stats
        if not use_input_stats:
            return _reference.instance_norm_eval(
                input, self.running_mean, self.running_var, self.weight, self.bias, self.eps,
                code, self.negative_slope)
        plane = input.shape[2] * input.shape[3]
        if plane <= 1:
            # Same rule and message as F.instance_norm.
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size "
                f"{list(input.shape)}")
        weight, bias, code = _ops.check_args(input, self.weight, self.bias, self.eps,
                                             self.activation, self.negative_slope,
                                             fn=type(self).__name__)
        output, mean, rstd = _ops.instance_norm_with_stats(
            input, weight, bias, self.eps, code, self.negative_slope)
        if self.track_running_stats and self.training:
            self._update_running_stats(mean, rstd, plane)
        return output

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, rstd: torch.Tensor, plane: int) -> None:
        # As ATen's instance_norm: batch-norm update per instance with the unbiased variance,
        # then averaged over the batch. momentum=None means 0 for instance norm (no update).
        momentum = self.momentum if self.momentum is not None else 0.0
        var = (rstd.double().pow(-2) - self.eps).clamp_min(0) * (plane / (plane - 1))
        self.running_mean.mul_(1 - momentum).add_(mean.mean(0).to(self.running_mean.dtype),
                                                  alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(var.mean(0).to(self.running_var.dtype),
                                                 alpha=momentum)
