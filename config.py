"""The single source of defaults for every entry point.

Defaults reproduce the authors' D-FAUST configuration (`dfaust_6.yaml` of paschalidoud/neural_parts).
Presets change a few fields for a purpose (``demo``: the embedded synthetic dataset on 2 CPU cores) and
are listed in ``PRESETS``. Every entry point accepts the same strict overrides::

    python3 train.py --preset demo --set train.lr=1e-4 --set model.n_primitives=5

An unknown key or a value of the wrong type raises :class:`common.errors.UserError` with one line.
Modules receive their sub-config (``cfg.model``, ``cfg.loss`` ...) as an argument; nothing reads a global.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

from common.errors import UserError


@dataclass
class DataConfig:
    dataset_dir: str = "datasets/dfaust"  # holds registrations_m.hdf5 / registrations_f.hdf5
    preprocessed_dir: str = "datasets/dfaust_preprocessed"  # written by preprocess/preprocess_dfaust.py
    split_file: str = "data/splits/d-faust_splits.csv"  # id,model_id,split (the authors' D-FAUST split)
    drop_first_frames: int = 20  # frames < this index are the calibration pose; both prior codes drop them
    image_size: int = 224  # side of the rendered input images, pixels (preprocessing)
    network_image_size: int = 0  # side the images are resized to for the network; 0 = as rendered
    n_stored_points: int = 100_000  # surface and volume samples stored per frame
    volume_box_min: tuple[float, float, float] = (-0.5, -0.75, -0.5)  # 1x2x1 sampling box, metres
    volume_box_max: tuple[float, float, float] = (0.5, 1.25, 0.5)
    n_volume_points: int = 5000  # volume samples drawn per item
    n_surface_points: int = 1500  # surface window per item
    balanced_sampling: bool = True  # the authors' "equal": half the draws inside, importance-weighted
    near_surface_share: float = 0.0  # share of the outside draws taken near the surface (balanced only); the authors: 0
    near_surface_distance: float = 0.04  # metres from a mesh vertex that count as near the surface
    train_splits: tuple[str, ...] = ("train", "val")  # the authors train on train+val
    val_splits: tuple[str, ...] = ("val",)
    test_splits: tuple[str, ...] = ("test",)
    num_workers: int = 2  # DataLoader worker processes


@dataclass
class ModelConfig:
    n_primitives: int = 6  # M
    feature_size: int = 256  # image feature size; C_m = [image feature, embedding_m]
    embedding_size: int = 256  # learned per-primitive embedding size
    pretrained: Literal["auto", "true", "false"] = "auto"  # ImageNet ResNet-18 weights, loaded by train.py
    freeze_bn: bool = True  # BatchNorm uses running statistics; affine weights still train
    n_coupling_layers: int = 4
    hidden_size: int = 256  # width of the s and t nets and of the sigma, R and t heads
    proj_dims: int = 128  # output size of the shared projection layer p_theta (hidden width: twice that)
    s_bound: float = 10.0  # Hardtanh bound on the coupling log-scale s
    sphere_radius: float = 0.25  # r
    n_sphere_points: int = 200  # S primitive surface points per primitive and item
    euclidean_phi_volume: bool = True  # volume losses see sign(g_m) * distance to the S primitive points
    init_placement: bool = False  # start primitives at k-means clusters of training bodies; the authors: at random
    bf16: bool = False  # autocast the INN in bfloat16 during training, on CPU and CUDA alike (evaluation stays fp32)
    seed: int = 27  # draws the coupling masks


@dataclass
class LossConfig:
    w_reconstruction: float = 0.3
    w_occupancy: float = 1.0
    w_normal: float = 0.01
    w_coverage: float = 0.01
    w_overlap: float = 0.1
    sharpness: float = 250.0  # 1 / tau
    coverage_k: int = 10  # k interior points each primitive must contain
    overlap_lambda: float = 1.95  # lambda
    mask_target_to_primitive: bool = False  # True applies the mask the authors build but never use


@dataclass
class TrainConfig:
    optimizer: Literal["radam", "adam"] = "radam"  # radam: the authors' D-FAUST config; adam: their other configs
    lr: float = 5e-5
    cosine_decay: bool = False  # lr * (1 + cos(pi * (step - 1) / steps)) / 2 per batch step; the authors keep lr constant
    weight_decay: float = 0.0
    batch_size: int = 1
    aggregate: int = 2  # gradient accumulation: optimizer step every `aggregate` batches
    clip_grad_norm: float = 1.0
    steps: int = 750_000  # batches (1,500 epochs x 500 steps in the authors' config)
    val_every: int = 50_000  # batches between validations
    val_max_frames: int = 0  # 0 = the whole validation split
    log_every: int = 50  # batches between CSV log rows
    checkpoint_every: int = 5_000  # batches between writes of model.pth
    max_nonfinite_steps: int = 5  # consecutive non-finite losses before training stops
    seed: int = 27
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch CPU threads, 0 = torch's default


@dataclass
class EvalConfig:
    batch_size: int = 4  # frames read per DataLoader batch; the model scores one frame at a time
    n_authors_iou_points: int = 5000  # balanced draws of the authors' weighted IoU (their n_points_in_mesh)
    n_chamfer_points: int = 10_000  # points sampled on the predicted union surface
    n_sphere_vertices: int = 1000  # minimum UV-sphere vertices per primitive for Chamfer sampling
    n_export_vertices: int = 5000  # minimum UV-sphere vertices per exported primitive mesh
    seed: int = 0  # with (sequence, frame), seeds each frame's draws


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Each preset is a list of overrides applied on top of the defaults, in the same syntax as --set.
PRESETS: dict[str, dict[str, str]] = {
    "dfaust": {},
    # demo: the embedded synthetic dataset on 2 CPU cores in about 15 minutes; docs/experiments.md gives each change
    # and why.
    "demo": {
        "data.dataset_dir": "runs/demo/synthetic",
        "data.preprocessed_dir": "runs/demo/preprocessed",
        "data.split_file": "runs/demo/synthetic/splits.csv",
        "data.network_image_size": "112",
        "data.n_volume_points": "600",
        "data.n_surface_points": "300",
        "data.near_surface_share": "0.5",  # a quarter of all draws in a 4 cm band outside the bodies
        "data.train_splits": "train",
        "data.num_workers": "1",
        "model.n_primitives": "5",
        "model.n_sphere_points": "64",
        "model.hidden_size": "128",
        "model.proj_dims": "64",
        "model.init_placement": "true",
        "model.seed": "1",  # its coupling masks rewrite x, z, x, y; the default draw never rewrites y
        "model.euclidean_phi_volume": "false",
        "model.pretrained": "false",
        "model.freeze_bn": "false",
        "model.bf16": "true",
        "train.lr": "1e-4",
        "train.cosine_decay": "true",
        "train.batch_size": "4",
        "train.aggregate": "1",
        "train.steps": "2000",
        "train.val_every": "2000",  # once, at the end: mid-run 24-frame scores picked worse models
        "train.val_max_frames": "24",
        "train.log_every": "25",
        "train.checkpoint_every": "400",
        "train.threads": "2",
        "eval.n_chamfer_points": "5000",
    },
}


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of the config, for checkpoints and run directories."""
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> Config:
    """Rebuild a Config from `to_dict` output; unknown or mistyped keys raise UserError."""
    cfg = Config()
    for group, fields in values.items():
        if not isinstance(fields, dict):
            raise UserError(f"config group {group!r} is not a mapping of fields")
        for name, value in fields.items():
            _assign(cfg, f"{group}.{name}", value)
    return cfg


