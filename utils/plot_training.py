"""Draw a run's training curves (every loss term and the validation metrics) to a PNG.

    python3 utils/plot_training.py runs/demo/train [--output curves.png]
"""
from __future__ import annotations

import argparse
import csv
import os


import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from common.atomic import write_atomic
from common.errors import UserError, run_main
from utils.training_log import COLUMNS


def read_log(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Column name -> [(step, value)] for every non-empty cell of run_dir/log.csv."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist; pass a run directory written by train.py")
    series = {name: [] for name in COLUMNS[1:]}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            for name in series:
                if row.get(name):
                    series[name].append((int(row["step"]), float(row[name])))
    return series


def plot(series: dict[str, list[tuple[int, float]]], output: str) -> None:
    panels = [("loss", ["loss"]), ("loss terms (unweighted)", ["reconstruction", "occupancy", "normal",
                                                                "coverage", "overlap"]),
              ("IoU", ["train_iou", "val_iou"]), ("validation Chamfer-L1", ["val_chamfer_l1"])]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for axis, (title, names) in zip(axes, panels):
        for name in names:
            if series[name]:
                steps, values = zip(*series[name])
                axis.plot(steps, values, label=name, marker="o" if name.startswith("val") else None)
        axis.set_title(title)
        axis.set_xlabel("step")
        if title.startswith("loss"):
            axis.set_yscale("log")
        axis.legend(fontsize=8)
    figure.tight_layout()
    write_atomic(output, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--output", help="PNG path (default: <run_dir>/curves.png)")
    args = parser.parse_args()
    output = args.output or os.path.join(args.run_dir, "curves.png")
    plot(read_log(args.run_dir), output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    run_main(main)
