"""The evaluation loop: exact references for its IoUs, per-frame seeding, sharding across ranks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from common.runtime import Distributed
from config import DataConfig, EvalConfig, ModelConfig
from data.preprocessed import read_frame
from data.sampling import draw_volume_samples
from evaluation.loop import (AUTHORS_DRAW, evaluate_distributed, evaluate_frames, evaluation_dataset, frame_rng,
                             summarise)
from models.neural_parts import NeuralParts

MODEL = ModelConfig(pretrained="false", n_primitives=3, hidden_size=32, proj_dims=16, init_placement=True, seed=5)
DATA = DataConfig(network_image_size=64, n_volume_points=7, n_surface_points=11, near_surface_share=0.5)
EVAL = EvalConfig(batch_size=2, n_chamfer_points=300, n_sphere_vertices=150, seed=4)
CPU = torch.device("cpu")


def tiny_model() -> NeuralParts:
    """An untrained model whose primitives overlap the synthetic bodies (so both IoUs are neither 0 nor 1)."""
    torch.manual_seed(0)
    model = NeuralParts(MODEL)
    model.inn.set_placement(torch.tensor([[0.0, 0.3, 0.0], [0.1, 0.6, 0.0], [-0.1, 0.0, 0.0]]),
                            torch.full((3, 3), 1.2))
    return model.eval()


def split(tiny_dataset) -> tuple[str, str]:
    return tiny_dataset["preprocessed"], tiny_dataset["split_file"]


def test_ious_match_a_direct_computation_on_the_stored_points(tiny_dataset):
    dataset = evaluation_dataset(*split(tiny_dataset), ("test",), DATA)
    model = tiny_model()
    (record,) = evaluate_frames(model, dataset, EVAL, CPU, max_frames=1, progress=False)
    sequence, frame = dataset.frames[0]
    stored = read_frame(tiny_dataset["preprocessed"], sequence, frame)
    assert dataset.n_points == len(stored.volume_points) == 100_000
    with torch.no_grad():
        C = model.conditioning(dataset[0]["image"][None])
        g = model.implicit(torch.from_numpy(stored.volume_points)[None], C)[0].numpy()  # (P, M)
    predicted, inside = g.min(axis=1) <= 0, stored.volume_labels
    assert 0 < predicted.sum() and 0 < (predicted & inside).sum() < inside.sum()
    assert record["iou"] == pytest.approx((predicted & inside).sum() / (predicted | inside).sum(), rel=1e-6)
    draws, weights = draw_volume_samples(inside, EVAL.n_authors_iou_points, True,
                                         frame_rng(EVAL.seed, sequence, frame, AUTHORS_DRAW))
    expected = (weights * (predicted & inside)[draws]).sum() / max(1.0, (weights * (predicted | inside)[draws]).sum())
    assert record["iou_authors"] == pytest.approx(expected, rel=1e-5)
    assert record["iou_authors"] != pytest.approx(record["iou"], rel=1e-3)  # a different estimate of the same IoU
    assert 0 < record["chamfer_l1"] < 1 and 0 < record["normal_consistency"] <= 1


def test_a_frame_scores_the_same_whatever_else_is_evaluated_with_it(tiny_dataset):
    model = tiny_model()
    dataset = evaluation_dataset(*split(tiny_dataset), ("train", "test"), DATA)
    everything = {(r["sequence"], r["frame"]): r for r in evaluate_frames(model, dataset, EVAL, CPU, progress=False)}
    assert len(everything) == 9
    other = evaluation_dataset(*split(tiny_dataset), ("train", "test"), DATA)
    other.frames = other.frames[::-1][::2]  # a subset, in reverse order
    rows = list(evaluate_frames(model, other, dataclasses.replace(EVAL, batch_size=3), CPU, progress=False))
    assert [(r["sequence"], r["frame"]) for r in rows] == other.frames
    for row in rows:
        assert row == everything[(row["sequence"], row["frame"])]  # identical, not just close
    reseeded = list(evaluate_frames(model, other, dataclasses.replace(EVAL, seed=5), CPU, max_frames=1,
                                    progress=False))[0]
    assert reseeded["iou"] == rows[0]["iou"] and reseeded["iou_authors"] != rows[0]["iou_authors"]
    assert reseeded["chamfer_l1"] != rows[0]["chamfer_l1"]


def test_evaluation_ignores_the_training_draw_settings(tiny_dataset):
    model = tiny_model()
    plain = evaluation_dataset(*split(tiny_dataset), ("test",), DataConfig(network_image_size=64))
    trained_with = evaluation_dataset(*split(tiny_dataset), ("test",), DATA)
    assert list(evaluate_frames(model, plain, EVAL, CPU, 2, progress=False)) == list(
        evaluate_frames(model, trained_with, EVAL, CPU, 2, progress=False))


def _validating_rank(rank: int, world_size: int, root: str, split_file: str, directory: str) -> None:
    """One rank of a training-like loop on gloo: a collective per step, validation at step 2 (torch.multiprocessing
    spawns this). Writes the frames it evaluated, and on rank 0 the gathered records."""
    import datetime
    import json
    import evaluation.loop as loop
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank,
                                         world_size=world_size, timeout=datetime.timedelta(seconds=120))
    evaluated, frame_metrics = [], loop._frame_metrics

    def counting(model, item, sequence, frame, cfg, device):
        evaluated.append([sequence, frame])
        return frame_metrics(model, item, sequence, frame, cfg, device)

    loop._frame_metrics = counting
    dist = Distributed(rank, world_size, rank)
    model, dataset = tiny_model(), evaluation_dataset(root, split_file, ("train", "test"), DATA)
    gathered = None
    for step in range(1, 4):
        total = torch.ones(1)
        torch.distributed.all_reduce(total)  # stands for the gradient all-reduce of a training step
        assert total.item() == world_size
        if step == 2:
            gathered = evaluate_distributed(model, dataset, EVAL, CPU, 5, dist)
    with open(f"{directory}/rank{rank}.json", "w") as file:
        json.dump({"evaluated": evaluated, "gathered": gathered}, file)
    torch.distributed.destroy_process_group()


def test_ranks_share_the_validation_and_rank_0_gets_the_single_process_records(tiny_dataset, tmp_path):
    import json
    torch.multiprocessing.spawn(_validating_rank, args=(2, *split(tiny_dataset), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    dataset = evaluation_dataset(*split(tiny_dataset), ("train", "test"), DATA)
    single = list(evaluate_frames(tiny_model(), dataset, EVAL, CPU, 5, progress=False))
    assert ranks[0]["gathered"] == single and ranks[1]["gathered"] is None
    frames = [[r["sequence"], r["frame"]] for r in single]
    assert ranks[0]["evaluated"] == frames[0::2] and ranks[1]["evaluated"] == frames[1::2]  # each its own share


def test_summary_is_the_mean_of_each_metric():
    records = [{"iou": 0.2, "iou_authors": 0.3, "chamfer_l1": 0.1, "chamfer_l2": 0.01, "normal_consistency": 0.5},
               {"iou": 0.4, "iou_authors": 0.5, "chamfer_l1": 0.3, "chamfer_l2": 0.03, "normal_consistency": 0.7}]
    summary = summarise(records)
    assert summary == pytest.approx({"iou": 0.3, "iou_authors": 0.4, "chamfer_l1": 0.2, "chamfer_l2": 0.02,
                                     "normal_consistency": 0.6, "n_frames": 2})


def test_each_best_checkpoint_records_both_current_best_values(tmp_path):
    from checkpoint import load_checkpoint
    from config import Config
    from train import save_best_checkpoints
    cfg = Config(model=MODEL)
    model, best = tiny_model(), {"val_iou": 0.3, "val_chamfer_l1": 0.2}

    def recorded(name: str) -> dict:
        return load_checkpoint(str(tmp_path / name))["best"]

    save_best_checkpoints(str(tmp_path), model, 10, best, {"iou": 0.5, "chamfer_l1": 0.1}, cfg)  # both improve
    assert best == recorded("best_model.pth") == recorded("best_chamfer_model.pth") == {
        "val_iou": 0.5, "val_chamfer_l1": 0.1}
    save_best_checkpoints(str(tmp_path), model, 20, best, {"iou": 0.4, "chamfer_l1": 0.05}, cfg)  # Chamfer only
    assert recorded("best_chamfer_model.pth") == best == {"val_iou": 0.5, "val_chamfer_l1": 0.05}
    assert load_checkpoint(str(tmp_path / "best_model.pth"))["step"] == 10  # not rewritten
    save_best_checkpoints(str(tmp_path), model, 30, best, {"iou": 0.6, "chamfer_l1": 0.07}, cfg)  # IoU only
    assert recorded("best_model.pth") == best == {"val_iou": 0.6, "val_chamfer_l1": 0.05}
    assert load_checkpoint(str(tmp_path / "best_chamfer_model.pth"))["step"] == 20
