"""The optimised INN against the plain transcription of the authors' SimpleNVP, and its invertibility."""
import math

import pytest
import torch

from config import ModelConfig
from models.inn import ConditionalNVP, quaternion_to_matrix
from tests.reference_inn import ReferenceNVP, rotation_from_quaternion

B, N, M, D = 2, 50, 3, 512


def make_inn(seed: int = 27, **overrides) -> ConditionalNVP:
    torch.manual_seed(seed)
    return ConditionalNVP(ModelConfig(pretrained="false", seed=seed, **overrides))


def reference_of(inn: ConditionalNVP) -> ReferenceNVP:
    return ReferenceNVP([layer.mask for layer in inn.layers], proj_dims=inn.projection.second.out_features,
                        hidden=inn.layers[0].hidden_size).copy_from(inn)


def inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    C = torch.randn(B, M, D, generator=generator)
    x = 0.25 * torch.randn(B, N, M, 3, generator=generator)
    return C, x


def assert_close(actual, expected, tol=1e-5):
    scale = max(1.0, expected.abs().max().item())
    assert (actual - expected).abs().max().item() <= tol * scale


def test_parameter_count_matches_the_authors_network():
    assert sum(p.numel() for p in make_inn().parameters()) == 2_275_746
    assert sum(p.numel() for p in reference_of(make_inn()).parameters()) == 2_275_746


def test_widths_follow_the_config_as_in_the_authors_network():
    inn = make_inn(hidden_size=64, proj_dims=32)
    assert inn.projection.first.out_features == 64  # 2 proj_dims, the authors' ProjectionLayer
    assert all(head[0].out_features == 64 for head in (inn.sigma_head, inn.rotation_head, inn.translation_head))
    reference = reference_of(inn)
    assert sum(p.numel() for p in inn.parameters()) == sum(p.numel() for p in reference.parameters())
    C, x = inputs(4)
    with torch.no_grad():
        assert_close(inn.inverse(x, inn.condition(C).per_point()), reference.inverse(C, x))


def test_split_first_layer_starts_as_the_authors_single_linear():
    """Both parts of the first s/t Linear draw from PyTorch's default for nn.Linear(512 + 128, H): U(-b, b),
    b = 1 / sqrt(640), bias included. 2H x 640 = 327,680 weights: the std is within 1% of b / sqrt(3)."""
    layer = make_inn().layers[0]
    torch.manual_seed(0)
    single = torch.nn.Linear(D + 128, layer.hidden_size)
    bound = 1 / math.sqrt(D + 128)
    assert single.weight.abs().max() <= bound and single.bias.abs().max() <= bound
    parts = {"conditioning": layer.first_conditioning.weight, "projection": layer.first_projection.weight,
             "both": torch.cat([layer.first_conditioning.weight, layer.first_projection.weight], dim=1)}
    for name, weight in parts.items():
        assert weight.abs().max() <= bound, name
        assert weight.abs().max() > 0.999 * bound, name  # the whole interval is used, not a narrower one
        assert abs(weight.std().item() - single.weight.std().item()) < 0.01 * bound / math.sqrt(3), name
        assert abs(weight.mean().item()) < 0.01 * bound, name
    bias = layer.first_conditioning.bias  # 2H = 512 draws
    assert bias.abs().max() <= bound and bias.abs().max() > 0.95 * bound
    assert abs(bias.std().item() - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)


def test_masks_keep_two_coordinates_and_come_from_the_seed():
    masks = [layer.mask for layer in make_inn(seed=27).layers]
    assert all(sorted(mask.tolist()) == [0.0, 1.0, 1.0] for mask in masks)
    assert torch.equal(torch.stack(masks), torch.stack([layer.mask for layer in make_inn(seed=27).layers]))
    others = [torch.stack([layer.mask for layer in make_inn(seed=s).layers]) for s in range(5)]
    assert any(not torch.equal(torch.stack(masks), other) for other in others)


