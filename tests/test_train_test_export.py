"""train.py, test.py and result_visualization.py end to end on the tiny synthetic dataset."""
import csv
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from tests.conftest import run_script
from checkpoint import load_checkpoint

TINY = ["model.n_primitives=3", "model.hidden_size=32", "model.proj_dims=16", "model.n_sphere_points=24",
        "model.pretrained=false", "data.network_image_size=64", "data.n_volume_points=256", "data.n_surface_points=96",
        "data.num_workers=0", "train.aggregate=2", "train.log_every=1", "train.checkpoint_every=2",
        "train.val_every=100", "train.val_max_frames=2", "train.lr=1e-3", "train.threads=1",
        "eval.batch_size=2", "eval.n_chamfer_points=400", "eval.n_sphere_vertices=200",
        "eval.n_export_vertices=300"]


def train(tiny_dataset, output_dir, steps, *extra, check=True):
    args = ["train.py", "--data-dir", tiny_dataset["preprocessed"], "--split-file", tiny_dataset["split_file"],
            "--output-dir", str(output_dir)]
    for item in TINY + [f"train.steps={steps}"]:
        args += ["--set", item]
    return run_script(*args, *extra, check=check)


def log_rows(run_dir):
    with open(os.path.join(run_dir, "log.csv"), newline="") as file:
        return {int(row["step"]): row for row in csv.DictReader(file)}


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(tiny_dataset, run_dir, 6)
    return run_dir


def test_training_writes_self_describing_checkpoints_and_logs(trained_run):
    for name in ("model.pth", "best_model.pth", "best_chamfer_model.pth", "run.json", "log.csv"):
        assert (trained_run / name).exists(), name
    payload = load_checkpoint(str(trained_run / "model.pth"))
    assert payload["step"] == 6
    assert payload["config"]["model"]["n_primitives"] == 3
    assert set(payload) >= {"model", "optimizer", "rng", "best", "git_commit", "config"}
    best = load_checkpoint(str(trained_run / "best_model.pth"))  # weights only: no optimizer moments
    assert set(best) >= {"model", "best", "config"} and not set(best) & {"optimizer", "rng"}
    assert (trained_run / "best_model.pth").stat().st_size < 0.5 * (trained_run / "model.pth").stat().st_size
    assert 0.0 <= payload["best"]["val_iou"] <= 1.0
    rows = log_rows(trained_run)
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert all(float(rows[s]["loss"]) > 0 for s in rows)
    assert rows[6]["val_iou"] != ""


def test_resume_continues_exactly(tiny_dataset, trained_run, tmp_path):
    train(tiny_dataset, tmp_path, 4)
    train(tiny_dataset, tmp_path, 6, "--resume", str(tmp_path / "model.pth"))
    uninterrupted, resumed = log_rows(trained_run), log_rows(tmp_path)
    for step in (5, 6):
        for term in ("loss", "reconstruction", "occupancy", "normal", "coverage", "overlap"):
            a, b = float(uninterrupted[step][term]), float(resumed[step][term])
            assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), (step, term, a, b)


