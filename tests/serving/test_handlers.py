"""The inference handlers in this process: preprocessing, predictions, the JSON, bad input."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from bincount.data.abid import DataError
from bincount.data.dataset import load_rgb
from bincount.data.transforms import eval_transform
from bincount.models.export import load_model
from bincount.serving import handlers
from tests.support.serving import (
    SAMPLE_IDS,
    blank_png,
    bomb_png,
    crafted_model_dir,
    huge_png,
    nan_model_dir,
    png_bytes,
    strip_png,
    torch_only_model_dir,
    wrong_arch_model_dir,
)


@pytest.fixture(scope="module")
def model(model_dir: Path) -> handlers.Model:
    return handlers.model_fn(str(model_dir))


@pytest.fixture(scope="module")
def photos(sample_dir: Path) -> list[Path]:
    return [sample_dir / "images" / f"{image_id}.jpg" for image_id in SAMPLE_IDS]


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in handlers.Limits.from_env().to_env():
        monkeypatch.delenv(name, raising=False)


def test_preprocessing_is_the_eval_transform_of_the_file_as_training_reads_it(
    model: handlers.Model, photos: list[Path]
) -> None:
    spec = model.spec
    evaluation = eval_transform(spec.image_size, spec.mean, spec.std)
    for path in photos:
        served = model.transform(handlers.input_fn(path.read_bytes(), "image/jpeg").image)
        assert served.shape == (3, spec.image_size, spec.image_size)
        assert torch.equal(served, evaluation(load_rgb(path))), path


def test_predictions_match_a_direct_forward_of_the_exported_net(
    model_dir: Path, model: handlers.Model, photos: list[Path]
) -> None:
    net, spec = load_model(model_dir)
    evaluation = eval_transform(spec.image_size, spec.mean, spec.std)
    with torch.no_grad():
        expected = torch.softmax(net(torch.stack([evaluation(load_rgb(p)) for p in photos])), 1)

    images = [handlers.input_fn(p.read_bytes(), "image/jpeg") for p in photos]
    batched = handlers.predict_fn(images, model)
    singles = [handlers.predict_fn(image, model)[0] for image in images]

    for row, single, probabilities in zip(batched, singles, expected.tolist(), strict=True):
        best = max(range(5), key=probabilities.__getitem__)
        assert row["count"] == single["count"] == spec.counts[best]
        assert list(row["probabilities"]) == ["1", "2", "3", "4", "5"]
        assert list(row["probabilities"].values()) == pytest.approx(probabilities, abs=2e-6)
        assert list(single["probabilities"].values()) == pytest.approx(probabilities, abs=2e-6)
        assert row["model"] == "tiny/1"


def test_output_is_the_endpoint_json(model: handlers.Model, photos: list[Path]) -> None:
    prediction = handlers.predict_fn(handlers.input_fn(photos[0].read_bytes(), "image/jpeg"), model)
    for accept in ("application/json", "*/*", "application/json; charset=utf-8", "text/html, */*"):
        body, content_type = handlers.output_fn(prediction, accept)
        assert content_type == "application/json"
        answer = json.loads(body)
        assert set(answer) == {"count", "probabilities", "model"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert answer == prediction[0]


def test_png_and_x_image_give_the_same_answer_as_the_jpeg(
    model: handlers.Model, photos: list[Path]
) -> None:
    jpeg = photos[0].read_bytes()
    as_jpeg = handlers.predict_fn(handlers.input_fn(jpeg, "image/jpeg"), model)
    png = png_bytes(load_rgb(photos[0]))
    as_png = handlers.predict_fn(handlers.input_fn(png, "image/png"), model)
    as_x_image = handlers.predict_fn(handlers.input_fn(jpeg, "application/x-image"), model)
    assert as_jpeg == as_png == as_x_image


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        ("text/plain", b"three items", 415, "Content-Type 'text/plain' is not supported"),
        (None, b"\xff\xd8", 415, "is not supported"),
        ("image/jpeg", b"", 400, "empty"),
        ("image/jpeg", b"not an image at all", 400, "not an image"),
        ("image/png", bomb_png(), 400, "decompression bomb"),
        ("image/png", huge_png(), 400, "8000x8000"),
    ],
    ids=["text", "no-content-type", "empty", "garbage", "bomb", "too-many-pixels"],
)
def test_bad_requests_raise_toolkit_errors_with_4xx(
    content_type: str | None, body: bytes, status: int, words: str
) -> None:
    with pytest.raises(handlers.BaseInferenceToolkitError) as err:
        handlers.input_fn(body, content_type)  # type: ignore[arg-type]
    assert err.value.status_code == status
    assert words in err.value.message
    if status == 415:
        assert isinstance(err.value, handlers.UnsupportedFormatError)


def test_a_truncated_jpeg_is_a_400(photos: list[Path]) -> None:
    data = photos[0].read_bytes()
    with pytest.raises(handlers.RequestError) as err:
        handlers.input_fn(data[: len(data) // 2], "image/jpeg")
    assert err.value.status_code == 400
    assert "truncated" in err.value.message


def test_size_limit_comes_from_the_environment(
    photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = photos[0].read_bytes()
    monkeypatch.setenv(handlers.MAX_REQUEST_BYTES_ENV, str(len(data) - 1))
    with pytest.raises(handlers.RequestError) as err:
        handlers.input_fn(data, "image/jpeg")
    assert err.value.status_code == 413
    assert f"{len(data)} bytes" in err.value.message
    monkeypatch.setenv(handlers.MAX_REQUEST_BYTES_ENV, str(len(data)))
    assert isinstance(handlers.input_fn(data, "image/jpeg").image, Image.Image)


def test_a_wrong_accept_is_a_406(model: handlers.Model) -> None:
    prediction = handlers.predict_fn(Image.new("RGB", (80, 60)), model)
    with pytest.raises(handlers.UnsupportedMediaType) as err:
        handlers.output_fn(prediction, "text/csv")
    assert err.value.status_code == 406
    assert isinstance(err.value, handlers.UnsupportedFormatError)


def test_model_fn_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model.json is missing"):
        handlers.model_fn(str(tmp_path))


def test_a_1x39m_strip_is_refused_from_its_header_before_any_pixel_is_decoded() -> None:
    data = strip_png()
    start = time.perf_counter()
    with pytest.raises(handlers.RequestError) as err:
        handlers.input_fn(data, "image/png")
    assert time.perf_counter() - start < 1
    assert err.value.status_code == 400
    assert "1x39000000" in err.value.message


@pytest.mark.parametrize(
    ("width", "height", "words"),
    [(3000, 200, "aspect ratio"), (200, 3000, "aspect ratio"), (17000, 2000, "longest side")],
)
def test_extreme_shapes_are_refused_with_the_limit(width: int, height: int, words: str) -> None:
    with pytest.raises(handlers.RequestError) as err:
        handlers.input_fn(blank_png(width, height), "image/png")
    assert err.value.status_code == 400
    assert words in err.value.message
    assert f"{width}x{height}" in err.value.message


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_a_large_image_is_decoded_at_reduced_size(image_format: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 3000), (40, 160, 90)).save(buffer, format=image_format)
    decoded = handlers.input_fn(buffer.getvalue(), f"image/{image_format.lower()}").image
    assert decoded.mode == "RGB"
    assert handlers.FALLBACK_DECODE_SIDE <= max(decoded.size) < 2 * handlers.FALLBACK_DECODE_SIDE
    assert decoded.size[0] * 3 == decoded.size[1] * 5  # the shape is kept
    assert decoded.getpixel((10, 10)) == pytest.approx((40, 160, 90), abs=3)


def test_the_shape_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(handlers.MAX_ASPECT_RATIO_ENV, "40")
    assert handlers.input_fn(blank_png(3000, 100), "image/png").image.size == (1500, 50)
    monkeypatch.setenv(handlers.MAX_IMAGE_SIDE_ENV, "2999")
    with pytest.raises(handlers.RequestError, match="at most 2999 pixels"):
        handlers.input_fn(blank_png(3000, 100), "image/png")


@pytest.fixture(scope="module")
def torch_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch-only model directory the broken-model tests copy."""
    return torch_only_model_dir(tmp_path_factory.mktemp("torch-only") / "model")


