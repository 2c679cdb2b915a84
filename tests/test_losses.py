"""The five loss terms and their total against naive Python-loop references (values and gradients) and
analytic cases. float64 throughout so that references and vectorised forms agree to ~1e-12."""
from __future__ import annotations

import math

import pytest
import torch

from config import LossConfig
from losses import (TERMS, coverage_loss, normal_consistency_loss, occupancy_loss, overlap_loss,
                    reconstruction_loss, total_loss)
from losses.targets import Targets
from models.prediction import Prediction

B, S, M, NV, NS = 2, 4, 3, 25, 6
TAU = 1 / 250


def make_inputs(seed: int = 0) -> tuple[Prediction, Targets, torch.Tensor]:
    """Random leaves at small sizes; g_closest_surface = |x - c| - r (a sphere per item, centre c a leaf)."""
    gen = torch.Generator().manual_seed(seed)
    y_prim = torch.rand(B, S, M, 3, generator=gen, dtype=torch.float64).requires_grad_()
    on_surface = torch.rand(B, S, M, generator=gen) < 0.6
    phi_volume = (0.02 * torch.rand(B, NV, M, generator=gen, dtype=torch.float64) - 0.012).requires_grad_()
    labels = (torch.rand(B, NV, generator=gen) < 0.4).double()
    labels[1] = 0.0
    labels[1, :2] = 1.0  # item 1 has fewer interior points than coverage_k = 3
    weights = 0.5 + torch.rand(B, NV, generator=gen, dtype=torch.float64)
    surface_points = torch.rand(B, NS, 3, generator=gen, dtype=torch.float64).requires_grad_()
    normals = torch.nn.functional.normalize(torch.randn(B, NS, 3, generator=gen, dtype=torch.float64), dim=2)
    centre = (0.5 + 0.1 * torch.randn(B, 1, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    g_closest = (surface_points - centre).norm(dim=2) - 0.25
    pred = Prediction(y_prim, on_surface, phi_volume, phi_volume.detach().clone(), g_closest)
    target = Targets(torch.rand(B, NV, 3, generator=gen, dtype=torch.float64), labels, weights, surface_points,
                     normals)
    return pred, target, centre


def small_cfg(**changes) -> LossConfig:
    cfg = LossConfig(coverage_k=3)
    for name, value in changes.items():
        setattr(cfg, name, value)
    return cfg


def grads(value: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True, materialize_grads=True))


def assert_same(value, reference, leaves):
    torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads(value, leaves), grads(reference, leaves)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def scalar(value: torch.Tensor) -> float:
    return float(value.detach())


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((a - b) ** 2).sum())


# --- naive references: one scalar at a time --------------------------------------------------------------------

def reference_reconstruction(pred: Prediction, target: Targets, masked: bool) -> torch.Tensor:
    y, x, on = pred.y_prim, target.surface_points, pred.on_surface
    to_primitive = []
    for b in range(B):
        use_mask = masked and bool(on[b].any())
        for i in range(NS):
            candidates = [distance(x[b, i], y[b, s, m]) for s in range(S) for m in range(M)
                          if not use_mask or on[b, s, m]]
            to_primitive.append(torch.stack(candidates).min())
    to_target = [torch.stack([distance(y[b, s, m], x[b, i]) for i in range(NS)]).min()
                 for b in range(B) for s in range(S) for m in range(M) if on[b, s, m]]
    primitive_term = torch.stack(to_target).mean() if to_target else torch.zeros((), dtype=torch.float64)
    return torch.stack(to_primitive).mean() + primitive_term


def reference_occupancy(pred: Prediction, target: Targets) -> torch.Tensor:
    terms = []
    for b in range(B):
        for i in range(NV):
            logit = torch.stack([-pred.phi_volume[b, i, m] / TAU for m in range(M)]).max()
            p, o = torch.sigmoid(logit), target.volume_labels[b, i]
            terms.append(target.volume_weights[b, i] * -(o * torch.log(p) + (1 - o) * torch.log(1 - p)))
    return torch.stack(terms).mean()


def reference_coverage(pred: Prediction, target: Targets, k: int) -> torch.Tensor:
    terms = []
    for b in range(B):
        for m in range(M):
            interior = sorted((pred.phi_volume[b, i, m] for i in range(NV) if target.volume_labels[b, i] == 1),
                              key=scalar)
            for value in interior[:k]:
                terms.append(-torch.log(torch.sigmoid(-value / TAU) + 1e-6))
            # too few interior points: outside points (phi + 1e6) fill the k slots, sigmoid(-1e6 / tau) = 0
            terms += [torch.tensor(-math.log(1e-6), dtype=torch.float64)] * max(0, k - len(interior))
    return torch.stack(terms).mean()


