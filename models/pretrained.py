"""Torchvision's ImageNet ResNet-18 weights: from the torch hub cache, or a quick download, or none.

`model.pretrained`: "true" requires the weights, "false" never looks for them, "auto" uses them when the cache has
them or a download succeeds within a short socket timeout, and otherwise warns once and continues from random
initialisation (the authors start from ImageNet weights; a random start trains, but worse).
"""
from __future__ import annotations

import hashlib
import http.client
import pathlib
import urllib.request
import warnings

import torch

from common.atomic import atomic_path
from common.errors import UserError

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"  # torchvision IMAGENET1K_V1
DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: a missing network fails fast instead of hanging
MODES = ("auto", "true", "false")


def resnet18_cache_path() -> pathlib.Path:
    """Where torchvision looks for the weights: torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth."""
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / pathlib.Path(RESNET18_URL).name


def resnet18_imagenet_state(mode: str) -> dict[str, torch.Tensor] | None:
    """The ImageNet state dict of torchvision's resnet18 (fc included), or None for random initialisation."""
    if mode not in MODES:
        raise UserError(f"model.pretrained={mode!r} is not one of {', '.join(MODES)}")
    if mode == "false":
        return None
    path = resnet18_cache_path()
    if not path.is_file():
        try:
            _download(RESNET18_URL, path)
        except (OSError, http.client.HTTPException, ValueError) as error:  # URLError and timeouts are OSErrors
            if mode == "true":
                raise UserError(f"model.pretrained=true but {path} is missing and {RESNET18_URL} could not be "
                                f"downloaded ({error}); place that file there or set model.pretrained=auto") from None
            warnings.warn(f"ImageNet ResNet-18 weights unavailable ({error}): continuing from random initialisation; "
                          f"to use them, download {RESNET18_URL} and place it at {path}", stacklevel=2)
            return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on a damaged file
        raise UserError(f"cannot read ResNet-18 weights {path} ({error}); delete it or replace it with "
                        f"{RESNET18_URL}") from None


def _download(url: str, path: pathlib.Path) -> None:
    """Fetch `url` to `path` atomically, checking the SHA-256 prefix in the file name (as torch.hub does)."""
    expected = path.stem.rsplit("-", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        digest = hashlib.sha256()
        with open(temporary, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(expected):
            raise ValueError(f"downloaded file does not match hash prefix {expected}")
