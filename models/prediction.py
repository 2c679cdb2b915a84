"""The model's fixed output contract: the same fields on every call, whatever the config."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prediction:
    """What `NeuralParts.forward` returns. B items, M primitives, S sphere points per primitive.

    y_prim:      (B, S, M, 3) points on each primitive's surface, world coordinates (phi of sphere points).
    on_surface:  (B, S, M) bool, y_prim[b, s, m] lies on the union surface: g_j >= 0 for every j.
    phi_volume:  (B, Nv, M) implicit of each primitive at the volume points; the "euclidean" variant
                 (sign of g_m, magnitude the distance to primitive m's S points) when
                 `model.euclidean_phi_volume`, else the plain g_m.
    phi_surface: (B, Ns, M) plain g_m = |phi^-1(x; C_m)| - r at the target surface points.
    g_closest_surface: (B, Ns) g_{m*}(x) at each target surface point x for m* = argmin_m g_m(x)^2 (the
                 primitive whose zero level set is closest), differentiable with respect to the surface points
                 with create_graph support: the normal-consistency loss takes its gradient. Only the selected
                 (point, primitive) pairs need to go through the differentiable INN inverse.
    """

    y_prim: torch.Tensor
    on_surface: torch.Tensor
    phi_volume: torch.Tensor
    phi_surface: torch.Tensor
    g_closest_surface: torch.Tensor
