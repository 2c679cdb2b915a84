"""The conditional invertible network phi(x; C_m): sphere coordinates <-> world coordinates (paper Sec. 3.2).

Structure and directions follow the authors' SimpleNVP (`neural_parts/models/simple_nvp.py`):
4 affine coupling layers sharing one projection layer p_theta, then a per-primitive normaliser sigma, a rotation
R (unit quaternion, w first) and a translation t, applied with the row-vector convention y_row @ R + t.

This is an optimised but exactly equivalent layout of the authors' network (tests/reference_inn.py is the plain
transcription the tests compare against, weights copied between the two):

* the first Linear(512 + 128 -> H) of the s and t nets is split into its C_m part, computed once per primitive
  and item by `ConditionalNVP.condition`, and its p_theta part, computed per point; the two s/t first layers are
  fused into one Linear(128 -> 2H) and one Linear(512 -> 2H), initialised as the one Linear(640 -> H) would be;
* a coupling layer rewrites one coordinate k, so only row k of the last s/t Linear(H -> 3) is evaluated,
  p_theta(x * mask) is computed as x @ (W * mask)^T, and the output keeps the other coordinates by `torch.where`;
* the nets run on the points as flat (P, .) matrices; elementwise work is done in place where autograd allows.

Points and conditioning broadcast: points x (..., 3) are pushed through with every `Conditioning` tensor shaped
(..., D) broadcastable to them, e.g. x (B, N, M, 3) with conditioning (B, 1, M, D), or x (B, Ns, 3) with the
conditioning of one chosen primitive per point, (B, Ns, D). `inverse` also accepts points that broadcast against
the conditioning, e.g. (B, N, 1, 3): the same world points for every primitive. Coordinates are in metres.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from config import ModelConfig


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from unit quaternions (w, x, y, z). q: (..., 4) -> R: (..., 3, 3).

    R is the usual column-vector matrix (R @ v rotates v); the INN applies it to row vectors as v_row @ R,
    as the authors do.
    """
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))  # (..., 3, 3)


@dataclass
class Conditioning:
    """Everything phi needs from C_m, computed once per primitive and item.

    Shapes as produced by `ConditionalNVP.condition` (B, M, ...); `map` reshapes them all at once to broadcast
    against a point layout (see the module docstring).

    coupling:    one (B, M, 2H) tensor per coupling layer: the C_m part of the fused s/t first Linear, bias included.
    sigma:       (B, M, 3) positive per-axis scale of the normaliser.
    rotation:    (B, M, 3, 3) R, applied as y_row @ R.
    translation: (B, M, 3) t.
    """

    coupling: tuple[torch.Tensor, ...]
    sigma: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Conditioning":
        """A Conditioning with `fn` applied to every tensor (fn sees the (B, M, ...) layout)."""
        values = {}
        for item in fields(self):
            value = getattr(self, item.name)
            values[item.name] = tuple(fn(v) for v in value) if isinstance(value, tuple) else fn(value)
        return Conditioning(**values)

    def per_point(self) -> "Conditioning":
        """Broadcastable against points laid out (B, N, M, 3): every tensor becomes (B, 1, M, ...)."""
        return self.map(lambda value: value.unsqueeze(1))

    def select(self, primitive: torch.Tensor) -> "Conditioning":
        """The conditioning of one primitive per point. primitive: (B, N) long -> tensors (B, N, ...)."""
        batch = torch.arange(primitive.shape[0], device=primitive.device).unsqueeze(1)  # (B, 1)
        return self.map(lambda value: value[batch, primitive])


class Projection(nn.Module):
    """p_theta: Linear(3, 2 proj_dims) -> ReLU -> Linear(2 proj_dims, proj_dims), shared by every coupling layer.

    The hidden width is twice the output, as in the authors' `ProjectionLayer` (256 at the default proj_dims 128).
    """

    def __init__(self, proj_dims: int):
        super().__init__()
        hidden = 2 * proj_dims
        self.first = nn.Linear(3, hidden)
        self.second = nn.Linear(hidden, proj_dims)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """p_theta(x * keep). x: (..., 3), keep: (3,) 0/1 -> (..., proj_dims).

        Zeroing a weight column equals zeroing that input coordinate, and costs (hidden, 3) instead of (..., 3).
        """
        hidden = F.linear(x, self.first.weight * keep, self.first.bias).relu_()  # (..., 2 proj_dims)
        return self.second(hidden)


