"""A data-dependent starting placement of the primitives, for short runs (`model.init_placement`).

The authors start every primitive as the same sphere near the origin and let training spread them. In a short run
that start settles in poor local minima: one primitive wraps both legs (a coupling network keeps each primitive
one connected blob per cross-section, so it also fills the gap between them) and an arm stays uncovered.
Clustering the inside of the training bodies gives each primitive a region of its own to start from.

Clusters are found with heights (y, the up axis) shrunk by HEIGHT_SHRINK, so the body splits side by side into
limb-wide strips (an arm, a leg, the trunk) instead of horizontal slabs; each primitive then starts at its
cluster's centroid with its cluster's extent per axis.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

HEIGHT_SHRINK = 0.15  # y scale while clustering; 1 gives slabs that put both legs in one cluster
SCALE_RANGE = (0.3, 5.0)  # bounds on the per-axis sigma factor, so a flat or tiny cluster cannot degenerate


def cluster_placement(points: np.ndarray, n_primitives: int, radius: float,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of points inside the training bodies -> (translation (M, 3) metres, sigma scale (M, 3)).

    points: (N, 3) metres, drawn uniformly from the inside of several bodies. A primitive of sphere radius r
    placed at a centroid with normaliser sigma_a = r / (sqrt(5) * std_a) spans the cluster's extent on axis a:
    a solid ball of radius a has std a / sqrt(5) per axis, so it maps to itself.
    """
    if len(points) < 2 * n_primitives:
        raise ValueError(f"{len(points)} inside points cannot place {n_primitives} primitives")
    shrink = np.array([1.0, HEIGHT_SHRINK, 1.0])
    centroids, labels = kmeans2(points.astype(np.float64) * shrink, n_primitives, seed=seed, minit="++")
    spread = np.stack([points[labels == m].std(axis=0) if (labels == m).sum() > 1 else np.full(3, radius)
                       for m in range(n_primitives)])  # (M, 3) metres
    scale = np.clip(radius / (np.sqrt(5.0) * np.maximum(spread, 1e-6)), *SCALE_RANGE)
    return (torch.tensor(centroids / shrink, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32))
