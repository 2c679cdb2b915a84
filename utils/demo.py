"""The whole pipeline on the embedded synthetic dataset, as `make demo` runs it.

    python3 utils/demo.py [--fresh]

Runs the same commands a user would, each a separate process, under runs/demo/:
synthetic/ (make_synthetic_dfaust.py) -> preprocessed/ (preprocess_dfaust.py) -> train/ (train.py --preset demo)
-> test/summary.json (test.py on the held-out test sequences) -> result/ (result_visualization.py) -> SEQUENCE.gif
(result_visualization.py --gif: the first test sequence, at most GIF_MAX_FRAMES frames) -> a summary.
Finished stages are skipped on a rerun (each stage is itself resumable); --fresh starts over.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import config
from common.atomic import write_text_atomic
from common.errors import UserError, run_main
from data.splits import read_split_file, select_frames

DEMO = "runs/demo"
GIF_MAX_FRAMES = 30  # the demo's GIF shows every k-th frame of its sequence, k as small as keeps it within this


def stage(name: str, command: list[str], done: bool, timings: dict) -> None:
    """Run one pipeline command from the repo root, or say why it is skipped."""
    if done:
        print(f"== {name}: already done, skipped")
        return
    print(f"== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=REPO)
    timings[name] = round(time.perf_counter() - started, 1)
    if result.returncode != 0:
        raise UserError(f"demo stage '{name}' failed (exit {result.returncode}); fix the error above and rerun "
                        f"`make demo` (finished stages are kept)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help=f"delete {DEMO} first")
    args = parser.parse_args()
    demo = REPO / DEMO
    if args.fresh and demo.exists():
        shutil.rmtree(demo)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    train_dir, test_dir, result_dir = f"{DEMO}/train", f"{DEMO}/test", f"{DEMO}/result"
    finished = _trained_steps(demo / "train" / "model.pth")  # first: a stale checkpoint stops before any work

    stage("synthetic data", ["preprocess/make_synthetic_dfaust.py", "--output-dir", f"{DEMO}/synthetic"],
          (demo / "synthetic" / "splits.csv").exists(), timings)
    stage("preprocess", ["preprocess/preprocess_dfaust.py", "--preset", "demo", "--workers", "2"], False, timings)
    # Continue a killed run from its last checkpoint; one killed before any checkpoint starts over.
    if (demo / "train" / "model.pth").exists():
        train = ["--resume", f"{train_dir}/model.pth"]
    else:
        train = ["--preset", "demo", "--overwrite"]
    stage("train", ["train.py", "--output-dir", train_dir, *train], finished, timings)
    # The final weights, as the authors score them (docs/evaluation.md).
    stage("test", ["test.py", f"{train_dir}/model.pth", "--output-dir", test_dir], False, timings)
    stage("export", ["utils/result_visualization.py", f"{train_dir}/model.pth", "--output-dir", result_dir,
                     "--test-frames", "3"], False, timings)
    stage("curves", ["utils/plot_training.py", train_dir], False, timings)
    demo_data = config.build_config("demo").data
    gif_sequence, gif_stride = gif_plan(REPO / demo_data.split_file, demo_data, GIF_MAX_FRAMES)
    stage("gif", ["utils/result_visualization.py", f"{train_dir}/model.pth", "--output-dir", DEMO,
                  "--gif", gif_sequence, "--gif-stride", str(gif_stride)], False, timings)

    timings["total"] = round(time.perf_counter() - started, 1)
    write_text_atomic(demo / "timings.json", json.dumps(timings, indent=2))
    summary = json.loads((demo / "test" / "summary.json").read_text())
    print(f"\nDemo finished in {timings['total']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    consistency = summary.get("part_consistency")
    print(f"held-out test sequences: IoU {summary['iou']:.3f} (all stored points; the authors' protocol "
          f"{summary['iou_authors']:.3f}), Chamfer-L1 {summary['chamfer_l1']:.4f}, part consistency "
          f"{'n/a' if consistency is None else f'{consistency:.3f}'} over {summary['n_frames']} frames")
    print(f"checkpoints: {train_dir}/  test report: {test_dir}/summary.json  meshes and renders: {result_dir}/  "
          f"curves: {train_dir}/curves.png  animation: {DEMO}/{gif_sequence}.gif")
    return 0


def gif_plan(split_file: pathlib.Path, data_cfg: config.DataConfig, max_frames: int) -> tuple[str, int]:
    """The first test sequence of `split_file` under `data_cfg` (the one `result_visualization.py --gif` picks by
    default) and the smallest frame stride that keeps its GIF within `max_frames` frames."""
    frames = select_frames(read_split_file(split_file), data_cfg.test_splits, data_cfg.drop_first_frames)
    if not frames:
        raise UserError(f"{split_file} lists no test frame; run `make clean-demo`, then `make demo`")
    sequence = frames[0][0]
    return sequence, math.ceil(sum(1 for name, _ in frames if name == sequence) / max_frames)


def _trained_steps(checkpoint: pathlib.Path) -> bool:
    """True when the demo checkpoint already reached the demo preset's step count.

    A checkpoint trained under another demo configuration (an older preset) is a UserError: resuming it would
    continue the old schedule, and the test stage would score a model the current preset never trained.
    """
    if not checkpoint.exists():
        return False
    from checkpoint import checkpoint_config, load_checkpoint
    payload = load_checkpoint(str(checkpoint))
    preset = config.build_config("demo")
    if config.to_dict(checkpoint_config(payload, str(checkpoint))) != config.to_dict(preset):
        raise UserError(f"{checkpoint} was trained with another demo configuration (an earlier version of the "
                        f"preset?); run `make clean-demo` (or utils/demo.py --fresh), then `make demo`")
    return payload["step"] >= preset.train.steps


if __name__ == "__main__":
    run_main(main)
