"""Evaluation metrics on analytic cases: concentric spheres, a shape against itself, overlapping primitives."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from evaluation.metrics import EMPTY_PREDICTION_METRICS, chamfer_metrics, sample_union_surface, weighted_iou


def unit_directions(n: int, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def sphere_implicit(centres: np.ndarray, radii: np.ndarray):
    """g_j(x) = |x - c_j| - r_j for M spheres: (P, 3) -> (P, M)."""
    return lambda points: np.linalg.norm(points[:, None] - centres[None], axis=2) - radii[None]


def sphere_mesh(centre, radius: float, subdivisions: int = 4) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_translation(centre)
    return mesh


def balanced_draw(inside: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The data pipeline's equal in/out draw with replacement and its importance weights (1 / N) / p_i."""
    n_in, n_out = inside.sum(), (~inside).sum()
    p = np.where(inside, 1 / (2 * n_in), 1 / (2 * n_out))  # sums to 1, half the mass inside
    index = np.random.default_rng(seed).choice(len(inside), size=n, p=p)
    return index, (1 / len(inside)) / p[index]


# --- IoU -----------------------------------------------------------------------------------------------------

def test_weighted_iou_small_case_by_hand():
    phi = torch.tensor([[[-1.0, 2.0], [1.0, 3.0], [0.0, 5.0], [2.0, 2.0]]])  # (1, 4, 2): G = -1, 1, 0, 2
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    weights = torch.tensor([[2.0, 3.0, 5.0, 7.0]])
    # predicted inside (G <= 0): points 0 and 2; intersection {0} = 2; union {0, 1, 2} = 2 + 3 + 5
    torch.testing.assert_close(weighted_iou(phi, labels, weights), torch.tensor([0.2]))
    # the authors' max(1, .) on the weighted union: a perfect prediction of total weight 0.5 scores 0.5
    torch.testing.assert_close(weighted_iou(phi, labels, weights / 20), torch.tensor([0.1]))
    torch.testing.assert_close(weighted_iou(phi[:, :1], labels[:, :1], torch.tensor([[0.5]])), torch.tensor([0.5]))


def test_weighted_iou_concentric_spheres_is_volume_ratio():
    a, b = 0.3, 0.4
    pool = np.random.default_rng(0).uniform(-0.5, 0.5, size=(400_000, 3))
    inside = np.linalg.norm(pool, axis=1) <= b
    index, weights = balanced_draw(inside, 50_000, seed=1)
    phi = torch.tensor(np.linalg.norm(pool[index], axis=1) - a)[None, :, None]  # (1, N, 1), a sphere of radius a
    iou = weighted_iou(phi, torch.tensor(inside[index], dtype=torch.float64)[None], torch.tensor(weights)[None])
    assert float(iou) == pytest.approx((a / b) ** 3, abs=0.01)


def test_weighted_iou_of_a_union_against_itself_is_one_and_empty_is_zero():
    pool = np.random.default_rng(2).uniform(-0.5, 0.5, size=(20_000, 3))
    centres, radii = np.array([[-0.2, 0, 0], [0.2, 0, 0]]), np.array([0.15, 0.25])
    g = sphere_implicit(centres, radii)(pool)  # (N, 2)
    labels = (g.min(axis=1) <= 0).astype(np.float64)
    weights = torch.rand(1, len(pool), dtype=torch.float64) + 0.5
    phi = torch.tensor(g)[None]
    assert float(weighted_iou(phi, torch.tensor(labels)[None], weights)) == 1.0
    assert float(weighted_iou(phi + 10, torch.tensor(labels)[None], weights)) == 0.0  # nothing predicted
    # neither predicted nor target inside: 0 / max(1, 0) = 0
    assert float(weighted_iou(phi + 10, torch.zeros(1, len(pool), dtype=torch.float64), weights)) == 0.0


# --- Chamfer -------------------------------------------------------------------------------------------------

def test_chamfer_of_exact_concentric_spheres_is_radius_gap():
    """Points a*u and b*u along the same directions: every nearest neighbour is the radial one, |b - a|."""
    a, b = 0.3, 0.45
    u = unit_directions(5000, seed=0)
    metrics = chamfer_metrics(a * u, u, b * u, -u)  # flipped target normals: |cos| is used
    assert metrics["accuracy"] == pytest.approx(b - a, rel=1e-12)
    assert metrics["completeness"] == pytest.approx(b - a, rel=1e-12)
    assert metrics["chamfer_l1"] == pytest.approx(b - a, rel=1e-12)
    assert metrics["chamfer_l2"] == pytest.approx((b - a) ** 2, rel=1e-12)
    assert metrics["normal_consistency"] == pytest.approx(1.0, rel=1e-12)


def test_chamfer_matches_brute_force_nearest_neighbours_on_random_clouds():
    """Random clouds over 3 m (the spatial query order's 1.28 m key wraps) with random normals: every metric equals
    the all-pairs reference, so reordering the queries never mismatches a point with another's normal."""
    rng = np.random.default_rng(11)
    pred, target = rng.uniform(-1.5, 1.5, (400, 3)), rng.uniform(-1.5, 1.5, (3000, 3))
    pred_normals, target_normals = rng.normal(size=(400, 3)), rng.normal(size=(3000, 3))
    distances = np.linalg.norm(pred[:, None] - target[None], axis=2)  # (400, 3000)
    unit_pred = pred_normals / np.linalg.norm(pred_normals, axis=1, keepdims=True)
    unit_target = target_normals / np.linalg.norm(target_normals, axis=1, keepdims=True)
    accuracy, completeness = distances.min(1), distances.min(0)
    cos_accuracy = np.abs((unit_pred * unit_target[distances.argmin(1)]).sum(1))
    cos_completeness = np.abs((unit_target * unit_pred[distances.argmin(0)]).sum(1))
    metrics = chamfer_metrics(pred, pred_normals, target, target_normals)
    assert metrics["accuracy"] == pytest.approx(accuracy.mean(), rel=1e-12)
    assert metrics["completeness"] == pytest.approx(completeness.mean(), rel=1e-12)
    assert metrics["chamfer_l2"] == pytest.approx(0.5 * ((accuracy ** 2).mean() + (completeness ** 2).mean()),
                                                  rel=1e-12)
    assert metrics["normal_consistency"] == pytest.approx(0.5 * (cos_accuracy.mean() + cos_completeness.mean()),
                                                          rel=1e-12)