def test_quaternion_matrix_is_the_hamilton_rotation():
    q = torch.nn.functional.normalize(torch.randn(100, 4, dtype=torch.float64), dim=-1)
    R = quaternion_to_matrix(q)
    assert torch.allclose(R, rotation_from_quaternion(q), atol=1e-12)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(100, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(100, dtype=torch.float64))
    angle = 0.3  # about +z: R @ e_x = (cos, sin, 0)
    Rz = quaternion_to_matrix(torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=torch.float64))
    assert torch.allclose(Rz[:, 0], torch.tensor([math.cos(angle), math.sin(angle), 0.0], dtype=torch.float64))


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_matches_reference_values_and_gradients(direction):
    inn = make_inn()
    reference = reference_of(inn)
    C, x = inputs()
    C_opt, x_opt = C.clone().requires_grad_(True), x.clone().requires_grad_(True)
    C_ref, x_ref = C.clone().requires_grad_(True), x.clone().requires_grad_(True)
    cond = inn.condition(C_opt).per_point()
    out = inn(x_opt, cond) if direction == "forward" else inn.inverse(x_opt, cond)
    expected = getattr(reference, direction)(C_ref, x_ref)
    assert out.shape == (B, N, M, 3)
    assert_close(out, expected)

    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    assert_close(x_opt.grad, x_ref.grad)
    assert_close(C_opt.grad, C_ref.grad)
    ref_params = dict(reference.named_parameters())
    for layer, ref_layer in zip(inn.layers, reference.layers):  # fused first layers against the two nets
        H = layer.hidden_size
        for half, net in ((slice(0, H), ref_layer.s_net), (slice(H, 2 * H), ref_layer.t_net)):
            assert_close(layer.first_conditioning.weight.grad[half], net[0].weight.grad[:, :D])
            assert_close(layer.first_projection.weight.grad[half], net[0].weight.grad[:, D:])
            assert_close(layer.first_conditioning.bias.grad[half], net[0].bias.grad)
        assert_close(layer.s_hidden.weight.grad, ref_layer.s_net[2].weight.grad)
        assert_close(layer.t_out.weight.grad, ref_layer.t_net[4].weight.grad)
        assert_close(layer.s_out.bias.grad, ref_layer.s_net[4].bias.grad)
    assert_close(inn.projection.first.weight.grad, ref_params["projection.0.weight"].grad)
    assert_close(inn.projection.second.weight.grad, ref_params["projection.2.weight"].grad)
    assert_close(inn.rotation_head[0].weight.grad, ref_params["rotation.0.weight"].grad)
    assert_close(inn.sigma_head[2].bias.grad, ref_params["scale.2.bias"].grad)
    assert_close(inn.translation_head[2].weight.grad, ref_params["translation.2.weight"].grad)


def test_inverse_undoes_forward_and_forward_undoes_inverse():
    inn = make_inn()
    C, x = inputs(1)
    cond = inn.condition(C).per_point()
    with torch.no_grad():
        y = inn(x, cond)
        assert (inn.inverse(y, cond) - x).abs().max() < 1e-5
        assert (inn(inn.inverse(x, cond), cond) - x).abs().max() < 1e-5


def test_selected_conditioning_equals_the_grid_entry():
    inn = make_inn()
    C, x = inputs(2)
    cond = inn.condition(C)
    primitive = torch.randint(0, M, (B, N))
    with torch.no_grad():
        grid = inn.inverse(x[:, :, :1], cond.per_point())  # (B, N, M, 3): same points for every primitive
        chosen = inn.inverse(x[:, :, 0], cond.select(primitive))  # (B, N, 3)
    expected = grid.gather(2, primitive[:, :, None, None].expand(-1, -1, 1, 3)).squeeze(2)
    assert_close(chosen, expected, 1e-6)


def test_bf16_autocast_only_in_training_and_close_to_fp32():
    fp32, bf16 = make_inn(), make_inn(bf16=True)
    bf16.load_state_dict(fp32.state_dict())
    C, x = inputs(3)
    with torch.no_grad():
        expected = fp32.inverse(x, fp32.condition(C).per_point())
        bf16.eval()
        assert torch.equal(bf16.inverse(x, bf16.condition(C).per_point()), expected)
        bf16.train()
        out = bf16.inverse(x, bf16.condition(C).per_point())
    assert out.dtype == torch.float32
    # bf16 keeps ~3 significant digits in the s/t nets: coordinates (|x| up to ~2 here) within 0.01 (measured 0.003).
    assert (out - expected).abs().max() < 0.01
    assert (out - expected).abs().max() > 0  # autocast really ran
