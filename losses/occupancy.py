"""Occupancy loss: importance-weighted binary cross-entropy of the union's inside/outside prediction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from config import LossConfig
from losses.targets import Targets
from models.prediction import Prediction


def occupancy_loss(pred: Prediction, target: Targets, cfg: LossConfig) -> torch.Tensor:
    """L_occ = mean_{b,i} w_i * BCE(max_m(-phi_m(x_i) / tau), o_i), tau = 1 / cfg.sharpness.

    phi is pred.phi_volume (B, Nv, M) at the volume points, o_i the labels (1 inside) and w_i the importance
    weights, both (B, Nv). The logit of the union is the hard max over primitives (the gradient reaches only the
    primitive with the smallest phi). Follows the authors' code (`implicit_surface_loss`, smooth_max off).
    Returns a scalar (nats).
    """
    assert pred.phi_volume.shape[:2] == target.volume_labels.shape == target.volume_weights.shape, (
        f"phi_volume {tuple(pred.phi_volume.shape)}, volume_labels {tuple(target.volume_labels.shape)}, "
        f"volume_weights {tuple(target.volume_weights.shape)}")
    logits = (-pred.phi_volume * cfg.sharpness).max(dim=2).values  # (B, Nv)
    # weight= multiplies each point's BCE before the mean: exactly mean(w * BCE).
    return F.binary_cross_entropy_with_logits(logits, target.volume_labels, weight=target.volume_weights)
