"""Coverage loss: every primitive must contain at least k points of the target's interior."""
from __future__ import annotations

import torch

from config import LossConfig
from losses.targets import Targets
from models.prediction import Prediction

# Added to phi at points labelled outside so they rank after every interior point.
OUTSIDE_OFFSET = 1e6
# Inside the log, as in the authors' code; caps a term at -log(1e-6) = 13.8.
LOG_EPS = 1e-6


def coverage_loss(pred: Prediction, target: Targets, cfg: LossConfig) -> torch.Tensor:
    """L_cov = mean_{b,j,m} -log(sigmoid(-phi_m(x_bjm) / tau) + 1e-6) over the k = cfg.coverage_k target-interior
    volume points x_bjm with the smallest phi_m (the interior points deepest inside primitive m).

    phi is pred.phi_volume (B, Nv, M). Follows the authors' code (`min_points_loss`), which differs from the
    paper's formula: 1e6 is added to phi at points labelled outside before the k smallest values per primitive
    are taken, so an item with fewer than k interior points pads with outside points (each contributing the
    constant 13.8, with no gradient). No importance weights. Returns a scalar (nats).
    """
    phi = pred.phi_volume  # (B, Nv, M)
    assert phi.shape[:2] == target.volume_labels.shape, (
        f"phi_volume {tuple(phi.shape)} vs volume_labels {tuple(target.volume_labels.shape)}")
    assert phi.shape[1] >= cfg.coverage_k, f"coverage_k={cfg.coverage_k} exceeds the {phi.shape[1]} volume points"
    ranked = phi + OUTSIDE_OFFSET * (1 - target.volume_labels)[..., None]  # (B, Nv, M)
    deepest = ranked.topk(cfg.coverage_k, dim=1, largest=False).values  # (B, k, M)
    return -torch.log(torch.sigmoid(-deepest * cfg.sharpness) + LOG_EPS).mean()
