"""Training: VGG loss network, perceptual losses, resumable trainer, DDP, the paper's experiment.

Heavy pieces import lazily; ``from stylize_fast.training import train, TrainConfig`` works."""

from .losses import PRESETS, LossConfig, PerceptualLoss, gram_matrix, loss_config, total_variation
from .trainer import TrainConfig, TrainResult, train
from .vgg import VGGFeatures, build_vgg, locate_weights

__all__ = ["PRESETS", "LossConfig", "PerceptualLoss", "TrainConfig", "TrainResult", "VGGFeatures",
           "build_vgg", "gram_matrix", "locate_weights", "loss_config", "total_variation", "train"]