def test_chamfer_of_sampled_spheres_is_close_to_radius_gap():
    a, b = 0.3, 0.4
    rng = np.random.default_rng(3)
    points, normals = sample_union_surface([sphere_mesh([0, 0, 0], a)], sphere_implicit(np.zeros((1, 3)),
                                           np.array([a])), 10_000, rng)
    u = unit_directions(100_000, seed=4)
    metrics = chamfer_metrics(points, normals, b * u, u)
    assert metrics["chamfer_l1"] == pytest.approx(b - a, abs=2e-3)
    assert metrics["chamfer_l2"] == pytest.approx((b - a) ** 2, abs=5e-4)
    assert metrics["normal_consistency"] > 0.99


def test_chamfer_of_a_shape_against_itself_is_zero():
    u = unit_directions(3000, seed=5)
    metrics = chamfer_metrics(0.5 * u, u, 0.5 * u, u)
    assert metrics["chamfer_l1"] == 0.0 and metrics["chamfer_l2"] == 0.0
    assert metrics["normal_consistency"] == pytest.approx(1.0)
    # sampled on a fine mesh against independent exact samples of the same sphere: only the sampling gap is
    # left, the mean nearest-neighbour distance of uniform points at density rho, 1 / (2 sqrt(rho))
    rng = np.random.default_rng(6)
    points, normals = sample_union_surface([sphere_mesh([0, 0, 0], 0.5)], sphere_implicit(np.zeros((1, 3)),
                                           np.array([0.5])), 10_000, rng)
    v = unit_directions(100_000, seed=7)
    area = 4 * math.pi * 0.5 ** 2
    gap = 0.5 * (1 / (2 * math.sqrt(100_000 / area)) + 1 / (2 * math.sqrt(10_000 / area)))
    assert chamfer_metrics(points, normals, 0.5 * v, v)["chamfer_l1"] == pytest.approx(gap, rel=0.1)


def test_chamfer_of_an_empty_prediction_is_the_occnet_fallback():
    u = unit_directions(100, seed=8)
    metrics = chamfer_metrics(np.zeros((0, 3)), np.zeros((0, 3)), u, u)
    assert metrics == EMPTY_PREDICTION_METRICS
    assert metrics["chamfer_l1"] == math.sqrt(3)


@pytest.mark.parametrize("pred, target", [(np.zeros((5, 2)), np.zeros((5, 3))), (np.zeros((5, 3)), np.zeros((0, 3)))])
def test_chamfer_rejects_bad_clouds(pred, target):
    with pytest.raises(ValueError, match="chamfer_metrics"):
        chamfer_metrics(pred, pred, target, target)


# --- union-surface sampler ---------------------------------------------------------------------------------

def test_union_sampler_drops_points_inside_other_primitives():
    centres, radii = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]]), np.array([0.25, 0.25])
    meshes = [sphere_mesh(c, r) for c, r in zip(centres, radii)]
    implicit = sphere_implicit(centres, radii)
    points, normals = sample_union_surface(meshes, implicit, 4000, np.random.default_rng(9))
    assert points.shape == normals.shape == (4000, 3)
    g = np.sort(implicit(points), axis=1)  # (n, 2)
    assert np.abs(g[:, 0]).max() < 2e-3  # on a sphere (up to the mesh's chords) ...
    assert g[:, 1].min() >= 0  # ... and not inside the other one
    assert (points[:, 0] < 0.15).mean() == pytest.approx(0.5, abs=0.04)  # symmetric exposed areas
    owner = (points[:, 0] > 0.15).astype(int)  # the lens between the spheres is empty: the plane x = 0.15 splits
    radial = (points - centres[owner]) / np.linalg.norm(points - centres[owner], axis=1, keepdims=True)
    assert (normals * radial).sum(axis=1).min() > 0.99  # outward unit face normals
    # reproducible from the generator
    again, _ = sample_union_surface(meshes, implicit, 4000, np.random.default_rng(9))
    np.testing.assert_array_equal(points, again)


def test_union_sampler_keeps_only_the_outer_of_nested_spheres():
    centres, radii = np.zeros((2, 3)), np.array([0.4, 0.2])
    meshes = [sphere_mesh(c, r) for c, r in zip(centres, radii)]
    points, _ = sample_union_surface(meshes, sphere_implicit(centres, radii), 2000, np.random.default_rng(10))
    assert len(points) == 2000
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 0.4, atol=2e-3)


def test_union_sampler_with_nothing_visible_returns_empty():
    mesh = sphere_mesh([0, 0, 0], 0.2, subdivisions=1)
    points, normals = sample_union_surface([mesh, mesh.copy()], lambda p: -np.ones((len(p), 2)), 100,
                                           np.random.default_rng(11), max_rounds=3)
    assert points.shape == normals.shape == (0, 3)
    assert chamfer_metrics(points, normals, mesh.vertices, mesh.vertex_normals) == EMPTY_PREDICTION_METRICS
