"""A data-dependent starting placement of the primitives, for short runs (`model.init_placement`).

The authors start every primitive as the same sphere near the origin and let training spread them. In a short run
that start settles in poor local minima: one primitive wraps both legs (a coupling network keeps each primitive
one connected blob per cross-section, so it also fills the gap between them) and an arm stays uncovered.
Clustering the training bodies gives each primitive a region of its own to start from.

The clusters are k-means cells of points on the body surfaces, found with heights (y, the up axis) shrunk by
HEIGHT_SHRINK, so the body splits side by side into limb-wide strips instead of horizontal slabs. Surface points
weigh a thin limb by its area rather than its volume: on the demo's training bodies five surface cells are the two
arms, the two legs and the trunk with the head, while five cells of the inside split the bulky trunk and leave the
arms to trunk primitives (the tightest of ten k-means runs either way). Each primitive then starts at the centroid
of the body's inside in its cell, with that inside's extent per axis.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2, vq

HEIGHT_SHRINK = 0.15  # y scale while clustering; 1 gives slabs that put both legs in one cluster
KMEANS_RESTARTS = 10  # k-means runs from different seeds; the tightest (least mean squared distance) is kept
SCALE_RANGE = (0.3, 5.0)  # bounds on the per-axis sigma factor, so a flat or tiny cluster cannot degenerate


def cluster_placement(inside: np.ndarray, surface: np.ndarray, n_primitives: int, radius: float,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means cells of the body surfaces -> (translation (M, 3) metres, sigma scale (M, 3)).

    inside: (N, 3) metres, uniform over the inside of several training bodies; surface: (K, 3) metres, uniform
    over the same bodies' surfaces. A primitive of sphere radius r placed at the mean of its cell's inside points
    with normaliser sigma_a = r / (sqrt(5) * std_a) spans that inside's extent on axis a: a solid ball of radius a
    has std a / sqrt(5) per axis, so it maps to itself. A cell holding fewer than two inside points starts as a
    ball of radius r at its surface centroid.
    """
    if len(surface) < 2 * n_primitives:
        raise ValueError(f"{len(surface)} surface points cannot place {n_primitives} primitives")
    shrink = np.array([1.0, HEIGHT_SHRINK, 1.0])
    centroids = _tightest_kmeans(surface.astype(np.float64) * shrink, n_primitives, seed)
    cell, _ = vq(inside.astype(np.float64) * shrink, centroids)  # (N,) index of each inside point's cell
    # Fallback: the per-axis std of a solid ball of radius r, which gives scale 1 (that ball itself).
    translation, spread = centroids / shrink, np.full((n_primitives, 3), radius / np.sqrt(5.0))  # (M, 3) metres
    for m in range(n_primitives):
        if (cell == m).sum() > 1:
            translation[m], spread[m] = inside[cell == m].mean(axis=0), inside[cell == m].std(axis=0)
    scale = np.clip(radius / (np.sqrt(5.0) * np.maximum(spread, 1e-6)), *SCALE_RANGE)
    return torch.tensor(translation, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)


def _tightest_kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Centroids (k, 3) of the k-means++ run with the least mean squared distance among KMEANS_RESTARTS seeds."""
    best, best_distortion = None, np.inf
    for restart in range(KMEANS_RESTARTS):
        centroids, _ = kmeans2(points, k, seed=seed + restart, minit="++")
        distortion = np.mean(vq(points, centroids)[1] ** 2)
        if distortion < best_distortion:
            best, best_distortion = centroids, distortion
    return best
