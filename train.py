"""Train Neural Parts on preprocessed D-FAUST frames.

    python3 train.py [--preset demo] [--set train.lr=1e-4 ...] [--data-dir DIR] [--split-file CSV]
                     [--output-dir DIR] [--resume CHECKPOINT | --overwrite]
    python3 train.py --config RUN_DIR/run.json [--set ...] --output-dir NEW_DIR     # replay a recorded run
    torchrun --nproc_per_node=K train.py ...        # DistributedDataParallel, K processes

A run directory that already holds a run is never written over: continue it with --resume, or replace it with
--overwrite.

The run directory gets run.json (resolved config, git commit, command), log.csv, and three checkpoints written
atomically: model.pth (latest), best_model.pth (best validation IoU), best_chamfer_model.pth (best validation
Chamfer-L1). Optimisation follows the authors: RAdam, gradient clipping at 1.0 after every backward, an optimizer
step every `train.aggregate` batches (train.steps is a multiple of it).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import pickle
import socket
import sys
import time
import urllib.error
import warnings

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import config as config_module
from config import Config, TrainConfig
from data.dataset import FrameDataset
from losses import total_loss
from evaluation.metrics import weighted_iou
from losses.targets import Targets
from models.feature_extractor import MIN_IMAGE_SIDE, ImageEncoder
from models.neural_parts import NeuralParts
from models.placement import cluster_placement
from checkpoint import (CHECKPOINT_VERSION, checkpoint_config, load_checkpoint, remove_stale_temporaries,
                              restore_state, save_checkpoint)
from common.atomic import write_text_atomic
from common.errors import UserError, run_main
from evaluation.loop import evaluate_distributed, evaluation_dataset, summarise
from common.runtime import Distributed, git_commit, init_distributed, select_device, set_threads
from utils.training_log import TrainingLog

TERMS = ("reconstruction", "occupancy", "normal", "coverage", "overlap")
OPTIMIZERS = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam}
PLACEMENT_FRAMES, PLACEMENT_POINTS_PER_FRAME = 40, 1000  # body points clustered for model.init_placement
RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"  # torchvision IMAGENET1K_V1
DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: without a network "auto" gives up fast instead of hanging
RUN_FILES = ("run.json", "log.csv", "model.pth", "best_model.pth", "best_chamfer_model.pth")  # what makes a run


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    config_module.add_config_arguments(parser)
    parser.add_argument("--data-dir", help="preprocessed frames (default: data.preprocessed_dir)")
    parser.add_argument("--split-file", help="split CSV (default: data.split_file)")
    parser.add_argument("--output-dir", help="run directory (default: runs/train, or the resumed checkpoint's)")
    parser.add_argument("--config", metavar="RUN_JSON", help="replay a recorded run: its run.json's config, then "
                                                             "--set (not combinable with --preset or --resume)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its model.pth")
    run.add_argument("--overwrite", action="store_true", help="replace the run already in --output-dir")
    return parser.parse_args(argv)


def load_imagenet_weights(encoder: ImageEncoder, mode: str, url: str = RESNET18_IMAGENET_URL) -> str:
    """Load torchvision's ImageNet ResNet-18 into `encoder` as `model.pretrained` asks; say what happened.

    torch.hub's loader takes the file from its cache (torch.hub.get_dir()/checkpoints) or downloads it there,
    checking the SHA-256 prefix in the file name. "true" requires the weights (UserError without them), "false"
    never looks, "auto" warns once and continues from random initialisation when they cannot be had (the authors
    start from ImageNet weights; a random start trains, but worse).
    """
    if mode == "false":
        return "not used (model.pretrained=false)"
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True,
                                                   weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, http.client.HTTPException, urllib.error.URLError) as error:
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        advice = (f"delete {cached} and retry" if os.path.exists(cached)
                  else f"download {url} to {cached}")
        if mode == "true":
            raise UserError(f"model.pretrained=true but the ImageNet ResNet-18 weights are unavailable ({detail}); "
                            f"{advice}, or set model.pretrained=auto") from None
        warnings.warn(f"ImageNet ResNet-18 weights unavailable ({detail}): continuing from random initialisation; "
                      f"to use them, {advice}", stacklevel=2)
        return f"not found, random initialisation ({advice} to use them)"
    finally:
        socket.setdefaulttimeout(previous_timeout)
    encoder.load_imagenet_state(state)
    return f"ImageNet ({cached})"


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """cfg.optimizer over all parameters. RAdam's variance rectification scales its first steps down (by 0.43 at
    step 400 and 0.77 at step 1,600 with beta2 = 0.999), a built-in warm-up that Adam lacks."""
    # foreach: one multi-tensor kernel per operation instead of a loop over ~150 parameter tensors (the same
    # update; on the CPU 1.5x faster, 0.11 -> 0.07 s per demo step). CUDA already defaults to it.
    return OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The lr of the optimizer step taken after batch `step` (1-based): cfg.lr, or with cfg.cosine_decay
    cfg.lr * (1 + cos(pi * (step - 1) / cfg.steps)) / 2, from cfg.lr at the first batch towards 0 at the last.
    A function of the step alone, so a resumed run continues the schedule exactly."""
    if not cfg.cosine_decay:
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / cfg.steps))


