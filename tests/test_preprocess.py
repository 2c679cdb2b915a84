"""Preprocessing: labels, samples, renders, the format round trip, resume after a crash, bad inputs.

In-process runs use workers=0 (this process renders, so it must not fork a renderer afterwards); runs with
worker processes go through the script in a subprocess.
"""
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import igl
import numpy as np
import pytest
import scipy.ndimage
import trimesh

from config import DataConfig
from data import format as fmt
from data.preprocessed import SequenceReader, read_frame
from data.sampling import draw_volume_samples, near_surface
from data.splits import read_split_file
from preprocess import pipeline, store
from preprocess.dfaust_source import DfaustSource
from preprocess.frames import label_inside, process_frame
from tests.analytic_dfaust import (BOX_MAX, BOX_MIN, body_mesh, moving_sequence, small_dataset,
                                   write_registrations, write_split)
from common.errors import UserError
from rendering.renderer import CAMERA_POSITION, CAMERA_TARGET, CAMERA_UP, face_shading, look_at, render_meshes

REPO = Path(__file__).resolve().parents[1]
SMALL = DataConfig(n_stored_points=20_000)  # fewer samples keep the pipeline tests fast


def settings(n_points: int = 20_000) -> fmt.Settings:
    return fmt.Settings(n_points, 224, tuple(BOX_MIN), tuple(BOX_MAX))


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# --- labels, samples, renders ---------------------------------------------------------------------------

def test_labels_equal_exact_winding_number_on_watertight_and_holed_meshes():
    mesh = body_mesh()
    uniform = fmt.volume_points(7, np.arange(50_000), BOX_MIN, BOX_MAX)
    near, _ = trimesh.sample.sample_surface(mesh, 20_000, seed=1)
    near = (near + np.random.default_rng(2).normal(0, 0.01, near.shape)).astype(np.float32)
    points = np.concatenate([uniform, near])
    holed = trimesh.Trimesh(mesh.vertices, np.delete(mesh.faces, np.arange(0, len(mesh.faces), 97), axis=0),
                            process=False)
    assert mesh.is_watertight and not holed.is_watertight
    for shape in (mesh, holed):
        exact = igl.winding_number(shape.vertices, shape.faces.astype(np.int64), points.astype(np.float64)) > 0.5
        np.testing.assert_array_equal(label_inside(shape, points), exact)
    # with holes the labels still describe the closed shape, away from the holes' immediate surroundings
    assert (label_inside(holed, points) != label_inside(mesh, points)).sum() < 50
    assert 0.05 < label_inside(mesh, uniform).mean() < 0.12


def test_surface_samples_lie_on_the_mesh_with_their_face_normals():
    mesh = body_mesh()
    record, _ = process_frame("50002_hips", 30, mesh.vertices.astype(np.float32), mesh.faces, settings())
    mesh = trimesh.Trimesh(record.vertices.astype(np.float64), mesh.faces, process=False)  # as stored
    points, normals = fmt.surface_samples(record.vertices, mesh.faces, record.surface_face,
                                          record.surface_barycentric)
    distance = np.abs(igl.signed_distance(points.astype(np.float64), mesh.vertices, mesh.faces)[0])
    assert distance.max() < 1e-6
    np.testing.assert_allclose(normals, mesh.face_normals[record.surface_face.astype(int)], atol=1e-6)
    radial = (points - [0.0, 0.25, 0.0]) / np.linalg.norm(points - [0.0, 0.25, 0.0], axis=1, keepdims=True)
    assert (np.einsum("ni,ni->n", normals, radial) > 0.95).all()  # outward
    # area-uniform: in 8 bands of faces (by height) the sample counts match the bands' areas
    band = np.digitize(mesh.triangles_center[:, 1], np.linspace(-0.1, 0.6, 9)[1:-1])  # (F,)
    counts = np.bincount(band[record.surface_face.astype(int)], minlength=8)
    expected = np.bincount(band, weights=mesh.area_faces, minlength=8) / mesh.area * len(points)
    assert (np.abs(counts - expected) < 4 * np.sqrt(expected)).all()


