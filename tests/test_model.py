"""NeuralParts: the prediction contract, the implicit function, the normal-loss shortcut, frozen BatchNorm."""
import pytest
import torch

import models.neural_parts as neural_parts
from config import ModelConfig
from models.feature_extractor import FrozenBatchNorm2d
from models.geometry import euclidean_implicit, sample_sphere_points
from models.neural_parts import NeuralParts
from models.prediction import Prediction

B, M, S, NV, NS = 2, 3, 16, 40, 30


def make_model(**overrides) -> NeuralParts:
    torch.manual_seed(0)
    cfg = ModelConfig(pretrained="false", n_primitives=M, n_sphere_points=S, **overrides)
    return NeuralParts(cfg)


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(B, 3, 64, 64, generator=generator)
    volume = torch.rand(B, NV, 3, generator=generator) - 0.5
    surface = 0.5 * torch.rand(B, NS, 3, generator=generator) - 0.25
    return images, volume, surface


def test_prediction_shapes_and_dtypes():
    model = make_model()
    images, volume, surface = batch()
    prediction = model(images, volume, surface)
    assert isinstance(prediction, Prediction)
    assert prediction.y_prim.shape == (B, S, M, 3)
    assert prediction.on_surface.shape == (B, S, M) and prediction.on_surface.dtype == torch.bool
    assert prediction.phi_volume.shape == (B, NV, M)
    assert prediction.phi_surface.shape == (B, NS, M)
    assert prediction.g_closest_surface.shape == (B, NS)
    assert model.conditioning(images).shape == (B, M, 512)
    assert prediction.y_prim.requires_grad and prediction.phi_volume.requires_grad
    assert not prediction.phi_surface.requires_grad


def test_implicit_is_negative_inside_and_positive_outside_each_primitive():
    model = make_model().eval()
    C = model.conditioning(batch()[0])
    u = torch.nn.functional.normalize(torch.randn(B, 20, M, 3), dim=-1)  # unit vectors
    r = model.cfg.sphere_radius
    with torch.no_grad():
        for factor in (0.5, 1.5):
            world = model.phi(factor * r * u, C)  # (B, 20, M, 3)
            g_own = torch.linalg.vector_norm(model.phi_inverse(world, C), dim=-1) - r  # g_m at its own points
            assert torch.allclose(g_own, torch.full_like(g_own, (factor - 1) * r), atol=1e-5)
            g_all = model.implicit(world[:, :, 0], C)  # (B, 20, M): every g_j at primitive 0's points
            assert torch.allclose(g_all[..., 0], g_own[..., 0], atol=1e-6)


def test_state_dict_round_trip_carries_the_coupling_masks():
    source = make_model(seed=27).eval()
    seed = next(s for s in range(100) if not torch.equal(_masks(make_model(seed=s)), _masks(source)))
    target = make_model(seed=seed).eval()
    target.load_state_dict(source.state_dict())
    assert torch.equal(_masks(target), _masks(source))
    images, volume, _ = batch()
    with torch.no_grad():
        assert torch.equal(target.implicit(volume, target.conditioning(images)),
                           source.implicit(volume, source.conditioning(images)))


def _masks(model: NeuralParts) -> torch.Tensor:
    return torch.stack([layer.mask for layer in model.inn.layers])


def test_gradient_free_blocks_match_the_single_pass(monkeypatch):
    model = make_model().eval()
    images, volume, _ = batch()
    C = model.conditioning(images)
    expected = model.implicit(volume, C)  # gradient enabled: one pass
    monkeypatch.setitem(neural_parts.BLOCK_ROWS, "cpu", 7)
    with torch.no_grad():
        assert torch.allclose(model.implicit(volume, C), expected, atol=1e-6)


def test_euclidean_implicit_matches_a_naive_difference_tensor():
    points = torch.randn(B, NV, 3)
    y_prim = torch.randn(B, S, M, 3, requires_grad=True)
    g = torch.randn(B, NV, M)
    value = euclidean_implicit(g, points, y_prim)
    differences = points[:, None, :, None, :] - y_prim[:, :, None]  # (B, S, N, M, 3)
    naive = torch.sign(g) * torch.linalg.vector_norm(differences, dim=-1).min(dim=1).values
    assert torch.allclose(value, naive, atol=1e-6)
    weights = torch.randn(B, NV, M)
    (gradient,) = torch.autograd.grad((value * weights).sum(), y_prim)
    (naive_gradient,) = torch.autograd.grad((naive * weights).sum(), y_prim)
    assert torch.allclose(gradient, naive_gradient, atol=1e-5)


