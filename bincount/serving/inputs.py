"""What a request to the endpoint may be, decoded and checked before the model sees it.

Two bodies are accepted: one image (``image/jpeg``, ``image/png``, ``application/x-image``), or
a JSON object ``{"image": "<base64 JPEG/PNG>", "expected": 3}`` (``application/json``). The
expected count (reconciliation) may also come as the SageMaker runtime sends side information:
``CustomAttributes`` (the ``X-Amzn-SageMaker-Custom-Attributes`` header), ``expected=3`` among
other ``key=value`` pairs separated by ``,`` or ``;``. The SageMaker inference toolkit hands the
handlers its request ``context`` (TorchServe's: ``context.request_processor[0]
.get_request_properties()`` holds the headers); the local server passes a
:class:`RequestContext` with the same interface.

Request limits come from the environment (the endpoint's ``env`` on SageMaker, set from
``conf/limits/default.yaml`` by deploy, serve and predict): ``BINCOUNT_MAX_REQUEST_BYTES``,
``BINCOUNT_MAX_IMAGE_PIXELS``, ``BINCOUNT_MAX_IMAGE_SIDE``, ``BINCOUNT_MAX_ASPECT_RATIO`` and
``BINCOUNT_DECODE_SIDE``. They bound the work one request can cause: the size, pixel count,
longest side and aspect ratio are checked from the image header before any pixel is decoded, and
a large image is decoded at reduced size (JPEG's DCT scaling, else ``Image.reduce``).

Bad input raises the toolkit's own error types (``sagemaker_inference.errors``) where the toolkit
is installed, so it answers 4xx there too; without it, stand-ins with the same attributes
(``status_code``, ``message``, ``phrase``) are used.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from PIL import Image, UnidentifiedImageError

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
REQUEST_TYPES = (*IMAGE_TYPES, JSON)  # JSON: {"image": "<base64>", "expected": <count>}
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


def media_type(header: str | None) -> str:
    """``"image/jpeg; q=1"`` -> ``"image/jpeg"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    kind = media_type(content_type)
    if kind not in REQUEST_TYPES:
        raise UnsupportedMediaType(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type or '(none)'!r} is not supported: "
            f"send one image as {', '.join(IMAGE_TYPES)}, or {JSON} "
            '{"image": "<base64>", "expected": <count>}',
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


def decode_image(data: bytes, limits: Limits, what: str = "request body") -> Image.Image:
    """Bytes -> RGB image; refuses huge or extreme dimensions before decoding any pixel.
    ``what`` names the bytes in a refusal (the JSON body's ``image`` field, say).

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
            HTTPStatus.BAD_REQUEST, f"{what} is not an image of a known format: {expected}"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"{what} is not a decodable image ({err}): {expected}"
        ) from err



# --- reconciliation: the expected count, from CustomAttributes or a JSON body ---------------

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
EXPECTED_KEY = "expected"
_INTEGER = re.compile(r"[+-]?\d{1,9}")


def bad_request(message: str) -> RequestError:
    return RequestError(HTTPStatus.BAD_REQUEST, message)


@dataclass(frozen=True)
class RequestProperties:
    """TorchServe's per-request header holder, as the toolkit's ``context`` exposes it."""

    headers: Mapping[str, str]

    def get_request_properties(self) -> Mapping[str, str]:
        return self.headers


@dataclass(frozen=True)
class RequestContext:
    """What the local server hands ``input_fn`` as the toolkit's ``context``: the request's
    headers at ``request_processor[0].get_request_properties()``."""

    request_processor: list[RequestProperties]

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> RequestContext:
        return cls([RequestProperties(dict(headers))])


def request_headers(context: Any) -> Mapping[str, str]:
    """The headers of the toolkit's (or the local server's) request ``context``; {} without."""
    try:
        headers = context.request_processor[0].get_request_properties()
    except (AttributeError, IndexError, KeyError, TypeError):
        return {}
    return headers if isinstance(headers, Mapping) else {}


def custom_attributes(context: Any) -> str | None:
    """The ``X-Amzn-SageMaker-Custom-Attributes`` header of the request (any spelling)."""
    wanted = CUSTOM_ATTRIBUTES_HEADER.lower()
    for name, value in request_headers(context).items():
        if isinstance(name, str) and name.lower() == wanted and isinstance(value, str):
            return value
    return None


def expected_from_attributes(attributes: str | None) -> int | None:
    """``expected=<count>`` among ``key=value`` pairs separated by ``,`` or ``;`` (other pairs
    are someone else's and left alone); None when it is not there. A bad value is a 400 naming
    ``CustomAttributes``."""
    found: set[str] = set()
    for part in re.split(r"[,;]", attributes or ""):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == EXPECTED_KEY:
            found.add(value.strip())
    if not found:
        return None
    if len(found) > 1:
        raise bad_request(f"CustomAttributes: {EXPECTED_KEY} is given more than once with "
                          f"different values ({', '.join(sorted(found))}): give one count")
    (text,) = found
    if not _INTEGER.fullmatch(text):
        raise bad_request(f"CustomAttributes: {EXPECTED_KEY}={text!r} is not an integer count "
                          f"(send e.g. {EXPECTED_KEY}=3)")
    return int(text)


def expected_from_json(value: Any) -> int | None:
    """The JSON body's ``expected``: an integer count (null or absent: none)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{EXPECTED_KEY}: expected an integer count, got {json.dumps(value)}")
    return value


def parse_json_body(text: str | bytes, limits: Limits) -> tuple[Image.Image, int | None]:
    """``{"image": "<base64 JPEG/PNG>", "expected": 3}`` -> (image, expected)."""
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"request body is not valid JSON ({err}): expected "
                          '{"image": "<base64 JPEG/PNG>", "expected": <count>}') from err
    if not isinstance(body, dict) or not isinstance(body.get("image"), str):
        raise bad_request('image: the JSON body must be an object with "image", a base64 JPEG '
                          'or PNG (and optionally "expected", an integer count)')
    encoded = body["image"]
    if encoded.startswith("data:") and "," in encoded:  # a data URL: data:image/png;base64,...
        encoded = encoded.split(",", 1)[1]
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as err:
        raise bad_request(f"image: not valid base64 ({err})") from err
    if not data:
        raise bad_request("image: empty: expected a base64 JPEG or PNG")
    return decode_image(data, limits, what="image"), expected_from_json(body.get(EXPECTED_KEY))