def test_weighted_inside_fraction_equals_the_true_volume_fraction():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.45)
    record, _ = process_frame("50002_knees", 40, mesh.vertices.astype(np.float32), mesh.faces, settings(200_000))
    inside = fmt.unpack_labels(record.volume_labels, 200_000)
    draws, weights = draw_volume_samples(inside, 200_000, True, np.random.default_rng(0))
    assert 0.45 < inside[draws].mean() < 0.55  # balanced: half the draws inside
    estimate = float(np.mean(weights * inside[draws]))
    true_fraction = mesh.volume / np.prod(BOX_MAX - BOX_MIN)
    assert abs(estimate / true_fraction - 1) < 0.02
    np.testing.assert_allclose(weights[inside[draws]], 2 * inside.mean(), rtol=1e-6)
    uniform_draws, uniform_weights = draw_volume_samples(inside, 1000, False, np.random.default_rng(0))
    assert (uniform_weights == 1).all() and uniform_draws.max() < len(inside)


def test_balanced_draws_are_the_authors_scheme():
    """Without a near-surface band the draw is the two-stratum scheme, to the bit: a uniform number < 0.5 picks
    inside, then one uniform index per side."""
    inside = np.random.default_rng(1).random(5000) < 0.1
    draws, weights = draw_volume_samples(inside, 1000, True, np.random.default_rng(7), near=inside, near_share=0.0)
    rng = np.random.default_rng(7)
    pick_inside = rng.random(1000) < 0.5
    inside_draws = np.flatnonzero(inside)[rng.integers(0, inside.sum(), 1000)]
    outside_draws = np.flatnonzero(~inside)[rng.integers(0, (~inside).sum(), 1000)]
    np.testing.assert_array_equal(draws, np.where(pick_inside, inside_draws, outside_draws))
    np.testing.assert_allclose(weights, np.where(pick_inside, 2 * inside.mean(), 2 * (1 - inside.mean())), rtol=1e-6)


