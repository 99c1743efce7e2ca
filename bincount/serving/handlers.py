"""SageMaker PyTorch inference handlers: the one implementation of JPEG in, JSON out.

The SageMaker PyTorch inference toolkit imports this file as ``code/inference.py`` (see
:mod:`bincount.serving.package`); the local server (:mod:`bincount.serving.server`) and
``scripts/predict.py`` call the same functions. Bad input raises the toolkit's own error types
(``sagemaker_inference.errors``) where the toolkit is installed, so it answers 4xx there too;
without it, stand-ins with the same attributes (``status_code``, ``message``, ``phrase``) are used.

What runs the network comes from the environment too (:mod:`bincount.serving.runtimes`):
``BINCOUNT_RUNTIME`` (``auto``, ``torch``, ``onnx`` or ``int8``; ``auto``: the fastest runtime in
the model directory that passed its check) and ``BINCOUNT_THREADS``. Every runtime gets the same
preprocessing and gives the same JSON.

Request limits come from the environment (the endpoint's ``env`` on SageMaker, set from
``conf/limits/default.yaml`` by deploy, serve and predict): ``BINCOUNT_MAX_REQUEST_BYTES``,
``BINCOUNT_MAX_IMAGE_PIXELS``, ``BINCOUNT_MAX_IMAGE_SIDE``, ``BINCOUNT_MAX_ASPECT_RATIO`` and
``BINCOUNT_DECODE_SIDE``. They bound the work one request can cause: the size, pixel count,
longest side and aspect ratio are checked from the image header before any pixel is decoded, and
a large image is decoded at reduced size (JPEG's DCT scaling, else ``Image.reduce``).
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from bincount.data.abid import DataError
from bincount.data.transforms import eval_transform
from bincount.models.export import WEIGHTS_FILE, ModelSpec, load_model, load_spec
from bincount.serving.runtimes import (
    Runtime,
    TorchRuntime,
    load_runtime,
    runtime_from_env,
    set_threads,
)

try:  # inside the SageMaker inference container (or wherever the toolkit is installed)
    from sagemaker_inference.errors import BaseInferenceToolkitError, UnsupportedFormatError
except ImportError:  # the local server and the predict CLI depend on the project's deps only

    class BaseInferenceToolkitError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``sagemaker_inference.errors.BaseInferenceToolkitError``."""

        def __init__(self, status_code: int, message: str, phrase: str) -> None:
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)

    class UnsupportedFormatError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``sagemaker_inference.errors.UnsupportedFormatError``."""


JSON = "application/json"
# Request content types this endpoint decodes; the decoded formats are checked separately.
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
ACCEPTABLE = (JSON, "application/*", "*/*")

MAX_REQUEST_BYTES_ENV = "BINCOUNT_MAX_REQUEST_BYTES"
MAX_IMAGE_PIXELS_ENV = "BINCOUNT_MAX_IMAGE_PIXELS"
MAX_IMAGE_SIDE_ENV = "BINCOUNT_MAX_IMAGE_SIDE"
MAX_ASPECT_RATIO_ENV = "BINCOUNT_MAX_ASPECT_RATIO"
DECODE_SIDE_ENV = "BINCOUNT_DECODE_SIDE"
# Used only where the environment does not set them (a model deployed by hand); serve, deploy
# and predict set them all from conf/limits/default.yaml (a test proves they are equal).
FALLBACK_MAX_REQUEST_BYTES = 5 * 1024 * 1024
FALLBACK_MAX_IMAGE_PIXELS = 40_000_000
FALLBACK_MAX_IMAGE_SIDE = 16384
FALLBACK_MAX_ASPECT_RATIO = 10.0
FALLBACK_DECODE_SIDE = 1024


class RequestError(BaseInferenceToolkitError):
    """A bad request: the toolkit answers it with ``status_code`` (4xx), not 500."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(int(status), message, status.phrase)


class UnsupportedMediaType(UnsupportedFormatError, RequestError):
    """The toolkit's ``UnsupportedFormatError`` that also carries its HTTP status (415 or 406).

    The toolkit maps only ``BaseInferenceToolkitError`` to a status (anything else is 500),
    so this is both.
    """

    def __init__(self, status: HTTPStatus, message: str) -> None:
        RequestError.__init__(self, status, message)
        self._message = message


