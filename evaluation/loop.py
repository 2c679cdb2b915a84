"""Evaluate a model on preprocessed frames: the authors' protocol (scripts/evaluate.py), batched.

Per frame:
- IoU: plain G = min_m g_m at the frame's balanced volume draw (deterministic per frame), weighted by the
  importance weights; predicted inside where G <= 0.
- Chamfer-L1 / L2 and normal consistency: `cfg.n_chamfer_points` points sampled on the union surface of the
  predicted primitives (each primitive a UV sphere of >= `cfg.n_sphere_vertices` vertices pushed through phi;
  points inside another primitive dropped) against all stored surface samples of the frame.
"""
from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.errors import UserError
from config import DataConfig, EvalConfig
from data.dataset import FrameDataset
from evaluation.metrics import chamfer_metrics, sample_union_surface, weighted_iou
from models.meshes import primitive_meshes
from models.neural_parts import NeuralParts

METRIC_NAMES = ("iou", "chamfer_l1", "chamfer_l2", "normal_consistency")


def evaluation_dataset(root: str, split_file: str, splits: tuple[str, ...], data_cfg: DataConfig) -> FrameDataset:
    """A dataset whose items carry every stored surface sample (the Chamfer target), not a window, and whose
    volume draws are the authors' balanced ones (no near-surface stratum: that is a training-time choice)."""
    cfg = copy.deepcopy(data_cfg)
    cfg.n_surface_points = cfg.n_stored_points
    cfg.near_surface_share = 0.0
    return FrameDataset(root, split_file, splits, cfg)


@torch.no_grad()
def evaluate_frames(model: NeuralParts, dataset: FrameDataset, cfg: EvalConfig, device: torch.device,
                    max_frames: int = 0, progress: bool = True, num_workers: int = 0) -> Iterator[dict]:
    """Yield one record per frame: sequence, frame, and METRIC_NAMES. The model is put in eval mode."""
    if cfg.n_sphere_vertices < 1:
        raise UserError(f"eval.n_sphere_vertices={cfg.n_sphere_vertices} must be >= 1")
    model.eval()
    n_frames = len(dataset) if max_frames <= 0 else min(max_frames, len(dataset))
    indices = np.linspace(0, len(dataset) - 1, n_frames).round().astype(int) if n_frames else []
    subset = torch.utils.data.Subset(dataset, list(indices))
    # A private generator: evaluating must not consume the global RNG (a resumed run would diverge).
    loader = DataLoader(subset, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator())
    rng = np.random.default_rng(cfg.seed)
    bar = tqdm(total=n_frames, desc="evaluate", unit="frame", disable=not progress, leave=False)
    for batch in loader:
        images = batch["image"].to(device)
        C = model.conditioning(images)  # (B, M, 512)
        g = model.implicit(batch["volume_points"].to(device), C)  # (B, Nv, M)
        ious = weighted_iou(g, batch["volume_labels"].to(device), batch["volume_weights"].to(device))
        for b in range(images.shape[0]):
            sequence, frame = dataset.frames[int(batch["index"][b])]
            record = {"sequence": sequence, "frame": frame, "iou": float(ious[b])}
            record.update(_surface_metrics(model, C[b:b + 1], batch["surface_points"][b].numpy(),
                                           batch["surface_normals"][b].numpy(), cfg, rng))
            bar.update(1)
            yield record
    bar.close()


def _surface_metrics(model: NeuralParts, C: torch.Tensor, target_points: np.ndarray, target_normals: np.ndarray,
                     cfg: EvalConfig, rng: np.random.Generator) -> dict:
    meshes = primitive_meshes(model, C, cfg.n_sphere_vertices)

    def implicit(points: np.ndarray) -> np.ndarray:  # (P, 3) -> (P, M)
        query = torch.as_tensor(points, dtype=torch.float32, device=C.device)[None]
        return model.implicit(query, C)[0].cpu().numpy()

    points, normals = sample_union_surface(meshes, implicit, cfg.n_chamfer_points, rng)
    metrics = chamfer_metrics(points, normals, target_points, target_normals)
    return {name: float(metrics[name]) for name in METRIC_NAMES[1:]}


def summarise(records: list[dict]) -> dict:
    """Mean of every metric over the records, plus n_frames."""
    summary = {name: float(np.mean([r[name] for r in records])) if records else float("nan") for name in METRIC_NAMES}
    summary["n_frames"] = len(records)
    return summary
