"""Image transforms (torchvision v2). Train augmentation never crops: a crop can cut items out
of the bin and change the count."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pipeline(
    image_size: int, mean: Sequence[float], std: Sequence[float], augment: list[v2.Transform]
) -> v2.Compose:
    """Resize to a square (whole bin kept), ``augment``, then scale and normalize."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((image_size, image_size), antialias=True),
            *augment,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def eval_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image (or uint8 tensor) -> normalized float tensor."""
    return _pipeline(image_size, mean, std, [])


def train_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Count-preserving augmentation: flips, colour, small affine."""
    return _pipeline(
        image_size,
        mean,
        std,
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.05)], p=0.8),
            v2.RandomAffine(degrees=10, translate=(0.04, 0.04), scale=(0.95, 1.05)),
        ],
    )
