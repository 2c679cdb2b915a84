"""Gradient accumulation in train.py: runs end on a group's last batch; a non-finite batch drops only its own
gradients, never those of the earlier batches of its group."""
import math
import warnings

import pytest
import torch

import train
from checkpoint import load_checkpoint
from common.errors import UserError
from common.runtime import Distributed
from tests.test_faults import poisoned_loss, train_args  # the tiny config: train.aggregate=2, model.pth every 2 steps


def optimizer_steps(payload: dict) -> int:
    return int(payload["optimizer"]["state"][0]["step"]) if payload["optimizer"]["state"] else 0


def test_accumulate_keeps_the_earlier_gradients_of_a_group_when_a_batch_is_not_finite():
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    params, single = list(linear.parameters()), Distributed()
    assert train._accumulate(linear(x).sum(), params, math.inf, single)
    first = [p.grad.clone() for p in params]
    def nan_gradient():  # a finite value with NaN gradients (sqrt at 0)
        return linear(x).sum() + torch.sqrt((linear(x) * 0.0).abs().sum())

    assert not train._accumulate(nan_gradient(), params, math.inf, single)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, first))
    assert not train._accumulate(linear(x).sum() * math.inf, params, math.inf, single)  # a non-finite loss
    assert all(torch.equal(p.grad, g) for p, g in zip(params, first))
    assert train._accumulate(2 * linear(x).sum(), params, math.inf, single)
    assert all(torch.allclose(p.grad, 3 * g) for p, g in zip(params, first))
    for p in params:  # and a failure at a group's start leaves no gradients
        p.grad = None
    assert not train._accumulate(nan_gradient(), params, math.inf, single)
    assert all(p.grad is None for p in params)


def test_steps_not_a_multiple_of_aggregate_are_refused_before_any_work(tiny_dataset, tmp_path):
    """Such a run would end inside an accumulation group and never save its last batches."""
    with pytest.raises(UserError, match="must be a multiple of train.aggregate=2"):
        train.main(train_args(tiny_dataset, tmp_path / "three", 3))
    assert not (tmp_path / "three").exists()


def test_a_non_finite_batch_keeps_the_earlier_gradients_of_its_group(tiny_dataset, tmp_path, monkeypatch):
    """Batch 2 of the group (1, 2) with NaN gradients updates the model exactly as batch 2 with zero gradients:
    with batch 1's gradients alone. (No clipping: clipping an already clipped sum again can move its last bit.)"""
    payloads = {}
    for kind in ("gradient", "zero"):
        poisoned_loss(monkeypatch, {2: kind})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert train.main(train_args(tiny_dataset, tmp_path / kind, 2, "train.clip_grad_norm=1e9")) == 0
        assert any("step 2: non-finite" in str(w.message) for w in caught) == (kind == "gradient")
        payloads[kind] = load_checkpoint(str(tmp_path / kind / "model.pth"))
    assert optimizer_steps(payloads["gradient"]) == optimizer_steps(payloads["zero"]) == 1
    for key, value in payloads["zero"]["model"].items():
        assert torch.equal(payloads["gradient"]["model"][key], value), key
