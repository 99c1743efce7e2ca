"""The two preprocessing paths: per image (evaluation, serving) and batched on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bincount.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PARAMS,
    augment_batch,
    draw_params,
    eval_transform,
    normalize_batch,
    resize_transform,
)

SIZE = 40
# no flip (>= 0.5), no rotation, scale 1, no shift (0.5 is the middle), no colour (>= 0.8)
IDENTITY = [0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5]


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (57, 83, 3), dtype=np.uint8))


@pytest.fixture
def batch(photo: Image.Image) -> torch.Tensor:
    return torch.stack([resize_transform(SIZE)(photo), resize_transform(SIZE)(photo.rotate(90))])


def params(**changes: float) -> torch.Tensor:
    row = list(IDENTITY)
    for position, value in changes.items():
        row[int(position[1:])] = value
    return torch.tensor([row, row])


def test_the_batched_eval_path_is_the_per_image_eval_transform(photo: Image.Image) -> None:
    per_image = eval_transform(SIZE, IMAGENET_MEAN, IMAGENET_STD)(photo)
    uint8 = resize_transform(SIZE)(photo)
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, SIZE, SIZE)
    batched = normalize_batch(uint8[None], IMAGENET_MEAN, IMAGENET_STD)[0]
    assert torch.allclose(batched, per_image, atol=1e-6)


def test_identity_parameters_only_normalize(batch: torch.Tensor) -> None:
    out = augment_batch(batch, params(), IMAGENET_MEAN, IMAGENET_STD)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    assert torch.allclose(out, normalize_batch(batch, IMAGENET_MEAN, IMAGENET_STD), atol=1e-4)


@pytest.mark.parametrize(("change", "dim"), [({"p0": 0.1}, -1), ({"p1": 0.1}, -2)])
def test_flips_mirror_the_whole_image(batch: torch.Tensor, change: dict, dim: int) -> None:
    out = augment_batch(batch, params(**change), IMAGENET_MEAN, IMAGENET_STD)
    expected = normalize_batch(batch.flip(dim), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(out, expected, atol=1e-4)


def test_brightness_scales_and_clips(batch: torch.Tensor) -> None:
    out = augment_batch(batch, params(p6=0.1, p7=1.0), IMAGENET_MEAN, IMAGENET_STD)  # x1.3
    expected = normalize_batch((batch.float() / 255 * 1.3).clamp(0, 1), IMAGENET_MEAN,
                               IMAGENET_STD)
    assert torch.allclose(out, expected, atol=1e-4)


def test_the_affine_keeps_the_bin_in_view(batch: torch.Tensor) -> None:
    """At the extremes (10 degrees, 4% shift, scale 0.95) most of the image stays in view."""
    extreme = params(p2=1.0, p3=0.0, p4=1.0, p5=1.0)
    white = torch.full_like(batch, 255)
    out = augment_batch(white, extreme, (0, 0, 0), (1, 1, 1))
    assert 0.75 < float((out > 0.5).float().mean()) < 1.0


def test_parameters_depend_on_seed_epoch_and_index_only() -> None:
    a = draw_params(7, 2, [5, 9, 11])
    assert a.shape == (3, PARAMS) and float(a.min()) >= 0 and float(a.max()) < 1
    assert torch.equal(draw_params(7, 2, [11])[0], a[2])
    assert not torch.equal(draw_params(7, 3, [5])[0], a[0])
    assert not torch.equal(draw_params(8, 2, [5])[0], a[0])
