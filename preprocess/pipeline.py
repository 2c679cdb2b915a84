"""Preprocess D-FAUST: plan a shard's frames, compute them in worker processes, merge each sequence's file.

Frames are computed by `--workers` processes forked before anything renders (the parent never renders: a
process forked after creating a GL context hangs). Each worker renders with its own lazily created renderer
and writes its frame as a part file; the parent merges a sequence's parts once all are there (preprocess/store.py).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm import tqdm

from config import DataConfig
from data import format as fmt
from data.splits import read_split_file, select_frames
from preprocess import store
from preprocess.dfaust_source import DfaustSource, RawSequence, SequenceError
from preprocess.frames import process_frame
from common.atomic import write_text_atomic
from common.errors import UserError

RECORD_FILE = "preprocess.json"  # in the output directory: what its files depend on (see `_check_record`)


@dataclass
class Job:
    sequence: RawSequence
    frames: list[int]  # ascending, all within the raw sequence


@dataclass
class Summary:
    frames: int = 0  # frames of this shard's sequences that are preprocessed now
    computed: int = 0  # of which computed by this run (the rest were finished before)
    sequences: int = 0  # sequence files of this shard that are complete now
    failed: list[str] = field(default_factory=list)  # one line per skipped sequence
    seconds: float = 0.0  # wall time of this run
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # summed over workers
    frames_outside: int = 0  # frames with part of the surface outside the volume box
    worst_outside: tuple[str, int, float] = ("", 0, 0.0)  # (sequence, frame, fraction) with the largest part


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N), 0 <= i < N: this machine takes the sequences whose sorted position is i modulo N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise UserError(f"--shard {text!r} must be i/N with 0 <= i < N, e.g. 0/4 ... 3/4")
    return int(index), int(count)


def run(dataset_dir: str, output_dir: str, split_file: str, data: DataConfig, workers: int,
        shard: tuple[int, int] = (0, 1), progress: bool = True, overwrite: bool = False) -> Summary:
    """Preprocess every frame the split file lists (frame >= data.drop_first_frames) of this shard.

    An output directory filled with other settings is refused unless `overwrite` (see `_check_record`).
    """
    started = time.perf_counter()
    settings = fmt.Settings.from_config(data)
    if settings.n_points < 1 or settings.image_size < 1:
        raise UserError(f"data.n_stored_points={settings.n_points} and data.image_size={settings.image_size} "
                        "must be positive")
    if not all(low < high for low, high in zip(settings.box_min, settings.box_max)):
        raise UserError(f"data.volume_box_min {settings.box_min} must lie below data.volume_box_max "
                        f"{settings.box_max} on every axis")
    rows = read_split_file(split_file)
    listed = defaultdict(list)
    for sequence_id, frame in select_frames(rows, {row.split for row in rows}, data.drop_first_frames):
        listed[sequence_id].append(frame)
    source = DfaustSource(dataset_dir)
    root = _prepare_output(Path(output_dir))
    summary = Summary()
    try:
        _check_record(root, _record(settings, data, listed), overwrite)
        jobs = _plan(source, listed, shard, split_file, dataset_dir, summary)
        bar = tqdm(total=sum(len(job.frames) for job in jobs), unit="frame", desc="preprocess", disable=not progress,
                   smoothing=0.1)
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) if workers > 0 else _InProcess() as pool:
            running = None
            for job in jobs:  # queue a sequence's frames before merging the previous one: workers never wait
                queued = _start(job, source, root, settings, pool, bar, summary)
                if running is not None:
                    _finish(running, root, settings, bar, summary)
                running = queued
            if running is not None:
                _finish(running, root, settings, bar, summary)
        bar.close()
    finally:
        source.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _record(settings: fmt.Settings, data: DataConfig, listed: dict[str, list[int]]) -> dict:
    """Everything the files of an output directory depend on besides the raw meshes, by config name.

    The listed frames (of all shards) enter as their count and a hash; the split names do not, as the files
    do not depend on them.
    """
    frames = [f"{sequence_id},{frame}\n" for sequence_id in sorted(listed) for frame in sorted(listed[sequence_id])]
    digest = hashlib.sha256("".join(frames).encode()).hexdigest()[:16]
    return {"format_version": fmt.FORMAT_VERSION, **_settings_record(settings),
            "data.drop_first_frames": data.drop_first_frames,
            "split_file_frames": f"{len(frames)} frames, sha256 {digest}"}


def _settings_record(settings: fmt.Settings) -> dict:
    return {"data.n_stored_points": settings.n_points, "data.image_size": settings.image_size,
            "data.volume_box_min": list(settings.box_min), "data.volume_box_max": list(settings.box_max)}


def _check_record(root: Path, record: dict, overwrite: bool) -> None:
    """Refuse, before any file is touched, to fill `root` with other settings than its RECORD_FILE names (or,
    where an earlier version left no record, than its sequence files name); then write `record` there.

    With `overwrite` nothing is refused: a sequence file made with other settings or frames is replaced when
    its sequence is processed; files with this run's settings are kept, as on any rerun.
    """
    path = root / RECORD_FILE
    if not overwrite:
        made_with = {path: _read_record(path)} if path.exists() else _settings_of_files(root)
        for source, previous in made_with.items():
            for key, value in record.items():
                if key in previous and previous[key] != value:
                    raise UserError(f"{source}: the files in {root} were made with {key}={previous[key]}, this "
                                    f"run has {key}={value}; rerun with --overwrite to replace them")
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path} ({error}); rerun with --overwrite to replace it") from None
    return record


def _settings_of_files(root: Path) -> dict[Path, dict]:
    """The settings each readable sequence file in `root` was made with (a damaged one is redone anyway)."""
    found = {}
    for sequence_file in sorted(root.glob(f"*{fmt.SEQUENCE_SUFFIX}")):
        try:
            with h5py.File(sequence_file, "r") as file:
                found[sequence_file] = _settings_record(fmt.Settings.from_json(file.attrs["settings"]))
        except (OSError, KeyError, ValueError):
            continue
    return found


def _plan(source: DfaustSource, listed: dict[str, list[int]], shard: tuple[int, int], split_file: str,
          dataset_dir: str, summary: Summary) -> list[Job]:
    """This shard's jobs; warns once about absent sequences and once about frames past a sequence's end."""
    resolved = {sequence_id: source.resolve(sequence_id) for sequence_id in sorted(listed)}
    absent = [sequence_id for sequence_id, sequence in resolved.items() if sequence is None]
    if len(absent) == len(resolved):
        raise UserError(f"none of the {len(resolved)} sequences listed in {split_file} is in {dataset_dir}")
    if absent:
        warnings.warn(f"{len(absent)} of {len(resolved)} sequences listed in {split_file} are not in {dataset_dir} "
                      f"and are skipped: {', '.join(absent)}")
    index, count = shard
    jobs, beyond = [], []
    for position, (sequence_id, sequence) in enumerate(resolved.items()):
        if position % count != index or sequence is None:
            continue
        try:
            n_frames = source.check(sequence)
        except SequenceError as error:
            _skip(summary, str(error))
            continue
        frames = [frame for frame in listed[sequence_id] if frame < n_frames]
        if len(frames) < len(listed[sequence_id]):
            beyond.append(f"{sequence_id} ({len(listed[sequence_id]) - len(frames)} of {n_frames})")
        if frames:
            jobs.append(Job(sequence, frames))
        else:
            _skip(summary, f"{sequence.path}:{sequence.key}: none of its listed frames is within its {n_frames} frames")
    if beyond:
        warnings.warn(f"listed frames past the end of their sequence are skipped: {', '.join(beyond)}")
    return jobs


@dataclass
class _Running:
    """A sequence whose missing frames are queued in the pool."""

    job: Job
    faces: np.ndarray
    results: Iterator[dict[str, float]]  # one per queued frame: seconds per stage


def _start(job: Job, source: DfaustSource, root: Path, settings: fmt.Settings, pool, bar: tqdm,
           summary: Summary) -> _Running | None:
    """Queue the frames of `job` that have no part yet; None when the sequence is finished or skipped."""
    sequence = job.sequence
    try:
        if store.is_finished(root, sequence.sequence_id, settings, job.frames):
            store.remove_parts(root, sequence.sequence_id)  # left behind if a run was killed right after a merge
            bar.update(len(job.frames))
            _count_finished(job, root, summary)
            return None
        store.remove_leftovers(root, sequence.sequence_id)
        done = store.finished_parts(root, sequence.sequence_id, settings)
    except OSError as error:
        raise _write_error(error, root) from None
    todo = [frame for frame in job.frames if frame not in done]
    bar.update(len(job.frames) - len(todo))
    faces = source.faces(sequence)
    try:
        vertices = source.load(sequence, todo) if todo else []  # (K, V, 3)
    except SequenceError as error:
        _skip(summary, str(error))
        return None
    except OSError as error:
        raise UserError(f"cannot read {sequence.path}:{sequence.key}: {error}") from None
    tasks = [(str(root), sequence.sequence_id, frame, frame_vertices, faces, settings)
             for frame, frame_vertices in zip(todo, vertices)]
    return _Running(job, faces, pool.imap_unordered(_compute_and_store, tasks))


def _finish(running: _Running, root: Path, settings: fmt.Settings, bar: tqdm, summary: Summary) -> None:
    """Collect the sequence's frames as the workers finish them, then merge its parts into its file."""
    sequence = running.job.sequence
    try:
        for timings in running.results:
            bar.update(1)
            summary.computed += 1
            for stage, seconds in timings.items():
                summary.stage_seconds[stage] += seconds
        store.merge_sequence(root, sequence.sequence_id, sequence.key, running.faces, running.job.frames, settings)
    except OSError as error:
        raise _write_error(error, root) from None
    _count_finished(running.job, root, summary)