def test_near_surface_marks_a_band_around_a_sphere():
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.3)  # vertices about 1 cm apart
    directions = np.random.default_rng(0).normal(size=(4000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = np.repeat([0.1, 0.27, 0.31, 0.325, 0.36, 0.6], len(directions) // 6 + 1)[:len(directions)]
    near = near_surface(directions * radii[:, None], mesh.vertices, distance=0.04)
    np.testing.assert_array_equal(near, np.isin(radii, [0.27, 0.31, 0.325]))  # 1-2.5 cm off: in; 6 cm: out


def test_render_is_grey_body_in_frame_on_white():
    mesh = body_mesh()
    image = render_meshes([mesh])
    body = (image < 255).any(axis=2)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert 0.05 < body.mean() < 0.6
    assert not body[[0, -1]].any() and not body[:, [0, -1]].any()  # nothing touches the border
    assert (image[body][:, 0] == image[body][:, 1]).all()  # grey
    interior = scipy.ndimage.binary_erosion(body, iterations=2)  # edge pixels are blended with white
    assert 0.3 * 255 * 0.5 < image[interior].max() <= 77  # base 0.3 times a luminance up to 1
    # the sphere's centre projects where the camera model says
    camera_from_world = np.linalg.inv(look_at(np.array(CAMERA_POSITION), np.array(CAMERA_TARGET),
                                              np.array(CAMERA_UP)))
    x, y, z = (camera_from_world @ [0.0, 0.25, 0.0, 1.0])[:3]
    focal = 112 / np.tan(np.pi / 8)
    column, row = 112 + focal * x / -z, 112 - focal * y / -z
    rows, columns = np.nonzero(body)
    assert abs(rows.mean() - row) < 3 and abs(columns.mean() - column) < 3


def test_face_shading_follows_simple_3dviz():
    triangle = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)  # normal +z
    centre = triangle.triangles_center[0]
    assert face_shading(triangle, centre + [0, 0, 2])[0] == pytest.approx(1.0)  # facing the light
    assert face_shading(triangle, centre + [2, 0, 0])[0] == pytest.approx(0.5)  # edge-on
    assert face_shading(triangle, centre - [0, 0, 2])[0] == pytest.approx(0.0)  # facing away


# --- the stored format ----------------------------------------------------------------------------------

def test_round_trip_within_the_stated_bounds(tmp_path):
    data = small_dataset(tmp_path, n_frames=21)
    pipeline.run(data["dataset_dir"], tmp_path / "out", data["split_file"], SMALL, workers=0, progress=False)
    mesh = data["mesh"]
    frame = read_frame(tmp_path / "out", "50004_hips", 20)
    np.testing.assert_array_equal(frame.vertices, moving_sequence(mesh, 21)[:, :, 20])
    np.testing.assert_array_equal(frame.faces, mesh.faces)
    # surface points: the sampler's points (same seed, same shuffle) within 1.53e-5 x longest edge
    moved = trimesh.Trimesh(frame.vertices.astype(np.float64), mesh.faces, process=False)
    seed = fmt.frame_seed("50004_hips", 20, "surface")
    sampled, _ = trimesh.sample.sample_surface(moved, 20_000, seed=seed)
    sampled = sampled[np.random.default_rng(seed).permutation(20_000)]
    error = np.linalg.norm(frame.surface_points - sampled, axis=1)
    assert error.max() <= 1.53e-5 * moved.edges_unique_length.max() + 1e-7
    assert error.max() > 0  # quantised, not stored raw
    # volume points exact; labels are the exact winding number at exactly those points
    np.testing.assert_array_equal(frame.volume_points, fmt.volume_points(
        fmt.frame_seed("50004_hips", 20, "volume"), np.arange(20_000), BOX_MIN, BOX_MAX))
    assert (frame.volume_points >= BOX_MIN).all() and (frame.volume_points <= BOX_MAX).all()
    winding = igl.winding_number(moved.vertices, mesh.faces, frame.volume_points.astype(np.float64))
    np.testing.assert_array_equal(frame.volume_labels, winding > 0.5)
    np.testing.assert_array_equal(frame.image, render_meshes([moved]))
    assert frame.outside_fraction == 0.0


def test_volume_points_are_a_pure_function_of_seed_and_index():
    everything = fmt.volume_points(12345, np.arange(1000), BOX_MIN, BOX_MAX)
    some = fmt.volume_points(12345, np.array([999, 0, 500, 500]), BOX_MIN, BOX_MAX)
    np.testing.assert_array_equal(some, everything[[999, 0, 500, 500]])
    assert not np.array_equal(fmt.volume_points(12346, np.arange(1000), BOX_MIN, BOX_MAX), everything)
    many = fmt.volume_points(1, np.arange(300_000), (0, 0, 0), (1, 1, 1))
    assert abs(many.mean() - 0.5) < 0.002 and many.min() >= 0 and many.max() < 1
    assert np.abs(np.corrcoef(many.T) - np.eye(3)).max() < 0.01


def test_outside_fraction_is_recorded(tmp_path):
    mesh = body_mesh()
    shifted = mesh.vertices + [0.3, 0.0, 0.0]  # x reaches 0.65: part of the sphere leaves the box
    record, _ = process_frame("50002_hips", 30, shifted.astype(np.float32), mesh.faces, settings())
    cap_area_fraction = (0.65 - 0.5) / 0.7  # a sphere's zone area is proportional to its height
    assert record.outside_fraction == pytest.approx(cap_area_fraction, abs=0.01)


def test_bugfix_key_mapping(tmp_path):
    data = small_dataset(tmp_path, n_frames=21)
    source = DfaustSource(data["dataset_dir"])
    assert source.resolve("50004_running_on_spot").key == "50004_running_on_spot_bugfix"
    assert source.resolve("50004_hips").key == "50004_hips"
    assert source.resolve("50004_knees") is None
    source.close()
    pipeline.run(data["dataset_dir"], tmp_path / "out", data["split_file"], SMALL, workers=0, progress=False)
    with h5py.File(tmp_path / "out" / "50004_running_on_spot.h5", "r") as file:
        assert file.attrs["source_key"] == "50004_running_on_spot_bugfix"
        assert file["frames"][()].tolist() == [20]  # frames < drop_first_frames are dropped


def test_shards_cover_every_sequence_once(tmp_path):
    mesh = body_mesh()
    keys = ["50002_hips", "50002_knees", "50002_punching"]
    write_registrations(tmp_path / "raw" / "registrations_m.hdf5", mesh.faces,
                        {key: moving_sequence(mesh, 21) for key in keys})
    write_registrations(tmp_path / "raw" / "registrations_f.hdf5", mesh.faces, {})
    split = write_split(tmp_path / "split.csv", [(key, 20, "train") for key in keys])
    whole = pipeline.run(tmp_path / "raw", tmp_path / "whole", split, SMALL, workers=0, progress=False)
    assert whole.sequences == 3
    for index in range(2):
        pipeline.run(tmp_path / "raw", tmp_path / "sharded", split, SMALL, workers=0, shard=(index, 2),
                     progress=False)
        if index == 0:
            assert sorted(files_of(tmp_path / "sharded")) == ["50002_hips.h5", "50002_punching.h5",
                                                              pipeline.RECORD_FILE]
    assert files_of(tmp_path / "sharded") == files_of(tmp_path / "whole")
    with pytest.raises(UserError, match="--shard"):
        pipeline.parse_shard("2/2")


# --- resume after a crash -------------------------------------------------------------------------------

def _script(data: dict, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "preprocess/preprocess_dfaust.py", "--dataset-dir", str(data["dataset_dir"]),
            "--split-file", str(data["split_file"]), "--output-dir", str(output),
            "--set", "data.n_stored_points=20000", *extra]


def _kill_when(command: list[str], ready, timeout: float = 60.0) -> None:
    """Start `command`, SIGKILL it and its workers as soon as ready() is true."""
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_at_any_stage_then_rerun_gives_identical_files(tmp_path):
    data = small_dataset(tmp_path, n_frames=25)
    subprocess.run(_script(data, tmp_path / "reference", "--workers", "0"), cwd=REPO, check=True,
                   capture_output=True)
    out = tmp_path / "out"
    _kill_when(_script(data, out, "--workers", "1"), lambda: any(out.glob("*.partial-*/*.npz")))
    assert not list(out.glob("*.h5"))  # killed with only parts written: nothing looks finished
    _kill_when(_script(data, out, "--workers", "1"), lambda: any(out.glob("*.h5")))
    result = subprocess.run(_script(data, out, "--workers", "1"), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert files_of(out) == files_of(tmp_path / "reference")


def test_damaged_leftovers_are_redone(tmp_path):
    data = small_dataset(tmp_path, n_frames=23)
    reference = tmp_path / "reference"
    pipeline.run(data["dataset_dir"], reference, data["split_file"], SMALL, workers=0, progress=False)
    out = tmp_path / "out"
    pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    (out / "50004_hips.h5").unlink()
    parts = store.part_directory(out, "50004_hips", fmt.Settings.from_config(SMALL))
    parts.mkdir()
    (parts / "00021.npz").write_bytes(b"PK\x03\x04 truncated")  # a part damaged after its rename
    (parts / "00022.npz.tmp-999").write_bytes(b"half a part")
    (out / "50004_hips.h5.tmp-999").write_bytes(b"half a sequence file")
    summary = pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    assert summary.computed == 3 and summary.frames == 6
    assert files_of(out) == files_of(reference)


def test_full_disk_keeps_finished_work(tmp_path, monkeypatch):
    data = small_dataset(tmp_path, n_frames=23)
    reference = tmp_path / "reference"
    pipeline.run(data["dataset_dir"], reference, data["split_file"], SMALL, workers=0, progress=False)
    written = []

    def write_part_until_full(root, sequence_id, settings, record):
        if len(written) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / "x.tmp"))
        store_write_part(root, sequence_id, settings, record)
        written.append(record.frame)

    store_write_part = store.write_part
    monkeypatch.setattr(store, "write_part", write_part_until_full)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="No space left on device.*rerun"):
        pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    assert (out / "50004_hips.h5").read_bytes() == (reference / "50004_hips.h5").read_bytes()
    monkeypatch.setattr(store, "write_part", store_write_part)
    summary = pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    assert summary.computed == 2  # the frame written before the disk filled up is kept
    assert files_of(out) == files_of(reference)


