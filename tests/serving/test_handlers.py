"""The inference handlers in this process: preprocessing, predictions, the JSON, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from bincount.data.dataset import load_rgb
from bincount.data.transforms import eval_transform
from bincount.models.export import load_model
from bincount.serving import handlers
from tests.support.serving import SAMPLE_IDS, bomb_png, huge_png, png_bytes


@pytest.fixture(scope="module")
def model(model_dir: Path) -> handlers.Model:
    return handlers.model_fn(str(model_dir))


@pytest.fixture(scope="module")
def photos(sample_dir: Path) -> list[Path]:
    return [sample_dir / "images" / f"{image_id}.jpg" for image_id in SAMPLE_IDS]


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(handlers.MAX_REQUEST_BYTES_ENV, raising=False)
    monkeypatch.delenv(handlers.MAX_IMAGE_PIXELS_ENV, raising=False)


def test_preprocessing_is_the_eval_transform_of_the_file_as_training_reads_it(
    model: handlers.Model, photos: list[Path]
) -> None:
    spec = model.spec
    evaluation = eval_transform(spec.image_size, spec.mean, spec.std)
    for path in photos:
        served = model.transform(handlers.input_fn(path.read_bytes(), "image/jpeg"))
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
    assert isinstance(handlers.input_fn(data, "image/jpeg"), Image.Image)


def test_a_wrong_accept_is_a_406(model: handlers.Model) -> None:
    prediction = handlers.predict_fn(Image.new("RGB", (80, 60)), model)
    with pytest.raises(handlers.UnsupportedMediaType) as err:
        handlers.output_fn(prediction, "text/csv")
    assert err.value.status_code == 406
    assert isinstance(err.value, handlers.UnsupportedFormatError)


def test_model_fn_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model.json is missing"):
        handlers.model_fn(str(tmp_path))
