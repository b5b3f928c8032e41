"""Colour-histogram matching of a style image to the content's colours: Gatys et al., *Preserving
Color in Neural Artistic Style Transfer* (arXiv:1606.05897), the variant Huang & Belongie's
``--preserve_color`` uses (their ``coral``): recolour the style image so that its RGB mean and
covariance equal the content's, then stylise with it."""

from __future__ import annotations

import torch


def _check_image(name: str, image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"match_color: {name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4) or image.shape[-3] != 3 or (image.dim() == 4
                                                              and image.shape[0] != 1):
        raise ValueError(f"match_color: {name} must be one RGB image (3, H, W) or (1, 3, H, W), "
                         f"got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"match_color: {name} must be a floating-point tensor (RGB 0-255), "
                         f"got {image.dtype}")
    if image.shape[-1] * image.shape[-2] == 0:
        raise ValueError(f"match_color: {name} has no pixels (shape {tuple(image.shape)})")


def _sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    """``cov ** power`` of a symmetric positive semi-definite 3x3 matrix (eigendecomposition).
    For negative powers, directions without variance (below 1e-12 of the largest eigenvalue)
    are dropped rather than inverted: a flat or grey image has nothing to rescale there."""
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(0)  # rounding can leave tiny negative eigenvalues
    if power >= 0:
        scaled = values.pow(power)
    else:
        kept = values > values.max() * 1e-12
        scaled = torch.where(kept, values.clamp_min(1e-300).pow(power), torch.zeros_like(values))
    return (vectors * scaled) @ vectors.T


def match_color(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` recoloured so that its RGB mean and covariance equal ``target``'s.

    ``x -> C_t^(1/2) C_s^(-1/2) (x - mu_s) + mu_t`` per pixel (symmetric matrix square roots of
    the biased 3x3 colour covariances, in float64), clamped to [0, 255].

    Args:
        source: ``(3, H, W)`` or ``(1, 3, H, W)`` RGB 0-255 (the style image).
        target: ``(3, H', W')`` or ``(1, 3, H', W')`` RGB 0-255 (the content image).

    Returns:
        ``source``'s shape, dtype and device. The statistics match exactly unless the clamp cuts
        values or the source lacks variance in some colour direction (e.g. a grey image).
    """
    _check_image("source", source)
    _check_image("target", target)
    s = source.detach().reshape(3, -1).to(torch.float64)
    t = target.detach().reshape(3, -1).to(device=s.device, dtype=torch.float64)
    mean_s, mean_t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    centred_s, centred_t = s - mean_s, t - mean_t
    cov_s = centred_s @ centred_s.T / s.shape[1]
    cov_t = centred_t @ centred_t.T / t.shape[1]
    transform = _sym_power(cov_t, 0.5) @ _sym_power(cov_s, -0.5)
    out = (transform @ centred_s + mean_t).clamp_(0, 255)
    return out.reshape(source.shape).to(source.dtype)
