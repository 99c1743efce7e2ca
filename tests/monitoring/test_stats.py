from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec
from bincount.monitoring.stats import image_stats, profile_images


def checkerboard(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(image)
    step = size // 16
    for y in range(0, size, step):
        for x in range((y // step % 2) * step, size, 2 * step):
            draw.rectangle([x, y, x + step - 1, y + step - 1], fill="white")
    return image


def test_image_statistics_follow_the_photo() -> None:
    sharp = checkerboard(256)
    stats = image_stats(sharp)
    assert stats["brightness"] == pytest.approx(0.5, abs=0.02)
    assert stats["contrast"] > 0.4
    blurred = image_stats(sharp.filter(ImageFilter.GaussianBlur(6)))
    assert blurred["sharpness"] < stats["sharpness"] / 10
    assert image_stats(Image.new("RGB", (300, 100), (200, 200, 200))) == {
        "width": 300.0, "height": 100.0, "aspect": 3.0, "brightness": pytest.approx(200 / 255),
        "contrast": pytest.approx(0.0, abs=1e-9), "sharpness": pytest.approx(0.0, abs=1e-9)}



def test_profiled_confidences_are_the_calibrated_ones_the_endpoint_answers() -> None:
    # The baseline's confidences must be comparable with what serving returns:
    # softmax(scores / temperature) with the model's temperature.
    torch.manual_seed(0)
    net = build_resnet("resnet18", num_classes=5, pretrained=False).eval()
    spec = ModelSpec(arch="resnet18", image_size=32, mean=[0.5] * 3, std=[0.25] * 3,
                     counts=[1, 2, 3, 4, 5])
    images = [Image.new("RGB", (40, 40), (40 * i, 90, 200 - 30 * i)) for i in range(4)]
    plain = profile_images(images, net, spec)
    hot = profile_images(images, net, dataclasses.replace(spec, temperature=1000.0))
    assert plain.counts == hot.counts  # a temperature never changes the count
    assert all(c == pytest.approx(0.2, abs=1e-3) for c in hot.confidences)
    assert max(plain.confidences) > max(hot.confidences)
