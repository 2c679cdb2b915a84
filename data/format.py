"""The preprocessed D-FAUST format: the one definition that the writer (preprocess/) and readers (data/) share.

Layout: one HDF5 file per sequence, ``{root}/{sequence_id}.h5`` (sequence_id as in the split file, e.g.
``50004_running_on_spot`` even where the raw key carries ``_bugfix``). A file only ever appears under this
name complete (written as a temporary file, then renamed), so an existing file is a finished file. Beside
them the writer keeps ``{root}/preprocess.json``, the settings the directory was filled with
(preprocess/pipeline.py); readers do not need it, each file records its own settings.
T frames, V vertices, F faces, P = n_points samples per frame, S = image side:

    attrs  format_version  int   FORMAT_VERSION
           sequence_id     str   split-file id
           source_key      str   the raw HDF5 dataset it came from (e.g. ``..._bugfix``)
           settings        str   Settings as JSON (P, S, volume box)
    faces                (F, 3)      int32    triangles, 0-based, shared by all frames
    frames               (T,)        int32    split-file frame numbers, ascending
    vertices             (T, V, 3)   float32  mesh vertices, metres, as read from the raw data  chunks (1, V, 3)
    image_png            (T,)        vlen uint8  PNG bytes of the (S, S, 3) RGB render
    surface_face         (T, P)      uint16 (F <= 65536) or uint32  face of each surface sample  chunks (1, C)
    surface_barycentric  (T, P, 2)   uint16   barycentric weights (b1, b2) of vertices 1, 2, times 65535, rounded
                                              chunks (1, C, 2), C = point_chunk(P) (7,693 for P = 100,000)
    volume_seed          (T,)        uint64   seed of the frame's volume points (see `volume_points`)
    volume_labels        (T, ceil(P/8))  uint8  np.packbits of the P inside labels  chunks (1, ceil(P/8))
    outside_fraction     (T,)        float32  fraction of the surface area outside the volume box

Surface samples are area-uniform and i.i.d. (so stored order is random: any contiguous window is a random
subset, which is how training reads them). Each sample is stored as its face and barycentric coordinates; a
reader rebuilds point = v0 + b1 (v1 - v0) + b2 (v2 - v0) and normal = the unit face normal.

Error bounds (decoded float32 value minus the value the writer sampled):
  * vertices, faces, labels, images: exact (PNG is lossless).
  * surface points: each barycentric weight is off by at most 0.5/65535, so a point moves by at most
    (|v1 - v0| + |v2 - v0|) * 7.63e-6 <= 1.53e-5 x the face's longest edge (1.5e-7 m for a 1 cm edge,
    the size of a body-mesh face), staying in the face's plane; plus float32 rounding (~6e-8 m at 1 m).
  * surface normals: recomputed from the stored vertices, so exact up to float32 rounding (~1e-7).
  * volume points: exact. They are not stored: they are a pure integer function of (volume_seed, index)
    (SplitMix64, no library random stream), so every reader regenerates the writer's float32 points bit for
    bit, and the labels were computed on exactly those points. A reader can draw any subset without reading
    the rest.
Storing points as float16 instead would cost 6 bytes per point with errors up to 4.9e-4 m near |x| = 1.
Size for D-FAUST (V 6890, F 13776, P 100k): about 0.70 MB per frame including the image (vertices 83 kB,
surface samples 600 kB, labels 12.5 kB, PNG ~5 kB; the faces add 165 kB per sequence).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FORMAT_VERSION = 1
SEQUENCE_SUFFIX = ".h5"
BARYCENTRIC_SCALE = 65535  # uint16 full range
MAX_POINT_CHUNK = 8192  # samples per HDF5 chunk at most: a 1,500-sample window touches at most 2 chunks


@dataclass(frozen=True)
class Settings:
    """What a preprocessed frame depends on besides the mesh; recorded in every file."""

    n_points: int  # P surface samples and P volume points per frame
    image_size: int  # S, rendered image side, pixels
    box_min: tuple[float, float, float]  # volume sampling box, metres
    box_max: tuple[float, float, float]

    @classmethod
    def from_config(cls, data) -> "Settings":
        """From a config.DataConfig."""
        return cls(data.n_stored_points, data.image_size, tuple(map(float, data.volume_box_min)),
                   tuple(map(float, data.volume_box_max)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        values = json.loads(text)
        return cls(int(values["n_points"]), int(values["image_size"]), tuple(values["box_min"]),
                   tuple(values["box_max"]))


@dataclass
class FrameRecord:
    """One frame as stored (encoded), P = Settings.n_points."""

    frame: int
    vertices: np.ndarray  # (V, 3) float32
    image_png: bytes
    surface_face: np.ndarray  # (P,) face_index_dtype(F)
    surface_barycentric: np.ndarray  # (P, 2) uint16
    volume_seed: int  # uint64
    volume_labels: np.ndarray  # (ceil(P/8),) uint8, packed
    outside_fraction: float


def sequence_path(root: str | Path, sequence_id: str) -> Path:
    return Path(root) / f"{sequence_id}{SEQUENCE_SUFFIX}"


def point_chunk(n_points: int) -> int:
    """Samples per chunk: at most MAX_POINT_CHUNK, splitting P into nearly equal chunks (little padding)."""
    n_chunks = -(-n_points // MAX_POINT_CHUNK)
    return -(-n_points // n_chunks)


def face_index_dtype(n_faces: int) -> np.dtype:
    return np.dtype(np.uint16) if n_faces <= 2**16 else np.dtype(np.uint32)


def frame_seed(sequence_id: str, frame: int, purpose: str) -> int:
    """A 64-bit seed fixed by (sequence, frame, purpose): reruns and shards draw the same samples."""
    digest = hashlib.sha256(f"{sequence_id}/{frame}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def encode_barycentric(barycentric: np.ndarray) -> np.ndarray:
    """(P, 3) float barycentric weights (b0, b1, b2) -> (P, 2) uint16 codes of (b1, b2)."""
    return np.rint(np.clip(barycentric[:, 1:], 0.0, 1.0) * BARYCENTRIC_SCALE).astype(np.uint16)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, face_index: np.ndarray,
                    barycentric_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode surface samples: points (K, 3) and unit face normals (K, 3), float32.

    vertices (V, 3), faces (F, 3), face_index (K,), barycentric_codes (K, 2) uint16.
    """
    corners = vertices.astype(np.float64)[faces[face_index.astype(np.int64)]]  # (K, 3 corners, 3)
    edge1 = corners[:, 1] - corners[:, 0]  # (K, 3)
    edge2 = corners[:, 2] - corners[:, 0]
    weights = barycentric_codes.astype(np.float64) / BARYCENTRIC_SCALE  # (K, 2)
    points = corners[:, 0] + weights[:, :1] * edge1 + weights[:, 1:] * edge2
    normals = np.cross(edge1, edge2)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return points.astype(np.float32), normals.astype(np.float32)


