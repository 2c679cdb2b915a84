"""The D-FAUST split file: ``id,model_id,split`` rows such as ``50004_running_on_spot,00123,train``.

`id` is ``{subject}_{sequence}``, `model_id` the zero-padded frame number (the frame's index along the raw
sequence's time axis), `split` a name such as train / val / test.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable, NamedTuple

from common.errors import UserError

HEADER = ["id", "model_id", "split"]
_SEQUENCE_ID = re.compile(r"^\d+_\w+$")


class SplitRow(NamedTuple):
    sequence_id: str
    frame: int
    split: str


def read_split_file(path: str | Path) -> list[SplitRow]:
    """All rows of a split file, in file order; any malformed row raises UserError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"split file {path} not found; pass --split-file or set data.split_file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read split file {path}: {error}") from None
    lines = list(csv.reader(text.splitlines()))
    if not lines or [cell.strip() for cell in lines[0]] != HEADER:
        raise UserError(f"{path}: first line must be the header {','.join(HEADER)}")
    rows, seen = [], set()
    for line_number, cells in enumerate(lines[1:], start=2):
        if not cells or all(not cell.strip() for cell in cells):
            continue
        row = _parse_row(path, line_number, cells)
        if row[:2] in seen:
            raise UserError(f"{path}:{line_number}: frame {row.sequence_id},{row.frame:05d} is listed twice")
        seen.add(row[:2])
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows after the header")
    return rows


def select_frames(rows: Iterable[SplitRow], splits: Iterable[str], drop_first_frames: int) -> list[tuple[str, int]]:
    """(sequence_id, frame) of the given splits with frame >= drop_first_frames, sorted.

    The first frames of every D-FAUST sequence show the neutral calibration pose; both prior codes drop 20.
    """
    wanted = set(splits)
    return sorted((row.sequence_id, row.frame) for row in rows
                  if row.split in wanted and row.frame >= drop_first_frames)


def _parse_row(path: Path, line_number: int, cells: list[str]) -> SplitRow:
    where = f"{path}:{line_number}"
    if len(cells) != 3:
        raise UserError(f"{where}: expected 3 fields id,model_id,split, got {len(cells)}: {','.join(cells)!r}")
    sequence_id, frame, split = (cell.strip() for cell in cells)
    if not _SEQUENCE_ID.match(sequence_id):
        raise UserError(f"{where}: id {sequence_id!r} is not of the form <subject>_<sequence>")
    if not frame.isdigit():
        raise UserError(f"{where}: model_id {frame!r} is not a frame number")
    if not split:
        raise UserError(f"{where}: empty split name")
    return SplitRow(sequence_id, int(frame), split)
