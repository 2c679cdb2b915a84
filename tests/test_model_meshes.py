"""UV sphere, primitive meshes through phi, and their watertight union."""
import numpy as np
import pytest
import torch
import trimesh

from common.errors import UserError
from config import EvalConfig, ModelConfig
from evaluation.loop import evaluate_frames
from models.meshes import primitive_meshes, union_mesh, uv_sphere
from models.neural_parts import NeuralParts


@pytest.mark.parametrize("n, vertices, faces", [(1000, 1202, 2400), (5000, 5306, 10608), (10000, 10514, 21024)])
def test_uv_sphere_counts_follow_the_authors_formula(n, vertices, faces):
    v, f = uv_sphere(n, 0.25)
    assert v.shape == (vertices, 3) and f.shape == (faces, 3)


def test_uv_sphere_is_a_closed_outward_sphere_with_poles_on_y():
    v, f = uv_sphere(300, 0.25)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2
    assert np.allclose(np.linalg.norm(v, axis=1), 0.25)
    assert np.allclose(v[0], [0, 0.25, 0]) and np.allclose(v[-1], [0, -0.25, 0])
    assert 0.95 * (4 / 3 * np.pi * 0.25 ** 3) < mesh.volume < 4 / 3 * np.pi * 0.25 ** 3


def test_sphere_vertex_count_below_one_is_refused():
    with pytest.raises(ValueError, match="min_vertices >= 1"):  # a caller's bug inside the package
        uv_sphere(0, 0.25)
    with pytest.raises(UserError, match="eval.n_sphere_vertices=0 must be >= 1"):  # the config value, before any work
        next(evaluate_frames(None, None, EvalConfig(n_sphere_vertices=0), torch.device("cpu")))


def test_primitive_meshes_and_union_are_watertight():
    torch.manual_seed(0)
    model = NeuralParts(ModelConfig(pretrained="false", n_primitives=4)).eval()
    with torch.no_grad():
        C = model.conditioning(torch.rand(1, 3, 64, 64))
    meshes = primitive_meshes(model, C, 400)
    assert len(meshes) == 4
    sphere_vertices, _ = uv_sphere(400, 0.25)
    for m, mesh in enumerate(meshes):
        assert mesh.is_watertight and mesh.volume > 0
        with torch.no_grad():  # vertices are phi of the sphere vertices for primitive m
            g = model.implicit(torch.as_tensor(mesh.vertices[None], dtype=torch.float32), C)[0, :, m]
        assert g.abs().max() < 1e-5
        assert len(mesh.vertices) == len(sphere_vertices)
    union = union_mesh(meshes)
    assert union.is_watertight and union.volume > 0
    assert union.volume <= sum(mesh.volume for mesh in meshes) + 1e-6
    assert union.volume >= max(mesh.volume for mesh in meshes) - 1e-6


def test_union_of_overlapping_spheres_removes_the_overlap():
    a = trimesh.Trimesh(*uv_sphere(2000, 0.25), process=False)
    b = a.copy()
    b.apply_translation([0.25, 0, 0])
    union = union_mesh([a, b])
    assert union.is_watertight
    lens = np.pi / 12 * (4 * 0.25 + 0.25) * (2 * 0.25 - 0.25) ** 2  # overlap of two balls of radius r at d = r
    assert abs(union.volume - (a.volume + b.volume - lens)) < 0.01 * union.volume
    assert len(union_mesh([]).vertices) == 0
