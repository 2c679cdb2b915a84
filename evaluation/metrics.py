"""Evaluation metrics: weighted volumetric IoU, and Chamfer-L1/L2 with normal consistency on the union surface.

Follows the authors' evaluation (scripts/evaluate.py, metrics/) with OccNet's point-cloud formulas. The IoU works on
torch tensors; the surface metrics on NumPy arrays (exact nearest neighbours with pykdtree, as the authors'
evaluate_mesh.py).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import trimesh
from pykdtree.kdtree import KDTree


TARGET_LEAF_SIZE = 64  # points per leaf of the target (100k-point) tree

# OccNet's values for an empty prediction (the diagonal of the unit cube); normal consistency -1 is its sentinel.
EMPTY_PREDICTION_METRICS = {
    "chamfer_l1": math.sqrt(3.0),
    "chamfer_l2": 3.0,
    "accuracy": math.sqrt(3.0),
    "completeness": math.sqrt(3.0),
    "normal_consistency": -1.0,
}


def weighted_iou(phi: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Importance-weighted IoU per item: sum(w [pred and gt]) / max(1, sum(w [pred or gt])).

    phi (B, N, M): each primitive's implicit at the volume points (the plain g_m for evaluation; the training-time
    metric passes pred.phi_volume); predicted inside where G = min_m phi_m <= 0. labels (B, N): 1 inside the
    target. weights (B, N): importance weights. The max(1, .) on the weighted union is the authors'; with
    nothing predicted inside the IoU is 0. Returns (B,).
    """
    assert phi.shape[:2] == labels.shape == weights.shape, (
        f"phi {tuple(phi.shape)}, labels {tuple(labels.shape)}, weights {tuple(weights.shape)}")
    predicted = phi.min(dim=2).values <= 0  # (B, N)
    inside = labels > 0.5  # (B, N)
    intersection = (weights * (predicted & inside)).sum(dim=1)  # (B,)
    union = (weights * (predicted | inside)).sum(dim=1)  # (B,)
    return intersection / union.clamp(min=1)


