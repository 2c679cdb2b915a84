"""The synthetic DFAUST generator: DFAUST's file layout, closed bodies inside the volume box, a valid split by
sequence, determinism, bad input; plus exact checks of skinning and the feet's inverse kinematics."""
from __future__ import annotations

import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh

from config import DataConfig
from preprocess import make_synthetic_dfaust as generator
from data.part_labels import read_part_labels
from preprocess.synthetic_body import (JOINT_INDEX, K, PART_NAMES, build_template, forward_kinematics, make_body,
                                       sample_shape, skin)
from preprocess.synthetic_motions import Pose, rotation

SCRIPT = Path(__file__).resolve().parents[1] / "preprocess" / "make_synthetic_dfaust.py"
FEMALE, MALE = {50004, 50020, 50021, 50022, 50025}, {50002, 50007, 50009, 50026, 50027}
FLAGS = ["--subjects", "2", "--sequences", "2", "--frames", "24"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def read_sequences(root: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Read back as DFAUST readers do: (T, V, 3) per key, the faces of each file, and each key's file gender."""
    sequences, faces, gender_of = {}, {}, {}
    for gender in ("m", "f"):
        with h5py.File(root / f"registrations_{gender}.hdf5", "r") as file:
            faces[gender] = file["faces"][()]
            for key in file:
                if key != "faces":
                    sequences[key] = file[key][()].transpose(2, 0, 1)
                    gender_of[key] = gender
    return sequences, faces, gender_of


def read_splits(root: Path) -> list[list[str]]:
    with open(root / "splits.csv", newline="") as file:
        return list(csv.reader(file))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    result = run("--output-dir", str(root), *FLAGS, "--seed", "3")
    assert result.returncode == 0, result.stderr
    return root


def test_files_have_the_dfaust_layout(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == ["registrations_f.hdf5", "registrations_m.hdf5", "splits.csv",
                                                         "vertex_parts.npz"]
    for gender in ("m", "f"):
        with h5py.File(dataset / f"registrations_{gender}.hdf5", "r") as file:
            faces = file["faces"]
            assert faces.ndim == 2 and faces.shape[1] == 3 and np.issubdtype(faces.dtype, np.integer)
            for key in file:
                if key != "faces":
                    assert file[key].dtype == np.float32 and file[key].shape[1:] == (3, 24)
                    assert file[key].shape[0] == faces[()].max() + 1 and faces[()].min() == 0  # 0-based, all used
    sequences, faces, gender_of = read_sequences(dataset)
    assert len(sequences) == 4 and np.array_equal(faces["m"], faces["f"])
    for key, gender in gender_of.items():
        subject, motion = key.split("_", 1)
        assert int(subject) in (MALE if gender == "m" else FEMALE)
        assert motion in generator.MOTION_ORDER
    assert {key.split("_", 1)[0] for key in sequences} == {"50002", "50004"}


def test_every_frame_is_a_closed_body_inside_the_volume_box(dataset):
    sequences, faces, _ = read_sequences(dataset)
    low, high = np.array(DataConfig().volume_box_min), np.array(DataConfig().volume_box_max)
    assert len(faces["m"]) == 13_776
    for key, frames in sequences.items():
        assert frames.shape == (24, 6890, 3)
        assert np.all(frames >= low) and np.all(frames <= high), key
        for vertices in frames:
            mesh = trimesh.Trimesh(vertices, faces["m"], process=False)
            assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2
            assert 0.03 < mesh.volume < 0.15  # m^3, a person
    first = next(iter(sequences.values()))[0]
    assert abs(first[:, 1].min() - (-0.6)) < 1e-5  # soles at DFAUST's floor in the calibration pose
    assert 1.5 <= np.ptp(first[:, 1]) <= 1.85


def test_sequences_start_in_the_calibration_pose_and_then_move(dataset):
    sequences, _, _ = read_sequences(dataset)
    for subject in ("50002", "50004"):
        keys = [key for key in sequences if key.startswith(subject)]
        # Frame 0 is the subject's A-pose whatever the motion; the motions differ later.
        np.testing.assert_array_equal(sequences[keys[0]][0], sequences[keys[1]][0])
        assert np.abs(sequences[keys[0]][20] - sequences[keys[1]][20]).max() > 0.02
    for key, frames in sequences.items():
        steps = np.abs(np.diff(frames[generator.EASE_IN_FRAMES[1]:], axis=0)).max(axis=(1, 2))
        assert np.all(steps > 1e-3), key  # every usable frame differs from the previous one


def test_every_vertex_has_the_body_part_that_moves_it(dataset):
    labels, names = read_part_labels(dataset)
    sequences, _, _ = read_sequences(dataset)
    rest = next(iter(sequences.values()))[0]  # (V, 3) calibration pose: +x is the body's left, y up
    assert names == PART_NAMES and labels.shape == (len(rest),)
    assert set(labels.tolist()) == set(range(len(names)))  # every part owns vertices

    def centre(part: str) -> np.ndarray:
        return rest[labels == names.index(part)].mean(axis=0)

    heights = [centre(part)[1] for part in ("head", "neck", "chest", "abdomen", "pelvis")]
    assert heights == sorted(heights, reverse=True)
    for side, sign in (("left", 1), ("right", -1)):
        limb = [centre(f"{side}_{part}") for part in ("upper_arm", "forearm", "hand")]
        assert all(sign * point[0] > 0.1 for point in limb)  # on the body's own side
        assert limb[0][1] > limb[1][1] > limb[2][1]  # arms hang in the A-pose
        leg = [centre(f"{side}_{part}")[1] for part in ("thigh", "shin", "foot")]
        assert leg == sorted(leg, reverse=True) and centre(f"{side}_foot")[1] < -0.5


def test_subjects_differ(dataset):
    sequences, _, _ = read_sequences(dataset)
    male = next(v for k, v in sequences.items() if k.startswith("50002"))[0]
    female = next(v for k, v in sequences.items() if k.startswith("50004"))[0]
    assert np.abs(male - female).max() > 0.02


def test_same_seed_same_arrays_other_seed_other_arrays(dataset, tmp_path):
    assert run("--output-dir", str(tmp_path / "same"), *FLAGS, "--seed", "3").returncode == 0
    assert run("--output-dir", str(tmp_path / "other"), *FLAGS, "--seed", "4").returncode == 0
    reference, _, _ = read_sequences(dataset)
    same, _, _ = read_sequences(tmp_path / "same")
    other, _, _ = read_sequences(tmp_path / "other")
    assert same.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(same[key], reference[key])
        assert not np.array_equal(other[key], reference[key])
    assert (tmp_path / "same" / "splits.csv").read_bytes() == (dataset / "splits.csv").read_bytes()
    np.testing.assert_array_equal(read_part_labels(tmp_path / "other")[0], read_part_labels(dataset)[0])  # one template


def test_splits_file_lists_every_frame_split_by_sequence(dataset):
    rows = read_splits(dataset)
    assert rows[0] == ["id", "model_id", "split"]
    assert (dataset / "splits.csv").read_bytes().count(b"\r") == 0
    frames, split_of = defaultdict(list), defaultdict(set)
    for sequence, frame, split in rows[1:]:
        assert len(frame) == 5 and frame.isdigit() and split in ("train", "val", "test")
        frames[sequence].append(int(frame))
        split_of[sequence].add(split)
    sequences, _, _ = read_sequences(dataset)
    assert set(frames) == set(sequences)
    assert all(sorted(f) == list(range(24)) for f in frames.values())
    assert all(len(s) == 1 for s in split_of.values())  # whole sequences, never split inside
    _assert_valid_split({key: s.pop() for key, s in split_of.items()})


def _assert_valid_split(split: dict[str, str]) -> None:
    """At least one val and one test sequence; every held-out subject and motion also appears in train, the
    motion on another subject."""
    assert "val" in split.values() and "test" in split.values()
    train = [key.split("_", 1) for key, name in split.items() if name == "train"]
    for key, name in split.items():
        if name != "train":
            subject, motion = key.split("_", 1)
            assert any(s == subject for s, _ in train), key
            assert any(m == motion and s != subject for s, m in train), key


def test_plans_and_splits_are_valid_for_every_subject_and_sequence_count():
    for n_subjects in range(2, 11):
        for n_sequences in range(2, 15):
            sequences = generator.plan_sequences(n_subjects, n_sequences)
            assert len({s.key for s in sequences}) == n_subjects * n_sequences  # no motion twice per subject
            split = generator.assign_splits(sequences, np.random.default_rng(0))
            _assert_valid_split(split)
            assert sum(v == "test" for v in split.values()) == max(1, round(len(sequences) * 29 / 129))


@pytest.mark.parametrize("flags", [["--frames", "0"], ["--frames", "20"], ["--subjects", "11"],
                                   ["--subjects", "1"], ["--sequences", "1"], ["--sequences", "15"],
                                   ["--seed", "-1"]])
def test_bad_flags_give_one_line_and_write_nothing(tmp_path, flags):
    out = tmp_path / "out"
    result = run("--output-dir", str(out), *flags)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flags[0] in lines[0]
    assert not out.exists()


def test_unwritable_output_dir_gives_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run("--output-dir", str(blocker / "out"), *FLAGS)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(blocker / "out") in lines[0]
    assert list(tmp_path.iterdir()) == [blocker]


def test_failed_write_leaves_no_partial_files(tmp_path):
    (tmp_path / "registrations_f.hdf5").mkdir()  # the final rename onto it fails
    result = run("--output-dir", str(tmp_path), "--subjects", "2", "--sequences", "2", "--frames", "21")
    assert result.returncode != 0 and result.stderr.strip().startswith("error: ")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name == "splits.csv"]


@pytest.fixture(scope="module")
def body():
    return make_body(build_template(), sample_shape(np.random.default_rng(0), "f"))


def test_skinning_with_rest_rotations_is_the_rest_body_and_a_root_turn_is_rigid(body):
    identity = np.tile(np.eye(3), (2, K, 1, 1))
    np.testing.assert_allclose(skin(body, identity, np.zeros((2, 3))), body.vertices[None].repeat(2, 0), atol=1e-12)
    turned = identity.copy()
    turned[:, 0] = rotation("y", np.array([90.0, -30.0]))
    shift = np.array([[0.1, 0.0, 0.0], [0.0, 0.2, -0.1]])
    expected = np.einsum("tab,vb->tva", turned[:, 0], body.vertices - body.joints[0]) + body.joints[0] + shift[:, None]
    np.testing.assert_allclose(skin(body, turned, shift), expected, atol=1e-12)


def test_place_foot_puts_the_ankle_on_its_target(body):
    pose = Pose(body.joints, 3)
    pose.root(y=np.array([-0.05, 0.0, -0.01]), z=-0.04)  # reachable targets: the leg cannot stretch
    pose.turn("pelvis", "y", np.array([10.0, -5.0, 0.0]))
    offset = np.array([[0.0, 0.02, 0.1], [0.05, 0.1, -0.1], [0.0, 0.0, 0.0]])  # template metres: out, lift, forward
    pose.place_foot("left", out=offset[:, 0], lift=offset[:, 1], forward=offset[:, 2])
    world_rotation, world_position = forward_kinematics(body.joints, pose.rotations, pose.translation)
    ankle = JOINT_INDEX["left_ankle"]
    np.testing.assert_allclose(world_position[:, ankle], body.joints[ankle] + pose.scale * offset, atol=1e-9)
    np.testing.assert_allclose(world_rotation[:, ankle], np.tile(np.eye(3), (3, 1, 1)), atol=1e-9)  # foot flat