def reference_overlap(pred: Prediction, lam: float) -> torch.Tensor:
    terms = []
    for b in range(B):
        for i in range(NV):
            inside = sum(torch.sigmoid(-pred.phi_volume[b, i, m] / TAU) for m in range(M))
            terms.append(torch.clamp(inside - lam, min=0))
    return torch.stack(terms).mean()


# --- reconstruction ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True])
def test_reconstruction_matches_loop_reference(masked):
    pred, target, _ = make_inputs()
    value = reconstruction_loss(pred, target, small_cfg(mask_target_to_primitive=masked))
    assert_same(value, reference_reconstruction(pred, target, masked), [pred.y_prim, target.surface_points])


def test_reconstruction_default_is_the_authors_unmasked_form():
    assert LossConfig().mask_target_to_primitive is False
    pred, target, _ = make_inputs(1)
    torch.testing.assert_close(reconstruction_loss(pred, target, LossConfig()),
                               reference_reconstruction(pred, target, masked=False))


def test_reconstruction_mask_changes_target_to_primitive_only():
    """One target point at the origin; an internal primitive point on it and a surface point 1 m away."""
    y_prim = torch.tensor([[[[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]]], dtype=torch.float64)  # (1, S=2, M=1, 3)
    on_surface = torch.tensor([[[False], [True]]])
    x = torch.zeros(1, 1, 3, dtype=torch.float64, requires_grad=True)
    pred = Prediction(y_prim, on_surface, torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.zeros(1, 1))
    target = Targets(torch.zeros(1, 1, 3), torch.zeros(1, 1), torch.ones(1, 1), x, torch.zeros(1, 1, 3))
    # primitive -> target: only the surface point counts (1 m); target -> primitive: 0 unmasked, 1 m masked
    assert scalar(reconstruction_loss(pred, target, LossConfig())) == pytest.approx(1.0)
    assert scalar(reconstruction_loss(pred, target, LossConfig(mask_target_to_primitive=True))) == pytest.approx(2.0)


def test_reconstruction_without_surface_points_is_finite():
    pred, target, _ = make_inputs()
    pred.on_surface = torch.zeros_like(pred.on_surface)
    for masked in (False, True):
        value = reconstruction_loss(pred, target, small_cfg(mask_target_to_primitive=masked))
        assert_same(value, reference_reconstruction(pred, target, masked), [pred.y_prim])


def test_reconstruction_float32_distances_are_exact_at_body_scale():
    """1 mm apart at 1 m from the origin: the |a|^2 + |b|^2 - 2ab expansion would be off by ~1e-4 m here."""
    x = torch.tensor([[[0.4, 1.2, -0.3]]], requires_grad=True)  # (1, 1, 3)
    y_prim = (x.detach() + torch.tensor([1e-3, 0.0, 0.0]))[:, :, None]  # (1, S=1, M=1, 3)
    pred = Prediction(y_prim, torch.ones(1, 1, 1, dtype=torch.bool), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1),
                      torch.zeros(1, 1))
    target = Targets(torch.zeros(1, 1, 3), torch.zeros(1, 1), torch.ones(1, 1), x, torch.zeros(1, 1, 3))
    assert scalar(reconstruction_loss(pred, target, LossConfig())) == pytest.approx(2e-3, abs=1e-7)


# --- occupancy -----------------------------------------------------------------------------------------------

def test_occupancy_matches_loop_reference():
    pred, target, _ = make_inputs()
    assert_same(occupancy_loss(pred, target, small_cfg()), reference_occupancy(pred, target), [pred.phi_volume])


def test_occupancy_is_the_weighted_mean_of_bce():
    pred, target, _ = make_inputs(2)
    logits = (-pred.phi_volume / TAU).max(dim=2).values
    o = target.volume_labels
    bce = torch.nn.functional.softplus(logits) - o * logits  # BCE with logits, closed form
    expected = (target.volume_weights * bce).sum() / (B * NV)  # divided by the point count, not by sum(w)
    torch.testing.assert_close(occupancy_loss(pred, target, small_cfg()), expected)


def test_occupancy_on_the_surface_is_log2_times_mean_weight():
    pred, target, _ = make_inputs()
    pred.phi_volume = torch.zeros(B, NV, M, dtype=torch.float64)  # every logit 0: BCE = log 2 whatever the label
    expected = math.log(2) * float(target.volume_weights.mean())
    assert scalar(occupancy_loss(pred, target, small_cfg())) == pytest.approx(expected, rel=1e-12)