def test_a_model_with_non_finite_weights_is_refused_naming_the_file(
    tmp_path: Path, torch_only: Path
) -> None:
    model_dir = nan_model_dir(tmp_path / "nan", torch_only)
    with pytest.raises(DataError) as err:
        handlers.model_fn(str(model_dir))
    message = str(err.value)
    assert message.startswith(f"{model_dir / 'model.pt'}: 1 of ")
    assert "NaN or infinite" in message and "fc.weight" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-arch"])
def test_a_bad_model_pt_is_one_line_naming_the_file(
    tmp_path: Path, torch_only: Path, damage: str
) -> None:
    model_dir = torch_only_model_dir(tmp_path / damage, torch_only)
    weights = model_dir / "model.pt"
    if damage == "garbage":
        weights.write_bytes(b"not torch at all " * 10)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:4096])
    else:
        model_dir = wrong_arch_model_dir(tmp_path / "wrong", torch_only)
        weights = model_dir / "model.pt"
    with pytest.raises(DataError) as err:
        handlers.model_fn(str(model_dir))
    message = str(err.value)
    assert message.startswith(str(weights))
    assert "\n" not in message and len(message) < 500
    assert "weights_only=False" not in message
    if damage == "wrong-arch":
        assert "arch resnet50" in message


def test_a_crafted_model_pt_runs_no_code(tmp_path: Path, torch_only: Path) -> None:
    marker = tmp_path / "ran"
    model_dir = crafted_model_dir(tmp_path / "crafted", marker, torch_only)
    with pytest.raises(DataError, match="never loaded"):
        handlers.model_fn(str(model_dir))
    assert not marker.exists()


def test_non_finite_probabilities_never_reach_the_json(model: handlers.Model) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        handlers.result([math.nan, 0.2, 0.3, 0.1, 0.4], model)
    leaked = {"count": 1, "probabilities": {"1": math.inf}, "model": "tiny/1"}
    with pytest.raises(ValueError):
        handlers.output_fn([leaked], handlers.JSON)
