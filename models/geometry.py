"""Point-level geometry of the primitives that needs no network: sphere samples and the "euclidean" implicit."""
from __future__ import annotations

import torch


def sample_sphere_points(B: int, S: int, M: int, radius: float, device: torch.device | str = "cpu",
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """S points uniform on the sphere of `radius`, drawn afresh for each item and primitive -> (B, S, M, 3).

    Gaussian 3-vectors scaled to length `radius`, as the authors' random mode.
    """
    x = torch.randn(B, S, M, 3, device=device, generator=generator)  # (B, S, M, 3)
    return x * (radius / torch.linalg.vector_norm(x, dim=-1, keepdim=True))


def euclidean_implicit(g: torch.Tensor, points: torch.Tensor, y_prim: torch.Tensor) -> torch.Tensor:
    """The authors' volume implicit: sign(g_m(x)) * min_s |x - y_prim[s, m]| (`euclidean_phi_volume`).

    g: (B, N, M) plain implicit at `points` (only its sign is used; no gradient flows through a sign);
    points: (B, N, 3); y_prim: (B, S, M, 3) primitive surface points. Returns (B, N, M), differentiable with
    respect to y_prim and points.

    The nearest primitive point is chosen without gradient from exact pairwise differences (no
    |a|^2 + |b|^2 - 2ab cancellation in float32), one (N, S) matrix per item and primitive, never a
    (B, S, N, M, 3) difference tensor; its distance is then recomputed differentiably for that one pair.
    """
    surfaces = y_prim.transpose(1, 2)  # (B, M, S, 3)
    with torch.no_grad():
        distances = torch.cdist(points.unsqueeze(1), surfaces.detach(),
                                compute_mode="donot_use_mm_for_euclid_dist")  # (B, M, N, S)
        nearest = distances.argmin(-1)  # (B, M, N)
    closest = surfaces.gather(2, nearest.unsqueeze(-1).expand(-1, -1, -1, 3))  # (B, M, N, 3)
    distance = torch.linalg.vector_norm(points.unsqueeze(1) - closest, dim=-1)  # (B, M, N)
    return torch.sign(g.detach()) * distance.transpose(1, 2)  # (B, N, M)
