"""Evaluate a trained checkpoint on a split: IoU, the authors' IoU, Chamfer-L1/L2 and normal consistency per frame.

    python3 test.py [RUN_DIR | CHECKPOINT] [--data-dir PREPROCESSED] [--split-file CSV] [--split test]
                    [--output-dir DIR]

Which weights are scored: given a run directory (default runs/train, train.py's), its model.pth, the final weights
of the run; given a .pth file, that file. best_model.pth / best_chamfer_model.pth were chosen on the validation
split, so scoring them is meaningful only when that split is not trained on (the authors' D-FAUST config trains on
train+val: use model.pth there). The model is rebuilt from the checkpoint alone (its config travels inside it).
Writes DIR/frames.csv (one row per frame) and DIR/summary.json (overall and per motion; keys iou, iou_authors,
chamfer_l1, chamfer_l2, normal_consistency, n_frames; "points" gives the point counts), and prints the summary
table. With body-part labels beside the registrations (data/part_labels.py), summary.json's part_consistency
(evaluation/part_consistency.py) and part_table show which body parts each primitive covers, frame after frame.
The protocol: docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re

import torch

import config as config_module
from checkpoint import load_model
from common.errors import UserError, run_main
from common.atomic import write_atomic
from data.part_labels import read_part_labels
from evaluation.loop import METRIC_NAMES, evaluate_frames, evaluation_dataset, summarise
from evaluation.part_consistency import evaluate_part_consistency
from common.runtime import select_device, set_threads

HONOURED = ("eval", "train.device", "train.threads")  # --set keys that change scoring, not the model scored
DEFAULT_RUN_DIR = "runs/train"  # train.py's default --output-dir


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=DEFAULT_RUN_DIR,
                        help="a run directory (scores its model.pth) or a .pth written by train.py "
                             f"(default: {DEFAULT_RUN_DIR})")
    parser.add_argument("--data-dir", help="preprocessed frames (default: the checkpoint's data.preprocessed_dir)")
    parser.add_argument("--split-file", help="split CSV (default: the checkpoint's data.split_file)")
    parser.add_argument("--split", action="append", help="split(s) to evaluate (default: data.test_splits)")
    parser.add_argument("--output-dir", help="where to write frames.csv and summary.json "
                                             "(default: <checkpoint dir>/test)")
    parser.add_argument("--dataset-dir", help="raw registrations, for their body-part labels if any "
                                              "(default: the checkpoint's data.dataset_dir)")
    parser.add_argument("--max-frames", type=int, default=0, help="evaluate an evenly spaced subset (0 = all)")
    config_module.add_override_argument(parser, HONOURED)
    return parser.parse_args(argv)


def motion_of(sequence_id: str) -> str:
    """'50004_running_on_spot_bugfix' -> 'running_on_spot'."""
    return re.sub(r"_bugfix$", "", sequence_id.split("_", 1)[1] if "_" in sequence_id else sequence_id)


def point_counts(n_stored: int, cfg: config_module.EvalConfig) -> dict:
    """How many points each metric uses per frame (predicted-side Chamfer points: fewer only when the predicted
    union surface is empty or almost entirely hidden)."""
    return {"iou": n_stored, "iou_authors": cfg.n_authors_iou_points, "chamfer_predicted": cfg.n_chamfer_points,
            "chamfer_target": n_stored}


def main(argv=None) -> int:
    args = parse_arguments(argv)
    overrides = config_module.honoured_overrides(args.overrides, HONOURED, "test.py")
    runtime = config_module.apply_overrides(config_module.Config(), overrides).train  # before the model loads
    device = select_device(runtime.device)
    set_threads(runtime.threads)
    checkpoint = os.path.join(args.checkpoint, "model.pth") if os.path.isdir(args.checkpoint) else args.checkpoint
    model, cfg = load_model(checkpoint, device)
    config_module.validate(config_module.apply_overrides(cfg, overrides))
    root = args.data_dir or cfg.data.preprocessed_dir
    split_file = args.split_file or cfg.data.split_file
    splits = tuple(args.split) if args.split else cfg.data.test_splits
    output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "test")

    dataset = evaluation_dataset(root, split_file, splits, cfg.data)
    part_labels = read_part_labels(args.dataset_dir or cfg.data.dataset_dir)
    try:  # before evaluating, so an unusable --output-dir costs no evaluation time
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {output_dir}: {error.strerror or error}; choose another --output-dir") from None
    records = list(evaluate_frames(model, dataset, cfg.eval, device, args.max_frames))
    summary = {"checkpoint": os.path.abspath(checkpoint), "splits": list(splits), **summarise(records),
               "points": point_counts(dataset.n_points, cfg.eval), "eval_seed": cfg.eval.seed, "per_motion": {}}
    for motion in sorted({motion_of(r["sequence"]) for r in records}):
        summary["per_motion"][motion] = summarise([r for r in records if motion_of(r["sequence"]) == motion])
    consistency = evaluate_part_consistency(model, dataset, [(r["sequence"], r["frame"]) for r in records], motion_of,
                                            cfg.eval.batch_size, device, part_labels)
    summary.update(consistency.entries())
    for motion, value in consistency.per_group.items():
        summary["per_motion"][motion]["part_consistency"] = value

    write_atomic(os.path.join(output_dir, "frames.csv"), lambda temp: _write_frames(temp, records))
    write_atomic(os.path.join(output_dir, "summary.json"), lambda temp: _write_json(temp, summary))
    print(_table(summary))
    print(consistency.describe())
    print(f"wrote {output_dir}/frames.csv and {output_dir}/summary.json")
    return 0


def _write_json(path: str, values: dict) -> None:
    with open(path, "w") as file:
        json.dump(values, file, indent=2)


def _write_frames(path: str, records: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, ("sequence", "frame") + METRIC_NAMES)
        writer.writeheader()
        writer.writerows(records)


def _table(summary: dict) -> str:
    header = f"{'motion':<22}{'frames':>7}" + "".join(f"{name:>20}" for name in METRIC_NAMES)
    lines = [header, "-" * len(header)]
    for name, values in list(summary["per_motion"].items()) + [("overall", summary)]:
        lines.append(f"{name:<22}{values['n_frames']:>7}" + "".join(f"{values[m]:>20.4f}" for m in METRIC_NAMES))
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