_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(counter: np.ndarray, seed: int) -> np.ndarray:
    """The counter-th output of SplitMix64 started at `seed`: uint64 array, pure integer arithmetic."""
    z = np.uint64(seed) + (counter.astype(np.uint64) + np.uint64(1)) * _GOLDEN_GAMMA
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def volume_points(seed: int, indices: np.ndarray, box_min, box_max) -> np.ndarray:
    """Volume points `indices` (K,) of a frame: uniform in the box, float32 (K, 3), metres.

    Point i, axis a uses SplitMix64 output 3 i + a, turned into a float64 in [0, 1) from its top 53 bits.
    """
    counters = 3 * np.asarray(indices, dtype=np.uint64)[:, None] + np.arange(3, dtype=np.uint64)  # (K, 3)
    unit = (_splitmix64(counters, seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53  # (K, 3) in [0, 1)
    low = np.asarray(box_min, dtype=np.float64)
    return (low + unit * (np.asarray(box_max, dtype=np.float64) - low)).astype(np.float32)


def pack_labels(inside: np.ndarray) -> np.ndarray:
    return np.packbits(inside.astype(bool))


def unpack_labels(packed: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(packed, count=count).astype(bool)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes | np.ndarray) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, 3)."""
    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.array(image.convert("RGB"))
