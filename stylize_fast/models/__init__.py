"""Generators: Johnson et al.'s residual network and Ulyanov et al.'s multi-scale network, with
``norm="batch" | "instance" | "fused"`` and one or several styles; the AdaIN network for
arbitrary styles; checkpoint save / load."""

from .adain import AdaINNet
from .checkpoint import build, load, load_checkpoint, save
from .johnson import JohnsonNet
from .layers import NORMS
from .texture import TextureNet

__all__ = ["AdaINNet", "JohnsonNet", "TextureNet", "NORMS", "build", "load", "load_checkpoint",
           "save", "to_plain"]


def to_plain(model):
    """A plain-PyTorch (``norm="instance"``) copy of a fused model with the same weights and
    outputs -- what export and ``torch.compile`` baselines use. Other models are returned as is
    (``norm="batch"`` and ``"instance"`` are plain already)."""
    if getattr(model, "norm", None) != "fused":
        return model
    if isinstance(model, AdaINNet):
        return model.to_plain()
    if type(model).__name__ not in ("JohnsonNet", "TextureNet"):
        return model
    p = next(model.parameters())
    # Convert before loading: a float64 state loaded into float32 parameters would be rounded.
    plain = build(type(model).__name__, model.options, norm="instance").to(device=p.device,
                                                                          dtype=p.dtype)
    plain.load_state_dict(model.state_dict())
    return plain.train(model.training)
