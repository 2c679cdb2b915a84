"""Preprocessing throughput and storage size, on a synthetic D-FAUST made by preprocess/make_synthetic_dfaust.py.

    python3 bench/preprocessing.py [--workers 2] [--subjects 2] [--sequences 2] [--frames 30] [--keep DIR]

Prints frames/s, seconds per stage, bytes per frame beside eggfryonrice/NeuralParts' layout for the same
frame (float64 surface .npy + float32 points/occupancies .npz + PNG), the time to read one training item, and last
`frames_per_s=<value> bytes_per_frame=<value>`.
"""
from __future__ import annotations

import argparse
import io
import pathlib
import subprocess
import sys
import tempfile
import time


import h5py
import numpy as np

from config import DataConfig
from data import format as fmt
from data.dataset import FrameDataset
from data.preprocessed import read_frame
from preprocess.frames import STAGES
from preprocess.pipeline import run
from common.errors import run_main

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=2, help="per subject")
    parser.add_argument("--frames", type=int, default=30, help="per sequence; the first 20 are dropped")
    parser.add_argument("--keep", help="work in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = pathlib.Path(args.keep or temporary)
        raw, out = directory / "raw", directory / "preprocessed"
        subprocess.run([sys.executable, "preprocess/make_synthetic_dfaust.py", "--output-dir", str(raw),
                        "--subjects", str(args.subjects), "--sequences", str(args.sequences),
                        "--frames", str(args.frames), "--seed", "0"], cwd=REPO, check=True)
        cfg = DataConfig()
        summary = run(str(raw), str(out), str(raw / "splits.csv"), cfg, args.workers, progress=False)
        frames_per_s = summary.computed / summary.seconds
        print(f"{summary.computed} frames of {summary.sequences} sequences, {args.workers} workers, "
              f"{cfg.n_stored_points} points: {summary.seconds:.1f} s, {frames_per_s:.2f} frames/s")
        print("seconds per frame in one worker: " + ", ".join(
            f"{stage} {summary.stage_seconds[stage] / summary.computed:.3f}" for stage in (*STAGES, "write")))

        ours, parts = _our_bytes(out, summary.frames)
        npy = _npy_layout_bytes(out)
        print("bytes per frame, ours: " + ", ".join(f"{name} {size:,.0f}" for name, size in parts.items()))
        print(f"{'layout':<44}{'bytes/frame':>14}")
        print(f"{'ours (HDF5, quantised)':<44}{ours:>14,.0f}")
        print(f"{'eggfryonrice/NeuralParts (npy + npz + PNG)':<44}{sum(npy.values()):>14,.0f}  "
              + ", ".join(f"{name} {size:,}" for name, size in npy.items()))
        print(f"ratio eggfryonrice/NeuralParts / ours {sum(npy.values()) / ours:.1f}x")
        print(f"one training item: {_item_milliseconds(out, raw / 'splits.csv', cfg):.2f} ms")
    print(f"frames_per_s={frames_per_s:.3f} bytes_per_frame={ours:.0f}")
    return 0


def _our_bytes(out: pathlib.Path, n_frames: int) -> tuple[float, dict[str, float]]:
    """Total file bytes per frame, and the share of each dataset (its stored bytes per frame)."""
    parts: dict[str, float] = {}
    total = 0
    for path in sorted(out.glob(f"*{fmt.SEQUENCE_SUFFIX}")):
        total += path.stat().st_size
        with h5py.File(path, "r") as file:
            for name, dataset in file.items():
                size = dataset.id.get_storage_size()
                if name == "image_png":  # variable-length data live in the global heap, not in the dataset
                    size = sum(len(png) for png in dataset[()])
                parts[name] = parts.get(name, 0) + size / n_frames
    return total / n_frames, parts


def _npy_layout_bytes(out: pathlib.Path) -> dict[str, int]:
    """eggfryonrice/NeuralParts' files for the first frame: surface (P, 6) float64 .npy, points float32 (P, 3) +
    occupancies float32 (P,) uncompressed .npz, and the same PNG."""
    path = sorted(out.glob(f"*{fmt.SEQUENCE_SUFFIX}"))[0]
    with h5py.File(path, "r") as file:
        sequence_id, frame = file.attrs["sequence_id"], int(file["frames"][0])
        png = len(file["image_png"][0])
    sample = read_frame(out, sequence_id, frame)
    surface, volume = io.BytesIO(), io.BytesIO()
    np.save(surface, np.concatenate([sample.surface_points, sample.surface_normals], axis=1).astype(np.float64))
    np.savez(volume, points=sample.volume_points, occupancies=sample.volume_labels.astype(np.float32))
    return {"surface .npy": len(surface.getvalue()), "volume .npz": len(volume.getvalue()), "PNG": png}


def _item_milliseconds(out: pathlib.Path, split_file: pathlib.Path, cfg: DataConfig, repeats: int = 200) -> float:
    dataset = FrameDataset(str(out), str(split_file), ("train", "val", "test"), cfg)
    dataset[0]  # open the file
    started = time.perf_counter()
    for index in range(repeats):
        dataset[(index % len(dataset), index)]
    return (time.perf_counter() - started) / repeats * 1000


if __name__ == "__main__":
    run_main(main)
