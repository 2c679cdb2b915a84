"""The training objective: the weighted sum of the five Neural Parts loss terms."""
from __future__ import annotations

import torch

from config import LossConfig
from losses.coverage import coverage_loss
from losses.normal_consistency import normal_consistency_loss
from losses.occupancy import occupancy_loss
from losses.overlap import overlap_loss
from losses.reconstruction import reconstruction_loss
from losses.targets import Targets
from models.prediction import Prediction

# name -> (term, the LossConfig field holding its weight)
TERMS = {
    "reconstruction": (reconstruction_loss, "w_reconstruction"),
    "occupancy": (occupancy_loss, "w_occupancy"),
    "normal": (normal_consistency_loss, "w_normal"),
    "coverage": (coverage_loss, "w_coverage"),
    "overlap": (overlap_loss, "w_overlap"),
}


def total_loss(pred: Prediction, target: Targets, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = sum_t w_t L_t over TERMS with the weights in `cfg` (defaults: the authors' D-FAUST ones).

    Returns the scalar total (differentiable) and every term by name, unweighted and detached, for logging.
    """
    values = {name: term(pred, target, cfg) for name, (term, _) in TERMS.items()}
    total = sum(getattr(cfg, weight) * values[name] for name, (_, weight) in TERMS.items())
    return total, {name: value.detach() for name, value in values.items()}
