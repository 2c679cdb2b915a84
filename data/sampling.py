"""Load-time draws of labelled volume points, with importance weights (the authors' "equal" sampler,
paschalidoud/neural_parts neural_parts/datasets/model_collections.py)."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def draw_volume_samples(inside: np.ndarray, n_draws: int, balanced: bool, rng: np.random.Generator,
                        near: np.ndarray | None = None, near_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n_draws` of the N stored volume points with replacement.

    inside: (N,) bool labels of the stored points.
    Balanced: a point inside has probability p = 1 / (2 n_in), one outside p = 1 / (2 n_out) (i.e. P(inside)
    proportional to n_out and P(outside) to n_in: half the draws land inside on average), and carries the
    weight (1 / N) / p, so a weighted mean over the draws estimates the mean over all N points (the volume
    fraction, for the labels). With no point on one side every point has p = 1 / N and weight 1.
    near: (N,) bool, outside points close to the surface (`near_surface`); with balanced draws and near_share > 0
    that share of the outside half comes from them, the rest from the far outside points, each with its own
    weight, so the weighted mean still estimates the mean over all N points (stratified importance sampling).
    Returns indices (n_draws,) int64 and weights (n_draws,) float32.
    """
    n_total = len(inside)
    inside_index, outside_index = np.flatnonzero(inside), np.flatnonzero(~inside)
    if not balanced or len(inside_index) == 0 or len(outside_index) == 0:
        return rng.integers(0, n_total, n_draws), np.ones(n_draws, dtype=np.float32)
    strata, shares = [inside_index, outside_index], [0.5, 0.5]
    if near is not None and near_share > 0:
        near_index, far_index = np.flatnonzero(near & ~inside), np.flatnonzero(~near & ~inside)
        if len(near_index) and len(far_index):
            strata, shares = [inside_index, far_index, near_index], [0.5, 0.5 * (1 - near_share), 0.5 * near_share]
    # One uniform number per draw picks its stratum, then one uniform index per stratum and draw: with the two
    # strata (inside, outside) exactly the plain balanced draw, random stream included.
    stratum = np.searchsorted(np.cumsum(shares)[:-1], rng.random(n_draws), side="right")  # (n_draws,)
    picks = [index[rng.integers(0, len(index), n_draws)] for index in strata]
    indices = np.choose(stratum, picks)
    weights = np.array([len(index) / (n_total * share) for index, share in zip(strata, shares)])[stratum]
    return indices, weights.astype(np.float32)


def near_surface(points: np.ndarray, vertices: np.ndarray, distance: float) -> np.ndarray:
    """(N,) bool: points (N, 3) within `distance` (metres) of a mesh vertex (V, 3).

    The distance to the nearest vertex bounds the distance to the surface from above, so this marks a band
    around the surface at most `distance` thick; any such band keeps the stratified weights exact.
    """
    low, high = vertices.min(axis=0) - distance, vertices.max(axis=0) + distance
    candidates = np.flatnonzero(((points >= low) & (points <= high)).all(axis=1))  # inside the padded bounding box
    nearest, _ = cKDTree(vertices).query(points[candidates], distance_upper_bound=distance)
    near = np.zeros(len(points), dtype=bool)
    near[candidates[np.isfinite(nearest)]] = True
    return near
