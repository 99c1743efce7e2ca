"""SageMaker PyTorch inference handlers: the one implementation of image in, JSON out.

The SageMaker PyTorch inference toolkit imports this file as ``code/inference.py`` (see
:mod:`bincount.serving.package`); the local server (:mod:`bincount.serving.server`) and
``scripts/predict.py`` call the same functions. What a request may be (an image, or JSON with
a base64 image and an expected count; ``CustomAttributes``), its limits and the 4xx errors live
in :mod:`bincount.serving.inputs`.

What runs the network comes from the environment (:mod:`bincount.serving.runtimes`):
``BINCOUNT_RUNTIME`` (``auto``, ``torch``, ``onnx`` or ``int8``; ``auto``: the fastest runtime in
the model directory that passed its check), ``BINCOUNT_THREADS`` and ``BINCOUNT_TTA`` (``none``
or ``hflip``: average the image's and its mirror's probabilities). Every runtime applies the
model's temperature, so the probabilities are calibrated, and gives the same JSON.

Reconciliation: a request that carries an expected count gets ``expected``, ``p_expected`` (the
calibrated probability of exactly that count) and ``verdict`` (``match``, ``mismatch`` or
``review``, by the thresholds in ``model.json``); one without answers as before.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bincount.data.abid import DataError
from bincount.data.transforms import eval_transform
from bincount.models.export import SPEC_FILE, ModelSpec, load_spec
from bincount.models.reconcile import Thresholds, reconcile
from bincount.serving.inputs import (  # noqa: F401 (the handlers' public names, re-exported)
    ACCEPTABLE,
    CUSTOM_ATTRIBUTES_HEADER,
    DECODE_SIDE_ENV,
    FALLBACK_DECODE_SIDE,
    FALLBACK_MAX_ASPECT_RATIO,
    FALLBACK_MAX_IMAGE_PIXELS,
    FALLBACK_MAX_IMAGE_SIDE,
    FALLBACK_MAX_REQUEST_BYTES,
    IMAGE_FORMATS,
    IMAGE_TYPES,
    JSON,
    MAX_ASPECT_RATIO_ENV,
    MAX_IMAGE_PIXELS_ENV,
    MAX_IMAGE_SIDE_ENV,
    MAX_REQUEST_BYTES_ENV,
    REQUEST_TYPES,
    BaseInferenceToolkitError,
    Limits,
    RequestContext,
    RequestError,
    UnsupportedFormatError,
    UnsupportedMediaType,
    bad_request,
    check_content_type,
    check_dimensions,
    check_size,
    custom_attributes,
    decode_image,
    decode_reduced,
    expected_from_attributes,
    media_type,
    parse_json_body,
    response_type,
)
from bincount.serving.runtimes import (  # noqa: F401 (load_checked: re-exported)
    Runtime,
    load_checked,
    load_runtime,
    runtime_from_env,
    set_threads,
    tta_from_env,
    with_tta,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    """What ``model_fn`` loads: the runtime that runs the net (PyTorch in eval mode, on the GPU
    if there is one, or ONNX Runtime), the spec and its evaluation transform."""

    runtime: Runtime  # calibrated probabilities (the temperature and TTA applied)
    spec: ModelSpec
    transform: Callable[[Image.Image], torch.Tensor]
    thresholds: Thresholds | None  # model.json's "reconcile"; None: every verdict is review

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
    passed its check) with ``BINCOUNT_THREADS`` threads and ``BINCOUNT_TTA``, as the SageMaker
    toolkit calls it (with the directory only: it counts this function's parameters)."""
    name, threads = runtime_from_env(Path(model_dir))
    return load_served_model(model_dir, name, threads, tta_from_env())


def load_served_model(model_dir: str | Path, name: str, threads: int, tta: str) -> Model:
    """``model.json`` and runtime ``name`` (already chosen) with ``threads`` intra-op threads
    and test-time augmentation ``tta`` (``none`` or ``hflip``); what the local server and
    predict load. A model file that is broken or gives non-finite outputs is refused with a
    one-line :class:`DataError` naming the file (:func:`~bincount.serving.runtimes.load_runtime`).
    """
    directory = Path(model_dir)
    set_threads(name, threads)  # this thread's; the local server's inference thread sets its own
    spec = load_spec(directory)
    runtime = with_tta(load_runtime(directory, name, threads), tta)
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    return Model(runtime=runtime, spec=spec, transform=transform,
                 thresholds=thresholds_of(spec, directory, tta))


