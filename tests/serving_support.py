"""Shared by the tests/test_serving_*.py files: a small exported model and hostile images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import torch
from PIL import Image

from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec, export_model

IMAGE_SIZE = 64
SAMPLE_IDS = ("00001", "00002", "00003", "00010")


def make_model_dir(path: Path, seed: int = 0) -> Path:
    """An untrained resnet18 exported at 64 px: the real format, no training needed."""
    torch.manual_seed(seed)
    net = build_resnet("resnet18", num_classes=5, pretrained=False)
    spec = ModelSpec(
        arch="resnet18",
        image_size=IMAGE_SIZE,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        counts=[1, 2, 3, 4, 5],
        name="tiny",
        version="1",
    )
    return export_model(net, spec, path)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, a few kB (zlib of zero rows): the shape of a
    decompression bomb. Written directly because Pillow takes seconds to encode one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    rows = zlib.compress(bytes((1 + (width + 7) // 8) * height), 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def bomb_png() -> bytes:
    """15000x15000 pixels: past Pillow's own guard (2x its MAX_IMAGE_PIXELS), which refuses it
    on open."""
    return blank_png(15000, 15000)


def huge_png() -> bytes:
    """8000x8000 pixels (64 M): under Pillow's guard, over the endpoint's 40 M pixel limit."""
    return blank_png(8000, 8000)