def _write_error(error: OSError, root: Path) -> UserError:
    return UserError(f"cannot write {error.filename or root}: {error.strerror or error}; finished frames are kept, "
                     "fix this and rerun to continue")


def _count_finished(job: Job, root: Path, summary: Summary) -> None:
    summary.frames += len(job.frames)
    summary.sequences += 1
    _report_outside(root, job.sequence.sequence_id, summary)


def _compute_and_store(task) -> dict[str, float]:
    """Worker: compute one frame, write its part; returns seconds per stage including "write"."""
    root, sequence_id, frame, vertices, faces, settings = task
    record, timings = process_frame(sequence_id, frame, vertices, faces, settings)
    start = time.perf_counter()
    store.write_part(Path(root), sequence_id, settings, record)
    timings["write"] = time.perf_counter() - start
    return timings


def _report_outside(root: Path, sequence_id: str, summary: Summary) -> None:
    """Warn when part of the body lies outside the volume box (its occupancy is then not supervised)."""
    with h5py.File(fmt.sequence_path(root, sequence_id), "r") as file:
        fractions = file["outside_fraction"][()]
        frames = file["frames"][()]
    outside = np.flatnonzero(fractions > 0)
    if len(outside) == 0:
        return
    worst = int(np.argmax(fractions))
    summary.frames_outside += len(outside)
    if fractions[worst] > summary.worst_outside[2]:
        summary.worst_outside = (sequence_id, int(frames[worst]), float(fractions[worst]))
    warnings.warn(f"{sequence_id}: {len(outside)} of {len(frames)} frames have part of the body outside the "
                  f"volume box (up to {fractions[worst]:.2%} of the surface, frame {frames[worst]}); "
                  "occupancy labels cover only the part inside")


def _skip(summary: Summary, message: str) -> None:
    summary.failed.append(message)
    warnings.warn(f"skipping sequence: {message}")


def _prepare_output(root: Path) -> Path:
    """Create the output directory and check that it takes files."""
    probe = root / f".write-test-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"output directory {root} is not writable: {error.strerror or error}") from None
    return root


class _InProcess:
    """`--workers 0`: compute in this process (debugging, tests); same interface as the Pool used here."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(function, tasks):
        return map(function, tasks)