@dataclass(frozen=True)
class Limits:
    """The request limits (from the environment here; from the config in
    :func:`bincount.serving.settings.limits_from_cfg`)."""

    max_request_bytes: int
    max_image_pixels: int
    max_image_side: int  # the longest side, in pixels
    max_aspect_ratio: float  # longest side / shortest side
    decode_side: int  # a larger image is decoded at reduced size, its longest side >= this

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_request_bytes=_env_number(MAX_REQUEST_BYTES_ENV, FALLBACK_MAX_REQUEST_BYTES),
            max_image_pixels=_env_number(MAX_IMAGE_PIXELS_ENV, FALLBACK_MAX_IMAGE_PIXELS),
            max_image_side=_env_number(MAX_IMAGE_SIDE_ENV, FALLBACK_MAX_IMAGE_SIDE),
            max_aspect_ratio=_env_number(MAX_ASPECT_RATIO_ENV, FALLBACK_MAX_ASPECT_RATIO, float),
            decode_side=_env_number(DECODE_SIDE_ENV, FALLBACK_DECODE_SIDE),
        )

    def to_env(self) -> dict[str, str]:
        return {
            MAX_REQUEST_BYTES_ENV: str(self.max_request_bytes),
            MAX_IMAGE_PIXELS_ENV: str(self.max_image_pixels),
            MAX_IMAGE_SIDE_ENV: str(self.max_image_side),
            MAX_ASPECT_RATIO_ENV: str(self.max_aspect_ratio),
            DECODE_SIDE_ENV: str(self.decode_side),
        }


def _env_number(name: str, fallback: Any, kind: type = int) -> Any:
    value = os.environ.get(name)
    if value is None:
        return fallback
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0 or not math.isfinite(number):
        raise ValueError(f"environment variable {name} must be a positive {kind.__name__}, "
                         f"got {value!r}")
    return number


@dataclass(frozen=True)
class Model:
    """What ``model_fn`` loads: the runtime that runs the net (PyTorch in eval mode, on the GPU
    if there is one, or ONNX Runtime), the spec and its evaluation transform."""

    runtime: Runtime
    spec: ModelSpec
    transform: Callable[[Image.Image], torch.Tensor]

    @property
    def label(self) -> str:
        return f"{self.spec.name}/{self.spec.version}"


@dataclass(frozen=True)
class Request:
    """One decoded request: the image and, when the caller gave one, the expected count
    (reconciliation: the answer then adds ``expected``, ``p_expected`` and ``verdict``)."""

    image: Image.Image
    expected: int | None = None


def model_fn(model_dir: str) -> Model:
    """Load ``model.json`` and the runtime ``BINCOUNT_RUNTIME`` names (default: the fastest that
    passed its check) with ``BINCOUNT_THREADS`` threads, as the SageMaker toolkit calls it (with
    the directory only: it counts this function's parameters)."""
    name, threads = runtime_from_env(Path(model_dir))
    return load_served_model(model_dir, name, threads)


def load_served_model(model_dir: str | Path, name: str, threads: int) -> Model:
    """``model.json`` and runtime ``name`` (already chosen) with ``threads`` intra-op threads;
    what the local server and predict load. ``model.pt`` loads ``weights_only=True``.

    A file that is not the weights ``model.json`` describes, or weights that are not all finite,
    is refused with a one-line :class:`DataError` naming the file.
    """
    directory = Path(model_dir)
    set_threads(name, threads)  # this thread's; the local server's inference thread sets its own
    loaded: Runtime
    if name == "torch":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net, spec = load_checked(directory, device)
        loaded = TorchRuntime(net=net.to(device), device=device)
    else:
        spec = load_spec(directory)
        loaded = load_runtime(directory, name, threads)
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    return Model(runtime=loaded, spec=spec, transform=transform)


def load_checked(model_dir: Path, device: torch.device) -> tuple[nn.Module, ModelSpec]:
    """:func:`load_model`, with every way ``model.pt`` can be wrong said in one line."""
    weights = model_dir / WEIGHTS_FILE
    try:
        net, spec = load_model(model_dir, map_location=device)
    except DataError:
        raise
    except pickle.UnpicklingError as err:  # torch's text would suggest weights_only=False
        raise DataError(
            f"{weights} is not a state dict of tensors as torch.save writes it (a damaged file, "
            "or one holding other objects or code, which are never loaded): export the model "
            "again with the training run"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError) as err:
        reason = " ".join(str(err).split())
        if len(reason) > 240:
            reason = reason[:240] + " ..."
        raise DataError(
            f"{weights} cannot be loaded as the weights model.json describes "
            f"({spec_text(model_dir)}): {type(err).__name__}: {reason}"
        ) from err
    tensors = {name: t for name, t in net.state_dict().items() if t.is_floating_point()}
    broken = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if broken:
        raise DataError(
            f"{weights}: {len(broken)} of {len(tensors)} weight tensors hold NaN or infinite "
            f"values (first: {broken[0]}); this model cannot serve: train it again"
        )
    return net, spec


def spec_text(model_dir: Path) -> str:
    """What model.json says the net is, in a few words (it was read before the weights)."""
    try:
        spec = load_spec(model_dir)
    except DataError:
        return "unreadable"
    return f"arch {spec.arch}, {len(spec.counts)} counts"


