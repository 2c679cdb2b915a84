"""model.init_placement: k-means placement of the primitives (models/placement.py) and its use by the INN."""
import igl
import numpy as np
import pytest
import torch
import trimesh

import models.placement as placement
from config import ModelConfig
from models.neural_parts import NeuralParts
from models.placement import cluster_placement
from preprocess.synthetic_body import JOINT_INDEX, build_template, make_body, sample_shape


def solid_ball(centre, radius, n, rng):
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return np.asarray(centre) + radius * rng.random((n, 1)) ** (1 / 3) * direction  # uniform in the ball


def ball_surface(centre, radius, n, rng):
    direction = rng.normal(size=(n, 3))
    return np.asarray(centre) + radius * direction / np.linalg.norm(direction, axis=1, keepdims=True)


def vertical_cylinder(x, radius, height, n, rng, surface=False):
    """n points uniform in (or, with surface, on the side of) a vertical cylinder standing on y = 0 at x."""
    angle, r = 2 * np.pi * rng.random(n), radius * (np.ones(n) if surface else np.sqrt(rng.random(n)))
    return np.stack([x + r * np.cos(angle), height * rng.random(n), r * np.sin(angle)], axis=1)


def cylinders(xs, radii, height, n, rng):
    """(inside, surface) points of a body of vertical cylinders, about n of each kind, spread as a body's samples
    are: inside points by volume (radius squared), surface points by area (radius)."""
    radii = np.asarray(radii)
    return tuple(np.concatenate([vertical_cylinder(x, r, height, round(n * share), rng, surface)
                                 for x, r, share in zip(xs, radii, weight / weight.sum())])
                 for surface, weight in ((False, radii ** 2), (True, radii)))


def test_two_legs_split_side_by_side_not_into_slabs(monkeypatch):
    rng = np.random.default_rng(0)
    legs = cylinders((-0.1, 0.1), (0.06, 0.06), 0.8, 8000, rng)
    translation, scale = cluster_placement(*legs, 2, radius=0.25, seed=0)
    order = translation[:, 0].argsort()
    np.testing.assert_allclose(translation[order].numpy(), [[-0.1, 0.4, 0.0], [0.1, 0.4, 0.0]], atol=0.02)
    # std of a uniform disc of radius a per axis is a / 2, along the height h / sqrt(12)
    np.testing.assert_allclose(scale.numpy(), [[0.25 / (5 ** 0.5 * 0.03), 0.25 / (5 ** 0.5 * 0.8 / 12 ** 0.5),
                                                0.25 / (5 ** 0.5 * 0.03)]] * 2, rtol=0.05)
    monkeypatch.setattr(placement, "HEIGHT_SHRINK", 1.0)  # unshrunk heights cut both legs into a top and a bottom
    translation, _ = cluster_placement(*legs, 2, radius=0.25, seed=0)
    assert abs(translation[:, 0]).max() < 0.02 and abs(translation[0, 1] - translation[1, 1]) > 0.3


@pytest.fixture(scope="module")
def template():
    return build_template()


@pytest.mark.parametrize("gender", ["m", "f"])
def test_five_primitives_start_one_per_limb_and_one_on_the_trunk_of_a_synthetic_body(template, gender):
    """The embedded dataset's body in its calibration pose: each arm, each leg and the trunk gets a primitive
    of its own (the nearest primitive of each part's middle joint is a different one), the arms' within 10 cm
    of the elbow."""
    rng = np.random.default_rng(0)
    body = make_body(template, sample_shape(rng, gender))
    mesh = trimesh.Trimesh(body.vertices, template.faces, process=False)
    surface = trimesh.sample.sample_surface(mesh, 20000, seed=0)[0]
    box = rng.uniform(*mesh.bounds, size=(100_000, 3))
    inside = box[igl.winding_number(mesh.vertices, mesh.faces, box) > 0.5]
    translation, _ = cluster_placement(inside, surface, 5, radius=0.25, seed=0)
    parts = ["left_elbow", "right_elbow", "left_knee", "right_knee", "chest"]
    joints = body.joints[[JOINT_INDEX[part] for part in parts]]  # (5, 3) metres
    distance = np.linalg.norm(joints[:, None] - translation.numpy()[None], axis=2)  # (part, primitive)
    assert sorted(distance.argmin(axis=1)) == [0, 1, 2, 3, 4]
    assert distance[:2].min(axis=1).max() < 0.1


