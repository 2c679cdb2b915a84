"""Load-time draws of labelled volume points, with importance weights (facts section 3, the authors' "equal")."""
from __future__ import annotations

import numpy as np


def draw_volume_samples(inside: np.ndarray, n_draws: int, balanced: bool,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n_draws` of the N stored volume points with replacement.

    inside: (N,) bool labels of the stored points.
    Balanced: a point inside has probability p = 1 / (2 n_in), one outside p = 1 / (2 n_out) (i.e. P(inside)
    proportional to n_out and P(outside) to n_in: half the draws land inside on average), and carries the
    weight (1 / N) / p, so a weighted mean over the draws estimates the mean over all N points (the volume
    fraction, for the labels). With no point on one side every point has p = 1 / N and weight 1.
    Returns indices (n_draws,) int64 and weights (n_draws,) float32.
    """
    n_total = len(inside)
    inside_index = np.flatnonzero(inside)
    outside_index = np.flatnonzero(~inside)
    if not balanced or len(inside_index) == 0 or len(outside_index) == 0:
        return rng.integers(0, n_total, n_draws), np.ones(n_draws, dtype=np.float32)
    draw_inside = rng.random(n_draws) < 0.5  # (n_draws,)
    indices = np.where(draw_inside,
                       inside_index[rng.integers(0, len(inside_index), n_draws)],
                       outside_index[rng.integers(0, len(outside_index), n_draws)])
    weights = np.where(draw_inside, 2.0 * len(inside_index) / n_total, 2.0 * len(outside_index) / n_total)
    return indices, weights.astype(np.float32)
