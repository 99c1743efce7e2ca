"""Requests with an expected count (reconciliation), in this process: CustomAttributes as the
SageMaker toolkit hands them over, JSON bodies, the verdict fields, and every bad value a 400
that names its field."""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import ImageOps

from bincount.models.onnx import update_spec_json
from bincount.models.reconcile import Thresholds
from bincount.serving import handlers
from tests.support.serving import SAMPLE_IDS, THRESHOLDS, VERDICTS, png_bytes


@pytest.fixture(scope="module")
def model(model_dir: Path) -> handlers.Model:
    return handlers.model_fn(str(model_dir))


@pytest.fixture(scope="module")
def jpeg(jpegs: dict[str, bytes]) -> bytes:
    return jpegs[SAMPLE_IDS[0]]


def context(**headers: str) -> handlers.RequestContext:
    return handlers.RequestContext.of({k.replace("_", "-"): v for k, v in headers.items()})


def attributes(value: str) -> handlers.RequestContext:
    return handlers.RequestContext.of({handlers.CUSTOM_ATTRIBUTES_HEADER: value})


def json_body(image: bytes | str, **fields: object) -> bytes:
    encoded = image if isinstance(image, str) else base64.b64encode(image).decode()
    return json.dumps({"image": encoded, **fields}).encode()


@pytest.mark.parametrize(
    "value", ["expected=3", " expected = 3 ", "trace=ab-12, expected=3", "a=1;expected=3;b=x",
              "Expected=3,expected=3"])
def test_custom_attributes_carry_the_expected_count(jpeg: bytes, value: str) -> None:
    request = handlers.input_fn(jpeg, "image/jpeg", attributes(value))
    assert request.expected == 3
    assert request.image.size == handlers.input_fn(jpeg, "image/jpeg").image.size


def test_the_header_is_found_in_any_spelling_and_other_attributes_are_left_alone(
    jpeg: bytes,
) -> None:
    assert handlers.input_fn(jpeg, "image/jpeg", context(
        x_amzn_sagemaker_custom_attributes="expected=2")).expected == 2
    for ctx in (None, context(), attributes("trace=abc"), attributes(""), object()):
        assert handlers.input_fn(jpeg, "image/jpeg", ctx).expected is None


@pytest.mark.parametrize(
    ("value", "words"),
    [("expected=three", "'three' is not an integer"), ("expected=", "'' is not an integer"),
     ("expected=2.5", "'2.5' is not an integer"), ("expected=1,expected=2", "more than once")],
    ids=["word", "empty", "fraction", "twice"])
def test_a_bad_custom_attribute_is_a_400_naming_custom_attributes(
    jpeg: bytes, value: str, words: str
) -> None:
    with pytest.raises(handlers.RequestError) as err:
        handlers.input_fn(jpeg, "image/jpeg", attributes(value))
    assert err.value.status_code == 400
    assert err.value.message.startswith("CustomAttributes: expected")
    assert words in err.value.message


def test_a_json_body_is_the_same_image_with_its_expected_count(
    model: handlers.Model, jpeg: bytes
) -> None:
    plain = handlers.predict_fn(handlers.input_fn(jpeg, "image/jpeg"), model)[0]
    for body in (json_body(jpeg, expected=3), json_body(jpeg, expected=3).decode()):  # as text
        request = handlers.input_fn(body, "application/json")
        assert request.expected == 3
        answer = handlers.predict_fn(request, model)[0]
        assert {k: answer[k] for k in plain} == plain
    request = handlers.input_fn(json_body(jpeg, expected=None), "application/json")
    assert request.expected is None
    png = "data:image/png;base64," + base64.b64encode(png_bytes(request.image)).decode()
    assert handlers.input_fn(json_body(png), "application/json").expected is None
    both = handlers.input_fn(json_body(jpeg, expected=2), "application/json", attributes(
        "expected=2"))
    assert both.expected == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [(b'{"expected": 3}', "image: the JSON body must be an object"),
     (b'[1, 2]', "image: the JSON body must be an object"),
     (b'{"image": 3}', "image: the JSON body must be an object"),
     (b"{not json", "request body is not valid JSON"),
     (json_body("not/base64!!"), "image: not valid base64"),
     (json_body(""), "image: empty"),
     (json_body(b"not an image"), "image is not an image of a known format"),
     (json_body(b"x", expected="3"), 'expected: expected an integer count, got "3"'),
     (json_body(b"x", expected=2.5), "expected: expected an integer count, got 2.5"),
     (json_body(b"x", expected=True), "expected: expected an integer count, got true")],
    ids=["no-image", "array", "image-number", "not-json", "bad-base64", "empty-image",
         "not-an-image", "expected-text", "expected-fraction", "expected-bool"])