# --- bad input ------------------------------------------------------------------------------------------

def _run(dataset: dict, out: Path, **changes):
    arguments = dict(dataset_dir=dataset["dataset_dir"], output_dir=out, split_file=dataset["split_file"], data=SMALL,
                     workers=0, progress=False)
    arguments.update(changes)
    return pipeline.run(**arguments)


@pytest.mark.filterwarnings("ignore:.*registrations_m.hdf5 not found")
def test_fatal_inputs_raise_one_line(tmp_path):
    data = small_dataset(tmp_path, n_frames=21)
    out = tmp_path / "out"
    cases = [
        (dict(dataset_dir=tmp_path / "nowhere"), "nowhere not found"),
        (dict(split_file=tmp_path / "none.csv"), "none.csv not found"),
        (dict(output_dir=data["split_file"] / "out"), "not writable"),
    ]
    not_hdf5 = tmp_path / "bad1"
    not_hdf5.mkdir()
    (not_hdf5 / "registrations_f.hdf5").write_text("not hdf5")
    cases.append((dict(dataset_dir=not_hdf5), "registrations_f.hdf5 is not a readable HDF5"))
    no_faces = tmp_path / "bad2"
    with h5py.File(write_registrations(no_faces / "registrations_f.hdf5", np.zeros((1, 3), int), {}), "a") as f:
        del f["faces"]
    cases.append((dict(dataset_dir=no_faces), "registrations_f.hdf5 has no 'faces'"))
    cases.append((dict(dataset_dir=tmp_path / "raw", split_file=write_split(
        tmp_path / "unknown.csv", [("50009_hips", 30, "train")])), "none of the 1 sequences"))
    cases.append((dict(data=dataclasses.replace(SMALL, volume_box_max=(0.5, -0.8, 0.5))), "volume_box_min"))
    for changes, message in cases:
        with pytest.raises(UserError, match=message) as caught:
            _run(data, out, **changes)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("id,model_id\n", "header"),
    ("id,model_id,split\n50004_hips,00020\n", r"splits\.csv:2: expected 3 fields"),
    ("id,model_id,split\n50004_hips,twenty,train\n", "splits.csv:2: model_id 'twenty'"),
    ("id,model_id,split\nhips,00020,train\n", "splits.csv:2: id 'hips'"),
    ("id,model_id,split\n50004_hips,00020,train\n50004_hips,00020,val\n", "splits.csv:3: .* listed twice"),
])
def test_malformed_split_file(tmp_path, text, message):
    path = tmp_path / "splits.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_split_file(path)


