"""Overlap loss: a volume point should be inside at most lambda primitives."""
from __future__ import annotations

import torch

from config import LossConfig
from losses.targets import Targets
from models.prediction import Prediction


def overlap_loss(pred: Prediction, target: Targets, cfg: LossConfig) -> torch.Tensor:
    """L_overlap = mean_{b,i} relu(sum_m sigmoid(-phi_m(x_i) / tau) - lambda), lambda = cfg.overlap_lambda.

    phi is pred.phi_volume (B, Nv, M); every volume point counts, unweighted. Follows the authors' code
    (`non_overlapping_regularizer`). `target` is unused (uniform signature). Returns a scalar (primitive count).
    """
    occupancy = torch.sigmoid(-pred.phi_volume * cfg.sharpness)  # (B, Nv, M), soft inside-ness per primitive
    return torch.relu(occupancy.sum(dim=2) - cfg.overlap_lambda).mean()
