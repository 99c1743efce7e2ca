"""Synthetic bin photos in the ABID on-disk layout, for the offline demo and the tests.

Each image is a fabric or cardboard bin seen from the front (back wall, side walls, floor, the
labelled lips), 1-5 items (boxes, bottles, bags, flat packages; a product may repeat), each with
one barcode label, placed so that every item stays at least ``MIN_VISIBLE`` visible and its label
uncovered, translucent elastic bands across the front, then lighting, blur, grain and JPEG
compression. The count must stay readable at 64x64 for a ResNet trained from scratch in minutes
on a CPU: realism is bounded by countability.

Every image draws from its own ``numpy`` generator seeded by ``(seed, count, index)``, so a set
is byte-identical for the same arguments and a larger ``per_class`` extends a smaller one.
"""

from __future__ import annotations

import colorsys
import functools
import glob
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from bincount.data.abid import FILE_LIST, IMAGES, METADATA, DataError, write_file_list

log = logging.getLogger(__name__)

MARKER = "synthetic.json"
VERSION = 2  # bump whenever the rendering changes, so cached sets are re-rendered
MIN_VISIBLE = 0.7  # fraction of an item's silhouette that must stay visible
SAME_VISIBLE = 0.85  # ... of which a copy of the same product (it blends in) may hide the rest
ID_WIDTH = 6
LABEL_SIZE = (0.16, 0.085)  # barcode label width and height, in image widths
BIN_WIDTH_IN = 24.0  # the bin interior width in inches, to turn pixels into product sizes

Point = tuple[float, float]
Colour = tuple[int, int, int]
Part = tuple[np.ndarray, Colour]  # an (n, 2) polygon in pixels and its fill
KINDS = ("box", "bottle", "bag", "flat")
KIND_WEIGHTS = (0.35, 0.2, 0.25, 0.2)
# yellow fabric (most ABID bins), cardboard, grey fabric
BIN_COLOURS: tuple[Colour, ...] = (
    (222, 208, 150), (214, 196, 128), (188, 150, 104), (196, 194, 182)
)
BRANDS = ("Acme", "Northfield", "Brightline", "Kestrel", "Oakmont", "Vireo", "Lumen", "Pardo")
NOUNS = {
    "box": ("LED Bulb, 60W Equivalent", "Power Steering Valve", "Bluetooth Speaker",
            "Ceramic Mug Set", "Kitchen Timer", "USB Wall Charger"),
    "bottle": ("Liquid Hand Soap, 12 oz", "Multivitamin Gummies, 90 ct", "Shampoo, 16 fl oz",
               "Stainless Water Bottle, 24 oz", "Olive Oil Spray"),
    "bag": ("Trail Mix, 2 lb Bag", "Fleece Throw Blanket", "Cotton Crew Socks, 6 Pack",
            "Dog Treats, Chicken Recipe", "Microfiber Cloths, 12 Pack"),
    "flat": ("Paperback Notebook, College Ruled", "Board Book", "Phone Case, Clear",
             "Screen Protector, 2 Pack", "Wall Calendar"),
}


@dataclass(frozen=True)
class Product:
    """One ASIN: every copy of it in a bin shares kind, colours and size."""

    asin: str
    name: str
    kind: str
    colour: Colour
    accent: Colour
    width: float  # pixels, before rotation
    height: float
    depth_in: float

    def metadata(self, quantity: int, image_size: int) -> dict[str, Any]:
        length, width = sorted((self.width, self.height), reverse=True)
        inches = BIN_WIDTH_IN / image_size
        volume = length * width * inches * inches * self.depth_in
        return {
            "asin": self.asin,
            "name": self.name,
            "normalizedName": self.name,
            "quantity": quantity,
            "length": {"unit": "IN", "value": round(length * inches, 2)},
            "width": {"unit": "IN", "value": round(width * inches, 2)},
            "height": {"unit": "IN", "value": round(self.depth_in, 2)},
            "weight": {"unit": "pounds", "value": round(0.012 * volume + 0.05, 3)},
        }