def sample_union_surface(meshes: list[trimesh.Trimesh], implicit: Callable[[np.ndarray], np.ndarray],
                         n_points: int, rng: np.random.Generator,
                         max_rounds: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform points on the surface of the union of M primitives, with their face normals.

    meshes: one closed mesh per primitive, world coordinates. implicit: (P, 3) -> (P, M) values g_j, negative
    inside primitive j. Each round draws n_points points split across the primitives by a multinomial over mesh
    areas, area-uniform on each mesh; a point drawn on primitive m is dropped if g_j < 0 for some j != m. Rounds
    repeat until n_points are kept (at most max_rounds), then n_points are subsampled without replacement.
    As the authors' evaluate.py, which draws 1000 points per round: the kept points are i.i.d. on the visible
    surface either way, and larger rounds call `implicit` less often.
    Returns points (n, 3) and unit normals (n, 3), float64; n < n_points only if fewer were kept in max_rounds
    (n = 0 for an empty union, which chamfer_metrics scores with EMPTY_PREDICTION_METRICS).
    """
    areas = np.array([mesh.area for mesh in meshes], dtype=np.float64)  # (M,)
    if len(meshes) == 0 or not areas.sum() > 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    kept_points, kept_normals, n_kept = [], [], 0
    for _ in range(max_rounds):
        if n_kept >= n_points:
            break
        counts = rng.multinomial(n_points, areas / areas.sum())  # (M,)
        points, normals, owner = [], [], []
        for m, (mesh, count) in enumerate(zip(meshes, counts)):
            if count == 0:
                continue
            drawn, faces = trimesh.sample.sample_surface(mesh, count, seed=rng)
            points.append(drawn)
            normals.append(mesh.face_normals[faces])
            owner.append(np.full(count, m))
        points, normals, owner = np.concatenate(points), np.concatenate(normals), np.concatenate(owner)
        g = np.array(implicit(points), dtype=np.float64)  # (P, M)
        assert g.shape == (len(points), len(meshes)), f"implicit returned {g.shape} for {len(points)} points"
        g[np.arange(len(owner)), owner] = np.inf  # a point never counts as inside its own primitive
        visible = (g >= 0).all(axis=1)  # (P,)
        kept_points.append(points[visible])
        kept_normals.append(normals[visible])
        n_kept += int(visible.sum())
    points, normals = np.concatenate(kept_points), np.concatenate(kept_normals)
    chosen = rng.choice(len(points), size=min(n_points, len(points)), replace=False)
    return points[chosen], normals[chosen]


def chamfer_metrics(pred_points: np.ndarray, pred_normals: np.ndarray, target_points: np.ndarray,
                    target_normals: np.ndarray) -> dict[str, float]:
    """OccNet's point-cloud metrics between a predicted and a target surface sample.

    pred_points/pred_normals (P, 3), target_points/target_normals (T, 3); exact Euclidean nearest neighbours in
    float64 (pykdtree, OpenMP threads; 1.6x faster than scipy's cKDTree at 10k vs 100k points, same distances).
    accuracy = mean over predicted points of the distance to the nearest target point; completeness = mean over
    target points of the distance to the nearest predicted point; chamfer_l1 = (accuracy + completeness) / 2;
    chamfer_l2 = (mean accuracy^2 + mean completeness^2) / 2; normal_consistency = the mean |cos| between each
    point's normal and its nearest neighbour's, averaged over both directions. Distances in the points' units.
    An empty prediction gets EMPTY_PREDICTION_METRICS. Returns plain floats.
    """
    pred_points, pred_normals = _as_cloud(pred_points, "pred_points"), _as_cloud(pred_normals, "pred_normals")
    target_points = _as_cloud(target_points, "target_points")
    target_normals = _as_cloud(target_normals, "target_normals")
    if len(pred_normals) != len(pred_points) or len(target_normals) != len(target_points):
        raise ValueError(f"chamfer_metrics: {len(pred_points)} predicted / {len(target_points)} target points but "
                        f"{len(pred_normals)} / {len(target_normals)} normals; pass one normal per point")
    if len(target_points) == 0:
        raise ValueError("chamfer_metrics: the target point cloud is empty")
    if len(pred_points) == 0:
        return dict(EMPTY_PREDICTION_METRICS)
    pred_normals, target_normals = _unit(pred_normals), _unit(target_normals)
    # Leaf sizes measured with bench/loss_terms.py: a coarser target tree builds faster and costs the 10k queries little.
    target_tree = KDTree(target_points, leafsize=TARGET_LEAF_SIZE)
    accuracy, accuracy_cos = _nearest(pred_points, pred_normals, target_tree, target_normals)
    completeness, completeness_cos = _nearest(target_points, target_normals, KDTree(pred_points), pred_normals)
    return {
        "chamfer_l1": float(0.5 * (accuracy.mean() + completeness.mean())),
        "chamfer_l2": float(0.5 * ((accuracy ** 2).mean() + (completeness ** 2).mean())),
        "accuracy": float(accuracy.mean()),
        "completeness": float(completeness.mean()),
        "normal_consistency": float(0.5 * (accuracy_cos.mean() + completeness_cos.mean())),
    }


def _nearest(query: np.ndarray, query_normals: np.ndarray, data_tree: KDTree,
             data_normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query point: the distance to its nearest data point (Q,) and |cos| between their unit normals (Q,).

    The tree is walked in spatial order (`_spatial_order`); results come back in the queries' own order.
    """
    order = _spatial_order(query)
    sorted_dist, sorted_index = data_tree.query(np.take(query, order, axis=0), k=1)
    dist, index = np.empty_like(sorted_dist), np.empty_like(sorted_index)
    dist[order], index[order] = sorted_dist, sorted_index
    cos = np.abs(np.einsum("ij,ij->i", query_normals, data_normals[index]))  # (Q,)
    return dist, cos


def _spatial_order(points: np.ndarray, cell: float = 0.04) -> np.ndarray:
    """(N,) permutation that groups points by 4 cm cell, so that consecutive queries walk the same tree leaves.

    Cell indices wrap modulo 32 per axis (a 16-bit key, sorted by numpy's radix sort); cells 1.28 m apart share a
    key, which costs only locality, never correctness.
    """
    cells = (points * (1.0 / cell)).astype(np.int64) & 31  # (N, 3)
    key = ((cells[:, 0] << 10) | (cells[:, 1] << 5) | cells[:, 2]).astype(np.uint16)
    return np.argsort(key, kind="stable")


def _unit(normals: np.ndarray) -> np.ndarray:
    length = np.sqrt(np.einsum("ij,ij->i", normals, normals))[:, None]  # (N, 1), einsum: 2x faster than linalg.norm
    return normals / np.maximum(length, 1e-12)


def _as_cloud(values: np.ndarray, name: str) -> np.ndarray:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"chamfer_metrics: {name} has shape {array.shape}; expected (N, 3)")
    return array
