"""Reading preprocessed sequence files (layout and error bounds: data/format.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data import format as fmt
from common.errors import UserError


@dataclass
class Frame:
    """One decoded frame. P = n_points stored per frame; coordinates in metres.

    image:            (S, S, 3) uint8 RGB render
    surface_points:   (P, 3) float32 area-uniform surface samples, in random order
    surface_normals:  (P, 3) float32 unit outward face normals of those samples
    volume_points:    (P, 3) float32 uniform in the volume box
    volume_labels:    (P,) bool, True inside the mesh
    vertices:         (V, 3) float32 the frame's mesh
    faces:            (F, 3) int32
    outside_fraction: fraction of the surface area that lies outside the volume box
    """

    image: np.ndarray
    surface_points: np.ndarray
    surface_normals: np.ndarray
    volume_points: np.ndarray
    volume_labels: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    outside_fraction: float


class SequenceReader:
    """Random access to the frames of one sequence file; reads only what each call asks for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise UserError(f"{self.path} not found; run preprocess/preprocess_dfaust.py") from None
        except OSError as error:
            raise UserError(f"{self.path} is not a readable HDF5 file ({error}); delete it and rerun "
                            "preprocess/preprocess_dfaust.py") from None
        version = self._file.attrs.get("format_version")
        if version != fmt.FORMAT_VERSION:
            self._file.close()
            raise UserError(f"{self.path} has format version {version}, this code reads "
                            f"{fmt.FORMAT_VERSION}; rerun preprocess/preprocess_dfaust.py into a new directory")
        try:
            self.settings = fmt.Settings.from_json(self._file.attrs["settings"])
            self.frames = self._file["frames"][()]  # (T,) int32
            self.faces = self._file["faces"][()]  # (F, 3) int32
        except (KeyError, ValueError) as error:
            self._file.close()
            detail = error.args[0] if error.args else type(error).__name__
            raise UserError(f"{self.path} is incomplete ({detail}); delete it and rerun "
                            "preprocess/preprocess_dfaust.py") from None
        self._rows = {int(frame): row for row, frame in enumerate(self.frames)}

    def row(self, frame: int) -> int:
        if frame not in self._rows:
            raise UserError(f"frame {frame} is not in {self.path}; rerun preprocess/preprocess_dfaust.py")
        return self._rows[frame]

    def image(self, row: int) -> np.ndarray:
        return fmt.decode_png(self._file["image_png"][row])

    def vertices(self, row: int) -> np.ndarray:
        return self._file["vertices"][row]

    def surface(self, row: int, start: int, stop: int, vertices: np.ndarray | None = None):
        """Surface samples start..stop-1: points (K, 3), normals (K, 3), float32."""
        vertices = self.vertices(row) if vertices is None else vertices
        face_index = self._file["surface_face"][row, start:stop]
        codes = self._file["surface_barycentric"][row, start:stop]
        return fmt.surface_samples(vertices, self.faces, face_index, codes)

    def labels(self, row: int) -> np.ndarray:
        """(P,) bool inside labels of the frame's volume points."""
        return fmt.unpack_labels(self._file["volume_labels"][row], self.settings.n_points)

    def volume_points(self, row: int, indices: np.ndarray) -> np.ndarray:
        """Volume points `indices` (K,) of the frame, float32 (K, 3)."""
        seed = int(self._file["volume_seed"][row])
        return fmt.volume_points(seed, indices, self.settings.box_min, self.settings.box_max)

    def outside_fraction(self, row: int) -> float:
        return float(self._file["outside_fraction"][row])

    def read(self, frame: int) -> Frame:
        row = self.row(frame)
        vertices = self.vertices(row)
        n = self.settings.n_points
        points, normals = self.surface(row, 0, n, vertices)
        return Frame(self.image(row), points, normals, self.volume_points(row, np.arange(n)), self.labels(row),
                     vertices, self.faces, self.outside_fraction(row))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SequenceReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frame(root: str | Path, sequence_id: str, frame: int) -> Frame:
    """Frame `frame` (the split file's number) of `sequence_id` from the preprocessed directory `root`."""
    with SequenceReader(fmt.sequence_path(root, sequence_id)) as reader:
        return reader.read(frame)
