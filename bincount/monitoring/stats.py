"""The statistics a baseline and a drift report share, computed the same way for both.

Per image: its size and aspect (from the bytes, as sent), brightness, contrast and sharpness (on a
grayscale copy at a fixed size, so a sharper camera and a bigger photo are not confused), the
predicted count and its confidence (the largest calibrated probability), and the penultimate-layer
embedding of the net (the input of the ResNet's ``fc`` head).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from bincount.data.transforms import eval_transform
from bincount.models.export import ModelSpec

IMAGE_STATS = ("width", "height", "aspect", "brightness", "contrast", "sharpness")
STAT_SIDE = 128  # brightness/contrast/sharpness are measured at this size (grayscale)
BATCH = 32


def image_stats(image: Image.Image) -> dict[str, float]:
    """Size, aspect (width / height) and, on a STAT_SIDE x STAT_SIDE grayscale copy, brightness
    (mean, 0-1), contrast (standard deviation) and sharpness (variance of the Laplacian)."""
    width, height = image.size
    gray = image.convert("L").resize((STAT_SIDE, STAT_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.float64) / 255.0
    laplacian = (pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
                 - 4 * pixels[1:-1, 1:-1])
    return {
        "width": float(width),
        "height": float(height),
        "aspect": width / max(1, height),
        "brightness": float(pixels.mean()),
        "contrast": float(pixels.std()),
        "sharpness": float(laplacian.var()),
    }


@dataclass
class Profile:
    """What was seen: one entry per image in each list, one embedding row per image."""

    counts: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    images: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in IMAGE_STATS})
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def __len__(self) -> int:
        return len(self.counts)


def decode(data: bytes) -> Image.Image:
    """Captured bytes as an RGB image (the server already refused what is not an image)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def penultimate(
    net: nn.Module, batch: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibrated probabilities ``softmax(scores / temperature)``, embeddings) of a normalized
    batch: the embedding is what the ``fc`` head receives (the pooled features of a torchvision
    ResNet)."""
    seen: list[torch.Tensor] = []
    hook = net.fc.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        with torch.inference_mode():
            logits = net(batch)
    finally:
        hook.remove()
    return torch.softmax(logits.float() / temperature, dim=1), seen[0].flatten(1).float()


def profile_images(
    images: Iterable[Image.Image],
    net: nn.Module,
    spec: ModelSpec,
    predictions: Sequence[tuple[int, float] | None] | None = None,
) -> Profile:
    """The profile of ``images`` under ``net``: image statistics, embeddings, and counts with
    confidences (``predictions[i]``, what the endpoint answered, where given; else the net's,
    calibrated with ``spec.temperature`` as every runtime does, so that a baseline's confidences
    and an endpoint's answers are the same quantity)."""
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    device = next(net.parameters()).device
    net = net.eval()
    profile = Profile()
    rows: list[np.ndarray] = []
    pending: list[Image.Image] = []

    def flush() -> None:
        batch = torch.stack([transform(image) for image in pending]).to(device)
        probabilities, embeddings = penultimate(net, batch, spec.temperature)
        rows.append(embeddings.cpu().numpy())
        for row in probabilities.cpu().tolist():
            index = len(profile.counts)
            given = predictions[index] if predictions is not None else None
            if given is None:
                best = int(np.argmax(row))
                given = (int(spec.counts[best]), float(row[best]))
            profile.counts.append(int(given[0]))
            profile.confidences.append(float(given[1]))
        pending.clear()

    for image in images:
        for key, value in image_stats(image).items():
            profile.images[key].append(value)
        pending.append(image)
        if len(pending) == BATCH:
            flush()
    if pending:
        flush()
    if rows:
        profile.embeddings = np.concatenate(rows).astype(np.float32)
    return profile
