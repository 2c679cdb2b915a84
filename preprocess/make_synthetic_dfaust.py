"""Write a synthetic dataset in DFAUST's registration format: the project's embedded default data.

    python3 preprocess/make_synthetic_dfaust.py --output-dir DIR [--subjects 8] [--sequences 4] [--frames 36] [--seed 0]

Real DFAUST cannot be downloaded here, so this writes the files DFAUST ships, for synthetic people:
DIR/registrations_m.hdf5 and DIR/registrations_f.hdf5, each with one float32 dataset of shape (V, 3, T) per
`{subject}_{sequence}` (vertices in metres, y up, feet near y = -0.6) and a shared 0-based `faces` (F, 3), under
DFAUST's real subject ids (in their real male or female file) and sequence names; DIR/vertex_parts.npz, the body
part of every template vertex (format: data/part_labels.py; D-FAUST has none); and DIR/splits.csv in the
authors' d-faust_splits.csv format (`id,model_id,split`, every frame listed). The split is by sequence, as
DFAUST's: a few whole sequences are validation, and held-out test sequences are subject x motion combinations
whose motion appears on other subjects in training. Every sequence starts in the calibration A-pose and eases
into its motion by frame 16, so the frames that preprocessing drops (the first 20) are the calibration ones.
Every frame lies inside the 1 x 2 x 1 m volume box of `config.DataConfig`; motions that would leave it are
damped. The output is a deterministic function of the flags (same seed, bit-identical arrays).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import pathlib
import time
from dataclasses import dataclass


import h5py
import numpy as np
from tqdm import tqdm

from config import DataConfig
from data.part_labels import PART_LABELS_FILE, write_part_labels
from preprocess.dfaust_source import REGISTRATION_FILES
from preprocess.synthetic_body import PART_NAMES, Body, build_template, make_body, sample_shape, skin
from preprocess.synthetic_motions import MOTIONS, Pose
from common.atomic import atomic_path
from common.errors import UserError, run_main

# DFAUST's ten subjects and their file (gender), alternating so that any prefix mixes both.
SUBJECTS = ((50002, "m"), (50004, "f"), (50007, "m"), (50020, "f"), (50009, "m"),
            (50021, "f"), (50026, "m"), (50022, "f"), (50027, "m"), (50025, "f"))
# The order in which motions are handed out to subjects; every name is a DFAUST sequence name.
MOTION_ORDER = ("jumping_jacks", "punching", "knees", "running_on_spot", "one_leg_jump", "hips", "chicken_wings",
                "shake_arms", "light_hopping_loose", "one_leg_loose", "shake_hips", "jiggle_on_toes",
                "light_hopping_stiff", "shake_shoulders")
FPS = 15.0  # frames per second of the synthetic motion clock (DFAUST records at 60; sparser frames vary more)
EASE_IN_FRAMES = (2, 16)  # calibration pose up to the first frame, full motion from the second
TEST_FRACTION, VAL_FRACTION = 29 / 129, 8 / 129  # DFAUST's share of test and validation sequences
BOX_MARGIN = 0.005  # metres kept free inside the volume box
SPLIT_ATTEMPTS = 100
REGISTRATION_FILE = {name.removesuffix(".hdf5")[-1]: name for name in REGISTRATION_FILES}  # "m" / "f" -> name


@dataclass(frozen=True)
class Sequence:
    subject: int
    gender: str  # "m" or "f": which registrations file holds it
    motion: str

    @property
    def key(self) -> str:
        return f"{self.subject}_{self.motion}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="folder for the hdf5 files and splits.csv")
    parser.add_argument("--subjects", type=int, default=8, help="2 to 10 (default 8, four per gender)")
    parser.add_argument("--sequences", type=int, default=4, help="motions per subject, 2 to 14 (default 4)")
    parser.add_argument("--frames", type=int, default=36,
                        help="frames per sequence, more than the 20 dropped calibration frames (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="non-negative; same seed, same arrays (default 0)")
    args = parser.parse_args()
    data = DataConfig()  # the preprocessing defaults this data must suit: dropped frames, volume box
    drop = data.drop_first_frames
    _check_flags(args, drop)
    sequences = plan_sequences(args.subjects, args.sequences)
    splits = assign_splits(sequences, np.random.default_rng([args.seed, 1]))
    output = _prepare_output_dir(pathlib.Path(args.output_dir))

    started = time.perf_counter()
    template = build_template()
    bodies = {subject: make_body(template, sample_shape(np.random.default_rng([args.seed, subject]), gender))
              for subject, gender in SUBJECTS[:args.subjects]}
    box = (np.array(data.volume_box_min) + BOX_MARGIN, np.array(data.volume_box_max) - BOX_MARGIN)
    damped = write_dataset(output, template.faces, template.parts, bodies, sequences, splits, args.frames,
                           args.seed, box)

    counts = {name: sum(1 for s in sequences if splits[s.key] == name) for name in ("train", "val", "test")}
    usable = len(sequences) * (args.frames - drop)
    print(f"wrote {len(sequences)} sequences of {args.frames} frames ({usable} after dropping the first {drop}) "
          f"for {args.subjects} subjects to {output} in {time.perf_counter() - started:.1f} s; "
          f"template {len(template.vertices)} vertices / {len(template.faces)} faces; sequences "
          f"train {counts['train']} / val {counts['val']} / test {counts['test']}")
    if damped:
        print(f"motions damped to stay inside the volume box: {', '.join(damped)}")
    return 0


def write_dataset(output: pathlib.Path, faces: np.ndarray, parts: np.ndarray, bodies: dict[int, Body],
                  sequences: list[Sequence], splits: dict[str, str], n_frames: int, seed: int,
                  box: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """Animate every sequence and write the two hdf5 files, the body-part labels `parts` (V,) and splits.csv into
    `output`, atomically (common/atomic.py): each file is written under a temporary name and renamed when all are
    complete, splits.csv last (its presence marks a finished dataset). Returns the damped sequences as
    "key xSTRENGTH" lines."""
    damped = []
    try:
        with contextlib.ExitStack() as renames:  # on success renames in reverse order of entry: splits.csv last
            splits_temporary = renames.enter_context(atomic_path(output / "splits.csv"))
            parts_temporary = renames.enter_context(atomic_path(output / PART_LABELS_FILE))
            temporary = {gender: renames.enter_context(atomic_path(output / name))
                         for gender, name in REGISTRATION_FILE.items()}
            with contextlib.ExitStack() as closing:
                files = {gender: closing.enter_context(h5py.File(path, "w")) for gender, path in temporary.items()}
                for file in files.values():
                    file.create_dataset("faces", data=faces.astype(np.int32))
                    file.attrs["generator"] = f"preprocess/make_synthetic_dfaust.py seed={seed}"
                for sequence in tqdm(sequences, desc="synthetic sequences", unit="seq", disable=None):
                    rng = np.random.default_rng([seed, sequence.subject, MOTION_ORDER.index(sequence.motion)])
                    vertices, strength = animate(bodies[sequence.subject], sequence.motion, n_frames, rng, *box)
                    if strength < 1.0:
                        damped.append(f"{sequence.key} x{strength:.2f}")
                    files[sequence.gender].create_dataset(sequence.key, data=vertices.transpose(1, 2, 0))  # (V, 3, T)
            write_part_labels(parts_temporary, parts, PART_NAMES)
            _write_splits(splits_temporary, sequences, splits, n_frames)
            (output / "splits.csv").unlink(missing_ok=True)  # an old marker must not vouch for new hdf5 files
    except OSError as error:
        raise UserError(f"cannot write the synthetic dataset to {output}: {error.strerror or error}") from error
    return damped


def _check_flags(args: argparse.Namespace, drop: int) -> None:
    if not 2 <= args.subjects <= len(SUBJECTS):
        raise UserError(f"--subjects {args.subjects}: choose 2 to {len(SUBJECTS)} (DFAUST has {len(SUBJECTS)} "
                        f"subjects; a test sequence needs its motion on another subject)")
    if not 2 <= args.sequences <= len(MOTION_ORDER):
        raise UserError(f"--sequences {args.sequences}: choose 2 to {len(MOTION_ORDER)} motions per subject (a "
                        f"held-out sequence's subject must also have a training sequence)")
    if args.frames <= drop:
        raise UserError(f"--frames {args.frames}: need more than {drop} frames per sequence, because "
                        f"preprocessing drops the first {drop} (the calibration pose)")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: use a non-negative integer")


def _prepare_output_dir(output: pathlib.Path) -> pathlib.Path:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output directory {output}: {error.strerror or error}") from error
    if not os.access(output, os.W_OK | os.X_OK):
        raise UserError(f"output directory {output} is not writable; choose another --output-dir")
    return output


def plan_sequences(n_subjects: int, n_sequences: int) -> list[Sequence]:
    """Which motions each subject performs: `n_sequences` distinct motions per subject, dealt round-robin from
    a pool sized so that most motions go to at least two subjects (a held-out sequence needs its motion on
    another subject) while spreading over as many of the 14 motions as the counts allow."""
    pool = MOTION_ORDER[:max(n_sequences, min(len(MOTION_ORDER), math.ceil(n_subjects * n_sequences / 2)))]
    return [Sequence(subject, gender, pool[(i * n_sequences + k) % len(pool)])
            for i, (subject, gender) in enumerate(SUBJECTS[:n_subjects]) for k in range(n_sequences)]


def assign_splits(sequences: list[Sequence], rng: np.random.Generator) -> dict[str, str]:
    """Split by whole sequences in DFAUST's proportions (about 22% test, 6% val, at least one each).

    A sequence may leave training only while its motion keeps a training sequence (necessarily on another
    subject) and its subject keeps one too, so every held-out sequence is an unseen combination of a seen
    body and a seen motion. Raises UserError when the counts admit no such split.
    """
    n_test = max(1, round(TEST_FRACTION * len(sequences)))
    n_val = max(1, round(VAL_FRACTION * len(sequences)))
    for _ in range(SPLIT_ATTEMPTS):
        split = {s.key: "train" for s in sequences}
        for name, count in (("test", n_test), ("val", n_val)):
            for index in rng.permutation(len(sequences)):
                if count == 0:
                    break
                candidate = sequences[index]
                train = [s for s in sequences if split[s.key] == "train" and s != candidate]
                if (split[candidate.key] == "train" and any(s.motion == candidate.motion for s in train)
                        and any(s.subject == candidate.subject for s in train)):
                    split[candidate.key] = name
                    count -= 1
        if sum(v == "test" for v in split.values()) == n_test and sum(v == "val" for v in split.values()) == n_val:
            return split
    raise UserError(f"{len(sequences)} sequences cannot be split into train/val/test with every held-out motion "
                    f"seen in training; raise --subjects or --sequences")


def ease_in(n_frames: int) -> np.ndarray:
    """Motion strength per frame (T,): 0 (calibration pose) until EASE_IN_FRAMES[0], smoothly 1 from [1]."""
    start, end = EASE_IN_FRAMES
    x = np.clip((np.arange(n_frames) - start) / (end - start), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def animate(body: Body, motion: str, n_frames: int, rng: np.random.Generator, box_low: np.ndarray,
            box_high: np.ndarray) -> tuple[np.ndarray, float]:
    """Posed vertices (T, V, 3) float32 of one sequence and the strength it was damped to (1 = not damped).

    `rng` varies tempo (+-10%), starting phase, amplitude (85-100%) and the leading side. When some frame leaves
    the box, the motion's strength is bisected down to the largest that fits (the calibration pose always does).
    """
    function, period = MOTIONS[motion]
    tempo, phase, amplitude = rng.uniform(0.9, 1.1), rng.uniform(0.0, 1.0), rng.uniform(0.85, 1.0)
    lead = ("left", "right")[rng.integers(2)]
    theta = 2 * np.pi * (tempo * np.arange(n_frames) / FPS / period + phase)
    envelope = ease_in(n_frames)

    def posed(strength: float) -> np.ndarray:
        pose = Pose(body.joints, n_frames)
        function(pose, theta, strength * amplitude * envelope, lead)
        return skin(body, pose.rotations, pose.translation)

    def inside(vertices: np.ndarray) -> bool:
        return bool(np.all(vertices >= box_low) and np.all(vertices <= box_high))

    vertices = posed(1.0)
    if inside(vertices):
        return vertices.astype(np.float32), 1.0
    low, high, best = 0.0, 1.0, posed(0.0)
    if not inside(best):
        raise RuntimeError("a subject's calibration pose leaves the volume box; narrow sample_shape's ranges")
    for _ in range(7):
        middle = 0.5 * (low + high)
        candidate = posed(middle)
        if inside(candidate):
            low, best = middle, candidate
        else:
            high = middle
    return best.astype(np.float32), low


def _write_splits(path: str, sequences: list[Sequence], splits: dict[str, str], n_frames: int) -> None:
    """d-faust_splits.csv format: header id,model_id,split; one row per frame, 5-digit zero-padded frame."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["id", "model_id", "split"])
        for sequence in sorted(sequences, key=lambda s: s.key):
            writer.writerows([sequence.key, f"{frame:05d}", splits[sequence.key]] for frame in range(n_frames))


if __name__ == "__main__":
    run_main(main)
