"""Serving tests' shared material: a small exported model and hostile images."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import socket
import struct
import zlib
from pathlib import Path

import torch
from PIL import Image

from bincount.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec, export_model
from bincount.models.onnx import update_spec_json
from bincount.models.reconcile import Thresholds

IMAGE_SIZE = 64
SAMPLE_IDS = ("00001", "00002", "00003", "00010")
MAX_BYTES = 1_000_000  # the request limit of the test endpoints
# Reconciliation thresholds for the untrained tiny model, whose probabilities on the sample
# photos lie in 0.13-0.28 with count 1 the most probable: expected=1 is a match, expected=3 a
# review and expected=5 a mismatch for each of SAMPLE_IDS.
THRESHOLDS = Thresholds(match_threshold=0.25, mismatch_threshold=0.16,
                        match_precision=0.95, mismatch_precision=0.95)
VERDICTS = {1: "match", 3: "review", 5: "mismatch"}


def make_model_dir(path: Path, seed: int = 0) -> Path:
    """An untrained resnet18 exported at 64 px: the real format, no training needed; its
    model.json carries :data:`THRESHOLDS` (as a training run fits them on val)."""
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
    export_model(net, spec, path)
    update_spec_json(path, reconcile=THRESHOLDS.to_record())
    return path


def torch_only_model_dir(path: Path, source: Path | None = None) -> Path:
    """An exported model without ``model.onnx`` (as an export before ONNX, or whose ONNX check
    failed, leaves it): ``model.pt`` is what serves. A copy of ``source`` (one made by this
    function) when given, which is faster than exporting again."""
    if source is not None:
        shutil.copytree(source, path)
        return path
    make_model_dir(path)
    (path / "model.onnx").unlink(missing_ok=True)
    return path


def nan_model_dir(path: Path, source: Path | None = None) -> Path:
    """A torch-only model whose head holds a NaN (what a diverged run used to export)."""
    torch_only_model_dir(path, source)
    weights = torch.load(path / "model.pt", weights_only=True)
    weights["fc.weight"][0, 0] = float("nan")
    torch.save(weights, path / "model.pt")
    return path


def wrong_arch_model_dir(path: Path, source: Path | None = None) -> Path:
    """resnet18 weights beside a model.json that says resnet50 (torch-only)."""
    torch_only_model_dir(path, source)
    spec = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**spec, "arch": "resnet50"}))
    return path


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a crafted model.pt does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def crafted_model_dir(path: Path, marker: Path, source: Path | None = None) -> Path:
    """A torch-only model whose model.pt, unpickled, would create ``marker``."""
    torch_only_model_dir(path, source)
    torch.save({"fc.weight": _RunsCode(marker)}, path / "model.pt")
    return path


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


def strip_png() -> bytes:
    """1 x 39,000,000 pixels in 76 kB: under the pixel limit, but a (3, 39M, 1) tensor used to
    cost ~20 s and ~4 GB in the evaluation resize."""
    return blank_png(1, 39_000_000)


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


def raw_request(port: int, head_only: bytes = b"", length: int = 0, sent: bytes = b"",
                timeout: float = 30) -> socket.socket:
    """A connection to 127.0.0.1:``port`` that has sent ``head_only`` (part of a request's head)
    or, if that is empty, a POST /invocations head announcing ``length`` body bytes followed by
    ``sent`` of them: a client that stalls there."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if not head_only:
        head_only = (
            "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()
    sock.sendall(head_only + sent)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of the one response the server sends, read until it
    closes the connection or the body is complete."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body
