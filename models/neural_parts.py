"""Neural Parts: one image -> M primitives, each a sphere of radius r deformed by the conditional INN phi.

g_m(x) = |phi^-1(x; C_m)| - r is < 0 inside primitive m; the shape is the union, G(x) = min_m g_m(x).
C_m = [image feature (256), learned embedding of primitive m (256)] (B, M, 512).

Work that needs no gradient (signs for the euclidean implicit, phi_surface, the on-surface test, evaluation) runs
in blocks of points. On the CPU a block's temporaries stay in cache and are reused by the allocator instead of being
mapped and faulted in afresh, which doubles the speed of these large evaluations; on a GPU the blocks only bound
memory (e.g. 100,000 evaluation points x M primitives).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from config import ModelConfig
from models.feature_extractor import ImageEncoder
from models.geometry import euclidean_implicit, sample_sphere_points
from models.inn import Conditioning, ConditionalNVP
from models.prediction import Prediction

# (point, primitive) rows per block of gradient-free work: cache-sized on the CPU; on a GPU only a memory bound.
BLOCK_ROWS = {"cpu": 2048, "cuda": 1 << 18}


class NeuralParts(nn.Module):
    """The model. `forward` returns the fixed `Prediction`; the other public methods serve evaluation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(cfg)
        self.embedding = nn.Parameter(torch.randn(cfg.n_primitives, cfg.embedding_size))  # (M, 256)
        self.inn = ConditionalNVP(cfg)

    def conditioning(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> C (B, M, feature_size + embedding_size)."""
        feature = self.encoder(images)  # (B, 256)
        B, M = feature.shape[0], self.embedding.shape[0]
        return torch.cat([feature.unsqueeze(1).expand(B, M, -1), self.embedding.expand(B, M, -1)], dim=-1)

    def phi(self, sphere_points: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """Sphere -> world. sphere_points (B, N, M, 3), C (B, M, 512) -> world points (B, N, M, 3)."""
        _check_points("sphere_points", sphere_points, C, per_primitive=True)
        return self._map(self.inn.forward, sphere_points, self.inn.condition(C).per_point())

    def phi_inverse(self, points: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """World -> sphere. points (B, N, 3) (the same points for every primitive) or (B, N, M, 3) -> (B, N, M, 3)."""
        per_primitive = points.dim() == 4
        _check_points("points", points, C, per_primitive=per_primitive)
        points = points if per_primitive else points.unsqueeze(2)  # (B, N, 1 or M, 3)
        return self._map(self.inn.inverse, points, self.inn.condition(C).per_point())

    def implicit(self, points: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """g_m at world points. points (B, N, 3), C (B, M, 512) -> g (B, N, M), < 0 inside primitive m."""
        _check_points("points", points, C, per_primitive=False)
        return self._implicit(points, self.inn.condition(C).per_point())

    def forward(self, images: torch.Tensor, volume_points: torch.Tensor, surface_points: torch.Tensor) -> Prediction:
        """images (B, 3, H, W) in [0, 1]; volume_points (B, Nv, 3); surface_points (B, Ns, 3) -> Prediction.

        Gradients: y_prim, phi_volume and g_closest_surface carry them (g_closest_surface also with respect to
        surface_points, create_graph included); phi_surface and on_surface do not (the normal loss differentiates
        g_closest_surface instead, which pushes only the selected (point, m*) pairs through the INN). With the
        euclidean implicit, phi_volume's gradient flows through y_prim only, as in the authors' code.
        """
        C = self.conditioning(images)  # (B, M, 512)
        _check_points("volume_points", volume_points, C, per_primitive=False)
        _check_points("surface_points", surface_points, C, per_primitive=False)
        cond = self.inn.condition(C)
        grid = cond.per_point()  # (B, 1, M, ...)
        B, M = C.shape[:2]

        sphere = sample_sphere_points(B, self.cfg.n_sphere_points, M, self.cfg.sphere_radius, C.device)
        y_prim = self.inn(sphere, grid)  # (B, S, M, 3)
        with torch.no_grad():
            g_prim = self._implicit(y_prim.flatten(1, 2), grid)  # (B, S*M, M): every g_j at every y_prim point
            on_surface = (g_prim >= 0).all(-1).view(B, -1, M)  # (B, S, M)

        if self.cfg.euclidean_phi_volume:
            with torch.no_grad():
                g_volume = self._implicit(volume_points, grid)  # (B, Nv, M)
            phi_volume = euclidean_implicit(g_volume, volume_points, y_prim)
        else:
            phi_volume = self._implicit(volume_points, grid)

        with torch.no_grad():
            phi_surface = self._implicit(surface_points, grid)  # (B, Ns, M)
        closest = phi_surface.square().argmin(-1)  # (B, Ns) m* = argmin_m g_m(x)^2
        u = self.inn.inverse(surface_points, cond.select(closest))  # (B, Ns, 3)
        g_closest_surface = torch.linalg.vector_norm(u, dim=-1) - self.cfg.sphere_radius  # (B, Ns)
        return Prediction(y_prim=y_prim, on_surface=on_surface, phi_volume=phi_volume, phi_surface=phi_surface,
                          g_closest_surface=g_closest_surface)

    def _implicit(self, points: torch.Tensor, grid: Conditioning) -> torch.Tensor:
        """points (B, N, 3), per-point conditioning (B, 1, M, ...) -> g (B, N, M)."""
        def g(block: torch.Tensor, grid: Conditioning) -> torch.Tensor:  # (B, n, 1, 3) -> (B, n, M)
            return torch.linalg.vector_norm(self.inn.inverse(block, grid), dim=-1) - self.cfg.sphere_radius

        return self._map(g, points.unsqueeze(2), grid)

    def _map(self, fn: Callable[[torch.Tensor, Conditioning], torch.Tensor], x: torch.Tensor,
             grid: Conditioning) -> torch.Tensor:
        """fn(x, grid) for x (B, N, 1 or M, 3) -> (B, N, ...), in blocks along N when no gradient is recorded."""
        B, N = x.shape[:2]
        M = grid.sigma.shape[2]
        rows = BLOCK_ROWS.get(x.device.type)
        if torch.is_grad_enabled() or rows is None or B * N * M <= rows:
            return fn(x, grid)
        return torch.cat([fn(block, grid) for block in x.split(max(1, rows // (B * M)), dim=1)], dim=1)


def _check_points(name: str, points: torch.Tensor, C: torch.Tensor, per_primitive: bool) -> None:
    B, M = C.shape[:2]
    expected = f"({B}, N, {M}, 3)" if per_primitive else f"({B}, N, 3)"
    shape_ok = points.dim() == (4 if per_primitive else 3) and points.shape[0] == B and points.shape[-1] == 3
    if not shape_ok or (per_primitive and points.shape[2] != M) or not points.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape {expected}; got {points.dtype} {tuple(points.shape)}")
