from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFilter

from bincount.monitoring.stats import image_stats


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

