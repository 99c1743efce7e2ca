"""Image transforms. Train augmentation never crops: a crop can cut items out of the bin and
change the count.

Two paths produce the same tensors. Per image (torchvision v2, PIL or uint8 in): evaluation and
serving preprocessing, and ``data.augment=cpu`` training. Batched (uint8 batches, on the device
after the transfer): :func:`normalize_batch` for evaluation and :func:`augment_batch` for
training, each image's augmentation drawn from its own seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The count-preserving augmentation, both paths: flips, colour, small affine.
FLIP_P = 0.5
JITTER_P = 0.8
BRIGHTNESS = CONTRAST = SATURATION = 0.3
HUE = 0.05
DEGREES = 10.0
TRANSLATE = 0.04
SCALE = (0.95, 1.05)
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
PARAMS = 11  # random numbers drawn per image by augment_batch


def resize_transform(image_size: int) -> v2.Compose:
    """PIL image (or uint8 tensor) -> uint8 CHW tensor, square at ``image_size`` (whole bin)."""
    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True),
                       v2.ToPureTensor()])


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
    """Count-preserving augmentation, one image at a time on the CPU (``data.augment=cpu``)."""
    return _pipeline(
        image_size,
        mean,
        std,
        [
            v2.RandomHorizontalFlip(FLIP_P),
            v2.RandomVerticalFlip(FLIP_P),
            v2.RandomApply(
                [v2.ColorJitter(BRIGHTNESS, CONTRAST, SATURATION, HUE)], p=JITTER_P
            ),
            v2.RandomAffine(degrees=DEGREES, translate=(TRANSLATE, TRANSLATE), scale=SCALE),
        ],
    )


def normalize_batch(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (or [0, 1] float) NCHW batch -> normalized float32, as :func:`eval_transform`."""
    if images.dtype == torch.uint8:
        return _normalize_(images.float().div_(255), mean, std)
    return _normalize_(images.to(torch.float32, copy=True), mean, std)


def _normalize_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalize the float NCHW batch ``x`` in place (no new full-size tensor)."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def draw_params(seed: int, epoch: int, indices: Sequence[int]) -> torch.Tensor:
    """``(len(indices), PARAMS)`` uniforms in [0, 1): image i of epoch e draws from
    (seed, e, i) alone, whatever batch, worker or process it lands in."""
    rows = [np.random.default_rng([seed, epoch, int(i)]).random(PARAMS) for i in indices]
    return torch.from_numpy(np.stack(rows)).float() if rows else torch.empty(0, PARAMS)