def media_type(header: str | None) -> str:
    """``"image/jpeg; q=1"`` -> ``"image/jpeg"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    kind = media_type(content_type)
    if kind not in IMAGE_TYPES:
        raise UnsupportedMediaType(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type or '(none)'!r} is not supported: "
            f"send one image as {', '.join(IMAGE_TYPES)}",
        )
    return kind


def response_type(accept: str | None) -> str:
    """The response content type for an ``Accept`` header (406 if JSON is not acceptable)."""
    if not accept or not accept.strip():
        return JSON
    for part in accept.split(","):
        if media_type(part) in ACCEPTABLE:
            return JSON
    raise UnsupportedMediaType(
        HTTPStatus.NOT_ACCEPTABLE,
        f"Accept {accept!r} cannot be served: this endpoint answers {JSON}",
    )


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"request body is {size} bytes; the limit is {max_bytes} bytes",
        )


def input_fn(request_body: bytes | bytearray, content_type: str) -> Image.Image:
    """Decode one image request into an RGB PIL image (as ``load_rgb`` reads a file)."""
    check_content_type(content_type)
    if isinstance(request_body, str):  # the toolkit decodes text types; images never are
        request_body = request_body.encode()
    limits = Limits.from_env()
    check_size(len(request_body), limits.max_request_bytes)
    if not request_body:
        raise RequestError(HTTPStatus.BAD_REQUEST, "request body is empty: expected one image")
    return decode_image(bytes(request_body), limits)


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    """Refuse (400) an image whose header promises more work than a request may cause."""
    longest, shortest = max(width, height), min(width, height)
    if width * height > limits.max_image_pixels:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_image_pixels} (possible decompression bomb)",
        )
    if longest > limits.max_image_side:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"image is {width}x{height}; the longest side may be at most "
            f"{limits.max_image_side} pixels",
        )
    if shortest < 1 or longest / shortest > limits.max_aspect_ratio:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"image is {width}x{height}; the aspect ratio (longest / shortest side) may be at "
            f"most {limits.max_aspect_ratio:g}",
        )


def decode_reduced(image: Image.Image, side: int) -> Image.Image:
    """The opened image as RGB, decoded at reduced size when its longest side exceeds ``side``
    (the result's longest side stays >= ``side``); a smaller image is decoded as it is."""
    width, height = image.size
    longest = max(width, height)
    if longest > side:  # JPEG: decode at 1/2, 1/4 or 1/8 scale (no-op for other formats)
        scale = side / longest
        image.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
    rgb = image.convert("RGB")
    factor = max(rgb.size) // side
    return rgb.reduce(factor) if factor >= 2 else rgb


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Bytes -> RGB image; refuses huge or extreme dimensions before decoding any pixel.

    Pillow's own decompression-bomb guard stays on (it raises at 2x ``MAX_IMAGE_PIXELS``);
    ``limits`` are the stricter bounds of this endpoint.
    """
    expected = f"expected a {'/'.join(IMAGE_FORMATS)} image"
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            check_dimensions(*image.size, limits)
            return decode_reduced(image, limits.decode_side)
    except Image.DecompressionBombError as err:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"decompression bomb refused: {err}") from err
    except UnidentifiedImageError as err:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"request body is not an image of a known format: {expected}"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"request body is not a decodable image ({err}): {expected}"
        ) from err


def predict_fn(data: Image.Image | Sequence[Image.Image], model: Model) -> list[dict[str, Any]]:
    """One forward pass over one image or a batch of images; one result dict per image."""
    images = [data] if isinstance(data, Image.Image) else list(data)
    batch = torch.stack([model.transform(image) for image in images])
    return [result(row, model) for row in model.runtime.probabilities(batch).tolist()]


def result(probabilities: Sequence[float], model: Model) -> dict[str, Any]:
    """The response: the most probable count, every count's probability, the model."""
    counts = model.spec.counts
    if not all(math.isfinite(p) for p in probabilities):  # never NaN/Infinity in the JSON
        raise ValueError(f"model {model.label} gave non-finite probabilities for this image")
    best = max(range(len(counts)), key=lambda index: probabilities[index])
    return {
        "count": int(counts[best]),
        "probabilities": {
            str(count): round(float(p), 6) for count, p in zip(counts, probabilities, strict=True)
        },
        "model": model.label,
    }


def output_fn(
    prediction: list[dict[str, Any]] | dict[str, Any], accept: str
) -> tuple[bytes, str]:
    """(JSON body, content type) for one image's result; ``predict_fn`` returns a list, and one
    request holds one image. The toolkit takes the tuple's second item as the content type."""
    content_type = response_type(accept)
    if isinstance(prediction, list):
        if len(prediction) != 1:
            raise ValueError(f"output_fn serializes one result, got {len(prediction)}")
        prediction = prediction[0]
    return json.dumps(prediction, allow_nan=False).encode(), content_type
