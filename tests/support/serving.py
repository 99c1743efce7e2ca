"""Serving tests' shared material: a small exported model and hostile images."""

from __future__ import annotations

import ast
import io
import re
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
MAX_BYTES = 1_000_000  # the request limit of the test endpoints


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


# What names test or benchmark code (a path part or module name starting with one of these),
# and the test-only packages such code imports.
TEST_CODE = ("tests", "test_", "conftest", "moto", "pytest", "local_s3", "servers", "benchmark")


def is_test_code(name: str) -> bool:
    """``name`` (a file path or a dotted module name) names test or benchmark code."""
    return any(part.startswith(TEST_CODE) for part in re.split(r"[./]", name))


def imports_of(source: str) -> set[str]:
    """The modules a Python source imports (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def assert_runtime_only(files: dict[str, bytes]) -> None:
    """No test or benchmark file among ``files`` (path -> bytes), and no module importing one."""
    for name, data in files.items():
        assert not is_test_code(name), name
        if name.endswith(".py"):
            found = {module for module in imports_of(data.decode()) if is_test_code(module)}
            assert not found, f"{name} imports {sorted(found)}"
