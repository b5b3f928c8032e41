"""Generators: Johnson et al.'s residual network and Ulyanov et al.'s multi-scale network, with
``norm="batch" | "instance" | "fused"``, and checkpoint save / load."""

from .checkpoint import build, load, load_checkpoint, save
from .johnson import JohnsonNet
from .layers import NORMS
from .texture import TextureNet

__all__ = ["JohnsonNet", "TextureNet", "NORMS", "build", "load", "load_checkpoint", "save",
           "to_plain"]


def to_plain(model):
    """A plain-PyTorch (``norm="instance"``) copy of a fused generator with the same weights and
    outputs -- what export and ``torch.compile`` baselines use. Other models are returned as is
    (``norm="batch"`` and ``"instance"`` are plain already)."""
    if getattr(model, "norm", None) != "fused" or type(model).__name__ not in (
            "JohnsonNet", "TextureNet"):
        return model
    plain = build(type(model).__name__, model.options, norm="instance")
    plain.load_state_dict(model.state_dict())
    p = next(model.parameters())
    return plain.to(device=p.device, dtype=p.dtype).train(model.training)