def test_placed_primitives_are_exactly_the_clustered_balls_for_any_image():
    """set_placement starts primitive m as exactly the sphere of radius r / scale_m at translation_m, whatever the
    image and the random initialisation: a solid ball's cluster comes back as that ball."""
    rng = np.random.default_rng(1)
    centres, radii = [(-0.3, 0.2, 0.0), (0.0, 0.9, 0.1), (0.35, -0.4, 0.0)], [0.1, 0.15, 0.2]
    points = np.concatenate([solid_ball(c, a, 6000, rng) for c, a in zip(centres, radii)])
    surface = np.concatenate([ball_surface(c, a, 6000, rng) for c, a in zip(centres, radii)])
    torch.manual_seed(0)
    model = NeuralParts(ModelConfig(pretrained="false", n_primitives=3, init_placement=True)).eval()
    inn = model.inn
    inn.set_placement(*cluster_placement(points, surface, 3, model.cfg.sphere_radius, seed=0))
    centre_of = inn.placement_translation.numpy()
    for image, (centre, radius) in zip(torch.rand(3, 1, 3, 64, 64), zip(centres, radii)):
        C = model.conditioning(image)  # a different image for each ball
        m = int(np.linalg.norm(centre_of - centre, axis=1).argmin())
        np.testing.assert_allclose(centre_of[m], centre, atol=0.01)
        probe = torch.tensor(solid_ball(centre, 1.0, 200, rng) - centre, dtype=torch.float32)  # inside the unit ball
        probe = probe / torch.linalg.vector_norm(probe, dim=1, keepdim=True)  # unit directions
        with torch.no_grad():
            for factor, inside in ((0.9, True), (1.1, False)):
                g = model.implicit((torch.tensor(centre) + factor * radius * probe)[None].float(), C)[0, :, m]
                assert bool((g < 0).all()) == inside and bool((g > 0).all()) != inside, (centre, factor)


def test_default_model_has_no_placement_terms_and_placed_state_round_trips():
    default = NeuralParts(ModelConfig(pretrained="false"))
    assert not any("placement" in key for key in default.state_dict())
    assert sum(p.numel() for p in default.inn.parameters()) == 2_275_746  # the authors' count
    cfg = ModelConfig(pretrained="false", n_primitives=2, init_placement=True)
    source, target = NeuralParts(cfg), NeuralParts(cfg)
    source.inn.set_placement(torch.tensor([[0.1, 0.2, 0.3], [-0.1, 0.5, 0.0]]), torch.tensor([[2.0] * 3, [0.5] * 3]))
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.inn.placement_translation, source.inn.placement_translation)
    assert torch.equal(target.inn.placement_scale, source.inn.placement_scale)


def test_placement_starts_primitives_upright_and_still_learns_to_move_them():
    torch.manual_seed(0)
    model = NeuralParts(ModelConfig(pretrained="false", n_primitives=5, init_placement=True))
    model.inn.set_placement(torch.zeros(5, 3), torch.ones(5, 3))
    cond = model.inn.condition(model.conditioning(torch.rand(4, 3, 64, 64)))
    assert torch.equal(cond.rotation.detach(), torch.eye(3).expand(4, 5, 3, 3))
    cond.translation.sum().backward()  # the zeroed last layer is reached through its input, never zero
    assert model.inn.translation_head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n_inside", [0, 1])
def test_a_cell_with_fewer_than_two_inside_points_starts_as_a_ball_of_radius_r(n_inside):
    """Two separate balls' surfaces, the inside sampled in one ball only (plus n_inside points in the other): the
    other cell starts at its surface centroid with scale exactly 1, the sphere of radius r itself."""
    rng = np.random.default_rng(2)
    left, right = (-0.5, 0.0, 0.0), (0.5, 0.0, 0.0)
    surface = np.concatenate([ball_surface(left, 0.1, 3000, rng), ball_surface(right, 0.1, 3000, rng)])
    inside = np.concatenate([solid_ball(left, 0.1, 3000, rng), solid_ball(right, 0.1, n_inside, rng)])
    translation, scale = cluster_placement(inside, surface, 2, radius=0.25, seed=0)
    empty = int(translation[:, 0].argmax())
    np.testing.assert_allclose(translation[empty].numpy(), surface[3000:].mean(axis=0), atol=1e-6)
    assert torch.equal(scale[empty], torch.ones(3))
    np.testing.assert_allclose(scale[1 - empty].numpy(), [0.25 / 0.1] * 3, rtol=0.05)  # the filled ball: radius 0.1


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="6 surface points cannot place 5 primitives"):
        cluster_placement(np.zeros((6, 3)), np.zeros((6, 3)), 5, radius=0.25, seed=0)