class CouplingLayer(nn.Module):
    """Keeps the two coordinates where `mask` is 1 and rewrites the third, k, with an affine map.

    s, t = nets([C_m, p_theta(x * mask)]), s bounded by Hardtanh(-s_bound, s_bound); nets are
    Linear(512 + 128 -> H) -> ReLU -> Linear(H -> H) -> ReLU -> Linear(H -> 3), of which only output k is used.
    sphere->world: x_k <- (x_k - t) * exp(-s);  world->sphere: x_k <- x_k * exp(s) + t (the authors' convention).
    """

    def __init__(self, mask: torch.Tensor, conditioning_size: int, proj_dims: int, hidden: int, s_bound: float):
        super().__init__()
        self.register_buffer("mask", mask)  # (3,) float, two ones: the coordinates this layer keeps
        self.hidden_size = hidden
        self.s_bound = s_bound
        # First Linear of the s net (rows :H) and of the t net (rows H:), split into the C_m and p_theta parts.
        self.first_conditioning = nn.Linear(conditioning_size, 2 * hidden)
        self.first_projection = nn.Linear(proj_dims, 2 * hidden, bias=False)
        # PyTorch's default for the unsplit Linear: weights and bias U(-b, b), b = 1 / sqrt(its whole fan-in). Each
        # part on its own would take its smaller fan-in, p_theta's weights 2.2x wider than the authors' network.
        bound = (conditioning_size + proj_dims) ** -0.5
        with torch.no_grad():
            for tensor in (self.first_conditioning.weight, self.first_conditioning.bias, self.first_projection.weight):
                tensor.uniform_(-bound, bound)
        self.s_hidden = nn.Linear(hidden, hidden)
        self.t_hidden = nn.Linear(hidden, hidden)
        self.s_out = nn.Linear(hidden, 3)
        self.t_out = nn.Linear(hidden, 3)

    def scale_shift(self, x: torch.Tensor, projection: Projection, coupling: torch.Tensor,
                    k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s, t for coordinate k. x: (..., 3); coupling: (..., 2H) broadcastable; k: (1,) -> s, t: (P, 1).

        The nets run on the P = x[..., 0].numel() rows as 2-D matrices (fused bias, strided halves without copies);
        the point layout is needed only to broadcast-add the per-primitive coupling term.
        """
        p = projection(x.reshape(-1, 3), self.mask)  # (P, proj_dims)
        # A 3-D+ product comes back as a fresh tensor (not a view), so the in-place ops cost autograd no copies.
        h = self.first_projection(p.view(*x.shape[:-1], -1)).add_(coupling).relu_()  # (..., 2H)
        h_s, h_t = h.view(-1, h.shape[-1]).split(self.hidden_size, dim=-1)  # (P, H) each; backward: one cat
        s = F.linear(self.s_hidden(h_s).relu_(), self.s_out.weight[k], self.s_out.bias[k])  # (P, 1)
        t = F.linear(self.t_hidden(h_t).relu_(), self.t_out.weight[k], self.t_out.bias[k])  # (P, 1)
        # Under bf16 autocast s and t come out in bf16; the coordinates stay in the points' precision.
        return F.hardtanh(s, -self.s_bound, self.s_bound).to(x.dtype), t.to(x.dtype)

    def forward(self, x: torch.Tensor, projection: Projection, coupling: torch.Tensor) -> torch.Tensor:
        """Sphere -> world. x: (..., 3) -> (..., 3)."""
        k = torch.argmin(self.mask, dim=0, keepdim=True)  # (1,) the rewritten coordinate
        s, t = self.scale_shift(x, projection, coupling, k)
        rewritten = (x.reshape(-1, 3).index_select(-1, k) - t) * torch.exp(-s)  # (P, 1)
        return torch.where(self.mask.bool(), x, rewritten.view(*x.shape[:-1], 1))

    def inverse(self, y: torch.Tensor, projection: Projection, coupling: torch.Tensor) -> torch.Tensor:
        """World -> sphere. y: (..., 3) -> (..., 3)."""
        k = torch.argmin(self.mask, dim=0, keepdim=True)  # (1,)
        s, t = self.scale_shift(y, projection, coupling, k)
        rewritten = y.reshape(-1, 3).index_select(-1, k) * torch.exp(s) + t  # (P, 1)
        return torch.where(self.mask.bool(), y, rewritten.view(*y.shape[:-1], 1))


def _head(in_size: int, out_size: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_size, hidden), nn.ReLU(), nn.Linear(hidden, out_size))


class ConditionalNVP(nn.Module):
    """phi(x; C_m) and its inverse. Parameters: 2,275,746 at the default sizes (the authors' count).

    `condition(C)` turns C (B, M, 512) into a `Conditioning`; `forward` / `inverse` then map points of any
    broadcast-compatible layout. With cfg.bf16 and in training mode the matrix work runs under bfloat16 autocast;
    results are float32 either way, and evaluation mode is always float32.
    With cfg.init_placement the translation and normaliser of primitive m also carry fixed per-primitive terms,
    buffers set once by `set_placement` (models/placement.py) and kept in the state dict; they are absent otherwise.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        conditioning_size = cfg.feature_size + cfg.embedding_size
        self.bf16 = cfg.bf16
        self.projection = Projection(cfg.proj_dims)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.layers = nn.ModuleList()
        for _ in range(cfg.n_coupling_layers):
            mask = torch.zeros(3)
            mask[torch.randperm(3, generator=generator)[:2]] = 1.0  # keep two random coordinates
            self.layers.append(CouplingLayer(mask, conditioning_size, cfg.proj_dims, cfg.hidden_size, cfg.s_bound))
        self.sigma_head = _head(conditioning_size, 3, cfg.hidden_size)
        self.rotation_head = _head(conditioning_size, 4, cfg.hidden_size)
        self.translation_head = _head(conditioning_size, 3, cfg.hidden_size)
        self.placement = cfg.init_placement
        if self.placement:
            self.register_buffer("placement_translation", torch.zeros(cfg.n_primitives, 3))  # (M, 3) metres
            self.register_buffer("placement_scale", torch.ones(cfg.n_primitives, 3))  # (M, 3) factor on sigma

    def set_placement(self, translation: torch.Tensor, scale: torch.Tensor) -> None:
        """Start primitive m as the upright ellipsoid centred at `translation[m]` (M, 3) with normaliser `scale[m]`.

        Exactly so, for every image: the last Linear of the translation, normaliser and rotation heads and of every
        coupling net's s and t are zeroed (the rotation's w bias set to 1), so t, sigma and R start at the
        placement, 1 and the identity and the couplings at the identity map. Their first layers keep the random
        initialisation, so every zeroed layer still gets a gradient at the first step. Left random, the heads move
        primitives by up to about 0.3 m, off the thin limbs they were placed on.
        """
        assert self.placement, "set_placement needs model.init_placement"
        with torch.no_grad():
            self.placement_translation.copy_(translation)
            self.placement_scale.copy_(scale)
            outputs = [self.translation_head[-1], self.sigma_head[-1], self.rotation_head[-1]]
            outputs += [net for layer in self.layers for net in (layer.s_out, layer.t_out)]
            for linear in outputs:
                linear.weight.zero_()
                linear.bias.zero_()
            self.rotation_head[-1].bias[0] = 1.0  # quaternion (1, 0, 0, 0)

    def condition(self, C: torch.Tensor) -> Conditioning:
        """C: (B, M, 512) per-primitive features -> Conditioning with (B, M, ...) tensors."""
        quaternion = F.normalize(self.rotation_head(C), dim=-1)  # (B, M, 4)
        sigma = F.elu(self.sigma_head(C)) + 1  # (B, M, 3)
        translation = self.translation_head(C)  # (B, M, 3)
        if self.placement:
            sigma, translation = sigma * self.placement_scale, translation + self.placement_translation
        return Conditioning(
            coupling=tuple(layer.first_conditioning(C) for layer in self.layers),  # each (B, M, 2H)
            sigma=sigma,
            rotation=quaternion_to_matrix(quaternion),  # (B, M, 3, 3)
            translation=translation,
        )

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Sphere -> world: couplings in order, divide by sigma, then y_row @ R + t. x: (..., 3) -> (..., 3)."""
        with self._precision(x):
            for layer, coupling in zip(self.layers, cond.coupling):
                x = layer(x, self.projection, coupling)
        x = x / cond.sigma
        return (x.unsqueeze(-1) * cond.rotation).sum(-2) + cond.translation  # (..., 3)

    def inverse(self, y: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """World -> sphere: (y - t) @ R^T, times sigma, then coupling inverses in reverse order.

        y: (..., 3) broadcastable against the conditioning, e.g. (B, N, 1, 3) with (B, 1, M, ...) -> (B, N, M, 3).
        """
        x = ((y - cond.translation).unsqueeze(-2) * cond.rotation).sum(-1) * cond.sigma  # (..., 3)
        with self._precision(x):
            for layer, coupling in zip(reversed(self.layers), reversed(cond.coupling)):
                x = layer.inverse(x, self.projection, coupling)
        return x

    def _precision(self, x: torch.Tensor):
        if self.bf16 and self.training:
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