def test_a_bad_json_body_is_a_400_naming_the_field(jpeg: bytes, body: bytes, words: str) -> None:
    if b'"eA=="' in body:  # base64 of b"x": put a real image there, so only expected is wrong
        body = body.replace(b'"eA=="', json.dumps(base64.b64encode(jpeg).decode()).encode())
    with pytest.raises(handlers.RequestError) as err:
        handlers.input_fn(body, "application/json")
    assert err.value.status_code == 400
    assert words in err.value.message


def test_json_and_custom_attributes_that_disagree_are_a_400(jpeg: bytes) -> None:
    with pytest.raises(handlers.RequestError, match="expected: the JSON body says 2 and "
                       "CustomAttributes says expected=3"):
        handlers.input_fn(json_body(jpeg, expected=2), "application/json", attributes(
            "expected=3"))


@pytest.mark.parametrize("expected", [0, 6, -1])
def test_a_count_the_model_does_not_give_is_a_400_naming_expected(
    model: handlers.Model, jpeg: bytes, expected: int
) -> None:
    request = handlers.input_fn(jpeg, "image/jpeg", attributes(f"expected={expected}"))
    with pytest.raises(handlers.RequestError) as err:
        handlers.predict_fn([request], model)
    assert err.value.status_code == 400
    assert err.value.message == (
        f"expected: {expected} is not a count this model gives (one of 1, 2, 3, 4, 5)")


def test_an_expected_count_adds_p_expected_and_the_verdict(
    model: handlers.Model, jpegs: dict[str, bytes]
) -> None:
    assert model.thresholds == THRESHOLDS
    for data in jpegs.values():
        image = handlers.input_fn(data, "image/jpeg").image
        plain, *answers = handlers.predict_fn(
            [image, *(handlers.Request(image, count) for count in VERDICTS)], model)
        assert set(plain) == {"count", "probabilities", "model"}  # as before reconciliation
        for count, answer in zip(VERDICTS, answers, strict=True):
            assert {k: answer[k] for k in plain} == plain
            assert answer["expected"] == count
            assert answer["p_expected"] == pytest.approx(plain["probabilities"][str(count)],
                                                         abs=2e-6)
            assert answer["verdict"] == VERDICTS[count]
            assert json.loads(handlers.output_fn([answer], "*/*")[0]) == answer


def test_a_model_without_thresholds_answers_review(
    model: handlers.Model, jpeg: bytes
) -> None:
    bare = handlers.Model(model.runtime, model.spec, model.transform, thresholds=None)
    request = handlers.input_fn(jpeg, "image/jpeg", attributes("expected=1"))
    assert handlers.predict_fn(request, bare)[0]["verdict"] == "review"


def test_hflip_averages_the_image_and_its_mirror(model_dir: Path, jpeg: bytes) -> None:
    image = handlers.input_fn(jpeg, "image/jpeg").image
    plain = handlers.load_served_model(model_dir, "onnx", 1, "none")
    flipped = handlers.load_served_model(model_dir, "onnx", 1, "hflip")
    direct, mirrored = handlers.predict_fn([image, ImageOps.mirror(image)], plain)
    (averaged,) = handlers.predict_fn(image, flipped)
    for count, p in averaged["probabilities"].items():
        want = (direct["probabilities"][count] + mirrored["probabilities"][count]) / 2
        assert p == pytest.approx(want, abs=2e-6)
    assert direct["probabilities"] != mirrored["probabilities"]  # the mirror is another input


def test_hflip_decides_by_the_thresholds_fitted_on_mirrored_images(
    model_dir: Path, jpeg: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A training run fits the thresholds twice (plain and mirror-averaged probabilities); a
    server with tta=hflip must not hold its verdicts to the plain ones."""
    both = tmp_path / "both"
    shutil.copytree(model_dir, both)
    mirrored = Thresholds(match_threshold=0.99, mismatch_threshold=0.01,
                          match_precision=0.95, mismatch_precision=0.95)
    update_spec_json(both, reconcile_hflip=mirrored.to_record())
    assert handlers.load_served_model(both, "onnx", 1, "none").thresholds == THRESHOLDS
    served = handlers.load_served_model(both, "onnx", 1, "hflip")
    assert served.thresholds == mirrored
    request = handlers.input_fn(jpeg, "image/jpeg", attributes("expected=1"))
    assert handlers.predict_fn(request, served)[0]["verdict"] == "review"  # p < 0.99

    with caplog.at_level(logging.WARNING, logger="bincount.serving.handlers"):
        older = handlers.load_served_model(model_dir, "onnx", 1, "hflip")  # no hflip record
    assert older.thresholds == THRESHOLDS
    assert "no thresholds fitted with tta=hflip" in caplog.text

    update_spec_json(both, reconcile_hflip={"match_threshold": 0.5})
    with pytest.raises(handlers.DataError, match='"reconcile_hflip" is not a thresholds record'):
        handlers.load_served_model(both, "onnx", 1, "hflip")
