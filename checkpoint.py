"""Self-describing checkpoints: written atomically, loaded safely, rebuilt without editing anything.

A checkpoint is a dict with:
    format_version  int, CHECKPOINT_VERSION
    model           the model's state_dict (coupling masks included)
    step            batches already trained
    best            {"val_iou": float, "val_chamfer_l1": float}
    config          config.to_dict of the resolved config
    git_commit      the commit the run started from ("unknown" outside git)
and, in the resumable model.pth only (the best_*.pth of a run hold weights only, a third of the size):
    optimizer       the optimizer's state_dict
    rng             {"torch": ByteTensor, "cuda": list[ByteTensor]}
Loading first checks the CRC-32 that the zip archive stores for every record (torch.load does not, so a flipped
byte inside a weight would load silently), then uses torch.load(weights_only=True): no pickled code can run.
"""
from __future__ import annotations

import os
import pickle
import zipfile

import torch

import config as config_module
from models.neural_parts import NeuralParts
from common.atomic import remove_temporaries, write_atomic
from common.errors import UserError

CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("model", "step", "best", "config")
RESUME_KEYS = ("optimizer", "rng")  # present in resumable checkpoints only


def save_checkpoint(path: str, payload: dict) -> None:
    """Write `payload` to `path` atomically (common/atomic.py): a crash at any moment leaves either the previous
    file or the new one, never a partial file; a failed write is a one-line UserError."""
    def write(temporary: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(temporary, "wb") as file:
            torch.save(payload, file)

    write_atomic(path, write)


def remove_stale_temporaries(directory: str) -> None:
    """Delete temp files that a killed `save_checkpoint` left in `directory` (call before writing there)."""
    remove_temporaries(directory, "*.pth")


def load_checkpoint(path: str, map_location: str | torch.device = "cpu", resume: bool = False) -> dict:
    """Load and validate a checkpoint written by `save_checkpoint`; any problem is a one-line UserError.

    With `resume`, the checkpoint must also hold the optimizer and RNG states (a run's model.pth).
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist; pass the path of a .pth file written by train.py")
    _verify_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(f"checkpoint {path} holds objects that are not plain tensors and was refused for safety "
                        f"({str(error).splitlines()[0][:120]}); only load checkpoints written by train.py") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise _corrupt(path, str(error).splitlines()[0][:120]) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise UserError(f"checkpoint {path} was not written by this project's train.py")
    if payload["format_version"] != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has format version {payload['format_version']}, this code reads "
                        f"version {CHECKPOINT_VERSION}; use the project version that wrote it")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by this project's train.py")
    if resume and any(key not in payload for key in RESUME_KEYS):
        raise UserError(f"checkpoint {path} holds weights only and cannot be resumed; resume from the run's "
                        f"model.pth (best_*.pth are for test.py and export)")
    return payload


def checkpoint_config(payload: dict, path: str) -> config_module.Config:
    """The resolved config a checkpoint carries; one this code cannot read is a UserError naming the checkpoint."""
    try:
        return config_module.from_dict(payload["config"])
    except UserError as error:
        raise UserError(f"checkpoint {path} has a config this code cannot read ({error}); "
                        f"use the project version that wrote it") from None


def restore_state(module: torch.nn.Module | torch.optim.Optimizer, state: dict, path: str) -> None:
    """module.load_state_dict(state) for a model or an optimizer; a mismatch is a UserError naming `path`."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
        raise UserError(f"checkpoint {path} does not match this code's {type(module).__name__} ({detail[:120]}); "
                        f"use the project version that wrote it") from None


def load_model(checkpoint_path: str, device: torch.device) -> tuple[NeuralParts, config_module.Config]:
    """Rebuild the exact model of a checkpoint (any number of primitives) in eval mode."""
    payload = load_checkpoint(checkpoint_path)
    cfg = checkpoint_config(payload, checkpoint_path)
    model = NeuralParts(cfg.model)
    restore_state(model, payload["model"], checkpoint_path)
    return model.to(device).eval(), cfg


def _verify_archive(path: str) -> None:
    """Check every record of the checkpoint's zip archive against its stored CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # name of the first record whose bytes do not match, or None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise _corrupt(path, str(error).splitlines()[0][:120]) from None
    if damaged is not None:
        raise _corrupt(path, f"checksum mismatch in {damaged}")


def _corrupt(path: str, detail: str) -> UserError:
    return UserError(f"checkpoint {path} is truncated or corrupt ({detail}); "
                     f"use an earlier checkpoint of the run (best_model.pth evaluates; only model.pth resumes)")
