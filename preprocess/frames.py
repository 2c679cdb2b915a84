"""Everything one frame needs: the input image, surface samples and labelled volume points.

All randomness is seeded from (sequence id, frame), so a frame comes out the same in any process, shard or
rerun. Renders happen in the calling process (one renderer per process: see rendering/renderer.py).
"""
from __future__ import annotations

import time

import igl
import numpy as np
import trimesh

from data import format as fmt
from rendering.renderer import render_meshes

STAGES = ("render", "surface", "volume")


def process_frame(sequence_id: str, frame: int, vertices: np.ndarray, faces: np.ndarray,
                  settings: fmt.Settings) -> tuple[fmt.FrameRecord, dict[str, float]]:
    """Encode one frame. vertices (V, 3) float32 metres, faces (F, 3) int.

    Returns the record and the seconds spent per stage (keys STAGES).
    """
    mesh = trimesh.Trimesh(vertices.astype(np.float64), faces, process=False)
    timings = {}
    start = time.perf_counter()
    image_png = fmt.encode_png(render_meshes([mesh], image_size=settings.image_size))
    timings["render"] = time.perf_counter() - start

    start = time.perf_counter()
    face_index, barycentric, outside_fraction = sample_surface(mesh, sequence_id, frame, settings)
    timings["surface"] = time.perf_counter() - start

    start = time.perf_counter()
    volume_seed = fmt.frame_seed(sequence_id, frame, "volume")
    points = fmt.volume_points(volume_seed, np.arange(settings.n_points), settings.box_min, settings.box_max)
    inside = label_inside(mesh, points)
    timings["volume"] = time.perf_counter() - start

    record = fmt.FrameRecord(frame, vertices.astype(np.float32), image_png, face_index, barycentric,
                             volume_seed, fmt.pack_labels(inside), outside_fraction)
    return record, timings


def sample_surface(mesh: trimesh.Trimesh, sequence_id: str, frame: int,
                   settings: fmt.Settings) -> tuple[np.ndarray, np.ndarray, float]:
    """P area-uniform samples in random order, encoded: face index (P,), barycentric codes (P, 2).

    Also returns the fraction of the samples (= of the surface area) outside the volume box.
    """
    seed = fmt.frame_seed(sequence_id, frame, "surface")
    points, face_index, barycentric = trimesh.sample.sample_surface(mesh, settings.n_points, seed=seed,
                                                                    return_barycentric=True)
    # trimesh's draws are i.i.d. and hence already in random order; shuffling makes that our guarantee.
    order = np.random.default_rng(seed).permutation(settings.n_points)
    outside = (points < np.asarray(settings.box_min)) | (points > np.asarray(settings.box_max))  # (P, 3)
    face_index = face_index[order].astype(fmt.face_index_dtype(len(mesh.faces)))
    return face_index, fmt.encode_barycentric(barycentric[order]), float(outside.any(axis=1).mean())


def label_inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(N,) bool: generalised winding number > 0.5 (robust to small holes, unlike ray parity).

    Seen from a point outside the mesh's bounding box, the whole mesh lies in a half-space, so its winding
    number is at most 0.5: only the points in the box (a quarter of the volume box for a body) are queried.
    """
    low, high = mesh.bounds
    candidate = ((points >= low) & (points <= high)).all(axis=1)  # (N,)
    inside = np.zeros(len(points), dtype=bool)
    winding = igl.fast_winding_number(mesh.vertices, np.asarray(mesh.faces, dtype=np.int64),
                                      points[candidate].astype(np.float64))
    inside[candidate] = winding > 0.5
    return inside
