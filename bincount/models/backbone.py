"""torchvision ResNets with a new head over the counts (``model.head``: softmax or ordinal, see
:mod:`bincount.models.heads`); pretrained weights through torchvision's weights API and its cache
under ``$TORCH_HOME``."""

from __future__ import annotations

import os
from urllib.error import URLError

import torch
from torch import nn
from torchvision import models

from bincount.errors import BincountError
from bincount.models.heads import CornHead, check_head

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class PretrainedWeightsUnavailable(BincountError, RuntimeError):
    """The ImageNet weights are neither in the torch hub cache nor downloadable."""


def weights_path(arch: str) -> str:
    """Where torchvision caches ``arch``'s default ImageNet weights."""
    weights = models.get_model_weights(arch).DEFAULT
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def build_resnet(arch: str, num_classes: int, pretrained: bool) -> nn.Module:
    """A torchvision ResNet whose final layer maps to ``num_classes`` counts."""
    if arch not in RESNETS:
        raise BincountError(f"model.arch must be one of {', '.join(RESNETS)}, got {arch!r}")
    if not pretrained:
        return models.get_model(arch, weights=None, num_classes=num_classes)
    weights = models.get_model_weights(arch).DEFAULT
    try:
        net = models.get_model(arch, weights=weights)
    except (URLError, OSError, RuntimeError) as err:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for {arch} are not in the cache and could not be downloaded "
            f"({err}).\nEither place {os.path.basename(weights.url)} ({weights.url}) at\n  "
            f"{weights_path(arch)}\n(the cache under $TORCH_HOME), or train from scratch "
            "with model.pretrained=false."
        ) from err
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


def build_net(arch: str, *, num_classes: int, pretrained: bool, head: str) -> nn.Module:
    """:func:`build_resnet` with ``head``'s output layer as ``net.fc``: a linear layer to the
    class scores (softmax) or CORN's :class:`~bincount.models.heads.CornHead` (ordinal), whose
    output is the class log-probabilities. Either way the net outputs class scores."""
    check_head("model.head", head)
    net = build_resnet(arch, num_classes=num_classes, pretrained=pretrained)
    if head == "ordinal":
        net.fc = CornHead(net.fc.in_features, num_classes)
    return net
