"""Crash-safe writing of preprocessed frames: per-frame parts, merged into one sequence file (data/format.py).

While a sequence is in progress, each finished frame is a part file
``{root}/{sequence_id}.partial-{tag}/{frame:05d}.npz`` (tag: a hash of the Settings, so parts made with other
settings are never mixed in). When every frame of the sequence has a part, the parts are merged into
``{root}/{sequence_id}.h5`` and the part directory is removed. Every file is written under a temporary name
and renamed into place (common/atomic.py), so a part or sequence file that exists is complete. Killed at any
moment, a rerun keeps the finished parts and files, recomputes the rest and writes the same bytes as an
uninterrupted run.
One run (or shard) per output directory and sequence at a time.
"""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np

from common.atomic import atomic_path, remove_temporaries
from data import format as fmt

PART_SUFFIX = ".npz"


def part_directory(root: Path, sequence_id: str, settings: fmt.Settings) -> Path:
    tag = hashlib.sha256(settings.to_json().encode()).hexdigest()[:10]
    return root / f"{sequence_id}.partial-{tag}"


def write_part(root: Path, sequence_id: str, settings: fmt.Settings, record: fmt.FrameRecord) -> None:
    directory = part_directory(root, sequence_id, settings)
    directory.mkdir(exist_ok=True)
    with atomic_path(directory / f"{record.frame:05d}{PART_SUFFIX}") as temporary, open(temporary, "wb") as out:
        np.savez(out, frame=record.frame, vertices=record.vertices,
                 image_png=np.frombuffer(record.image_png, dtype=np.uint8), surface_face=record.surface_face,
                 surface_barycentric=record.surface_barycentric, volume_seed=np.uint64(record.volume_seed),
                 volume_labels=record.volume_labels, outside_fraction=np.float32(record.outside_fraction))


def read_part(path: Path) -> fmt.FrameRecord:
    with np.load(path) as part:
        return fmt.FrameRecord(int(part["frame"]), part["vertices"], part["image_png"].tobytes(),
                               part["surface_face"], part["surface_barycentric"], int(part["volume_seed"]),
                               part["volume_labels"], float(part["outside_fraction"]))


def finished_parts(root: Path, sequence_id: str, settings: fmt.Settings) -> set[int]:
    """Frames of the sequence that already have a part; unreadable parts (a disk fault) are deleted."""
    directory = part_directory(root, sequence_id, settings)
    frames = set()
    for path in directory.glob(f"*{PART_SUFFIX}"):
        try:
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is None:
                    frames.add(int(path.stem))
                    continue
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
        path.unlink()
    return frames


def is_finished(root: Path, sequence_id: str, settings: fmt.Settings, frames: list[int]) -> bool:
    """True when the sequence file exists with these settings and exactly these frames."""
    path = fmt.sequence_path(root, sequence_id)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as file:
            return (file.attrs.get("format_version") == fmt.FORMAT_VERSION
                    and file.attrs.get("settings") == settings.to_json()
                    and file["frames"][()].tolist() == list(frames))
    except (OSError, KeyError):
        return False


def remove_leftovers(root: Path, sequence_id: str) -> None:
    """Delete temporary files a killed run left for this sequence (never a finished part or file)."""
    remove_temporaries(root, f"{sequence_id}.partial-*/*")
    remove_temporaries(root, f"{sequence_id}{fmt.SEQUENCE_SUFFIX}")


def merge_sequence(root: Path, sequence_id: str, source_key: str, faces: np.ndarray, frames: list[int],
                   settings: fmt.Settings) -> Path:
    """Write the sequence file from the parts of `frames` (ascending), then remove all its part directories."""
    directory = part_directory(root, sequence_id, settings)
    first = read_part(directory / f"{frames[0]:05d}{PART_SUFFIX}")
    n_frames, n_vertices, n_points = len(frames), len(first.vertices), settings.n_points
    point_chunk = fmt.point_chunk(n_points)
    path = fmt.sequence_path(root, sequence_id)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as file:
            file.attrs["format_version"] = fmt.FORMAT_VERSION
            file.attrs["sequence_id"] = sequence_id
            file.attrs["source_key"] = source_key
            file.attrs["settings"] = settings.to_json()
            file.create_dataset("faces", data=faces.astype(np.int32), track_times=False)
            file.create_dataset("frames", data=np.asarray(frames, dtype=np.int32), track_times=False)
            datasets = {
                "vertices": ((n_frames, n_vertices, 3), np.float32, (1, n_vertices, 3)),
                "image_png": ((n_frames,), h5py.vlen_dtype(np.uint8), None),
                "surface_face": ((n_frames, n_points), fmt.face_index_dtype(len(faces)), (1, point_chunk)),
                "surface_barycentric": ((n_frames, n_points, 2), np.uint16, (1, point_chunk, 2)),
                "volume_seed": ((n_frames,), np.uint64, None),
                "volume_labels": ((n_frames, len(first.volume_labels)), np.uint8, (1, len(first.volume_labels))),
                "outside_fraction": ((n_frames,), np.float32, None),
            }
            for name, (shape, dtype, chunks) in datasets.items():
                file.create_dataset(name, shape, dtype, chunks=chunks, track_times=False)
            for row, frame in enumerate(frames):
                record = first if row == 0 else read_part(directory / f"{frame:05d}{PART_SUFFIX}")
                file["vertices"][row] = record.vertices
                file["image_png"][row] = np.frombuffer(record.image_png, dtype=np.uint8)
                file["surface_face"][row] = record.surface_face
                file["surface_barycentric"][row] = record.surface_barycentric
                file["volume_seed"][row] = record.volume_seed
                file["volume_labels"][row] = record.volume_labels
                file["outside_fraction"][row] = record.outside_fraction
    remove_parts(root, sequence_id)
    return path


def remove_parts(root: Path, sequence_id: str) -> None:
    """Delete the sequence's part directories (once its file is finished; a kill may interrupt this)."""
    for directory in root.glob(f"{sequence_id}.partial-*"):
        shutil.rmtree(directory, ignore_errors=True)
