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
    pretrained: str = "auto"  # ImageNet ResNet-18 weights: auto | true | false
    freeze_bn: bool = True  # BatchNorm uses running statistics; affine weights still train
    n_coupling_layers: int = 4
    hidden_size: int = 256  # width of the s and t nets
    proj_dims: int = 128  # output size of the shared projection layer p_theta
    s_bound: float = 10.0  # Hardtanh bound on the coupling log-scale s
    sphere_radius: float = 0.25  # r
    n_sphere_points: int = 200  # S primitive surface points per primitive and item
    euclidean_phi_volume: bool = True  # volume losses see sign(g_m) * distance to the S primitive points
    init_placement: bool = False  # start primitives at k-means clusters of training bodies; the authors: at random
    bf16: bool = False  # autocast the INN in bfloat16 during training (evaluation stays fp32)
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
    optimizer: str = "radam"  # radam (the authors' D-FAUST config) | adam (their other configs, the seed project)
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
    device: str = "auto"  # auto | cpu | cuda
    mixed_precision: bool = False  # bf16 autocast on CUDA
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
    "demo": {  # the embedded synthetic dataset on 2 CPU cores in about 15 minutes (README lists each change)
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
        for name, value in fields.items():
            _assign(cfg, f"{group}.{name}", value)
    return cfg


def apply_overrides(cfg: Config, overrides: dict[str, str]) -> Config:
    """Apply `{"group.field": "text"}` overrides in place, parsing text by the field's type."""
    for key, text in overrides.items():
        _assign(cfg, key, _parse(key, text, _field_type(cfg, key)))
    return cfg


def build_config(preset: str = "dfaust", overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the preset, then `key=value` overrides (later wins)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = apply_overrides(Config(), PRESETS[preset])
    parsed = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r} is not of the form group.field=value")
        parsed[key.strip()] = text.strip()
    return apply_overrides(cfg, parsed)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The --preset / --set flags every entry point shares."""
    parser.add_argument("--preset", default="dfaust", help=f"one of {', '.join(PRESETS)} (default: dfaust)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")


def config_from_arguments(args: argparse.Namespace) -> Config:
    return build_config(args.preset, args.overrides)


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