class StepBatchSampler:
    """For each batch from `start` to `steps`: this rank's list of (frame index, draw seed) keys.

    Frames are visited in a fresh seeded permutation per epoch; batch `step` of rank `rank` takes positions
    (step * world_size + rank) * B + j. Everything is a function of (seed, step), so a resumed run draws
    exactly what the uninterrupted run would have.
    """

    def __init__(self, n_frames: int, batch_size: int, start: int, steps: int, seed: int, dist: Distributed):
        self.n_frames, self.batch_size, self.start, self.steps, self.seed = n_frames, batch_size, start, steps, seed
        self.dist = dist
        self._epoch, self._permutation = -1, None

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield [self._key(step, j) for j in range(self.batch_size)]

    def _key(self, step: int, j: int) -> tuple[int, int]:
        position = (step * self.dist.world_size + self.dist.rank) * self.batch_size + j
        epoch, offset = divmod(position, self.n_frames)
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.n_frames)
        draw_seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
        return int(self._permutation[offset]), draw_seed


def main(argv=None) -> int:
    args = parse_arguments(argv)
    resumed = load_checkpoint(args.resume, resume=True) if args.resume else None
    cfg = _resolve_config(args, resumed)
    run_dir = args.output_dir or (os.path.dirname(os.path.abspath(args.resume)) if args.resume else "runs/train")
    dist = init_distributed(cfg.train.device)
    if resumed is None and dist.is_main:
        _claim_run_dir(run_dir, args.overwrite)
    device = select_device(cfg.train.device, dist.local_rank)
    set_threads(cfg.train.threads)

    train_set = FrameDataset(cfg.data.preprocessed_dir, cfg.data.split_file, cfg.data.train_splits, cfg.data,
                             seed=cfg.train.seed)
    val_set = evaluation_dataset(cfg.data.preprocessed_dir, cfg.data.split_file, cfg.data.val_splits, cfg.data)

    torch.manual_seed(cfg.train.seed)
    model = NeuralParts(cfg.model)
    if resumed is None:
        imagenet = load_imagenet_weights(model.encoder, cfg.model.pretrained)
    else:
        imagenet = f"from the checkpoint {args.resume}"
    if cfg.model.init_placement and resumed is None:
        inside, surface = train_set.body_points(PLACEMENT_FRAMES, PLACEMENT_POINTS_PER_FRAME, cfg.train.seed)
        model.inn.set_placement(*cluster_placement(inside, surface, cfg.model.n_primitives,
                                                   cfg.model.sphere_radius, cfg.train.seed))
    model = model.to(device)
    optimizer = make_optimizer(model, cfg.train)
    start_step, best = 0, {"val_iou": -math.inf, "val_chamfer_l1": math.inf}
    if resumed is not None:
        restore_state(model, resumed["model"], args.resume)
        restore_state(optimizer, resumed["optimizer"], args.resume)
        start_step, best = resumed["step"], dict(resumed["best"])
        _restore_rng(resumed["rng"])
    trained = DistributedDataParallel(model) if dist.world_size > 1 else model

    sampler = StepBatchSampler(len(train_set), cfg.train.batch_size, start_step, cfg.train.steps, cfg.train.seed, dist)
    # A private generator keeps the DataLoader from consuming the global RNG (exact resume).
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        generator=torch.Generator().manual_seed(cfg.train.seed),
                        persistent_workers=False, pin_memory=device.type == "cuda")
    log = None
    if dist.is_main:
        with _writing(run_dir):
            os.makedirs(run_dir, exist_ok=True)
            remove_stale_temporaries(run_dir)  # left by a run killed while writing a checkpoint
            _write_run_info(run_dir, cfg)
            log = TrainingLog(run_dir, resume_step=start_step if resumed is not None else None)
        print(_setup_summary(cfg, device, dist, train_set, val_set, run_dir, imagenet, start_step), flush=True)

    step, nonfinite_in_row, window = start_step, 0, _Window()
    last_val_iou = best["val_iou"] if math.isfinite(best["val_iou"]) else float("nan")
    bar = tqdm(total=cfg.train.steps, initial=start_step, desc="train", unit="step", disable=not dist.is_main)
    model.train()
    for batch in loader:
        step_started = time.perf_counter()
        images, targets = _to_device(batch, device)
        prediction = trained(images, targets.volume_points, targets.surface_points)
        loss, terms = total_loss(prediction, targets, cfg.loss)
        finite = _accumulate(loss, list(model.parameters()), cfg.train.clip_grad_norm, dist)
        step += 1
        if step % cfg.train.aggregate == 0:  # config.validate: train.steps is a multiple of aggregate
            if any(p.grad is not None for p in model.parameters()):  # some batch of the group was finite
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(cfg.train, step)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if finite:
            nonfinite_in_row = 0
            with torch.no_grad():
                train_iou = weighted_iou(prediction.phi_volume, targets.volume_labels, targets.volume_weights)
            window.add(loss.item(), {k: v.item() for k, v in terms.items()}, train_iou.mean().item(),
                       time.perf_counter() - step_started)  # item(): float() of a tensor with grad warns
        else:
            nonfinite_in_row += 1
            warnings.warn(f"step {step}: non-finite loss or gradient, step skipped "
                          f"({nonfinite_in_row} in a row)", stacklevel=1)
            if nonfinite_in_row >= cfg.train.max_nonfinite_steps:
                raise UserError(f"{nonfinite_in_row} non-finite steps in a row at step {step}; lower train.lr or "
                                f"check the data; the last good checkpoint is in {run_dir}")
        bar.update(1)
        val_records = None
        if step % cfg.train.val_every == 0 or step == cfg.train.steps:
            # Every rank scores its share of the frames (rank 0 gets all records), so none waits in a collective
            # while another validates.
            val_records = evaluate_distributed(model, val_set, cfg.eval, device, cfg.train.val_max_frames, dist)
            model.train()
        if not dist.is_main:
            continue

        row = None
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            row = window.flush(step)
        if val_records is not None:
            summary = summarise(val_records)
            last_val_iou = summary["iou"]
            row = row or {"step": step}
            row.update(val_iou=summary["iou"], val_chamfer_l1=summary["chamfer_l1"])
            save_best_checkpoints(run_dir, model, step, best, summary, cfg)
        if row is not None:
            with _writing(run_dir):
                log.write(row)
            bar.set_postfix(loss=row.get("loss", float("nan")), val_iou=last_val_iou)
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:  # both close a group
            _save(os.path.join(run_dir, "model.pth"), model, _checkpoint(model, optimizer, step, best, cfg))
    bar.close()
    if dist.is_main:
        print(f"trained {step} steps; best val IoU {best['val_iou']:.4f}, best val Chamfer-L1 "
              f"{best['val_chamfer_l1']:.4f}; checkpoints in {run_dir}")
    return 0


