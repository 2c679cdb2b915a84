"""Primitive meshes: a UV sphere pushed through phi (authors' `utils.py` sphere_mesh), and their boolean union."""
from __future__ import annotations

import math

import manifold3d
import numpy as np
import torch
import trimesh



def uv_sphere(min_vertices: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere with at least `min_vertices` vertices, poles on +-y, outward-facing triangles.

    parallels = ceil(sqrt(n / 2)) + 2 latitude bands, meridians = 2 * parallels; one vertex per pole.
    Returns vertices (V, 3) float64 of norm `radius` and faces (F, 3) int64, V = (parallels - 1) * meridians + 2.
    """
    if min_vertices < 1:
        raise ValueError(f"a UV sphere needs min_vertices >= 1; got {min_vertices}")
    parallels = math.ceil(math.sqrt(min_vertices / 2)) + 2
    meridians = 2 * parallels
    polar = np.pi * np.arange(1, parallels) / parallels  # (parallels - 1,) angle from +y
    azimuth = 2 * np.pi * np.arange(meridians) / meridians  # (meridians,)
    polar, azimuth = np.meshgrid(polar, azimuth, indexing="ij")  # rings x meridians
    ring_vertices = np.stack([np.sin(polar) * np.cos(azimuth), np.cos(polar), np.sin(polar) * np.sin(azimuth)], -1)
    vertices = np.concatenate([[[0.0, 1.0, 0.0]], ring_vertices.reshape(-1, 3), [[0.0, -1.0, 0.0]]]) * radius

    ring = np.arange(parallels - 1)[:, None] * meridians + 1  # first vertex of each ring
    j = np.arange(meridians)[None, :]
    here, there = ring + j, ring + (j + 1) % meridians  # (rings, meridians)
    north, south = 0, len(vertices) - 1
    caps = [np.stack([np.full(meridians, north), there[0], here[0]], -1),
            np.stack([np.full(meridians, south), here[-1], there[-1]], -1)]
    band = np.stack([here[:-1], there[:-1], here[1:], there[:-1], there[1:], here[1:]], -1)  # between rings
    faces = np.concatenate(caps + [band.reshape(-1, 3)])
    return vertices, faces.astype(np.int64)


@torch.no_grad()
def primitive_meshes(model, C: torch.Tensor, min_vertices: int) -> list[trimesh.Trimesh]:
    """The M primitives of one item as meshes in world coordinates.

    model: a NeuralParts (its current train/eval mode is used; evaluation mode gives float32 phi);
    C: (1, M, 512) conditioning of that item. Every primitive shares the UV sphere's faces.
    """
    if C.dim() != 3 or C.shape[0] != 1:
        raise ValueError(f"primitive_meshes takes the conditioning of one item, (1, M, D); got {tuple(C.shape)}")
    vertices, faces = uv_sphere(min_vertices, model.cfg.sphere_radius)
    M = C.shape[1]
    sphere = torch.as_tensor(vertices, dtype=C.dtype, device=C.device)  # (V, 3)
    world = model.phi(sphere[None, :, None].expand(1, -1, M, -1), C)[0]  # (V, M, 3)
    world = world.permute(1, 0, 2).cpu().numpy().astype(np.float64)  # (M, V, 3)
    return [trimesh.Trimesh(vertices=points, faces=faces, process=False) for points in world]


def union_mesh(meshes: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """Watertight boolean union of closed meshes (manifold3d); an empty mesh when `meshes` is empty."""
    solids = []
    for mesh in meshes:
        solid = manifold3d.Manifold(manifold3d.Mesh(vert_properties=np.ascontiguousarray(mesh.vertices, np.float32),
                                                    tri_verts=np.ascontiguousarray(mesh.faces, np.uint32)))
        if solid.status() != manifold3d.Error.NoError:
            raise ValueError(f"a primitive mesh is not a closed 2-manifold ({solid.status().name}); cannot build the union")
        solids.append(solid)
    if not solids:
        return trimesh.Trimesh()
    union = manifold3d.Manifold.batch_boolean(solids, manifold3d.OpType.Add).to_mesh()
    return trimesh.Trimesh(vertices=union.vert_properties[:, :3].astype(np.float64),
                           faces=union.tri_verts.astype(np.int64), process=False)
