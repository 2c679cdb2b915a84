"""ImageNet weights: cache, download, and the fallback when there is no network (simulated; nothing is fetched)."""
import hashlib
import io
import urllib.error
import urllib.request
import warnings

import pytest
import torch
from torchvision.models import resnet18

import models.pretrained as pretrained
from config import ModelConfig
from models.feature_extractor import ImageEncoder
from common.errors import UserError


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and a network that refuses every connection."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tmp_path


def state_bytes() -> tuple[dict, bytes]:
    torch.manual_seed(3)
    state = resnet18(weights=None).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


def test_auto_without_network_warns_once_naming_the_file_and_continues(offline):
    path = pretrained.resnet18_cache_path()
    assert str(path).startswith(str(offline))
    with pytest.warns(UserWarning) as record:
        ImageEncoder(ModelConfig(pretrained="auto"))
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message and pretrained.RESNET18_URL in message
    assert not path.exists()


def test_true_without_network_is_a_user_error(offline):
    with pytest.raises(UserError, match="model.pretrained=true"):
        ImageEncoder(ModelConfig(pretrained="true"))


def test_false_and_unknown_modes(offline):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageEncoder(ModelConfig(pretrained="false"))
    with pytest.raises(UserError, match="maybe"):
        ImageEncoder(ModelConfig(pretrained="maybe"))


def test_cached_weights_are_loaded_without_network(offline):
    state, data = state_bytes()
    path = pretrained.resnet18_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    encoder = ImageEncoder(ModelConfig(pretrained="true"))
    assert torch.equal(encoder.network.conv1.weight, state["conv1.weight"])
    assert torch.equal(encoder.network.layer1[0].bn1.running_var, state["layer1.0.bn1.running_var"])


def test_damaged_cache_file_is_a_user_error(offline):
    path = pretrained.resnet18_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="delete it"):
        pretrained.resnet18_imagenet_state("auto")


def test_download_is_hash_checked_and_atomic(offline, monkeypatch):
    state, data = state_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    monkeypatch.setattr(pretrained, "RESNET18_URL", f"https://example.invalid/resnet18-{prefix}.pth")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(data))
    loaded = pretrained.resnet18_imagenet_state("true")
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])
    assert pretrained.resnet18_cache_path().read_bytes() == data

    monkeypatch.setattr(pretrained, "RESNET18_URL", "https://example.invalid/resnet18-00000000.pth")
    with pytest.warns(UserWarning, match="hash prefix"):
        assert pretrained.resnet18_imagenet_state("auto") is None
    assert sorted(p.name for p in pretrained.resnet18_cache_path().parent.iterdir()) == [f"resnet18-{prefix}.pth"]