class _Window:
    """Running means of the loss terms between two log rows."""

    def __init__(self):
        self.rows = []

    def add(self, loss: float, terms: dict, train_iou: float, seconds: float) -> None:
        self.rows.append({"loss": loss, **terms, "train_iou": train_iou, "seconds_per_step": seconds})

    def flush(self, step: int) -> dict:
        row = {"step": step}
        if self.rows:
            row.update({key: float(np.mean([r[key] for r in self.rows])) for key in self.rows[0]})
        self.rows = []
        return row


def _resolve_config(args: argparse.Namespace, resumed: dict | None) -> Config:
    """The run's config: the resumed checkpoint's, a recorded run.json's, or the preset's; then --set, checked."""
    if args.config and (args.preset or resumed is not None):
        raise UserError("--config replays a recorded run's config: drop --preset/--resume (use --set to change it)")
    if resumed is not None:
        if args.preset:
            raise UserError("--resume continues the checkpoint's config: drop --preset (use --set to change it)")
        cfg = config_module.validate(config_module.apply_overrides(checkpoint_config(resumed, args.resume),
                                                                   config_module.parse_overrides(args.overrides)))
    elif args.config:
        cfg = config_module.build_config("dfaust", args.overrides, base=_recorded_config(args.config))
    else:
        cfg = config_module.config_from_arguments(args)
    if args.data_dir:
        cfg.data.preprocessed_dir = args.data_dir
    if args.split_file:
        cfg.data.split_file = args.split_file
    size = cfg.data.network_image_size
    if size != 0 and size < MIN_IMAGE_SIDE:
        raise UserError(f"data.network_image_size={size} is too small for the ResNet-18 encoder; use 0 (the rendered "
                        f"size) or at least {MIN_IMAGE_SIDE}")
    return cfg


