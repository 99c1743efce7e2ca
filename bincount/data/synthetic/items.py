"""What goes into a synthetic bin: products (kind, colours, size, ABID metadata) and where
their copies land, each staying ``MIN_VISIBLE`` visible with its barcode label uncovered."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

MIN_VISIBLE = 0.7  # fraction of an item's silhouette that must stay visible
SAME_VISIBLE = 0.85  # ... of which a copy of the same product (it blends in) may hide the rest
LABEL_SIZE = (0.16, 0.085)  # barcode label width and height, in image widths
BIN_WIDTH_IN = 24.0  # the bin interior width in inches, to turn pixels into product sizes

Point = tuple[float, float]
Colour = tuple[int, int, int]
Part = tuple[np.ndarray, Colour]  # an (n, 2) polygon in pixels and its fill
KINDS = ("box", "bottle", "bag", "flat")
KIND_WEIGHTS = (0.35, 0.2, 0.25, 0.2)
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


def jitter(colour: Colour, rng: np.random.Generator, amount: int) -> Colour:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return r, g, b


def shade(colour: Colour, factor: float) -> Colour:
    r, g, b = (int(min(255, c * factor)) for c in colour)
    return r, g, b


def _item_colour(bin_colour: Colour, rng: np.random.Generator) -> Colour:
    """A product colour that stands out from the bin fabric (countability over realism)."""
    for _ in range(50):
        if rng.random() < 0.25:  # neutrals: white, black, grey, kraft
            base = [(240, 240, 236), (35, 35, 38), (130, 132, 135), (176, 136, 92)]
            colour = jitter(base[int(rng.integers(4))], rng, 12)
        else:
            rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.95), rng.uniform(0.3, 0.95))
            colour = (int(rgb[0] * 255), int(rgb[1] * 255), int(rgb[2] * 255))
        if sum((a - b) ** 2 for a, b in zip(colour, bin_colour, strict=True)) > 70**2:
            return colour
    return 40, 60, 160


def choose_products(
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
        colour=colour, accent=shade(colour, 0.72 if sum(colour) > 360 else 1.45),
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
            ([(x0, y0), (x1, y0), (x1 + d, y0 - d * 0.7), (x0 + d, y0 - d * 0.7)], shade(c, 1.25)),
            ([(x1, y0), (x1 + d, y0 - d * 0.7), (x1 + d, y1 - d * 0.7), (x1, y1)], shade(c, 0.7)),
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
        parts = [(blob, c), (_ellipse(-w * 0.05, h * 0.05, w * 0.2, h * 0.15), shade(c, 1.15))]
    else:  # flat: mailer, book, card, with a flap
        parts = [
            (rect, c),
            ([(x0, y0), (x1, y0), (0, y0 + h * 0.35)], shade(c, 0.85)),
        ]
    return [(np.asarray(poly, dtype=np.float64), colour) for poly, colour in parts]


def _rotate(parts: list[Part], angle: float) -> list[Part]:
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return [(poly @ rotation, colour) for poly, colour in parts]


def place(copies: list[Product], size: int, rng: np.random.Generator) -> list[Placed]:
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