def parse_overrides(items: typing.Sequence[str]) -> dict[str, str]:
    """`["group.field=value", ...]` (the --set flags) -> `{"group.field": "value"}`; the only --set parser."""
    parsed = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not of the form group.field=value")
        parsed[key.strip()] = text.strip()
    return parsed


def apply_overrides(cfg: Config, overrides: dict[str, str]) -> Config:
    """Apply `{"group.field": "text"}` overrides in place, parsing text by the field's type."""
    for key, text in overrides.items():
        _assign(cfg, key, text)
    return cfg


def build_config(preset: str = "dfaust", overrides: typing.Sequence[str] = (), base: Config | None = None) -> Config:
    """Defaults (or `base`), then the preset, then `key=value` overrides (later wins); checked by `validate`."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = apply_overrides(base if base is not None else Config(), PRESETS[preset])
    return validate(apply_overrides(cfg, parse_overrides(overrides)))


def validate(cfg: Config) -> Config:
    """Check the ranges no type expresses; the first violation is a UserError naming the field and its value."""
    d, m, l, t, e = cfg.data, cfg.model, cfg.loss, cfg.train, cfg.eval
    checks = [
        ("train.lr", t.lr, t.lr > 0, "must be > 0"),
        ("train.steps", t.steps, t.steps >= 1, "must be >= 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "must be >= 1"),
        ("train.aggregate", t.aggregate, t.aggregate >= 1, "must be >= 1"),
        ("train.steps", t.steps, t.steps % max(t.aggregate, 1) == 0,
         f"must be a multiple of train.aggregate={t.aggregate} (optimizer steps fall every aggregate batches)"),
        ("train.checkpoint_every", t.checkpoint_every, t.checkpoint_every >= 1
         and t.checkpoint_every % max(t.aggregate, 1) == 0, f"must be a positive multiple of train.aggregate={t.aggregate}"),
        ("train.val_every", t.val_every, t.val_every >= 1 and t.val_every % max(t.aggregate, 1) == 0,
         f"must be a positive multiple of train.aggregate={t.aggregate}"),
        ("train.log_every", t.log_every, t.log_every >= 1, "must be >= 1"),
        ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, "must be >= 0"),
        ("train.clip_grad_norm", t.clip_grad_norm, t.clip_grad_norm > 0, "must be > 0"),
        ("train.max_nonfinite_steps", t.max_nonfinite_steps, t.max_nonfinite_steps >= 1, "must be >= 1"),
        ("train.val_max_frames", t.val_max_frames, t.val_max_frames >= 0, "must be >= 0 (0 = all)"),
        ("train.threads", t.threads, t.threads >= 0, "must be >= 0 (0 = torch's default)"),
        ("model.n_primitives", m.n_primitives, m.n_primitives >= 1, "must be >= 1"),
        ("model.n_sphere_points", m.n_sphere_points, m.n_sphere_points >= 1, "must be >= 1"),
        ("model.n_coupling_layers", m.n_coupling_layers, m.n_coupling_layers >= 1, "must be >= 1"),
        ("model.hidden_size", m.hidden_size, m.hidden_size >= 1, "must be >= 1"),
        ("model.proj_dims", m.proj_dims, m.proj_dims >= 1, "must be >= 1"),
        ("model.sphere_radius", m.sphere_radius, m.sphere_radius > 0, "must be > 0"),
        ("model.s_bound", m.s_bound, m.s_bound > 0, "must be > 0"),
        ("data.n_volume_points", d.n_volume_points, 2 <= d.n_volume_points <= d.n_stored_points,
         f"must be in [2, data.n_stored_points={d.n_stored_points}]"),
        ("data.n_surface_points", d.n_surface_points, 1 <= d.n_surface_points <= d.n_stored_points,
         f"must be in [1, data.n_stored_points={d.n_stored_points}]"),
        ("data.near_surface_share", d.near_surface_share, 0 <= d.near_surface_share < 1, "must be in [0, 1)"),
        ("data.near_surface_distance", d.near_surface_distance, d.near_surface_distance > 0, "must be > 0"),
        ("data.drop_first_frames", d.drop_first_frames, d.drop_first_frames >= 0, "must be >= 0"),
        ("data.image_size", d.image_size, d.image_size >= 1, "must be >= 1"),
        ("data.network_image_size", d.network_image_size, d.network_image_size >= 0, "must be >= 0 (0 = as rendered)"),
        ("data.num_workers", d.num_workers, d.num_workers >= 0, "must be >= 0"),
        ("data.volume_box_max", d.volume_box_max, all(lo < hi for lo, hi in zip(d.volume_box_min, d.volume_box_max)),
         f"must exceed data.volume_box_min={d.volume_box_min} on every axis"),
        ("loss.sharpness", l.sharpness, l.sharpness > 0, "must be > 0"),
        ("loss.coverage_k", l.coverage_k, l.coverage_k >= 1, "must be >= 1"),
        ("eval.batch_size", e.batch_size, e.batch_size >= 1, "must be >= 1"),
        ("eval.n_chamfer_points", e.n_chamfer_points, e.n_chamfer_points >= 1, "must be >= 1"),
        ("eval.n_sphere_vertices", e.n_sphere_vertices, e.n_sphere_vertices >= 1, "must be >= 1"),
        ("eval.n_export_vertices", e.n_export_vertices, e.n_export_vertices >= 1, "must be >= 1"),
    ]
    checks += [(f"loss.{name}", getattr(l, name), getattr(l, name) >= 0, "must be >= 0")
               for name in ("w_reconstruction", "w_occupancy", "w_normal", "w_coverage", "w_overlap")]
    checks += [(f"data.{name}", getattr(d, name), len(getattr(d, name)) >= 1, "must name at least one split")
               for name in ("train_splits", "val_splits", "test_splits")]
    for key, value, ok, requirement in checks:
        if not ok:
            raise UserError(f"config key {key!r}={value!r} {requirement}")
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The --preset / --set flags of every entry point that builds a config (train.py, preprocessing)."""
    parser.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default: dfaust)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")