def test_test_script_rebuilds_any_number_of_primitives(tiny_dataset, trained_run, tmp_path):
    result = run_script("test.py", str(trained_run / "model.pth"), "--data-dir", tiny_dataset["preprocessed"],
                        "--split-file", tiny_dataset["split_file"], "--output-dir", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_frames"] > 0 and 0.0 <= summary["iou"] <= 1.0 and summary["chamfer_l1"] > 0
    assert 0.0 <= summary["iou_authors"] <= 1.0 and summary["chamfer_l2"] > 0
    assert summary["points"] == {"iou": 100_000, "iou_authors": 5000, "chamfer_predicted": 400,
                                 "chamfer_target": 100_000}
    assert summary["per_motion"] and "overall" in result.stdout
    with open(tmp_path / "frames.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == summary["n_frames"]
    assert list(rows[0]) == ["sequence", "frame", "iou", "iou_authors", "chamfer_l1", "chamfer_l2",
                             "normal_consistency"]


def test_test_script_scores_the_final_weights_of_a_run_directory(tiny_dataset, trained_run, tmp_path):
    run_script("test.py", str(trained_run), "--data-dir", tiny_dataset["preprocessed"], "--split-file",
               tiny_dataset["split_file"], "--output-dir", str(tmp_path), "--max-frames", "1")
    assert json.loads((tmp_path / "summary.json").read_text())["checkpoint"] == str(trained_run / "model.pth")


def test_test_script_reports_part_consistency_and_the_body_part_table(tiny_dataset, trained_run, tmp_path):
    from data.part_labels import read_part_labels
    from data.preprocessed import read_frame
    from data.splits import read_split_file, select_frames
    from evaluation.part_consistency import part_consistency, part_table
    from test import motion_of
    result = run_script("test.py", str(trained_run / "model.pth"), "--data-dir", tiny_dataset["preprocessed"],
                        "--split-file", tiny_dataset["split_file"], "--dataset-dir", tiny_dataset["raw"],
                        "--output-dir", str(tmp_path), "--set", "eval.batch_size=2")
    summary = json.loads((tmp_path / "summary.json").read_text())

    # The same numbers from a plain loop: each test frame's vertices, g_m there one frame at a time, argmin.
    from checkpoint import load_model
    model, cfg = load_model(str(trained_run / "model.pth"), torch.device("cpu"))
    frames = select_frames(read_split_file(tiny_dataset["split_file"]), ("test",), cfg.data.drop_first_frames)
    owners, motions = [], []
    for sequence, frame in frames:
        stored = read_frame(tiny_dataset["preprocessed"], sequence, frame)
        resized = np.array(Image.fromarray(stored.image).resize((64, 64), Image.BILINEAR))  # the network's size
        image = torch.from_numpy(resized.transpose(2, 0, 1).astype(np.float32) / 255)[None]  # (1, 3, 64, 64)
        with torch.no_grad():
            g = model.implicit(torch.from_numpy(stored.vertices)[None], model.conditioning(image))[0]  # (V, M)
        owners.append(g.argmin(-1).numpy())
        motions.append(motion_of(sequence))
    owners = np.stack(owners)  # (F, V)
    assert summary["n_frames"] == len(frames) >= 2
    assert summary["part_consistency"] == pytest.approx(part_consistency(owners), abs=2e-3)
    for motion in set(motions):
        rows = [i for i, m in enumerate(motions) if m == motion]
        expected = part_consistency(owners[rows]) if len(rows) >= 2 else None
        assert summary["per_motion"][motion]["part_consistency"] == pytest.approx(expected, abs=2e-3)
    labels, names = read_part_labels(tiny_dataset["raw"])
    table = np.array([[summary["part_table"][f"primitive_{m}"][name] for name in names] for m in range(3)])
    np.testing.assert_allclose(table, part_table(owners, labels, names, 3), atol=2e-3)
    assert "part consistency:" in result.stdout and "left_forearm" in result.stdout


def test_visualisation_exports_watertight_meshes(tiny_dataset, trained_run, tmp_path):
    run_script("utils/result_visualization.py", str(trained_run / "model.pth"), "--data-dir",
               tiny_dataset["preprocessed"], "--split-file",
               tiny_dataset["split_file"], "--output-dir", str(tmp_path / "result"))
    (frame_dir,) = list((tmp_path / "result").iterdir())
    for m in range(3):
        mesh = trimesh.load(frame_dir / f"primitive_{m:02d}.obj", process=True)
        assert mesh.is_watertight
    assert trimesh.load(frame_dir / "union.obj").is_watertight
    for name in ("primitives_colored.ply", "input.png", "prediction.png", "ground_truth.png", "comparison.png"):
        assert (frame_dir / name).exists(), name


def test_gif_animates_a_test_sequence_beside_the_checkpoint(tiny_dataset, trained_run):
    from data.splits import read_split_file
    rows = read_split_file(tiny_dataset["split_file"])
    test_sequences = sorted({row.sequence_id for row in rows if row.split == "test"})
    result = run_script("utils/result_visualization.py", str(trained_run / "model.pth"), "--data-dir",
                        tiny_dataset["preprocessed"], "--split-file", tiny_dataset["split_file"],
                        "--gif", "--gif-stride", "2", "--gif-size", "48")
    path = trained_run / "result" / f"{test_sequences[0]}.gif"  # the default output dir: beside the checkpoint
    assert str(path) in result.stdout
    with Image.open(path) as gif:
        assert gif.n_frames == 2  # frames 20, 21, 22 of the sequence (the first 20 are dropped), every second one
        assert gif.size == (3 * 48, 48) and gif.info["loop"] == 0
        for index in range(gif.n_frames):
            gif.seek(index)
            panels = np.asarray(gif.convert("RGB")).reshape(48, 3, 48, 3)  # (row, panel, column, RGB)
            assert all((panels[:, p] < 200).any() for p in range(3))  # something drawn in every panel

    unknown = run_script("utils/result_visualization.py", str(trained_run / "model.pth"), "--data-dir",
                         tiny_dataset["preprocessed"], "--split-file", tiny_dataset["split_file"], "--gif", "nope",
                         check=False)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "--gif 'nope'" in unknown.stderr


def test_the_demo_gif_takes_the_first_test_sequence_at_the_stride_that_fits(tiny_dataset):
    from config import DataConfig
    from data.splits import read_split_file
    from utils.demo import gif_plan
    rows = read_split_file(tiny_dataset["split_file"])
    first = sorted({row.sequence_id for row in rows if row.split == "test"})[0]
    # 23 frames, 20 dropped: 3 frames remain, so 30 fit at stride 1, 2 need stride 2 and 1 needs stride 3.
    assert [gif_plan(tiny_dataset["split_file"], DataConfig(), limit) for limit in (30, 2, 1)] == [
        (first, 1), (first, 2), (first, 3)]


def test_a_face_takes_the_owner_of_at_least_two_of_its_corners():
    from utils.result_visualization import majority_owner
    corners = np.array([[0, 0, 1], [2, 1, 1], [3, 4, 3], [5, 5, 5], [0, 1, 2]])
    assert majority_owner(corners).tolist() == [0, 1, 3, 5, 0]


def test_unknown_frame_is_one_line_error(tiny_dataset, trained_run, tmp_path):
    result = run_script("utils/result_visualization.py", str(trained_run / "model.pth"), "--data-dir",
                        tiny_dataset["preprocessed"], "--split-file", tiny_dataset["split_file"],
                        "--frame", "nope:3", "--output-dir", str(tmp_path), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--frame 'nope:3'" in result.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_torchrun_two_processes_on_gloo(tiny_dataset, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    args = ["--nproc_per_node=2", "train.py", "--data-dir", tiny_dataset["preprocessed"], "--split-file",
            tiny_dataset["split_file"], "--output-dir", str(tmp_path)]
    for item in TINY + ["train.steps=2", "train.device=cpu"]:
        args += ["--set", item]
    import subprocess
    result = subprocess.run([torchrun, *args], cwd=os.path.dirname(os.path.dirname(__file__)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint(str(tmp_path / "model.pth"))["step"] == 2


def test_learning_rate_is_constant_or_a_cosine_of_the_step():
    from config import TrainConfig
    from train import learning_rate
    constant = TrainConfig(lr=1e-4, steps=100)
    assert [learning_rate(constant, step) for step in (1, 50, 100)] == [1e-4, 1e-4, 1e-4]
    cosine = TrainConfig(lr=1e-4, steps=100, cosine_decay=True)
    assert learning_rate(cosine, 1) == pytest.approx(1e-4)
    assert learning_rate(cosine, 51) == pytest.approx(0.5e-4)  # halfway: cos(pi / 2) = 0
    assert learning_rate(cosine, 100) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(learning_rate(cosine, s) > learning_rate(cosine, s + 1) > 0 for s in range(1, 100))


def test_init_placement_is_set_once_from_the_training_bodies(tiny_dataset, tmp_path):
    train(tiny_dataset, tmp_path, 2, "--set", "model.init_placement=true")
    first = load_checkpoint(str(tmp_path / "model.pth"))["model"]
    translation = first["inn.placement_translation"]  # (3, 3) metres
    assert translation.shape == (3, 3) and translation.abs().sum() > 0
    assert ((translation > torch.tensor([-0.5, -0.75, -0.5])) & (translation < torch.tensor([0.5, 1.25, 0.5]))).all()
    train(tiny_dataset, tmp_path, 4, "--resume", str(tmp_path / "model.pth"))
    resumed = load_checkpoint(str(tmp_path / "model.pth"))["model"]
    assert torch.equal(resumed["inn.placement_translation"], translation)  # a resumed run keeps its placement
    assert torch.equal(resumed["inn.placement_scale"], first["inn.placement_scale"])


def test_optimizer_is_chosen_by_name():
    from config import TrainConfig
    from train import make_optimizer
    model = torch.nn.Linear(2, 1)
    assert type(make_optimizer(model, TrainConfig())) is torch.optim.RAdam  # the authors' D-FAUST choice
    adam = make_optimizer(model, TrainConfig(optimizer="adam", lr=3e-4))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["lr"] == 3e-4
