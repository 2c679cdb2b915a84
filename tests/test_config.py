"""The strict override mechanism shared by every entry point."""
import subprocess
import sys

import pytest

import config
from common.errors import UserError


def test_defaults_are_the_authors_dfaust_configuration():
    cfg = config.Config()
    assert (cfg.model.n_primitives, cfg.model.sphere_radius, cfg.model.n_sphere_points) == (6, 0.25, 200)
    assert (cfg.data.n_volume_points, cfg.data.n_surface_points) == (5000, 1500)
    assert (cfg.loss.w_reconstruction, cfg.loss.w_occupancy, cfg.loss.w_normal,
            cfg.loss.w_coverage, cfg.loss.w_overlap) == (0.3, 1.0, 0.01, 0.01, 0.1)
    assert (cfg.loss.sharpness, cfg.loss.coverage_k, cfg.loss.overlap_lambda) == (250.0, 10, 1.95)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.aggregate, cfg.train.clip_grad_norm) == (5e-5, 1, 2, 1.0)
    assert cfg.data.train_splits == ("train", "val")


def test_overrides_are_parsed_by_type():
    cfg = config.build_config("dfaust", ["train.lr=1e-4", "model.n_primitives=5", "model.bf16=true",
                                         "data.train_splits=train", "data.volume_box_min=-1,-1,-1"])
    assert cfg.train.lr == 1e-4 and cfg.model.n_primitives == 5 and cfg.model.bf16 is True
    assert cfg.data.train_splits == ("train",) and cfg.data.volume_box_min == (-1.0, -1.0, -1.0)


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "unknown config key 'train.nope'"),
    ("nope.lr=1", "unknown config key 'nope.lr'"),
    ("train.steps=1.5", "cannot read '1.5' as int"),
    ("model.bf16=maybe", "cannot read 'maybe' as bool"),
    ("data.volume_box_min=1,2", "cannot read '1,2'"),
    ("train.lr", "is not of the form"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message) as error:
        config.build_config("dfaust", [override])
    assert "\n" not in str(error.value)


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        config.build_config("nope")


def test_round_trip_through_dict():
    cfg = config.build_config("demo", ["model.n_primitives=3"])
    assert config.from_dict(config.to_dict(cfg)) == cfg


def test_entry_point_prints_one_line_and_exits_non_zero():
    result = subprocess.run([sys.executable, "train.py", "--set", "train.lr=fast"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config key 'train.lr': cannot read 'fast' as float"
