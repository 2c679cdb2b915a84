"""The raw D-FAUST registrations: ``registrations_f.hdf5`` / ``registrations_m.hdf5`` in one directory.

Each file holds a shared ``faces`` (F, 3) 0-based triangle list and one (V, 3, T) dataset per sequence,
keyed ``{subject}_{sequence}``. A few keys carry a ``_bugfix`` suffix that the split file omits
(``50004_running_on_spot_bugfix``); `resolve` tries the plain key first, then the suffixed one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from common.errors import UserError

REGISTRATION_FILES = ("registrations_f.hdf5", "registrations_m.hdf5")
BUGFIX_SUFFIX = "_bugfix"
MIN_MESH_AREA = 1e-12  # m^2; a frame with less total area has nothing to sample


class SequenceError(Exception):
    """One raw sequence is unusable; preprocessing skips it and carries on with the others."""


@dataclass(frozen=True)
class RawSequence:
    sequence_id: str  # as in the split file
    path: Path  # the registrations file holding it
    key: str  # its dataset name there


class DfaustSource:
    """Open registrations files of `dataset_dir`; bad files raise UserError naming the file."""

    def __init__(self, dataset_dir: str | Path):
        self.dataset_dir = Path(dataset_dir)
        if not self.dataset_dir.is_dir():
            raise UserError(f"dataset directory {self.dataset_dir} not found; pass --dataset-dir or set "
                            "data.dataset_dir")
        paths = [self.dataset_dir / name for name in REGISTRATION_FILES]
        present = [path for path in paths if path.is_file()]
        if not present:
            raise UserError(f"{self.dataset_dir} holds neither {' nor '.join(REGISTRATION_FILES)}; "
                            "point --dataset-dir at the D-FAUST registrations")
        for path in paths:
            if path not in present:
                warnings.warn(f"{path} not found; its sequences count as absent")
        self._files: dict[Path, h5py.File] = {}
        self._faces: dict[Path, np.ndarray] = {}
        for path in present:
            self._files[path] = _open_hdf5(path)
            self._faces[path] = _read_faces(path, self._files[path])

    def resolve(self, sequence_id: str) -> RawSequence | None:
        """Where `sequence_id` lives: the plain key, else key + "_bugfix"; None when absent."""
        for key in (sequence_id, sequence_id + BUGFIX_SUFFIX):
            for path, file in self._files.items():
                if isinstance(file.get(key), h5py.Dataset):
                    return RawSequence(sequence_id, path, key)
        return None

    def faces(self, sequence: RawSequence) -> np.ndarray:
        """(F, 3) int64 triangles of the sequence's file."""
        return self._faces[sequence.path]

    def check(self, sequence: RawSequence) -> int:
        """T, the sequence's frame count; SequenceError unless the dataset is (V, 3, T) numeric with V matching
        the faces."""
        where = f"{sequence.path}:{sequence.key}"
        dataset = self._files[sequence.path][sequence.key]
        n_vertices = int(self._faces[sequence.path].max()) + 1
        if dataset.ndim != 3 or dataset.shape[1] != 3:
            raise SequenceError(f"{where}: shape {dataset.shape} is not (V, 3, T)")
        if dataset.shape[0] != n_vertices:
            raise SequenceError(f"{where}: {dataset.shape[0]} vertices, but the faces index {n_vertices}")
        if dataset.dtype.kind not in "fiu":
            raise SequenceError(f"{where}: dtype {dataset.dtype} is not numeric")
        return dataset.shape[2]

    def load(self, sequence: RawSequence, frames: list[int]) -> np.ndarray:
        """Vertices (K, V, 3) float32 of the ascending `frames` of a checked sequence (all < T).

        Raises SequenceError (one line naming file, key and frame) for non-finite vertices or a frame with
        (almost) zero surface area.
        """
        where = f"{sequence.path}:{sequence.key}"
        dataset = self._files[sequence.path][sequence.key]
        faces = self._faces[sequence.path]
        block = dataset[:, :, frames[0]:frames[-1] + 1]  # (V, 3, span): one read, then pick frames
        vertices = np.ascontiguousarray(block[:, :, np.asarray(frames) - frames[0]].transpose(2, 0, 1),
                                        dtype=np.float32)  # (K, V, 3)
        finite = np.isfinite(vertices).all(axis=(1, 2))  # (K,)
        if not finite.all():
            raise SequenceError(f"{where}: frame {frames[int(np.argmin(finite))]} has NaN or infinite vertices")
        for frame, frame_vertices in zip(frames, vertices):
            if _surface_area(frame_vertices, faces) < MIN_MESH_AREA:
                raise SequenceError(f"{where}: frame {frame} is a degenerate mesh (zero surface area)")
        return vertices

    def close(self) -> None:
        for file in self._files.values():
            file.close()


def _open_hdf5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise UserError(f"{path} is not a readable HDF5 file ({error})") from None


def _read_faces(path: Path, file: h5py.File) -> np.ndarray:
    faces = file.get("faces")
    if not isinstance(faces, h5py.Dataset):
        raise UserError(f"{path} has no 'faces' dataset; is it a D-FAUST registrations file?")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0 or faces.dtype.kind not in "iu":
        raise UserError(f"{path}:faces must be a non-empty (F, 3) integer array, got {faces.shape} {faces.dtype}")
    values = faces[()].astype(np.int64)
    if values.min() < 0:
        raise UserError(f"{path}:faces has negative vertex indices")
    return values


def _surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    corners = vertices.astype(np.float64)[faces]  # (F, 3, 3)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return 0.5 * float(np.linalg.norm(cross, axis=1).sum())
