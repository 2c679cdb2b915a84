"""A plain transcription of the authors' SimpleNVP, used only to check the optimised models.inn against it.

Written from the authors' paschalidoud/neural_parts neural_parts/models/simple_nvp.py: full 3-output s/t nets
on [F, p(x * mask)], full-mask blending, features expanded to every point.
`copy_from` loads the weights of a models.inn.ConditionalNVP.
"""
from __future__ import annotations

import torch
from torch import nn


def rotation_from_quaternion(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternion (w, x, y, z) -> (..., 3, 3), built from the Hamilton product q v q*."""
    w, x, y, z = q.unbind(-1)
    columns = []
    for v in torch.eye(3, dtype=q.dtype, device=q.device):  # image of each basis vector = column of R
        vx, vy, vz = v
        # t = q * (0, v)
        tw = -x * vx - y * vy - z * vz
        tx = w * vx + y * vz - z * vy
        ty = w * vy + z * vx - x * vz
        tz = w * vz + x * vy - y * vx
        # (t * q^-1).xyz with q^-1 = (w, -x, -y, -z)
        columns.append(torch.stack([-tw * x + tx * w - ty * z + tz * y,
                                    -tw * y + ty * w - tz * x + tx * z,
                                    -tw * z + tz * w - tx * y + ty * x], -1))
    return torch.stack(columns, -1)


class ReferenceCoupling(nn.Module):
    def __init__(self, mask, projection, feature_size, proj_dims, hidden, s_bound):
        super().__init__()
        self.register_buffer("mask", mask.clone())
        self.projection = projection
        self.s_net = nn.Sequential(nn.Linear(feature_size + proj_dims, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                   nn.ReLU(), nn.Linear(hidden, 3), nn.Hardtanh(-s_bound, s_bound))
        self.t_net = nn.Sequential(nn.Linear(feature_size + proj_dims, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                   nn.ReLU(), nn.Linear(hidden, 3))

    def _scale_shift(self, F, x):
        h = torch.cat([F, self.projection(x * self.mask)], dim=-1)
        return self.s_net(h), self.t_net(h)

    def forward(self, F, x):  # sphere -> world
        s, t = self._scale_shift(F, x)
        return x * self.mask + (1 - self.mask) * ((x - t) * torch.exp(-s))

    def inverse(self, F, y):  # world -> sphere
        s, t = self._scale_shift(F, y)
        return y * self.mask + (1 - self.mask) * (y * torch.exp(s) + t)


class ReferenceNVP(nn.Module):
    """forward(F (B, M, D), x (B, N, M, 3)) sphere -> world; inverse(F, y (B, N, M, 3)) world -> sphere."""

    def __init__(self, masks, feature_size=512, proj_dims=128, hidden=256, s_bound=10.0):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(3, 2 * proj_dims), nn.ReLU(), nn.Linear(2 * proj_dims, proj_dims))
        self.layers = nn.ModuleList(ReferenceCoupling(mask, self.projection, feature_size, proj_dims, hidden, s_bound)
                                    for mask in masks)
        self.scale = nn.Sequential(nn.Linear(feature_size, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.rotation = nn.Sequential(nn.Linear(feature_size, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        self.translation = nn.Sequential(nn.Linear(feature_size, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def _affine(self, F):
        sigma = nn.functional.elu(self.scale(F)) + 1  # (B, M, 3)
        q = self.rotation(F)
        R = rotation_from_quaternion(q / q.norm(dim=-1, keepdim=True))  # (B, M, 3, 3)
        return sigma[:, None], R[:, None], self.translation(F)[:, None]

    def forward(self, F, x):
        Fx = F[:, None].expand(-1, x.shape[1], -1, -1)  # (B, N, M, D)
        for layer in self.layers:
            x = layer(Fx, x)
        sigma, R, t = self._affine(F)
        x = x / sigma
        return torch.matmul(x.unsqueeze(-2), R).squeeze(-2) + t

    def inverse(self, F, y):
        sigma, R, t = self._affine(F)
        x = torch.matmul((y - t).unsqueeze(-2), R.transpose(-1, -2)).squeeze(-2) * sigma
        Fx = F[:, None].expand(-1, y.shape[1], -1, -1)
        for layer in reversed(self.layers):
            x = layer.inverse(Fx, x)
        return x

    @torch.no_grad()
    def copy_from(self, inn) -> "ReferenceNVP":
        """Load the weights and masks of an optimised models.inn.ConditionalNVP."""
        self.projection[0].load_state_dict(inn.projection.first.state_dict())
        self.projection[2].load_state_dict(inn.projection.second.state_dict())
        for ref, opt in zip(self.layers, inn.layers):
            ref.mask.copy_(opt.mask)
            H, D = opt.hidden_size, opt.first_conditioning.in_features
            for half, net, hidden, out in ((slice(0, H), ref.s_net, opt.s_hidden, opt.s_out),
                                           (slice(H, 2 * H), ref.t_net, opt.t_hidden, opt.t_out)):
                net[0].weight[:, :D] = opt.first_conditioning.weight[half]
                net[0].weight[:, D:] = opt.first_projection.weight[half]
                net[0].bias.copy_(opt.first_conditioning.bias[half])
                net[2].load_state_dict(hidden.state_dict())
                net[4].load_state_dict(out.state_dict())
        self.scale.load_state_dict(inn.sigma_head.state_dict())
        self.rotation.load_state_dict(inn.rotation_head.state_dict())
        self.translation.load_state_dict(inn.translation_head.state_dict())
        return self