@dataclass(frozen=True)
class Placed:
    """One copy of a product at a pose; ``parts`` are (polygon, colour) in image pixels."""

    product: Product
    parts: list[Part]
    area: int
    label: np.ndarray  # the barcode label's corners; later items must leave it visible
    label_box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the label, in whole pixels


def render_synthetic(
    out_dir: Path,
    per_class: int,
    image_size: int = 128,
    seed: int = 0,
    counts: Sequence[int] = (1, 2, 3, 4, 5),
) -> Path:
    """Render ``per_class`` bins for every count into ``out_dir`` (ABID layout) and return it.

    A set already there with the same parameters (see ``synthetic.json``) is kept as is. The set
    is rendered into a temporary sibling and renamed into place, so an interrupted render never
    leaves a partial set in ``out_dir``.
    """
    out_dir = Path(out_dir)
    params = _check_params(per_class, image_size, seed, counts)
    marker = out_dir / MARKER
    if out_dir.exists():
        made = _read_marker(marker)
        if made is not None and all(made.get(key) == value for key, value in params.items()):
            return out_dir
        if not marker.is_file() and any(out_dir.iterdir()):
            raise DataError(
                f"{out_dir} is not empty and holds no {MARKER}: refusing to overwrite it with "
                "synthetic data (choose another data_dir or empty it)"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    try:
        log.info("rendering %d synthetic bins into %s", per_class * len(counts), out_dir)
        _render_set(staging, params)
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _check_params(
    per_class: int, image_size: int, seed: int, counts: Sequence[int]
) -> dict[str, Any]:
    def integer(name: str, value: Any, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise DataError(f"synthetic.{name} must be an integer >= {low}, got {value!r}")
        return int(value)

    counts = [integer("counts[]", c, 1) for c in counts]
    if not counts or len(set(counts)) != len(counts) or max(counts) > 8:
        raise DataError(f"synthetic counts must be distinct integers in 1..8, got {counts}")
    return {
        "generator": "bincount.data.synthetic",
        "version": VERSION,
        "per_class": integer("per_class", per_class, 1),
        "image_size": integer("image_size", image_size, 32),
        "seed": integer("seed", seed, 0),
        "counts": counts,
    }


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        made = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return made if isinstance(made, dict) else None


def _staging_prefix(out_dir: Path) -> str:
    """Hidden sibling names that say which process on which host made them."""
    return f".{out_dir.name}.partial-{socket.gethostname()}-{os.getpid()}-"


def _remove_abandoned(out_dir: Path) -> None:
    """Delete the staging left by renders on this host that were killed (SIGKILL, SIGTERM)."""
    start = f".{out_dir.name}.partial-{socket.gethostname()}-"
    for path in out_dir.parent.glob(f"{glob.escape(start)}*"):
        pid = path.name[len(start):].split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` in for ``target``; the old set (if any) is moved aside first, then removed."""
    if not target.exists():
        new.rename(target)
        return
    old = Path(f"{new}-old")
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _render_set(root: Path, params: dict[str, Any]) -> None:
    (root / IMAGES).mkdir()
    (root / METADATA).mkdir()
    labels: dict[str, int] = {}
    number = 0
    for index in range(params["per_class"]):
        for count in params["counts"]:
            number += 1
            image_id = f"{number:0{ID_WIDTH}d}"
            rng = np.random.default_rng([params["seed"], count, index])
            image, metadata = render_bin(count, params["image_size"], rng)
            quality = int(rng.integers(60, 92))
            image.save(root / IMAGES / f"{image_id}.jpg", "JPEG", quality=quality)
            (root / METADATA / f"{image_id}.json").write_text(json.dumps(metadata))
            labels[image_id] = count
    write_file_list(root / FILE_LIST, labels)
    (root / MARKER).write_text(json.dumps({**params, "images": number}, indent=2) + "\n")


def render_bin(count: int, size: int, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One bin photo with ``count`` items and its ABID metadata document."""
    bin_colour = _jitter(BIN_COLOURS[int(rng.integers(len(BIN_COLOURS)))], rng, 10)
    image = _draw_bin(size, bin_colour, rng)
    products, copies = _choose_products(count, size, bin_colour, rng)
    placed = _place(copies, size, rng)
    draw = ImageDraw.Draw(image, "RGBA")
    shadow = max(1.0, size / 48)
    for item in placed:
        for polygon, _ in item.parts:
            draw.polygon((polygon + shadow).ravel().tolist(), fill=(0, 0, 0, 90))
        for polygon, colour in item.parts:
            draw.polygon(polygon.ravel().tolist(), fill=colour, outline=_shade(colour, 0.55))
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


# -- the scene -------------------------------------------------------------------------------


def _jitter(colour: Colour, rng: np.random.Generator, amount: int) -> Colour:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return r, g, b


def _shade(colour: Colour, factor: float) -> Colour:
    r, g, b = (int(min(255, c * factor)) for c in colour)
    return r, g, b


def _draw_bin(size: int, colour: Colour, rng: np.random.Generator) -> Image.Image:
    """Back wall, side walls and floor in perspective, the lips with their bin labels."""
    s = size
    top = s * rng.uniform(0.05, 0.1)
    bottom = s * rng.uniform(0.88, 0.94)
    back_l, back_r = s * rng.uniform(0.1, 0.2), s * rng.uniform(0.8, 0.9)
    back_t, back_b = top + s * rng.uniform(0.0, 0.05), s * rng.uniform(0.62, 0.75)
    light = rng.uniform(0.8, 1.0)  # which side wall faces the light
    image = Image.new("RGB", (s, s), _shade(colour, 0.85))
    draw = ImageDraw.Draw(image)
    draw.polygon([(0, top), (back_l, back_t), (back_l, back_b), (0, bottom)],
                 fill=_shade(colour, light))
    draw.polygon([(s, top), (back_r, back_t), (back_r, back_b), (s, bottom)],
                 fill=_shade(colour, 1.75 - light))
    draw.polygon([(back_l, back_b), (back_r, back_b), (s, bottom), (0, bottom)],
                 fill=_shade(colour, 0.93))
    lip = _shade(colour, 1.08)
    draw.rectangle((0, 0, s, top), fill=lip)
    draw.rectangle((0, bottom, s, s), fill=lip)
    draw.line([(0, bottom), (s, bottom)], fill=_shade(colour, 0.7), width=1)
    for y0, y1 in ((0, top), (bottom, s)):  # bin label stickers on the lips
        h = (y1 - y0) * 0.7
        x = s * rng.uniform(0.15, 0.6)
        yc = (y0 + y1) / 2
        ink = ((40, 50, 110), (150, 40, 40), (60, 60, 60))[int(rng.integers(3))]
        draw.rectangle((x, yc - h / 2, x + h * 3.6, yc + h / 2), fill=(235, 235, 230))
        draw.rectangle((x, yc - h / 2, x + h * 1.8, yc + h / 2), fill=ink)
        draw.rectangle((x + h * 2.4, yc - h / 2.5, x + h * 3.2, yc + h / 2.5), fill=(30, 30, 30))
    return image


def _item_colour(bin_colour: Colour, rng: np.random.Generator) -> Colour:
    """A product colour that stands out from the bin fabric (countability over realism)."""
    for _ in range(50):
        if rng.random() < 0.25:  # neutrals: white, black, grey, kraft
            base = [(240, 240, 236), (35, 35, 38), (130, 132, 135), (176, 136, 92)]
            colour = _jitter(base[int(rng.integers(4))], rng, 12)
        else:
            rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.95), rng.uniform(0.3, 0.95))
            colour = (int(rgb[0] * 255), int(rgb[1] * 255), int(rgb[2] * 255))
        if sum((a - b) ** 2 for a, b in zip(colour, bin_colour, strict=True)) > 70**2:
            return colour
    return 40, 60, 160


def _choose_products(
    count: int, size: int, bin_colour: Colour, rng: np.random.Generator
) -> tuple[list[Product], list[Product]]:
    """Distinct ASINs and the copies to place: a product may appear several times."""
    distinct = int(rng.integers(1, count + 1)) if rng.random() < 0.4 else count
    products = [_product(size, bin_colour, rng) for _ in range(distinct)]
    copies = products + [products[int(rng.integers(distinct))] for _ in range(count - distinct)]
    order = rng.permutation(count)
    return products, [copies[i] for i in order]


def _product(size: int, bin_colour: Colour, rng: np.random.Generator) -> Product:
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS))]
    long_side = size * rng.uniform(0.25, 0.4)
    aspect = {"box": (0.55, 1.0), "bottle": (0.38, 0.5), "bag": (0.6, 0.95),
              "flat": (0.45, 0.75)}[kind]
    short_side = long_side * rng.uniform(*aspect)
    width, height = (short_side, long_side) if kind == "bottle" else (long_side, short_side)
    if kind in ("box", "bag") and rng.random() < 0.5:
        width, height = height, width
    depth = {"box": (2, 8), "bottle": (2, 4), "bag": (1, 4), "flat": (0.2, 1.2)}[kind]
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    asin = "B0" + "".join(letters[i] for i in rng.integers(len(letters), size=8))
    colour = _item_colour(bin_colour, rng)  # one dominant colour: an item reads as one object
    name = f"{BRANDS[int(rng.integers(len(BRANDS)))]} {rng.choice(NOUNS[kind])}"
    return Product(
        asin=asin, name=name, kind=kind,
        colour=colour, accent=_shade(colour, 0.72 if sum(colour) > 360 else 1.45),
        width=width, height=height, depth_in=float(rng.uniform(*depth)),
    )


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 12) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _shape(product: Product, rng: np.random.Generator, scale: float = 1.0) -> list[Part]:
    """The product's parts in local coordinates (centred on the origin, upright)."""
    w, h = (scale * side * rng.uniform(0.95, 1.05) for side in (product.width, product.height))
    c, a = product.colour, product.accent
    x0, y0, x1, y1 = -w / 2, -h / 2, w / 2, h / 2

    def band(top: float, bottom: float) -> list[Point]:
        upper, lower = y0 + h * top, y0 + h * bottom
        return [(x0, upper), (x1, upper), (x1, lower), (x0, lower)]

    rect = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if product.kind == "box":  # front, top and side faces, a printed band
        d = min(w, h) * 0.22
        parts = [
            (rect, c),
            ([(x0, y0), (x1, y0), (x1 + d, y0 - d * 0.7), (x0 + d, y0 - d * 0.7)], _shade(c, 1.25)),
            ([(x1, y0), (x1 + d, y0 - d * 0.7), (x1 + d, y1 - d * 0.7), (x1, y1)], _shade(c, 0.7)),
            (band(0.6, 0.72), a),
        ]
    elif product.kind == "bottle":  # body with shoulders, cap, label
        shoulder, neck = y0 + h * 0.3, y0 + h * 0.12
        parts = [
            ([(x0, shoulder), (-w * 0.2, neck), (w * 0.2, neck), (x1, shoulder), (x1, y1),
              (x0, y1)], c),
            ([(-w * 0.24, y0), (w * 0.24, y0), (w * 0.24, neck), (-w * 0.24, neck)], a),
            (band(0.5, 0.75), a),
        ]
    elif product.kind == "bag":  # a lumpy pouch with a printed patch
        angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        radius = rng.uniform(0.9, 1.08, 16)
        blob = np.stack([0.5 * w * radius * np.cos(angles), 0.5 * h * radius * np.sin(angles)], 1)
        blob[np.abs(blob[:, 1]) < h * 0.3, 0] *= 1.12  # squarish sides
        parts = [(blob, c), (_ellipse(-w * 0.05, h * 0.05, w * 0.2, h * 0.15), _shade(c, 1.15))]
    else:  # flat: mailer, book, card, with a flap
        parts = [
            (rect, c),
            ([(x0, y0), (x1, y0), (0, y0 + h * 0.35)], _shade(c, 0.85)),
        ]
    return [(np.asarray(poly, dtype=np.float64), colour) for poly, colour in parts]


def _rotate(parts: list[Part], angle: float) -> list[Part]:
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return [(poly @ rotation, colour) for poly, colour in parts]


def _place(copies: list[Product], size: int, rng: np.random.Generator) -> list[Placed]:
    """Drop items one by one, each inside the bin; when one does not fit, start again smaller."""
    for attempt in range(12):
        placed = _try_place(copies, size, rng, scale=0.85**attempt)
        if placed is not None:
            return placed
    raise RuntimeError(f"could not place {len(copies)} items in a {size}px bin")


def _try_place(
    copies: list[Product], size: int, rng: np.random.Generator, scale: float
) -> list[Placed] | None:
    """Each pose is rasterised once and tried at a few spots; a spot is refused when the item
    would hide too much of an earlier one, or its label."""
    labels = np.zeros((size, size), dtype=np.uint8)  # which item shows at each pixel
    visible = [0]  # visible pixels per item number (0: background)
    placed: list[Placed] = []
    left, right = math.ceil(size * 0.03), int(size * 0.97)
    top, bottom = math.ceil(size * 0.1), int(size * 0.95)
    for number, product in enumerate(copies, start=1):
        for pose in range(16):
            if pose % 4 == 0:
                upright = _shape(product, rng, scale=scale * 0.9 ** (pose // 4))
            limit = 0.5 if product.kind in ("box", "flat") else 0.35
            angle = rng.uniform(-limit, limit) + (math.pi / 2 if rng.random() < 0.15 else 0)
            local = _rotate(upright, angle)
            points = np.concatenate([poly for poly, _ in local])
            low = points.min(axis=0) - rng.random(2)
            width, height = np.minimum(np.ceil(points.max(axis=0) - low) + 1, size).astype(int)
            mask_image = Image.new("L", (int(width), int(height)))
            mask_draw = ImageDraw.Draw(mask_image)
            for poly, _ in local:
                mask_draw.polygon((poly - low).ravel().tolist(), fill=1)
            box = mask_image.getbbox()
            if box is None or box[2] > right - left or box[3] > bottom - top:
                continue
            mask = np.asarray(mask_image.crop((0, 0, box[2], box[3])), dtype=bool)
            h, w = mask.shape
            area = int(mask.sum())
            xs = rng.integers(left, right - w + 1, 6)
            ys = rng.integers(top, bottom - h + 1, 6)
            for x0, y0 in zip(xs.tolist(), ys.tolist(), strict=True):
                region = labels[y0:y0 + h, x0:x0 + w]
                hidden = np.bincount(region[mask], minlength=number).tolist()
                if any(
                    visible[i] - hidden[i] < MIN_VISIBLE * item.area
                    or (item.product is product and hidden[i] > (1 - SAME_VISIBLE) * item.area)
                    or _covers(mask, x0, y0, item.label_box)
                    for i, item in enumerate(placed, start=1)
                ):
                    continue
                region[mask] = number
                visible = [v - n for v, n in zip(visible, hidden, strict=False)] + [area]
                centre = (x0, y0) - low  # where the item's own origin lands
                parts = [(poly + centre, colour) for poly, colour in local]
                label = _label(product, size, angle) + centre
                (bx0, by0), (bx1, by1) = np.floor(label.min(axis=0)), np.ceil(label.max(axis=0))
                label_box = (int(bx0), int(by0), int(bx1) + 1, int(by1) + 1)
                placed.append(Placed(product, parts, area, label, label_box))
                break
            else:
                continue
            break
        else:
            return None
    return placed


def _covers(mask: np.ndarray, x0: int, y0: int, box: tuple[int, int, int, int]) -> bool:
    """Whether ``mask`` (placed at x0, y0) touches any pixel of ``box``."""
    bx0, by0, bx1, by1 = box
    sub = mask[max(by0 - y0, 0):max(by1 - y0, 0), max(bx0 - x0, 0):max(bx1 - x0, 0)]
    return bool(sub.any())


def _label(product: Product, size: int, angle: float) -> np.ndarray:
    """Corners of the item's barcode label (a fixed size, along its long side), about its
    centre. Every unit carries exactly one, like the FNSKU stickers on real stock."""
    along = angle + (math.pi / 2 if product.kind == "bottle" else 0.0)
    u = np.array([math.cos(along), math.sin(along)]) * LABEL_SIZE[0] * size / 2
    v = np.array([-math.sin(along), math.cos(along)]) * LABEL_SIZE[1] * size / 2
    return np.stack([-u - v, u - v, u + v, -u + v])


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
