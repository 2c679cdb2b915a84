"""Evaluate a model on preprocessed frames, one frame at a time; the protocol is written up in docs/evaluation.md.

Per frame, with P stored samples of each kind (100,000 on D-FAUST):
- iou: G = min_m g_m (the plain implicit) at all P stored volume points, unweighted (uniform in the box, as
  Occupancy Networks); predicted inside where G <= 0.
- iou_authors: the authors' evaluate.py IoU: `cfg.n_authors_iou_points` balanced draws with replacement from the
  same P points (data/sampling.py), importance-weighted.
- chamfer_l1 / chamfer_l2 / normal_consistency: `cfg.n_chamfer_points` points sampled on the union surface of the
  predicted primitives (each primitive a UV sphere of >= `cfg.n_sphere_vertices` vertices pushed through phi;
  points inside another primitive dropped) against all P stored surface samples of the frame.

A frame's draws come from its own generator, seeded by (cfg.seed, sequence, frame), and the model sees one frame
at a time, so a frame's scores do not depend on which other frames are evaluated, in which order or batch size.
"""
from __future__ import annotations

import zlib
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.errors import UserError
from config import DataConfig, EvalConfig
from common.runtime import Distributed
from data.evaluation_frames import EvaluationFrames
from data.sampling import draw_volume_samples
from evaluation.metrics import chamfer_metrics, sample_union_surface, weighted_iou
from models.meshes import primitive_meshes
from models.neural_parts import NeuralParts

METRIC_NAMES = ("iou", "iou_authors", "chamfer_l1", "chamfer_l2", "normal_consistency")
AUTHORS_DRAW, UNION_SURFACE = 0, 1  # independent random streams of a frame


def evaluation_dataset(root: str, split_file: str, splits: tuple[str, ...], data_cfg: DataConfig) -> EvaluationFrames:
    """The frames of `splits` with all their stored samples (data/evaluation_frames.py)."""
    return EvaluationFrames(root, split_file, splits, data_cfg)


def frame_rng(seed: int, sequence: str, frame: int, stream: int) -> np.random.Generator:
    """The generator of one random stream (AUTHORS_DRAW, UNION_SURFACE) of one frame, fixed by its arguments."""
    return np.random.default_rng([seed, zlib.crc32(sequence.encode()), frame, stream])


def selected_frames(n_frames: int, max_frames: int) -> list[int]:
    """Dataset indices evaluated: all, or `max_frames` evenly spaced ones (max_frames > 0)."""
    count = n_frames if max_frames <= 0 else min(max_frames, n_frames)
    return [int(i) for i in np.linspace(0, n_frames - 1, count).round()] if count else []


@torch.no_grad()
def evaluate_frames(model: NeuralParts, dataset: EvaluationFrames, cfg: EvalConfig, device: torch.device,
                    max_frames: int = 0, progress: bool = True, num_workers: int = 0,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
    """Yield one record per frame: sequence, frame, and METRIC_NAMES. The model is put in eval mode.

    shard (rank, world_size): evaluate only positions i of `selected_frames` with i % world_size == rank.
    """
    if cfg.n_sphere_vertices < 1:
        raise UserError(f"eval.n_sphere_vertices={cfg.n_sphere_vertices} must be >= 1")
    model.eval()
    rank, world_size = shard
    indices = selected_frames(len(dataset), max_frames)[rank::world_size]
    # A private generator: evaluating must not consume the global RNG (a resumed run would diverge).
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=cfg.batch_size, shuffle=False,
                        num_workers=num_workers, generator=torch.Generator())
    bar = tqdm(total=len(indices), desc="evaluate", unit="frame", disable=not progress, leave=False)
    for batch in loader:
        for b in range(len(batch["index"])):
            sequence, frame = dataset.frames[int(batch["index"][b])]
            item = {key: value[b:b + 1] for key, value in batch.items()}
            yield {"sequence": sequence, "frame": frame, **_frame_metrics(model, item, sequence, frame, cfg, device)}
            bar.update(1)
    bar.close()


def evaluate_distributed(model: NeuralParts, dataset: EvaluationFrames, cfg: EvalConfig, device: torch.device,
                         max_frames: int, dist: Distributed) -> list[dict] | None:
    """Every rank evaluates its shard of the frames; rank 0 returns all records in `selected_frames` order, the
    other ranks None. No rank waits in a collective while another evaluates more than one frame more than it.
    A plain run (world size 1) is `evaluate_frames` alone."""
    records = list(evaluate_frames(model, dataset, cfg, device, max_frames, progress=dist.is_main,
                                   shard=(dist.rank, dist.world_size)))
    if dist.world_size == 1:
        return records
    shards = [None] * dist.world_size if dist.is_main else None
    torch.distributed.gather_object(records, shards, dst=0)
    if not dist.is_main:
        return None
    n_frames = sum(len(shard) for shard in shards)
    return [shards[i % dist.world_size][i // dist.world_size] for i in range(n_frames)]


def _frame_metrics(model: NeuralParts, item: dict, sequence: str, frame: int, cfg: EvalConfig,
                   device: torch.device) -> dict:
    """METRIC_NAMES of one frame; item holds its EvaluationFrames tensors with a leading batch axis of 1."""
    C = model.conditioning(item["image"].to(device))  # (1, M, 512)
    # model.implicit runs in blocks of points: cache-sized on the CPU, a memory bound on a GPU.
    G = model.implicit(item["volume_points"].to(device), C).min(dim=2, keepdim=True).values  # (1, P, 1)
    labels = item["volume_labels"].to(device)  # (1, P)
    iou = weighted_iou(G, labels, torch.ones_like(labels))
    draws, weights = draw_volume_samples(item["volume_labels"][0].numpy() > 0.5, cfg.n_authors_iou_points, True,
                                         frame_rng(cfg.seed, sequence, frame, AUTHORS_DRAW))
    draws = torch.from_numpy(draws).to(device)
    iou_authors = weighted_iou(G[:, draws], labels[:, draws], torch.from_numpy(weights).to(device)[None])
    metrics = {"iou": float(iou), "iou_authors": float(iou_authors)}
    metrics.update(_surface_metrics(model, C, item["surface_points"][0].numpy(), item["surface_normals"][0].numpy(),
                                    cfg, frame_rng(cfg.seed, sequence, frame, UNION_SURFACE)))
    return metrics


def _surface_metrics(model: NeuralParts, C: torch.Tensor, target_points: np.ndarray, target_normals: np.ndarray,
                     cfg: EvalConfig, rng: np.random.Generator) -> dict:
    meshes = primitive_meshes(model, C, cfg.n_sphere_vertices)

    def implicit(points: np.ndarray) -> np.ndarray:  # (P, 3) -> (P, M)
        query = torch.as_tensor(points, dtype=torch.float32, device=C.device)[None]
        return model.implicit(query, C)[0].cpu().numpy()

    points, normals = sample_union_surface(meshes, implicit, cfg.n_chamfer_points, rng)
    metrics = chamfer_metrics(points, normals, target_points, target_normals)
    return {name: float(metrics[name]) for name in ("chamfer_l1", "chamfer_l2", "normal_consistency")}


def summarise(records: list[dict]) -> dict:
    """Mean of every metric over the records, plus n_frames."""
    summary = {name: float(np.mean([r[name] for r in records])) if records else float("nan") for name in METRIC_NAMES}
    summary["n_frames"] = len(records)
    return summary
