"""The ground truth a batch carries, as tensors (no file format here)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Targets:
    """B items, Nv volume points, Ns surface points; coordinates in metres, world frame.

    volume_points:   (B, Nv, 3) float
    volume_labels:   (B, Nv) float, 1.0 inside the target mesh, 0.0 outside
    volume_weights:  (B, Nv) float, importance weights (mean over a uniform draw ~ 1)
    surface_points:  (B, Ns, 3) float, on the target surface; requires_grad for the normal loss
    surface_normals: (B, Ns, 3) float, unit outward face normals
    """

    volume_points: torch.Tensor
    volume_labels: torch.Tensor
    volume_weights: torch.Tensor
    surface_points: torch.Tensor
    surface_normals: torch.Tensor
