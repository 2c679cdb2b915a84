"""The optimised training step (blocked gradient-free passes, selected normal pairs, euclidean implicit without the
(B, S, N, M, 3) tensor, fused couplings) against a plain path built from the reference SimpleNVP transcription.

The on-surface mask includes each point's own primitive, where g is zero up to rounding (the authors' quirk), so
which of those points count is rounding noise: the plain path checks the other primitives' part of the mask and then
uses the optimised path's mask. Tolerances: fp32 loss terms within 1e-4 relative and their gradients with respect to C_m within 1e-4 of the largest
entry; the bf16 INN (autocast in training) within 3% relative on every term.
"""
import pytest
import torch

import models.neural_parts as neural_parts
from config import LossConfig, ModelConfig
from losses import TERMS, total_loss
from losses.targets import Targets
from models.neural_parts import NeuralParts
from models.prediction import Prediction
from tests.reference_inn import ReferenceNVP

B, M, NV, NS, S = 2, 3, 300, 120, 40


def ellipsoid_targets(generator: torch.Generator) -> Targets:
    """Balanced volume draws and surface samples of an upright ellipsoid (a stand-in body)."""
    centre, radii = torch.tensor([0.0, 0.3, 0.0]), torch.tensor([0.2, 0.8, 0.15])
    points = torch.tensor([-0.5, -0.75, -0.5]) + torch.tensor([1.0, 2.0, 1.0]) * torch.rand(B, NV, 3, generator=generator)
    labels = ((((points - centre) / radii) ** 2).sum(-1) < 1).float()
    weights = 0.5 + torch.rand(B, NV, generator=generator)
    direction = torch.nn.functional.normalize(torch.randn(B, NS, 3, generator=generator), dim=-1)
    normals = torch.nn.functional.normalize(direction / radii, dim=-1)
    return Targets(points, labels, weights, (centre + radii * direction).requires_grad_(True), normals)


def reference_prediction(model: NeuralParts, C: torch.Tensor, sphere: torch.Tensor, targets: Targets,
                         on_surface: torch.Tensor) -> Prediction:
    """The straightforward path: every (point, primitive) pair through the reference INN, all with gradients."""
    inn = ReferenceNVP([layer.mask for layer in model.inn.layers]).copy_from(model.inn)
    r = model.cfg.sphere_radius

    def g(points):  # (B, N, 3) -> (B, N, M)
        return inn.inverse(C, points[:, :, None].expand(-1, -1, M, -1)).norm(dim=-1) - r

    y_prim = inn.forward(C, sphere)  # (B, S, M, 3)
    g_prim = g(y_prim.reshape(B, S * M, 3)).view(B, S, M, M)  # g_j at the points of primitive m
    outside_others = (g_prim >= 0) | torch.eye(M, dtype=torch.bool)  # ignore the point's own primitive
    assert not (on_surface & ~outside_others.all(-1)).any()
    difference = targets.volume_points[:, None, :, None, :] - y_prim[:, :, None]  # (B, S, NV, M, 3)
    phi_volume = torch.sign(g(targets.volume_points)) * difference.norm(dim=-1).min(dim=1).values
    phi_surface = g(targets.surface_points)
    closest = phi_surface.square().argmin(-1, keepdim=True)
    return Prediction(y_prim, on_surface, phi_volume, phi_surface, phi_surface.gather(-1, closest).squeeze(-1))


def losses_and_gradient(prediction_of, C):
    loss, terms = total_loss(prediction_of(C), TARGETS, LossConfig())
    (grad,) = torch.autograd.grad(loss, C)
    return terms, grad


TARGETS = ellipsoid_targets(torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bf16", [False, True])
def test_optimised_step_matches_the_plain_path(bf16, monkeypatch):
    torch.manual_seed(1)
    model = NeuralParts(ModelConfig(n_primitives=M, n_sphere_points=S, pretrained="false", bf16=bf16)).train()
    sphere = torch.nn.functional.normalize(torch.randn(B, S, M, 3), dim=-1) * model.cfg.sphere_radius
    monkeypatch.setattr(neural_parts, "sample_sphere_points", lambda *args, **kwargs: sphere)
    monkeypatch.setattr(model, "conditioning", lambda images: images)  # feed C directly
    C = torch.randn(B, M, 512).requires_grad_(True)

    fast = model(C, TARGETS.volume_points, TARGETS.surface_points)
    fast_terms, fast_grad = losses_and_gradient(lambda c: model(c, TARGETS.volume_points, TARGETS.surface_points), C)
    plain_terms, plain_grad = losses_and_gradient(
        lambda c: reference_prediction(model, c, sphere, TARGETS, fast.on_surface), C)

    tolerance = 3e-2 if bf16 else 1e-4
    for term in TERMS:
        fast, plain = float(fast_terms[term]), float(plain_terms[term])
        assert abs(fast - plain) <= tolerance * max(abs(plain), 1e-3), (term, fast, plain)
    if not bf16:
        assert (fast_grad - plain_grad).abs().max() <= 1e-4 * plain_grad.abs().max()
