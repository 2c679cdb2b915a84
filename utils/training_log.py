"""The run's CSV log (one row per logged step, one column per loss term and metric), TensorBoard when present."""
from __future__ import annotations

import csv
import math
import os

from common.atomic import write_atomic

COLUMNS = ("step", "loss", "reconstruction", "occupancy", "normal", "coverage", "overlap", "train_iou",
           "val_iou", "val_chamfer_l1", "seconds_per_step")


class TrainingLog:
    """Appends rows to `<run_dir>/log.csv`; on resume, rows after the resumed step are dropped first."""

    def __init__(self, run_dir: str, resume_step: int | None = None):
        self.path = os.path.join(run_dir, "log.csv")
        if resume_step is None or not os.path.exists(self.path):
            self._rewrite([])
        else:
            with open(self.path, newline="") as file:
                kept = [row for row in csv.DictReader(file) if int(row["step"]) <= resume_step]
            self._rewrite(kept)
        self.tensorboard = _tensorboard_writer(run_dir)

    def write(self, row: dict) -> None:
        unknown = set(row) - set(COLUMNS)
        assert not unknown, f"unknown log columns {unknown}"
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, COLUMNS).writerow({k: _fmt(v) for k, v in row.items()})
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value is not None and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, row["step"])

    def _rewrite(self, rows: list[dict]) -> None:
        def write(temporary: str) -> None:
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        write_atomic(self.path, write)


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def _tensorboard_writer(run_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(os.path.join(run_dir, "tensorboard"))