def test_bad_sequences_are_skipped_and_the_rest_is_written(tmp_path):
    mesh = body_mesh()
    good = moving_sequence(mesh, 21)
    nan = good.copy()
    nan[3, 1, 20] = np.nan
    collapsed = good.copy()
    collapsed[:, :, 20] = 0.0
    write_registrations(tmp_path / "raw" / "registrations_m.hdf5", mesh.faces, {
        "50002_hips": good, "50002_knees": good[:-1], "50002_punching": nan, "50002_shake_arms": collapsed})
    keys = ["50002_hips", "50002_knees", "50002_punching", "50002_shake_arms", "50009_hips"]
    split = write_split(tmp_path / "split.csv", [(key, 20, "train") for key in keys])
    command = [sys.executable, "preprocess/preprocess_dfaust.py", "--dataset-dir", str(tmp_path / "raw"),
               "--split-file", str(split), "--output-dir", str(tmp_path / "out"), "--workers", "1",
               "--set", "data.n_stored_points=5000"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    for expected in ["1 of 5 sequences listed in", "50009_hips", "registrations_f.hdf5 not found",
                     "50002_knees: 641 vertices, but the faces index 642",
                     "50002_punching: frame 20 has NaN", "50002_shake_arms: frame 20 is a degenerate mesh"]:
        assert expected in result.stderr
    assert sorted(files_of(tmp_path / "out")) == ["50002_hips.h5", pipeline.RECORD_FILE]
    with SequenceReader(tmp_path / "out" / "50002_hips.h5") as reader:
        assert reader.frames.tolist() == [20]
    assert subprocess.run(command[:2] + ["--dataset-dir", str(tmp_path / "nowhere")], cwd=REPO,
                          capture_output=True).returncode == 2


def test_settings_are_recorded(tmp_path):
    data = small_dataset(tmp_path, n_frames=21)
    pipeline.run(data["dataset_dir"], tmp_path / "out", data["split_file"], SMALL, workers=0, progress=False)
    with SequenceReader(tmp_path / "out" / "50004_hips.h5") as reader:
        assert reader.settings == fmt.Settings.from_config(SMALL)
    record = json.loads((tmp_path / "out" / pipeline.RECORD_FILE).read_text())
    assert record["data.n_stored_points"] == 20_000 and record["data.volume_box_max"] == list(BOX_MAX)
    assert record["split_file_frames"].startswith("2 frames, sha256 ")  # frames 20 of both listed sequences


def test_rerun_with_other_settings_is_refused_before_any_file_changes(tmp_path):
    data = small_dataset(tmp_path, n_frames=22)
    out = tmp_path / "out"
    pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    before = files_of(out)
    result = subprocess.run(_script(data, out, "--workers", "0", "--set", "data.n_stored_points=10000"), cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (f"error: {out / pipeline.RECORD_FILE}: the files in {out} were made with "
                             "data.n_stored_points=20000, this run has data.n_stored_points=10000; rerun with "
                             "--overwrite to replace them\n")
    other_split = write_split(tmp_path / "other.csv", [("50004_hips", 21, "train")])
    changes = [(dict(data=dataclasses.replace(SMALL, image_size=128)), "data.image_size=224, .* data.image_size=128"),
               (dict(data=dataclasses.replace(SMALL, volume_box_min=(-0.5, -0.7, -0.5))), "data.volume_box_min="),
               (dict(data=dataclasses.replace(SMALL, drop_first_frames=21)), "data.drop_first_frames=20, .*=21"),
               (dict(split_file=other_split), "split_file_frames=4 frames, sha256 .*=1 frames, sha256 ")]
    for change, message in changes:
        with pytest.raises(UserError, match=message):
            _run(data, out, **change)
    assert files_of(out) == before
    assert _run(data, out).computed == 0  # the same settings resume: nothing to do


def test_overwrite_replaces_the_files_made_with_other_settings(tmp_path):
    data = small_dataset(tmp_path, n_frames=21)
    out = tmp_path / "out"
    pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    changed = dataclasses.replace(SMALL, n_stored_points=10_000)
    summary = _run(data, out, data=changed, overwrite=True)
    assert summary.computed == 2  # other settings: rebuilt, not reused
    with SequenceReader(out / "50004_hips.h5") as reader:
        assert reader.settings.n_points == 10_000
    assert json.loads((out / pipeline.RECORD_FILE).read_text())["data.n_stored_points"] == 10_000
    assert _run(data, out, data=changed).computed == 0


def test_directory_without_a_record_is_checked_against_its_files(tmp_path):
    data = small_dataset(tmp_path, n_frames=21)
    out = tmp_path / "out"
    pipeline.run(data["dataset_dir"], out, data["split_file"], SMALL, workers=0, progress=False)
    before = files_of(out)
    (out / pipeline.RECORD_FILE).write_text("[]")
    with pytest.raises(UserError, match=r"cannot read .*preprocess.json \(not a JSON object\).*--overwrite"):
        _run(data, out)
    (out / pipeline.RECORD_FILE).unlink()  # as an earlier version left it: each file names its settings
    changed = dataclasses.replace(SMALL, n_stored_points=10_000)
    with pytest.raises(UserError, match=r"50004_hips.h5: .* data.n_stored_points=20000, this run has "):
        _run(data, out, data=changed)
    assert _run(data, out).computed == 0  # made with these settings: kept, and the record written again
    assert files_of(out) == before
