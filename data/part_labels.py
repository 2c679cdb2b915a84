"""Body-part labels of a dataset's shared mesh topology: ``{dataset_dir}/vertex_parts.npz`` beside the registrations.

    labels  (V,)  int64  body part of each template vertex, an index into names
    names   (P,)  str    body part names

Every frame of the dataset has the same V vertices in the same order (D-FAUST's SMPL topology, or the synthetic
template of preprocess/synthetic_body.py), so one label per vertex index serves every frame. The synthetic
generator (preprocess/make_synthetic_dfaust.py) writes the file; D-FAUST ships none, and a user may add one
(for example SMPL's part segmentation). D-FAUST readers open only the registrations files, so the file is inert
to them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UserError

PART_LABELS_FILE = "vertex_parts.npz"


def write_part_labels(path: str | Path, labels: np.ndarray, names: tuple[str, ...]) -> None:
    """Write labels (V,) int in [0, P) and the P names to `path` (an open file or a path; no suffix is added)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(names):
        raise ValueError(f"labels must be (V,) integers in [0, {len(names)}); got {labels.dtype} {labels.shape}")
    with open(path, "wb") as file:
        np.savez(file, labels=labels.astype(np.int64), names=np.array(names, dtype=str))


def read_part_labels(dataset_dir: str | Path) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """(labels (V,) int64, names) from `dataset_dir`'s PART_LABELS_FILE, or None when it has none.

    A file that is unreadable or inconsistent is a UserError naming it.
    """
    path = Path(dataset_dir) / PART_LABELS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            labels, names = archive["labels"], archive["names"]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{path} is not a body-part label file with arrays 'labels' and 'names' ({error}); "
                        f"delete it or rewrite it") from None
    if (labels.ndim != 1 or labels.dtype.kind not in "iu" or names.ndim != 1 or names.dtype.kind != "U"
            or len(names) == 0 or (labels.size and (labels.min() < 0 or labels.max() >= len(names)))):
        raise UserError(f"{path}: 'labels' must be (V,) integers indexing the {len(names)} strings in 'names'; "
                        f"got labels {labels.dtype} {labels.shape}, names {names.dtype} {names.shape}")
    return labels.astype(np.int64), tuple(str(name) for name in names)
