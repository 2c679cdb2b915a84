"""Part consistency: does primitive m cover the same piece of the body in every frame?

D-FAUST registrations share one mesh topology (SMPL's) across frames and subjects, as does the embedded synthetic
data (preprocess/make_synthetic_dfaust.py), so vertex v is the same point of the body in every frame. A vertex's
owner in a frame is the primitive m with the smallest g_m there (the one it lies deepest inside, or closest to).
A model whose primitives are semantic parts gives each vertex the same owner throughout; one whose primitives
swap roles between frames does not. F frames, V vertices, M primitives, P body parts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from data.dataset import FrameDataset
from models.neural_parts import NeuralParts


def part_consistency(owners: np.ndarray) -> float:
    """Mean over vertices of the share of frames in which the vertex's owner is its most frequent owner.

    owners: (F, V) int, owners[f, v] = the primitive owning vertex v in frame f. 1 when every vertex keeps its
    owner; about 1/M when owners are drawn at random (somewhat above it for few frames: the most frequent of M
    counts exceeds F / M by chance).
    """
    owners = np.asarray(owners)
    if owners.ndim != 2 or owners.shape[0] == 0 or owners.shape[1] == 0:
        raise ValueError(f"owners must be a non-empty (F, V) array; got shape {owners.shape}")
    if owners.min() < 0:
        raise ValueError("owners must be primitive indices >= 0")
    return float(owner_counts(owners, int(owners.max()) + 1).max(axis=0).mean() / owners.shape[0])


def part_table(owners: np.ndarray, vertex_parts: np.ndarray, part_names, M: int) -> np.ndarray:
    """(M, P) table: row m is the share of primitive m's owned (frame, vertex) pairs that lie on each body part.

    owners: (F, V) int in [0, M); vertex_parts: (V,) int in [0, P), the body part of each vertex;
    part_names: the P part names (fixes P). Each row sums to 1, or is all zeros for a primitive that owns no
    vertex in any frame.
    """
    owners, vertex_parts = np.asarray(owners), np.asarray(vertex_parts)
    P = len(part_names)
    if owners.ndim != 2 or vertex_parts.shape != (owners.shape[1],):
        raise ValueError(f"owners (F, V) and vertex_parts (V,) disagree: {owners.shape} and {vertex_parts.shape}")
    if owners.size and (owners.min() < 0 or owners.max() >= M):
        raise ValueError(f"owners must lie in [0, {M})")
    if vertex_parts.size and (vertex_parts.min() < 0 or vertex_parts.max() >= P):
        raise ValueError(f"vertex_parts must lie in [0, {P})")
    counts = np.stack([np.bincount(vertex_parts, weights=frames, minlength=P)
                       for frames in owner_counts(owners, M)])  # (M, P) owned (frame, vertex) pairs per part
    totals = counts.sum(axis=1, keepdims=True)  # (M, 1)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def owner_counts(owners: np.ndarray, M: int) -> np.ndarray:
    """(M, V) int64: in how many frames primitive m owns vertex v, for owners (F, V). One pass per primitive over
    the owners as given (uint8 for the D-FAUST test split, where an int64 copy would take half a gigabyte)."""
    return np.stack([(owners == m).sum(axis=0) for m in range(M)])


@torch.no_grad()
def vertex_owners(model: NeuralParts, C: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """The owner of every ground-truth vertex: argmin_m g_m(v). C (B, M, 512) the conditioning of B images
    (`NeuralParts.conditioning`), vertices (B, V, 3) metres, on the model's device -> (B, V) int64.

    Without gradients, `NeuralParts.implicit` evaluates the (vertex, primitive) pairs in blocks, so a whole mesh
    (SMPL: 6,890 vertices) goes in at once.
    """
    return model.implicit(vertices, C).argmin(-1)  # (B, V)


@dataclass
class ConsistencyReport:
    """Part consistency of evaluated frames. overall / per_group are None where fewer than two frames share a
    topology; table is the (M, P) `part_table` when body-part labels fit the meshes, else None; notes say what
    was skipped and why."""

    overall: float | None
    per_group: dict[str, float | None]
    table: np.ndarray | None = None
    part_names: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def entries(self) -> dict:
        """Summary keys: part_consistency (None when skipped), part_table ({"primitive_m": {part: share}}, only
        with labels) and part_consistency_notes (only when something was skipped); JSON-ready."""
        entries: dict = {"part_consistency": self.overall}
        if self.table is not None:
            entries["part_table"] = {f"primitive_{m}": dict(zip(self.part_names, map(float, row)))
                                     for m, row in enumerate(self.table)}
        if self.notes:
            entries["part_consistency_notes"] = list(self.notes)
        return entries

    def describe(self) -> str:
        """Part consistency overall and per group, the table (body parts down, primitives across: each column
        sums to 1) and the notes, as printable lines."""
        def value(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.4f}"

        lines = [f"part consistency: {value(self.overall)} overall; "
                 + ", ".join(f"{g} {value(x)}" for g, x in self.per_group.items())]
        if self.table is not None:
            width = max(len(name) for name in self.part_names) + 2
            lines.append(f"{'body part':<{width}}" + "".join(f"{f'prim {m}':>8}" for m in range(len(self.table))))
            lines += [f"{name:<{width}}" + "".join(f"{share:>8.3f}" for share in self.table[:, p])
                      for p, name in enumerate(self.part_names)]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def consistency_report(owners: list[np.ndarray], faces: list[np.ndarray], groups: list[str], M: int,
                       labels: tuple[np.ndarray, tuple[str, ...]] | None = None) -> ConsistencyReport:
    """Part consistency over frames, overall and per group (e.g. motion), and the primitive x body part table.

    owners: per frame, (V_f,) int owners of its vertices; faces: per frame, its (F_f, 3) triangles; groups: per
    frame, a group name; labels: (vertex_parts (V,), part names) or None. Vertex indices mean the same body
    point only within one topology, so only the frames of the most common topology (vertex count and faces)
    are scored; the others are skipped with a note, never an error.
    """
    if not len(owners) == len(faces) == len(groups):
        raise ValueError(f"{len(owners)} owners, {len(faces)} faces and {len(groups)} groups: one each per frame")
    kept, note = common_topology([len(o) for o in owners], faces)
    notes = [note] if note else []
    stacked = np.stack([owners[i] for i in kept]) if len(kept) else np.zeros((0, 0), dtype=np.int64)  # (K, V)

    def score(rows: np.ndarray) -> float | None:
        return part_consistency(stacked[rows]) if len(rows) >= 2 else None

    kept_groups = np.array([groups[i] for i in kept])
    report = ConsistencyReport(overall=score(np.arange(len(kept))),
                               per_group={g: score(np.flatnonzero(kept_groups == g)) for g in sorted(set(groups))},
                               notes=notes)
    if report.overall is None:
        notes.append("part consistency needs at least two frames of one mesh topology")
    if labels is not None and len(kept):
        vertex_parts, names = labels
        if len(vertex_parts) == stacked.shape[1]:
            report.table, report.part_names = part_table(stacked, vertex_parts, names, M), tuple(names)
        else:
            notes.append(f"body-part labels cover {len(vertex_parts)} vertices but the meshes have "
                         f"{stacked.shape[1]}; no primitive x body part table")
    return report


def common_topology(n_vertices: list[int], faces: list[np.ndarray]) -> tuple[np.ndarray, str | None]:
    """The frames sharing the most common mesh topology (vertex count and identical faces), ascending (K,), and
    a note when other frames were left out (None when every frame shares it)."""
    keys: dict[tuple, list[int]] = {}
    for index, (count, triangles) in enumerate(zip(n_vertices, faces)):
        triangles = np.ascontiguousarray(triangles, dtype=np.int64)
        keys.setdefault((count, triangles.shape, triangles.tobytes()), []).append(index)
    if not keys:
        return np.zeros(0, dtype=np.int64), None
    largest = max(keys.values(), key=len)  # the first-seen topology among equally common ones
    if len(largest) == len(n_vertices):
        return np.asarray(largest), None
    counts = sorted({key[0] for key in keys})
    return np.asarray(largest), (f"part consistency skipped {len(n_vertices) - len(largest)} of {len(n_vertices)} "
                                 f"frames: their mesh topology differs from that of the other {len(largest)} "
                                 f"(vertex counts {', '.join(map(str, counts))})")


def evaluate_part_consistency(model: NeuralParts, dataset: FrameDataset, frames: list[tuple[str, int]],
                              group_of: Callable[[str], str], batch_size: int, device: torch.device,
                              labels: tuple[np.ndarray, tuple[str, ...]] | None = None,
                              progress: bool = True) -> ConsistencyReport:
    """Owners of the ground-truth vertices in each of `frames` ((sequence, frame) pairs of `dataset`), then their
    `consistency_report`, grouped by group_of(sequence); labels as `read_part_labels` returns them. The model
    is put in eval mode."""
    model.eval()
    M = model.cfg.n_primitives
    # The smallest integer type for owners: the D-FAUST test split's 9,341 frames x 6,890 vertices take 64 MB.
    dtype = np.uint8 if M <= 256 else np.int32
    index_of = {item: i for i, item in enumerate(dataset.frames)}
    indices = [index_of[item] for item in frames]
    owners: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    for start in tqdm(range(0, len(indices), batch_size), desc="part consistency", unit="batch",
                      disable=not progress, leave=False):
        chunk = indices[start:start + batch_size]
        meshes = [dataset.mesh(i) for i in chunk]
        chunk_owners: dict[int, np.ndarray] = {}
        for count in {len(vertices) for vertices, _ in meshes}:  # frames of one vertex count stack
            same = [k for k, (vertices, _) in enumerate(meshes) if len(vertices) == count]
            images = torch.stack([dataset.image(chunk[k]) for k in same]).to(device)  # (b, 3, S, S)
            vertices = torch.from_numpy(np.stack([meshes[k][0] for k in same])).to(device)  # (b, V, 3)
            with torch.no_grad():
                C = model.conditioning(images)  # (b, M, 512)
            for k, row in zip(same, vertex_owners(model, C, vertices).cpu().numpy()):
                chunk_owners[k] = row.astype(dtype)
        owners += [chunk_owners[k] for k in range(len(chunk))]
        faces += [triangles for _, triangles in meshes]
    return consistency_report(owners, faces, [group_of(sequence) for sequence, _ in frames], M, labels)
