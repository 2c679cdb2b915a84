"""Image -> feature: torchvision ResNet-18 with its fc replaced by Linear(512, 512) -> ReLU -> Linear(512, F).

As the authors (`neural_parts/models/feature_extractors.py`, `frozen_batchnorm.py`): ImageNet weights when
available (train.py fetches them and hands them to `load_imagenet_state`; this module does no I/O), every BatchNorm frozen to its running statistics while its affine weight and bias keep training, and the
ImageNet mean/std normalisation of the input (done here, so callers pass images in [0, 1]).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_IMAGE_SIDE = 32  # ResNet-18 downsamples by 32


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d that always uses its running statistics and never updates them; weight and bias are trainable.

    torchvision.ops.FrozenBatchNorm2d keeps weight and bias as buffers, which the authors' version does not.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, name).copy_(getattr(bn, name))
        return frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)  # (C,)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d inside `module` by a FrozenBatchNorm2d with the same values (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d.from_batchnorm(child))
        else:
            freeze_batchnorm(child)
    return module


class ImageEncoder(nn.Module):
    """images (B, 3, H, W) float in [0, 1], H, W >= 32 -> image features (B, cfg.feature_size)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        network = resnet18(weights=None)
        network.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, cfg.feature_size))
        self.network = freeze_batchnorm(network) if cfg.freeze_bn else network
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def load_imagenet_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy torchvision's ImageNet ResNet-18 state dict into the network, all but its 1000-way fc (replaced here).

        Frozen BatchNorm layers take the running statistics and affine values; `num_batches_tracked` has no place.
        """
        own = self.network.state_dict()
        kept = {key: value for key, value in state.items() if key in own and not key.startswith("fc.")}
        missing = sorted(key for key in own if key not in kept and not key.startswith("fc."))
        if missing:
            raise ValueError(f"not a ResNet-18 state dict: it lacks {', '.join(missing[:3])}")
        self.network.load_state_dict(kept, strict=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if (images.dim() != 4 or images.shape[1] != 3 or min(images.shape[2:]) < MIN_IMAGE_SIDE
                or not images.is_floating_point()):
            raise ValueError(f"images must be float (B, 3, H, W) with H, W >= {MIN_IMAGE_SIDE} in [0, 1]; "
                            f"got {images.dtype} {tuple(images.shape)}")
        return self.network((images - self.mean) / self.std)