def augment_batch(
    images: torch.Tensor, params: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 NCHW batch (square images) -> augmented, normalized float32 on the same device.

    Per image: flips and the affine (rotation, translation, scale; nearest, black fill) in one
    gather of uint8 pixels (what ``grid_sample`` would pick); with probability JITTER_P
    brightness, contrast, saturation and hue (a rotation of the chroma plane in YIQ) as one 3x3
    colour matrix. Full-size work is a few in-place passes (about 2x faster than one out-of-place
    op per step at 224 px on the CPU). ``params`` comes from :func:`draw_params` (on the CPU, so
    every device draws the same).
    """
    if len(images) == 0:
        return normalize_batch(images, mean, std)
    p = params.to(dtype=torch.float64)
    n, channels, height, width = images.shape
    device = images.device
    # Geometry: theta maps output to input coordinates (normalized [-1, 1]).
    angle = torch.deg2rad((2 * p[:, 2] - 1) * DEGREES)
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * p[:, 3]
    shift = (2 * p[:, 4:6] - 1) * (2 * TRANSLATE)  # a fraction f of the side is 2f here
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    inverse = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    flips = torch.stack([torch.where(p[:, 0] < FLIP_P, -1.0, 1.0),
                         torch.where(p[:, 1] < FLIP_P, -1.0, 1.0)], -1).to(p)
    linear = flips[:, :, None] * inverse
    offset = -(linear @ shift[:, :, None])
    theta = torch.cat([linear, offset], -1).float().to(device)
    # Nearest, as torchvision's RandomAffine (bilinear would blur every small training image),
    # so the geometry is a gather of uint8 pixels: a quarter of the memory traffic of floats.
    x = _nearest_affine(images, theta).float()
    # Colour, in place: brightness and contrast, then saturation and hue as one matrix.
    jitter = (p[:, 6] < JITTER_P).to(p)
    brightness = 1 + jitter * (2 * p[:, 7] - 1) * BRIGHTNESS
    contrast = 1 + jitter * (2 * p[:, 8] - 1) * CONTRAST
    saturation = 1 + jitter * (2 * p[:, 9] - 1) * SATURATION
    hue = jitter * (2 * p[:, 10] - 1) * HUE
    gray = torch.tensor(GRAY, dtype=torch.float64)
    # One pass scales to [0, 1] and applies the brightness.
    x.mul_((brightness / 255).float().view(n, 1, 1, 1).to(device)).clamp_(0, 1)
    # The mean luma is linear: the luma of the channel means (no full-size luma image).
    mean_luma = (x.mean(dim=(2, 3)) @ gray.float().to(device)).view(n, 1, 1, 1)
    c = contrast.float().view(n, 1, 1, 1).to(device)
    x.mul_(c).add_((1 - c) * mean_luma).clamp_(0, 1)
    matrix = (_hue_matrix(hue) @ _saturation_matrix(saturation, gray)).float().to(device)
    x = torch.bmm(matrix, x.view(n, channels, height * width)).view_as(x).clamp_(0, 1)
    return _normalize_(x, mean, std)


def _nearest_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``grid_sample(images, affine_grid(theta), mode="nearest", padding_mode="zeros",
    align_corners=False)`` on the uint8 NCHW batch itself: each output pixel takes the input
    pixel nearest to where ``theta`` maps it (rounded half to even, as grid_sample), or black
    where that falls outside the image."""
    n, channels, height, width = images.shape
    device = images.device
    # affine_grid's base grid (pixel centres, align_corners=False) mapped by theta, then
    # grid_sample's unnormalization, x' = (size * x + size - 1) / 2: both are affine, so each
    # source coordinate is a row term plus a column term (one full-size add), then rounded.
    xs = ((torch.arange(width, device=device) * 2 + 1) / width - 1).view(1, 1, width)
    ys = ((torch.arange(height, device=device) * 2 + 1) / height - 1).view(1, height, 1)
    t = theta.view(n, 6, 1, 1).unbind(1)
    ix = torch.round((width / 2) * t[0] * xs + ((width / 2) * (t[1] * ys + t[2]) + (width - 1) / 2))
    iy = torch.round((height / 2) * t[3] * xs
                     + ((height / 2) * (t[4] * ys + t[5]) + (height - 1) / 2))
    # A black border around every image: a coordinate outside the image, clamped onto the
    # border, picks black (no full-size "inside" mask to compute and apply).
    padded = F.pad(images, (1, 1, 1, 1))
    index = (iy.clamp_(-1, height).add_(1).mul_(width + 2)
             .add_(ix.clamp_(-1, width).add_(1))).long()
    pixels = height * width
    out = padded.reshape(n, channels, -1).gather(
        2, index.view(n, 1, pixels).expand(n, channels, pixels))
    return out.view(n, channels, height, width)


def _saturation_matrix(saturation: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """s * I + (1 - s) * (every channel := luma), per image."""
    eye = torch.eye(3, dtype=saturation.dtype)
    to_gray = gray.view(1, 3).expand(3, 3)
    s = saturation.view(-1, 1, 1)
    return s * eye + (1 - s) * to_gray


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                    dtype=torch.float64)


def _hue_matrix(hue: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma (I, Q) plane by ``hue`` turns, luma kept, per image."""
    angle = hue * 2 * math.pi
    rotation = torch.zeros(len(hue), 3, 3, dtype=hue.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    return torch.linalg.inv(_YIQ) @ rotation @ _YIQ
