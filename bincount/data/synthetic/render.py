"""Drawing one synthetic bin photo: the bin, the placed items with shadows and labels, the
elastic bands, then the camera (light, grain, blur)."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from bincount.data.synthetic.items import Colour, Placed, choose_products, jitter, place, shade

# yellow fabric (most ABID bins), cardboard, grey fabric
BIN_COLOURS: tuple[Colour, ...] = (
    (222, 208, 150), (214, 196, 128), (188, 150, 104), (196, 194, 182)
)


def render_bin(count: int, size: int, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One bin photo with ``count`` items and its ABID metadata document."""
    bin_colour = jitter(BIN_COLOURS[int(rng.integers(len(BIN_COLOURS)))], rng, 10)
    image = _draw_bin(size, bin_colour, rng)
    products, copies = choose_products(count, size, bin_colour, rng)
    placed = place(copies, size, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    shadow = max(1.0, size / 48)
    for item in placed:
        for polygon, _ in item.parts:
            draw.polygon((polygon + shadow).ravel().tolist(), fill=(0, 0, 0, 90))
        for polygon, colour in item.parts:
            draw.polygon(polygon.ravel().tolist(), fill=colour, outline=shade(colour, 0.55))
        _decorate(draw, item, rng)
    _draw_bands(draw, size, rng)
    image = _finish(image, size, rng)
    quantities = {p.asin: sum(c is p for c in copies) for p in products}
    metadata = {
        "BIN_FCSKU_DATA": {
            p.asin: p.metadata(quantities[p.asin], size) for p in products
        },
        "EXPECTED_QUANTITY": count,
    }
    return image, metadata



def _draw_bin(size: int, colour: Colour, rng: np.random.Generator) -> Image.Image:
    """Back wall, side walls and floor in perspective, the lips with their bin labels."""
    s = size
    top = s * rng.uniform(0.05, 0.1)
    bottom = s * rng.uniform(0.88, 0.94)
    back_l, back_r = s * rng.uniform(0.1, 0.2), s * rng.uniform(0.8, 0.9)
    back_t, back_b = top + s * rng.uniform(0.0, 0.05), s * rng.uniform(0.62, 0.75)
    light = rng.uniform(0.8, 1.0)  # which side wall faces the light
    image = Image.new("RGB", (s, s), shade(colour, 0.85))
    draw = ImageDraw.Draw(image)
    draw.polygon([(0, top), (back_l, back_t), (back_l, back_b), (0, bottom)],
                 fill=shade(colour, light))
    draw.polygon([(s, top), (back_r, back_t), (back_r, back_b), (s, bottom)],
                 fill=shade(colour, 1.75 - light))
    draw.polygon([(back_l, back_b), (back_r, back_b), (s, bottom), (0, bottom)],
                 fill=shade(colour, 0.93))
    lip = shade(colour, 1.08)
    draw.rectangle((0, 0, s, top), fill=lip)
    draw.rectangle((0, bottom, s, s), fill=lip)
    draw.line([(0, bottom), (s, bottom)], fill=shade(colour, 0.7), width=1)
    for y0, y1 in ((0, top), (bottom, s)):  # bin label stickers on the lips
        h = (y1 - y0) * 0.7
        x = s * rng.uniform(0.15, 0.6)
        yc = (y0 + y1) / 2
        ink = ((40, 50, 110), (150, 40, 40), (60, 60, 60))[int(rng.integers(3))]
        draw.rectangle((x, yc - h / 2, x + h * 3.6, yc + h / 2), fill=(235, 235, 230))
        draw.rectangle((x, yc - h / 2, x + h * 1.8, yc + h / 2), fill=ink)
        draw.rectangle((x + h * 2.4, yc - h / 2.5, x + h * 3.2, yc + h / 2.5), fill=(30, 30, 30))
    return image


def _decorate(draw: ImageDraw.ImageDraw, item: Placed, rng: np.random.Generator) -> None:
    """Plastic sheen on bags and bottles, then the barcode label."""
    body = item.parts[0][0]
    if item.product.kind == "bag":
        cx, cy = body.mean(axis=0)
        span = float(np.ptp(body, axis=0).sum()) / 4
        for _ in range(2):
            dx, dy = rng.uniform(-0.6, 0.6, 2) * span
            draw.line([(cx + dx - span * 0.4, cy + dy - span * 0.2),
                       (cx + dx + span * 0.4, cy + dy + span * 0.1)],
                      fill=(255, 255, 255, 110), width=max(1, int(span / 8)))
    if item.product.kind == "bottle":
        draw.line(body[[0, -1]].ravel().tolist(), fill=(255, 255, 255, 80), width=1)
    label = item.label
    draw.polygon(label.ravel().tolist(), fill=(246, 246, 240), outline=(90, 90, 90))
    top, bottom = label[0] + (label[3] - label[0]) * 0.25, label[0] + (label[3] - label[0]) * 0.7
    step = label[1] - label[0]
    for t in np.linspace(0.15, 0.85, 6):
        draw.line([tuple(top + t * step), tuple(bottom + t * step)], fill=(25, 25, 25))


def _draw_bands(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator) -> None:
    """Elastic retaining bands: bundles of thin translucent threads across the bin front."""
    n = int(rng.integers(2, 4))
    centres = np.linspace(0.28, 0.82, n) + rng.uniform(-0.05, 0.05, n)
    pitch = max(1.5, size / 64)
    for centre in centres:
        height = size * rng.uniform(0.07, 0.11)
        tilt = size * rng.uniform(-0.03, 0.03)
        alpha = int(rng.integers(60, 120))
        y = centre * size - height / 2
        while y < centre * size + height / 2:
            draw.line([(0, y - tilt), (size, y + tilt)], fill=(250, 250, 245, alpha), width=1)
            y += pitch
        for x in (0, size - size * 0.04):  # rolled ends where the band is sewn on
            draw.rectangle((x, centre * size - height / 2 - tilt, x + size * 0.04,
                            centre * size + height / 2 + tilt), fill=(245, 245, 240, 120))


def _finish(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Camera: uneven warm light and vignette, fabric grain and sensor noise, defocus."""
    gx, gy = rng.uniform(-0.3, 0.3, 2)
    vignette = rng.uniform(0.2, 0.5)
    cast = np.array([1.0, rng.uniform(0.97, 1.0), rng.uniform(0.9, 0.98)])
    yy, xx = np.mgrid[-0.5:0.5:5j, -0.5:0.5:5j]
    light = 1.0 + gx * xx + gy * yy - vignette * (xx * xx + yy * yy)
    coarse = np.clip(light[..., None] * cast * 255, 0, 255).astype(np.uint8)
    image = ImageChops.multiply(image, Image.fromarray(coarse).resize(image.size, Image.BILINEAR))
    x, y = (int(v) for v in rng.integers(0, size, 2))
    image = ImageChops.add(image, _grain(size).crop((x, y, x + size, y + size)), offset=-128)
    return image.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.8) * size / 128))


@functools.lru_cache(maxsize=4)
def _grain(size: int) -> Image.Image:
    """A fixed grey noise texture around 128, twice the image size: each image crops its own
    window of it (cheaper than fresh noise per image, and as deterministic)."""
    noise = np.random.default_rng(size).normal(128, 4.5, (2 * size, 2 * size))
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).convert("RGB")
