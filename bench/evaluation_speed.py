"""Evaluation throughput: frames/s of evaluation/loop.py with all stored points per frame, on a synthetic D-FAUST.

    python3 bench/evaluation_speed.py [--threads 1] [--frames 4] [--dfaust-frames 2] [--keep DIR]

Builds untrained models from the config (the demo preset with its primitives placed on the synthetic bodies, as
train.py does at step 0; the D-FAUST default without ImageNet weights), evaluates frames of a small synthetic
dataset (preprocess/make_synthetic_dfaust.py, 100,000 stored points per frame) after one warm-up frame, and
prints seconds per frame split into the all-points IoU (G at every stored volume point) and the rest (reading,
the authors' IoU, Chamfer sampling and nearest neighbours), then the estimated cost of the D-FAUST test split and
of one validation at the default config. Last line: `demo_frames_per_s=<value> dfaust_s_per_frame=<value>`.
Other processes on the machine slow every number down: read `load average` printed beside them. The default is
one torch thread: on a 2-core machine shared with other processes, 2 threads took 44-101 s for G at 100,000 points
(demo preset, load average 3.5-4.4) against 4.8-5.5 s with one thread, as each parallel region waits for a
descheduled thread.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time


import torch

import config
from data.dataset import FrameDataset
from evaluation.loop import evaluate_frames, evaluation_dataset
from models.neural_parts import NeuralParts
from models.placement import cluster_placement

REPO = pathlib.Path(__file__).resolve().parents[1]
DFAUST_TEST_FRAMES, DFAUST_VAL_FRAMES = 8_761, 2_430  # the authors' split after dropping frames 0-19


def untrained_model(cfg: config.Config, raw: pathlib.Path, preprocessed: pathlib.Path) -> NeuralParts:
    """The model of `cfg` at step 0; placed on the training bodies when cfg.model.init_placement (as train.py)."""
    torch.manual_seed(cfg.train.seed)
    model = NeuralParts(cfg.model)
    if cfg.model.init_placement:
        bodies = FrameDataset(str(preprocessed), str(raw / "splits.csv"), ("train",), cfg.data)
        inside, surface = bodies.body_points(40, 1000, cfg.train.seed)
        model.inn.set_placement(*cluster_placement(inside, surface, cfg.model.n_primitives, cfg.model.sphere_radius,
                                                   cfg.train.seed))
    return model.eval()


def seconds_per_frame(cfg: config.Config, raw: pathlib.Path, preprocessed: pathlib.Path,
                      n_frames: int) -> tuple[float, float]:
    """(seconds per frame of the whole evaluation, of which the all-points IoU's G), means over
    `n_frames` frames after one warm-up frame."""
    model = untrained_model(cfg, raw, preprocessed)
    dataset = evaluation_dataset(str(preprocessed), str(raw / "splits.csv"), ("train", "val", "test"), cfg.data)
    device = torch.device("cpu")
    list(evaluate_frames(model, dataset, cfg.eval, device, 1, progress=False))  # warm-up
    started = time.perf_counter()
    records = list(evaluate_frames(model, dataset, cfg.eval, device, n_frames, progress=False))
    total = (time.perf_counter() - started) / len(records)
    item = dataset[0]
    with torch.no_grad():
        C = model.conditioning(item["image"][None])
        started = time.perf_counter()
        model.implicit(item["volume_points"][None], C)
        iou = time.perf_counter() - started
    return total, iou


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--frames", type=int, default=4, help="frames timed at the demo preset")
    parser.add_argument("--dfaust-frames", type=int, default=2, help="frames timed at the D-FAUST default config")
    parser.add_argument("--keep", help="work in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        directory = pathlib.Path(args.keep or temporary)
        raw, preprocessed = directory / "raw", directory / "preprocessed"
        if not (raw / "splits.csv").exists():
            subprocess.run([sys.executable, "preprocess/make_synthetic_dfaust.py", "--output-dir", str(raw),
                            "--subjects", "2", "--sequences", "2", "--frames", "24", "--seed", "0"], cwd=REPO,
                           check=True, capture_output=True)
        if not preprocessed.exists():
            subprocess.run([sys.executable, "preprocess/preprocess_dfaust.py", "--dataset-dir", str(raw),
                            "--output-dir", str(preprocessed), "--split-file", str(raw / "splits.csv"),
                            "--workers", "1"], cwd=REPO, check=True, capture_output=True)

        demo = config.build_config("demo")
        total, iou = seconds_per_frame(demo, raw, preprocessed, args.frames)
        print(f"demo preset, {args.threads} threads, {demo.data.n_stored_points:,} points per frame, load average "
              f"{os.getloadavg()[0]:.1f}: {total:.2f} s per frame ({1 / total:.2f} frames/s); all-points IoU "
              f"{iou:.2f} s, the rest {total - iou:.2f} s")

        dfaust = config.build_config("dfaust", ["model.pretrained=false"])
        dfaust_total, dfaust_iou = seconds_per_frame(dfaust, raw, preprocessed, args.dfaust_frames)
        val_frames = dfaust.train.val_max_frames or DFAUST_VAL_FRAMES
        n_validations = dfaust.train.steps // dfaust.train.val_every
        print(f"D-FAUST default config, same machine, load average {os.getloadavg()[0]:.1f}: {dfaust_total:.2f} s "
              f"per frame (all-points IoU {dfaust_iou:.2f} s); test split {DFAUST_TEST_FRAMES:,} frames "
              f"{DFAUST_TEST_FRAMES * dfaust_total / 3600:.1f} h; one validation of {val_frames:,} frames "
              f"{val_frames * dfaust_total / 3600:.1f} h, x{n_validations} per run")
    print(f"demo_frames_per_s={1 / total:.3f} dfaust_s_per_frame={dfaust_total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