def _recorded_config(path: str) -> Config:
    """The config of a run.json written by an earlier run."""
    try:
        with open(path) as file:
            recorded = json.load(file)["config"]
    except OSError as error:
        raise UserError(f"cannot read --config {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError):
        raise UserError(f"--config {path} is not a run.json written by train.py (no 'config' entry)") from None
    try:
        return config_module.from_dict(recorded)
    except UserError as error:
        raise UserError(f"--config {path}: {error}") from None


def _claim_run_dir(run_dir: str, overwrite: bool) -> None:
    """Refuse a directory that holds a run unless --overwrite, which removes that run's files (nothing else)."""
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
    if existing and not overwrite:
        raise UserError(f"{run_dir} already holds a run ({', '.join(existing)}); continue it with --resume "
                        f"{os.path.join(run_dir, 'model.pth')}, replace it with --overwrite, or choose another "
                        f"--output-dir")
    for name in existing:
        os.remove(os.path.join(run_dir, name))


def _setup_summary(cfg: Config, device: torch.device, dist: Distributed, train_set, val_set, run_dir: str,
                   imagenet: str, start_step: int) -> str:
    """What the run is about to do, printed once before the first progress bar."""
    threads = torch.get_num_threads()
    started = f"resumed at step {start_step:,}" if start_step else "from scratch"
    return "\n".join([
        f"device      {device} ({threads} CPU threads{f', {dist.world_size} processes' if dist.world_size > 1 else ''})",
        f"frames      train {len(train_set):,} ({'+'.join(cfg.data.train_splits)}), "
        f"validation {len(val_set):,} ({'+'.join(cfg.data.val_splits)})"
        + (f", scored on {min(cfg.train.val_max_frames, len(val_set)):,}" if cfg.train.val_max_frames else ""),
        f"model       {cfg.model.n_primitives} primitives, {cfg.model.n_coupling_layers} coupling layers, "
        f"hidden {cfg.model.hidden_size}, {'bf16' if cfg.model.bf16 else 'fp32'} INN",
        f"encoder     {imagenet}",
        f"schedule    {cfg.train.steps:,} batches of {cfg.train.batch_size} ({cfg.train.optimizer}, lr {cfg.train.lr:g}"
        f"{', cosine decay' if cfg.train.cosine_decay else ''}), {started}",
        f"run dir     {run_dir}",
    ])


@contextlib.contextmanager
def _writing(run_dir: str):
    """Turn a failed write into the run directory (read-only, full disk) into a one-line UserError."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot write to run directory {run_dir}: {error.strerror or error}; free disk space or "
                        f"choose another --output-dir (checkpoints written so far are intact)") from None


def _to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, Targets]:
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}
    targets = Targets(moved["volume_points"], moved["volume_labels"], moved["volume_weights"],
                      moved["surface_points"].requires_grad_(True), moved["surface_normals"])
    return moved["image"], targets


def _accumulate(loss: torch.Tensor, params: list[torch.nn.Parameter], max_norm: float, dist: Distributed) -> bool:
    """Add the gradients of `loss` to those of the earlier batches of this accumulation group, then clip the sum at
    `max_norm`, as the authors do after every backward. True if the loss and the sum are finite on every rank;
    otherwise the parameters keep exactly the group's earlier gradients (None at a group's start).

    The new gradients go into fresh tensors and are added to the earlier ones only afterwards, so a non-finite batch
    (and the clipping, which scales in place) never touches the earlier ones.
    """
    if not _all_ranks_finite(loss, dist):
        return False
    earlier = [p.grad for p in params]
    for p in params:
        p.grad = None
    loss.backward()
    for p, grad in zip(params, earlier):
        if grad is not None:
            p.grad = grad.clone() if p.grad is None else p.grad.add_(grad)
    if _all_ranks_finite(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True), dist):
        return True
    for p, grad in zip(params, earlier):
        p.grad = grad
    return False


def _all_ranks_finite(value: torch.Tensor, dist: Distributed) -> bool:
    finite = torch.isfinite(value.detach()).all().float().reshape(1)
    if dist.world_size > 1:
        finite = finite.to("cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _checkpoint(model: NeuralParts, optimizer: torch.optim.Optimizer | None, step: int, best: dict,
                cfg: Config) -> dict:
    """The checkpoint payload (checkpoint.py); resumable (optimizer and RNG states) when given the optimizer."""
    payload = {"format_version": CHECKPOINT_VERSION, "model": model.state_dict(), "step": step, "best": dict(best),
               "config": config_module.to_dict(cfg), "git_commit": git_commit()}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
        payload["rng"] = {"torch": torch.get_rng_state(),
                          "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    return payload


def save_best_checkpoints(run_dir: str, model: NeuralParts, step: int, best: dict, summary: dict,
                          cfg: Config) -> None:
    """Fold a validation summary into `best` (val_iou, val_chamfer_l1), then write best_model.pth if the IoU
    improved and best_chamfer_model.pth if the Chamfer-L1 did (weights only). Both files record both best values
    as they stand after this validation."""
    improved_iou, improved_chamfer = summary["iou"] > best["val_iou"], summary["chamfer_l1"] < best["val_chamfer_l1"]
    if improved_iou:
        best["val_iou"] = summary["iou"]
    if improved_chamfer:
        best["val_chamfer_l1"] = summary["chamfer_l1"]
    payload = _checkpoint(model, None, step, best, cfg)
    if improved_iou:
        _save(os.path.join(run_dir, "best_model.pth"), model, payload)
    if improved_chamfer:
        _save(os.path.join(run_dir, "best_chamfer_model.pth"), model, payload)


def _save(path: str, model: NeuralParts, payload: dict) -> None:
    """Write a checkpoint, refusing to store a model with non-finite weights."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UserError(f"model weights became non-finite; {path} was not written, the previous one is intact")
    save_checkpoint(path, payload)


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_run_info(run_dir: str, cfg: Config) -> None:
    """run.json: the resolved config (replayable with --config), the code's commit and the command line."""
    info = {"config": config_module.to_dict(cfg), "git_commit": git_commit(), "command": sys.argv}
    write_text_atomic(os.path.join(run_dir, "run.json"), json.dumps(info, indent=2))


if __name__ == "__main__":
    run_main(main)