def thresholds_of(spec: ModelSpec, model_dir: Path, tta: str = "none") -> Thresholds | None:
    """The reconciliation thresholds of ``model.json`` for ``tta`` (None for a model without
    them): with ``hflip``, those fitted on mirror-averaged probabilities where the model has
    them (a model exported before them falls back to the plain ones, with a warning)."""
    key, record = "reconcile", spec.reconcile
    if tta == "hflip":
        if spec.reconcile_hflip is not None:
            key, record = "reconcile_hflip", spec.reconcile_hflip
        elif spec.reconcile is not None:
            log.warning("%s has no thresholds fitted with tta=hflip: its verdicts use those "
                        "fitted without it (retrain to fit both)", model_dir / SPEC_FILE)
    try:
        return Thresholds.from_record(record)
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{model_dir / SPEC_FILE}: \"{key}\" is not a thresholds record "
            f"({type(err).__name__}: {err}): fit it again with the training run") from err


def input_fn(
    request_body: bytes | bytearray | str, content_type: str, context: Any = None
) -> Request:
    """Decode one request: an image, or JSON ``{"image": "<base64>", "expected": 3}``; the
    expected count may also come in ``CustomAttributes`` (``expected=3``), read from the
    toolkit's ``context`` (the toolkit passes it because this function takes three parameters)
    or the local server's :class:`~bincount.serving.inputs.RequestContext`."""
    kind = check_content_type(content_type)
    if isinstance(request_body, str):  # the toolkit decodes JSON bodies to text
        request_body = request_body.encode()
    limits = Limits.from_env()
    check_size(len(request_body), limits.max_request_bytes)
    if not request_body:
        raise RequestError(HTTPStatus.BAD_REQUEST, "request body is empty: expected one image")
    attributed = expected_from_attributes(custom_attributes(context))
    if kind == JSON:
        image, expected = parse_json_body(bytes(request_body), limits)
        if None not in (expected, attributed) and expected != attributed:
            raise bad_request(f"expected: the JSON body says {expected} and CustomAttributes "
                              f"says expected={attributed}: give one")
        return Request(image, attributed if expected is None else expected)
    return Request(decode_image(bytes(request_body), limits), attributed)


def check_expected(request: Request, model: Model) -> None:
    """A 400 naming ``expected`` when it is not one of the counts the model gives."""
    counts = model.spec.counts
    if request.expected is not None and request.expected not in counts:
        raise bad_request(f"expected: {request.expected} is not a count this model gives "
                          f"(one of {', '.join(map(str, counts))})")


def as_request(item: Request | Image.Image) -> Request:
    return item if isinstance(item, Request) else Request(item)


def predict_fn(
    data: Request | Image.Image | Sequence[Request | Image.Image], model: Model
) -> list[dict[str, Any]]:
    """One forward pass over one request/image or a batch of them; one result dict per image
    (with the reconciliation fields where an expected count was given)."""
    single = isinstance(data, Request | Image.Image)
    requests = [as_request(data)] if single else [as_request(item) for item in data]
    for request in requests:
        check_expected(request, model)
    batch = torch.stack([model.transform(request.image) for request in requests])
    rows = model.runtime.probabilities(batch).tolist()
    return [result(row, model, request.expected)
            for row, request in zip(rows, requests, strict=True)]


def result(
    probabilities: Sequence[float], model: Model, expected: int | None = None
) -> dict[str, Any]:
    """The response: the most probable count, every count's probability, the model, and for an
    expected count ``expected``, ``p_expected`` and ``verdict``."""
    counts = model.spec.counts
    if not all(math.isfinite(p) for p in probabilities):  # never NaN/Infinity in the JSON
        raise ValueError(f"model {model.label} gave non-finite probabilities for this image")
    best = max(range(len(counts)), key=lambda index: probabilities[index])
    answer = {
        "count": int(counts[best]),
        "probabilities": {
            str(count): round(float(p), 6) for count, p in zip(counts, probabilities, strict=True)
        },
        "model": model.label,
    }
    if expected is not None:
        answer.update(reconcile(probabilities, counts, expected, model.thresholds))
    return answer


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
