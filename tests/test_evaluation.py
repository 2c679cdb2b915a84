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


def test_summary_is_the_mean_of_each_metric():
    records = [{"iou": 0.2, "iou_authors": 0.3, "chamfer_l1": 0.1, "chamfer_l2": 0.01, "normal_consistency": 0.5},
               {"iou": 0.4, "iou_authors": 0.5, "chamfer_l1": 0.3, "chamfer_l2": 0.03, "normal_consistency": 0.7}]
    summary = summarise(records)
    assert summary == pytest.approx({"iou": 0.3, "iou_authors": 0.4, "chamfer_l1": 0.2, "chamfer_l2": 0.02,
                                     "normal_consistency": 0.6, "n_frames": 2})
