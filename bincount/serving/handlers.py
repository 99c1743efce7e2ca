"""SageMaker PyTorch inference handlers: the one implementation of JPEG in, JSON out.

The SageMaker PyTorch inference toolkit imports this file as ``code/inference.py`` (see
:mod:`bincount.serving.package`); the local server (:mod:`bincount.serving.server`) and
``scripts/predict.py`` call the same functions. Bad input raises the toolkit's own error types
(``sagemaker_inference.errors``) where the toolkit is installed, so it answers 4xx there too;
without it, stand-ins with the same attributes (``status_code``, ``message``, ``phrase``) are used.

Request limits come from the environment (the endpoint's ``env`` on SageMaker, set from
``conf/deploy.yaml``; ``conf/serve.yaml`` locally): ``BINCOUNT_MAX_REQUEST_BYTES`` and
``BINCOUNT_MAX_IMAGE_PIXELS``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from bincount.data.transforms import eval_transform
from bincount.models.export import ModelSpec, load_model

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
# Used only where the environment does not set them (a model deployed by hand); serve, deploy
# and predict set both from conf/limits/default.yaml.
FALLBACK_MAX_REQUEST_BYTES = 5 * 1024 * 1024
FALLBACK_MAX_IMAGE_PIXELS = 40_000_000


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

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_request_bytes=_env_int(MAX_REQUEST_BYTES_ENV, FALLBACK_MAX_REQUEST_BYTES),
            max_image_pixels=_env_int(MAX_IMAGE_PIXELS_ENV, FALLBACK_MAX_IMAGE_PIXELS),
        )

    def to_env(self) -> dict[str, str]:
        return {
            MAX_REQUEST_BYTES_ENV: str(self.max_request_bytes),
            MAX_IMAGE_PIXELS_ENV: str(self.max_image_pixels),
        }


def _env_int(name: str, fallback: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return fallback
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"environment variable {name} must be a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class Model:
    """What ``model_fn`` loads: the net in eval mode (on the GPU if there is one), its spec and
    its evaluation transform."""

    net: nn.Module
    spec: ModelSpec
    transform: Callable[[Image.Image], torch.Tensor]
    device: torch.device

    @property
    def label(self) -> str:
        return f"{self.spec.name}/{self.spec.version}"


def model_fn(model_dir: str) -> Model:
    """Load ``model.json`` + ``model.pt`` (``weights_only=True``) from the model directory."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, spec = load_model(Path(model_dir), map_location=device)
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    return Model(net=net.to(device), spec=spec, transform=transform, device=device)


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


def decode_image(data: bytes, limits: Limits) -> Image.Image:
    """Bytes -> RGB image; refuses huge dimensions before decoding any pixel.

    Pillow's own decompression-bomb guard stays on (it raises at 2x ``MAX_IMAGE_PIXELS``);
    ``limits.max_image_pixels`` is the stricter bound of this endpoint.
    """
    expected = f"expected a {'/'.join(IMAGE_FORMATS)} image"
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise RequestError(
                    HTTPStatus.BAD_REQUEST,
                    f"image is {width}x{height} = {width * height} pixels; the limit is "
                    f"{limits.max_image_pixels} (possible decompression bomb)",
                )
            return image.convert("RGB")
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
    batch = torch.stack([model.transform(image) for image in images]).to(model.device)
    with torch.inference_mode():
        probabilities = torch.softmax(model.net(batch), dim=1).cpu()
    return [result(row, model) for row in probabilities.tolist()]


def result(probabilities: Sequence[float], model: Model) -> dict[str, Any]:
    """The response: the most probable count, every count's probability, the model."""
    counts = model.spec.counts
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
    return json.dumps(prediction).encode(), content_type
