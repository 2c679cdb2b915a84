"""Raw D-FAUST-layout inputs built from analytic meshes, for the preprocessing and dataset tests.

Layout as the real registrations: one (V, 3, T) float32 dataset per `{subject}_{sequence}` and a shared
`faces` (F, 3), 0-based, in registrations_f.hdf5 / registrations_m.hdf5.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import trimesh

BOX_MIN = np.array([-0.5, -0.75, -0.5])
BOX_MAX = np.array([0.5, 1.25, 0.5])


def body_mesh() -> trimesh.Trimesh:
    """A watertight sphere of radius 0.35 centred at (0, 0.25, 0): well inside the volume box."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.35)
    mesh.apply_translation([0.0, 0.25, 0.0])
    return mesh


def moving_sequence(mesh: trimesh.Trimesh, n_frames: int, step=(0.0, 0.01, 0.0)) -> np.ndarray:
    """(V, 3, T) float32: the mesh translated by `step` metres per frame."""
    offsets = np.arange(n_frames)[:, None] * np.asarray(step)  # (T, 3)
    frames = mesh.vertices[None] + offsets[:, None]  # (T, V, 3)
    return frames.transpose(1, 2, 0).astype(np.float32)


def write_registrations(path: Path, faces: np.ndarray, sequences: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        file.create_dataset("faces", data=faces)
        for key, vertices in sequences.items():
            file.create_dataset(key, data=vertices)
    return path


def write_split(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    path.write_text("id,model_id,split\n" + "".join(f"{sid},{frame:05d},{split}\n" for sid, frame, split in rows))
    return path


def small_dataset(directory: Path, n_frames: int = 23) -> dict:
    """Two listed sequences (one of them `_bugfix` in the file) of a moving sphere, split rows for every frame,
    and an unlisted one in the other file.

    Returns dataset_dir, split_file and the mesh.
    """
    mesh = body_mesh()
    raw = directory / "raw"
    write_registrations(raw / "registrations_f.hdf5", mesh.faces, {
        "50004_hips": moving_sequence(mesh, n_frames),
        "50004_running_on_spot_bugfix": moving_sequence(mesh, n_frames, step=(0.005, 0.0, 0.0)),
    })
    write_registrations(raw / "registrations_m.hdf5", mesh.faces, {"50002_hips": moving_sequence(mesh, 3)})
    rows = [("50004_hips", frame, "train") for frame in range(n_frames)]
    rows += [("50004_running_on_spot", frame, "test") for frame in range(n_frames)]
    split_file = write_split(directory / "splits.csv", rows)
    return {"dataset_dir": raw, "split_file": split_file, "mesh": mesh}