def test_phi_volume_and_on_surface_follow_their_definitions():
    model = make_model()
    images, volume, surface = batch(1)
    torch.manual_seed(5)
    prediction = model(images, volume, surface)
    torch.manual_seed(5)
    sphere = sample_sphere_points(B, S, M, model.cfg.sphere_radius)  # the same draw as inside forward
    C = model.conditioning(images)
    with torch.no_grad():
        assert torch.allclose(model.phi(sphere, C), prediction.y_prim, atol=1e-6)
        g_volume = model.implicit(volume, C)
        assert torch.allclose(prediction.phi_surface, model.implicit(surface, C))
        g_prim = model.implicit(prediction.y_prim.flatten(1, 2), C).view(B, S, M, M)  # [b, s, m, j] = g_j(y[b, s, m])
    assert torch.equal(prediction.on_surface, (g_prim >= 0).all(-1))
    assert torch.allclose(prediction.phi_volume, euclidean_implicit(g_volume, volume, prediction.y_prim), atol=1e-6)
    plain = make_model(euclidean_phi_volume=False)
    assert torch.allclose(plain(images, volume, surface).phi_volume, g_volume, atol=1e-6)


def test_closest_surface_implicit_matches_naive_selection_with_double_backward():
    model = make_model()
    images, volume, surface = batch(2)
    normals = torch.nn.functional.normalize(torch.randn(B, NS, 3), dim=-1)

    def normal_loss_gradients(g_of_points):
        x = surface.clone().requires_grad_(True)
        g = g_of_points(x)  # (B, NS)
        (grad_x,) = torch.autograd.grad(g.sum(), x, create_graph=True)
        loss = (1 - (torch.nn.functional.normalize(grad_x, dim=-1) * normals).sum(-1)).mean()
        model.zero_grad()
        loss.backward()
        return g.detach(), grad_x.detach(), {name: p.grad.clone() for name, p in model.named_parameters()
                                            if name.startswith("inn.") and p.grad is not None}

    def naive(x):
        g = model.implicit(x, model.conditioning(images))  # (B, NS, M), differentiable everywhere
        return g.gather(-1, g.square().argmin(-1, keepdim=True)).squeeze(-1)

    g_fast, grad_fast, params_fast = normal_loss_gradients(lambda x: model(images, volume, x).g_closest_surface)
    g_naive, grad_naive, params_naive = normal_loss_gradients(naive)
    assert torch.allclose(g_fast, g_naive, atol=1e-6)
    assert torch.allclose(grad_fast, grad_naive, atol=1e-5)
    assert params_fast.keys() == params_naive.keys() and len(params_fast) > 10
    for name, gradient in params_naive.items():
        assert torch.allclose(params_fast[name], gradient, atol=1e-6, rtol=1e-4), name


def test_frozen_batchnorm_keeps_statistics_and_trains_affine():
    model = make_model().train()
    norms = [module for module in model.encoder.modules() if isinstance(module, FrozenBatchNorm2d)]
    assert len(norms) == 20 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())
    before = {i: (n.running_mean.clone(), n.running_var.clone(), n.weight.detach().clone()) for i, n in enumerate(norms)}
    optimizer = torch.optim.SGD(model.encoder.parameters(), lr=0.1)
    model.conditioning(batch()[0]).square().sum().backward()
    optimizer.step()
    for i, norm in enumerate(norms):
        assert torch.equal(norm.running_mean, before[i][0]) and torch.equal(norm.running_var, before[i][1])
        assert norm.weight.grad is not None and not torch.equal(norm.weight.detach(), before[i][2])


def test_frozen_batchnorm_equals_batchnorm_in_eval_mode():
    bn = torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        for tensor in (bn.weight, bn.bias, bn.running_mean):
            tensor.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(FrozenBatchNorm2d.from_batchnorm(bn)(x), bn(x), atol=1e-6)


def test_batchnorm_can_stay_unfrozen():
    model = make_model(freeze_bn=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())


@pytest.mark.parametrize("shape", [(1, 3, 16, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_wrong_image_shape_is_an_internal_error(shape):
    with pytest.raises(ValueError, match="images must be"):
        make_model().conditioning(torch.rand(shape))


def test_wrong_point_shape_is_an_internal_error():
    model = make_model()
    images, volume, surface = batch()
    with pytest.raises(ValueError, match="volume_points"):
        model(images, volume[..., :2], surface)
    with pytest.raises(ValueError, match="sphere_points"):
        model.phi(torch.rand(B, 5, M + 1, 3), model.conditioning(images))


def test_bf16_training_prediction_is_close_to_fp32():
    fp32, bf16 = make_model(), make_model(bf16=True)
    bf16.load_state_dict(fp32.state_dict())
    images, volume, surface = batch(3)
    torch.manual_seed(1)
    expected = fp32(images, volume, surface)
    torch.manual_seed(1)
    out = bf16.train()(images, volume, surface)
    assert out.y_prim.dtype == out.g_closest_surface.dtype == torch.float32
    # Measured differences ~2e-3; tolerance 0.01 (coordinates and implicit values in metres).
    assert (out.y_prim - expected.y_prim).abs().max() < 0.01
    assert (out.g_closest_surface - expected.g_closest_surface).abs().max() < 0.01