def add_override_argument(parser: argparse.ArgumentParser, allowed: typing.Sequence[str]) -> None:
    """The --set flag of an entry point that reads its config from a checkpoint and honours only `allowed`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override {', '.join(allowed)} (repeatable); the rest comes from the checkpoint")


def config_from_arguments(args: argparse.Namespace) -> Config:
    return build_config(args.preset or "dfaust", args.overrides)


def honoured_overrides(items: typing.Sequence[str], allowed: typing.Sequence[str], program: str) -> dict[str, str]:
    """Parse --set items that an entry point can honour; a key outside `allowed` (a group `eval` or a field
    `train.device`) is a UserError, since the checkpoint fixes the rest."""
    overrides = parse_overrides(items)
    for key in overrides:
        _field_type(Config(), key)  # an unknown key reads as unknown, not as unsupported
        if key not in allowed and key.partition(".")[0] not in allowed:
            raise UserError(f"{program} cannot honour --set {key}: the checkpoint fixes it; {program} accepts "
                            f"{', '.join(allowed)} (retrain with train.py to change {key})")
    return overrides


def _field_type(cfg: Config, key: str):
    group_name, _, name = key.partition(".")
    group = getattr(cfg, group_name, None)
    if not dataclasses.is_dataclass(group) or not name:
        raise UserError(f"unknown config key {key!r}; groups are: {', '.join(f.name for f in dataclasses.fields(cfg))}")
    hints = typing.get_type_hints(type(group))
    if name not in hints:
        raise UserError(f"unknown config key {key!r}; {group_name} has: {', '.join(hints)}")
    return hints[name]


def _parse(key: str, text, kind):
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise UserError(f"config key {key!r}: {text!r} is not one of {', '.join(choices)}")
        return text
    if not isinstance(text, str):
        return text
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind in (int, float, str):
            return kind(text)
        if typing.get_origin(kind) is tuple:
            items = [t.strip() for t in text.strip("()[] ").split(",") if t.strip()]
            args = typing.get_args(kind)
            item_type = args[0]
            values = tuple(item_type(t) for t in items)
            if args[-1] is not Ellipsis and len(values) != len(args):
                raise ValueError
            return values
    except ValueError:
        pass
    raise UserError(f"config key {key!r}: cannot read {text!r} as {_type_name(kind)}")


def _assign(cfg: Config, key: str, value) -> None:
    kind = _field_type(cfg, key)
    value = _parse(key, value, kind)
    if typing.get_origin(kind) is Literal:
        expected = str
    else:
        if typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        expected = typing.get_origin(kind) or kind
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UserError(f"config key {key!r}: expected {_type_name(kind)}, got {value!r}")
    group_name, _, name = key.partition(".")
    setattr(getattr(cfg, group_name), name, value)


def _type_name(kind) -> str:
    return getattr(kind, "__name__", str(kind))
