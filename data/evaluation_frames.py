"""The evaluation Dataset: every stored sample of a frame, with no draw (the protocol: docs/evaluation.md)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from config import DataConfig
from data import format as fmt
from data.dataset import FrameDataset
from data.preprocessed import SequenceReader
from common.errors import UserError


class EvaluationFrames(FrameDataset):
    """The preprocessed frames of `splits`, in FrameDataset's order, each with all its stored samples.

    Items depend on the frame alone (no random draw, no training sampling setting), P = n_points:
        image            (3, S, S) float32 in [0, 1], S = cfg.network_image_size (the model's input size)
        volume_points    (P, 3) float32 metres, uniform in the volume box
        volume_labels    (P,) float32, 1 inside the target mesh
        surface_points   (P, 3) float32 metres, area-uniform on the target mesh
        surface_normals  (P, 3) float32, unit outward
        index            () int64, the frame's index in `frames`
    """

    def __init__(self, root: str, split_file: str, splits: tuple[str, ...], cfg: DataConfig):
        # Only the frame list and the image size are taken from cfg; its training draws play no part.
        super().__init__(root, split_file, splits, dataclasses.replace(cfg, n_surface_points=0, near_surface_share=0.0))
        counts = set()
        for sequence_id in sorted({sequence for sequence, _ in self.frames}):
            with SequenceReader(fmt.sequence_path(self.root, sequence_id)) as reader:
                counts.add(reader.settings.n_points)
        if len(counts) != 1:
            raise UserError(f"the sequence files in {self.root} store different numbers of samples per frame "
                            f"({', '.join(map(str, sorted(counts)))}); preprocess them with one setting")
        self.n_points = counts.pop()  # P, the same for every frame

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sequence_id, frame = self.frames[index]
        reader = self._reader(sequence_id)
        row = reader.row(frame)
        surface_points, surface_normals = reader.surface(row, 0, self.n_points)
        return {
            "image": self._image(reader, row),
            "volume_points": torch.from_numpy(reader.volume_points(row, np.arange(self.n_points))),
            "volume_labels": torch.from_numpy(reader.labels(row).astype(np.float32)),
            "surface_points": torch.from_numpy(surface_points),
            "surface_normals": torch.from_numpy(surface_normals),
            "index": torch.tensor(index, dtype=torch.int64),
        }
