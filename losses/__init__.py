"""The five Neural Parts loss terms, one pure function each `term(pred, target, cfg) -> scalar`, and their total.

Evaluation metrics live in evaluation.metrics; the ground-truth contract in losses.targets.
"""
from losses.coverage import coverage_loss
from losses.normal_consistency import normal_consistency_loss
from losses.occupancy import occupancy_loss
from losses.overlap import overlap_loss
from losses.reconstruction import reconstruction_loss
from losses.total import TERMS, total_loss

__all__ = ["TERMS", "coverage_loss", "normal_consistency_loss", "occupancy_loss", "overlap_loss",
           "reconstruction_loss", "total_loss"]
