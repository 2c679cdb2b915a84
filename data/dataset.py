"""The training / evaluation Dataset over preprocessed frames (format: data/format.py)."""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from config import DataConfig
from data import format as fmt
from data.preprocessed import SequenceReader
from data.sampling import draw_volume_samples, near_surface
from data.splits import read_split_file, select_frames
from common.errors import UserError

# Near-surface masks kept per process, least recently used dropped first: 4096 frames of 100,000 points, packed to
# 12.5 KB each, hold 51 MB. A larger training set (D-FAUST's 29,879 frames: 3.9 GB unbounded and unpacked) recomputes
# most masks, about 70 ms each, in the DataLoader workers.
NEAR_CACHE_FRAMES = 4096


class FrameDataset(torch.utils.data.Dataset):
    """The preprocessed frames of `splits` (frames >= cfg.drop_first_frames), in sorted (sequence, frame) order.

    dataset[i] draws with np.random.default_rng((seed, i)) (the same sample every time, for evaluation);
    dataset[(i, draw_seed)] draws with np.random.default_rng(draw_seed) (a training sampler's choice).
    An item is a dict of tensors, Nv = cfg.n_volume_points, Ns = cfg.n_surface_points, S = cfg.network_image_size
    (or the rendered size when 0):
        image            (3, S, S) float32 in [0, 1] (not ImageNet-normalised: the model does that)
        volume_points    (Nv, 3) float32, drawn with replacement from the stored points (balanced when
                         cfg.balanced_sampling; cfg.near_surface_share of the outside draws near the surface)
        volume_labels    (Nv,) float32, 1 inside
        volume_weights   (Nv,) float32, importance weights (all 1 without balancing)
        surface_points   (Ns, 3) float32, a random contiguous window of the (shuffled) stored samples
        surface_normals  (Ns, 3) float32, unit outward
        index            () int64, i
    HDF5 files are opened lazily in each process, so DataLoader workers (forked) each get their own handles.
    """

    def __init__(self, root: str, split_file: str, splits: tuple[str, ...], cfg: DataConfig, seed: int = 0):
        self.root = Path(root)
        self.cfg = cfg
        self.seed = seed
        if not 0 <= cfg.near_surface_share < 1 or cfg.near_surface_distance <= 0:
            raise UserError(f"data.near_surface_share={cfg.near_surface_share} must be in [0, 1) and "
                            f"data.near_surface_distance={cfg.near_surface_distance} above 0 (far outside points "
                            "need draws of their own for the weights to stay exact)")
        if not self.root.is_dir():
            raise UserError(f"preprocessed directory {self.root} not found; run preprocess/preprocess_dfaust.py "
                            "or set data.preprocessed_dir")
        wanted = select_frames(read_split_file(split_file), splits, cfg.drop_first_frames)
        available = self._available_frames({sequence for sequence, _ in wanted})
        self.frames: list[tuple[str, int]] = [item for item in wanted if item[1] in available.get(item[0], ())]
        if not self.frames:
            raise UserError(f"{self.root} holds none of the {len(wanted)} frames of splits {', '.join(splits)} "
                            f"listed in {split_file}; run preprocess/preprocess_dfaust.py")
        missing = len(wanted) - len(self.frames)
        if missing:
            first = next(item for item in wanted if item[1] not in available.get(item[0], ()))
            warnings.warn(f"{missing} of {len(wanted)} frames of splits {', '.join(splits)} are not preprocessed "
                          f"in {self.root} (first: {first[0]}:{first[1]}); using the other {len(self.frames)}")
        self._readers: dict[str, SequenceReader] = {}
        self._near: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (sequence, row) -> packed mask
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, rng = (key[0], np.random.default_rng(key[1])) if isinstance(key, tuple) else \
            (key, np.random.default_rng((self.seed, key)))
        sequence_id, frame = self.frames[index]
        reader = self._reader(sequence_id)
        row = reader.row(frame)

        inside = reader.labels(row)  # (P,)
        near = self._near_surface(sequence_id, reader, row) if self.cfg.near_surface_share > 0 else None
        draws, weights = draw_volume_samples(inside, self.cfg.n_volume_points, self.cfg.balanced_sampling, rng,
                                             near, self.cfg.near_surface_share)
        volume_points = reader.volume_points(row, draws)  # (Nv, 3)
        start = int(rng.integers(0, reader.settings.n_points - self.cfg.n_surface_points + 1))
        surface_points, surface_normals = reader.surface(row, start, start + self.cfg.n_surface_points)

        return {
            "image": self._image(reader, row),
            "volume_points": torch.from_numpy(volume_points),
            "volume_labels": torch.from_numpy(inside[draws].astype(np.float32)),
            "volume_weights": torch.from_numpy(weights),
            "surface_points": torch.from_numpy(surface_points),
            "surface_normals": torch.from_numpy(surface_normals),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def image(self, index: int) -> torch.Tensor:
        """The network input of frame `index`, as in its items: (3, S, S) float32 in [0, 1]."""
        sequence_id, frame = self.frames[index]
        reader = self._reader(sequence_id)
        return self._image(reader, reader.row(frame))

    def mesh(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The ground-truth mesh of frame `index`: vertices (V, 3) float32 metres, faces (F, 3) int32."""
        sequence_id, frame = self.frames[index]
        reader = self._reader(sequence_id)
        return reader.vertices(reader.row(frame)), reader.faces

    def body_points(self, n_frames: int, n_per_frame: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Points of the bodies of up to `n_frames` random frames, `n_per_frame` of each kind from each frame:
        (inside, surface), each (n_frames * n_per_frame, 3) float32 metres. Inside points are stored volume points
        drawn with replacement from those inside the body (uniform over its inside); surface points are a window
        of the stored, shuffled surface samples (uniform over its area)."""
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(self.frames), size=min(n_frames, len(self.frames)), replace=False)
        inside_points, surface_points = [], []
        for index in sorted(chosen):
            sequence_id, frame = self.frames[index]
            reader = self._reader(sequence_id)
            row = reader.row(frame)
            inside = np.flatnonzero(reader.labels(row))
            if len(inside):
                inside_points.append(reader.volume_points(row, np.sort(rng.choice(inside, n_per_frame))))
                start = int(rng.integers(0, reader.settings.n_points - n_per_frame + 1))
                surface_points.append(reader.surface(row, start, start + n_per_frame)[0])
        if not inside_points:
            raise UserError(f"no stored volume point lies inside a body in {self.root}; check the preprocessing")
        return np.concatenate(inside_points), np.concatenate(surface_points)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": {}}  # open HDF5 handles do not pickle (spawned workers)

    def _near_surface(self, sequence_id: str, reader: SequenceReader, row: int) -> np.ndarray:
        """(P,) bool: the frame's stored volume points within cfg.near_surface_distance of its mesh, kept as bits
        for the last NEAR_CACHE_FRAMES frames used by this process."""
        key, n_points = (sequence_id, row), reader.settings.n_points
        if key in self._near:
            self._near.move_to_end(key)
        else:
            points = reader.volume_points(row, np.arange(n_points))
            self._near[key] = np.packbits(near_surface(points, reader.vertices(row), self.cfg.near_surface_distance))
            if len(self._near) > NEAR_CACHE_FRAMES:
                self._near.popitem(last=False)
        return np.unpackbits(self._near[key], count=n_points).astype(bool)

    def _image(self, reader: SequenceReader, row: int) -> torch.Tensor:
        image = reader.image(row)  # (H, W, 3) uint8
        size = self.cfg.network_image_size or image.shape[0]
        if image.shape[:2] != (size, size):
            image = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # (3, S, S)
        chw /= 255.0
        return torch.from_numpy(chw)

    def _reader(self, sequence_id: str) -> SequenceReader:
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours to use
            self._readers, self._pid = {}, os.getpid()
        if sequence_id not in self._readers:
            self._readers[sequence_id] = SequenceReader(fmt.sequence_path(self.root, sequence_id))
        return self._readers[sequence_id]

    def _available_frames(self, sequence_ids: set[str]) -> dict[str, set[int]]:
        """Frames present per sequence file; checks each file can serve this config's windows."""
        available = {}
        for sequence_id in sorted(sequence_ids):
            path = fmt.sequence_path(self.root, sequence_id)
            if not path.is_file():
                continue
            with SequenceReader(path) as reader:
                if reader.settings.n_points < self.cfg.n_surface_points:
                    raise UserError(f"{path} stores {reader.settings.n_points} surface samples per frame, fewer "
                                    f"than data.n_surface_points={self.cfg.n_surface_points}")
                available[sequence_id] = {int(frame) for frame in reader.frames}
        return available