# --- normal consistency ------------------------------------------------------------------------------------

def test_normal_consistency_of_a_sphere_is_analytic():
    pred, target, centre = make_inputs()
    x, n = target.surface_points, target.surface_normals
    radial = (x - centre) / (x - centre).norm(dim=2, keepdim=True)  # grad |x - c| - r
    expected = (1 - (n * radial).sum(dim=2)).mean()
    value = normal_consistency_loss(pred, target, small_cfg())
    # the value, and its gradient through the double backward (w.r.t. the sphere centre and the points)
    assert_same(value, expected, [centre, x])


@pytest.mark.parametrize("sign, loss", [(1.0, 0.0), (-1.0, 2.0)])
def test_normal_consistency_aligned_and_flipped_normals(sign, loss):
    pred, target, centre = make_inputs()
    x = target.surface_points
    target.surface_normals = sign * ((x - centre) / (x - centre).norm(dim=2, keepdim=True)).detach()
    pred.g_closest_surface = 3.0 * pred.g_closest_surface  # the gradient is normalised: scale does not matter
    assert scalar(normal_consistency_loss(pred, target, small_cfg())) == pytest.approx(loss, abs=1e-12)


def test_normal_consistency_zero_gradient_is_guarded():
    pred, target, _ = make_inputs()
    x = target.surface_points
    pred.g_closest_surface = ((x - x.detach()) ** 2).sum(dim=2)  # grad g = 2 (x - x0) = 0 at the points
    value = normal_consistency_loss(pred, target, small_cfg())
    assert scalar(value) == 1.0
    (grad,) = torch.autograd.grad(value, target.surface_points)
    assert torch.isfinite(grad).all()


def test_normal_consistency_needs_differentiable_surface_points():
    pred, target, _ = make_inputs()
    target.surface_points = target.surface_points.detach()
    with pytest.raises(ValueError, match="requires_grad"):
        normal_consistency_loss(pred, target, small_cfg())


# --- coverage and overlap ----------------------------------------------------------------------------------

def test_coverage_matches_loop_reference():
    pred, target, _ = make_inputs()
    assert_same(coverage_loss(pred, target, small_cfg()), reference_coverage(pred, target, 3), [pred.phi_volume])


def test_coverage_ignores_points_outside_the_target():
    pred, target, _ = make_inputs()
    before = coverage_loss(pred, target, small_cfg())
    with torch.no_grad():
        pred.phi_volume[target.volume_labels == 0] = -1.0  # outside points deep inside every primitive
    torch.testing.assert_close(coverage_loss(pred, target, small_cfg()), before)


def test_overlap_matches_loop_reference():
    pred, target, _ = make_inputs()
    value = overlap_loss(pred, target, small_cfg())
    assert scalar(value) > 0  # some points are inside more than lambda primitives
    assert_same(value, reference_overlap(pred, 1.95), [pred.phi_volume])


# --- total ---------------------------------------------------------------------------------------------------

def test_default_weights_are_the_authors_dfaust_ones():
    cfg = LossConfig()
    assert (cfg.w_reconstruction, cfg.w_occupancy, cfg.w_normal, cfg.w_coverage, cfg.w_overlap) == (
        0.3, 1.0, 0.01, 0.01, 0.1)
    assert (cfg.sharpness, cfg.coverage_k, cfg.overlap_lambda) == (250.0, 10, 1.95)


def test_total_is_the_weighted_sum_of_named_detached_terms():
    pred, target, centre = make_inputs()
    cfg = small_cfg(w_reconstruction=0.7, w_occupancy=1.3, w_normal=0.2, w_coverage=0.05, w_overlap=0.4)
    total, terms = total_loss(pred, target, cfg)
    assert list(terms) == ["reconstruction", "occupancy", "normal", "coverage", "overlap"]
    values = {name: term(pred, target, cfg) for name, (term, _) in TERMS.items()}
    expected = (0.7 * values["reconstruction"] + 1.3 * values["occupancy"] + 0.2 * values["normal"]
                + 0.05 * values["coverage"] + 0.4 * values["overlap"])
    assert_same(total, expected, [pred.y_prim, pred.phi_volume, centre, target.surface_points])
    for name, value in terms.items():
        assert not value.requires_grad and value.shape == ()
        torch.testing.assert_close(value, values[name].detach())
