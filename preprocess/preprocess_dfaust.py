"""Turn the raw D-FAUST registrations into training frames (format: data/format.py).

    python3 preprocess/preprocess_dfaust.py [--dataset-dir DIR] [--output-dir DIR] [--split-file CSV]
        [--workers N] [--shard i/N] [--overwrite] [--preset NAME] [--set data.key=value ...]

For every frame the split file lists (frame >= data.drop_first_frames) and the registrations contain: a
render of the body from the authors' camera, n_stored_points surface samples with normals, and as many
volume points in the 1x2x1 box with inside labels. One HDF5 file per sequence. Safe to kill and rerun: it
resumes where it stopped. `--shard i/N` (0 <= i < N) takes every N-th sequence, so N machines split the work.
The settings the files depend on are recorded in <output-dir>/preprocess.json; a rerun with other settings
(points, image size, volume box, listed frames) is refused before anything is written, unless --overwrite.
Exit status: 0 done, 1 some sequences were skipped (warnings name them), 2 bad input.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings


from tqdm import tqdm

from config import add_config_arguments, config_from_arguments
from preprocess.frames import STAGES
from preprocess.pipeline import parse_shard, run
from common.errors import UserError, run_main


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--dataset-dir", help="raw registrations_{f,m}.hdf5 (default: data.dataset_dir)")
    parser.add_argument("--output-dir", help="preprocessed frames (default: data.preprocessed_dir)")
    parser.add_argument("--split-file", help="id,model_id,split CSV (default: data.split_file)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="worker processes; 0 computes in this process (default: all CPU cores)")
    parser.add_argument("--shard", default="0/1", help="i/N: this machine's share of the sequences (default 0/1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files made with other settings than this run's (default: refuse)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    cfg = config_from_arguments(args)
    if args.workers < 0:
        raise UserError(f"--workers {args.workers} must be >= 0")
    warnings.showwarning = _show_warning
    summary = run(args.dataset_dir or cfg.data.dataset_dir, args.output_dir or cfg.data.preprocessed_dir,
                  args.split_file or cfg.data.split_file, cfg.data, args.workers, parse_shard(args.shard),
                  overwrite=args.overwrite)
    output_dir = args.output_dir or cfg.data.preprocessed_dir
    rate = summary.computed / summary.seconds if summary.seconds else 0.0
    print(f"{summary.frames} frames of {summary.sequences} sequences preprocessed in {output_dir} "
          f"({summary.computed} computed now, {rate:.2f} frames/s over {summary.seconds:.1f} s)")
    if summary.computed:
        stages = ", ".join(f"{stage} {summary.stage_seconds[stage] / summary.computed * 1000:.0f} ms"
                           for stage in (*STAGES, "write"))
        print(f"per computed frame and worker: {stages}")
    if summary.frames_outside:
        sequence, frame, fraction = summary.worst_outside
        print(f"{summary.frames_outside} frames have part of the body outside the volume box (largest: "
              f"{fraction:.2%} of the surface in {sequence}:{frame})")
    if summary.failed:
        print(f"{len(summary.failed)} sequences skipped:\n  " + "\n  ".join(summary.failed), file=sys.stderr)
        return 1
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
