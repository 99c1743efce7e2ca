"""The local endpoint's app (served on a thread here): plain HTTP, boto3's sagemaker-runtime
client, ImagePredictor, every bad request (4xx JSON, and the server keeps serving),
concurrency and the request log. The script as its own process: tests/e2e/test_serving_server.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from bincount.data.dataset import load_rgb
from bincount.serving import ImagePredictor, handlers
from tests.support.servers import serve_settings, served
from tests.support.serving import (
    MAX_BYTES,
    SAMPLE_IDS,
    VERDICTS,
    bomb_png,
    huge_png,
    png_bytes,
    raw_request,
    read_response,
    strip_png,
)


def same_answer(got: dict, want: dict) -> bool:
    """Equal up to float rounding (a batched forward pass may differ in the last digit)."""
    return (
        got["count"] == want["count"]
        and got["model"] == want["model"]
        and got["probabilities"].keys() == want["probabilities"].keys()
        and all(
            abs(got["probabilities"][k] - want["probabilities"][k]) <= 2e-6
            for k in want["probabilities"]
        )
    )


def post(url: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{url}/invocations", data=body, headers=headers, timeout=30)


def test_ping_answers_once_the_model_is_loaded(endpoint: str) -> None:
    answer = requests.get(f"{endpoint}/ping", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "model": "tiny/1"}


def test_invocations_answer_the_count_json(
    endpoint: str, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    for image_id, data in jpegs.items():
        for content_type in ("image/jpeg", "application/x-image"):
            answer = post(endpoint, data, {"Content-Type": content_type})
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert same_answer(answer.json(), expected[image_id])


def test_png_gives_the_same_count_as_the_jpeg(
    endpoint: str, sample_dir: Path, expected: dict[str, dict]
) -> None:
    image_id = SAMPLE_IDS[0]
    png = png_bytes(load_rgb(sample_dir / "images" / f"{image_id}.jpg"))
    answer = post(endpoint, png, {"Content-Type": "image/png"})
    assert answer.status_code == 200
    assert same_answer(answer.json(), expected[image_id])


def test_boto3_sagemaker_runtime_client_works_unchanged(
    endpoint: str,
    jpegs: dict[str, bytes],
    expected: dict[str, dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=endpoint)
    for image_id, data in jpegs.items():
        response = runtime.invoke_endpoint(
            EndpointName="bincount-local", Body=data, ContentType="image/jpeg",
            Accept="application/json",
        )
        assert response["ContentType"] == "application/json"
        assert same_answer(json.loads(response["Body"].read()), expected[image_id])
    with pytest.raises(ClientError) as err:  # a bad request is the SDK's ModelError
        runtime.invoke_endpoint(EndpointName="bincount-local", Body=b"xx", ContentType="image/jpeg")
    assert err.value.response["Error"]["Code"] == "ModelError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "not an image" in err.value.response["Error"]["Message"]


def test_image_predictor_through_a_session_pointed_at_the_server(
    endpoint: str, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    predictor = ImagePredictor.for_url(endpoint)
    for image_id, data in jpegs.items():
        assert same_answer(predictor.predict(data), expected[image_id])
    reconciled = predictor.predict(jpegs[SAMPLE_IDS[0]], expected=5)
    assert same_answer(reconciled, expected[SAMPLE_IDS[0]])
    assert (reconciled["expected"], reconciled["verdict"]) == (5, VERDICTS[5])


def test_an_expected_count_the_model_does_not_give_is_a_400_and_the_batch_goes_on(
    endpoint: str, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    """Refused before batching: the good requests beside it are answered."""
    data = jpegs[SAMPLE_IDS[0]]
    with ThreadPoolExecutor(4) as pool:
        bad = pool.submit(post, endpoint, data, {"Content-Type": "image/jpeg",
                                                 handlers.CUSTOM_ATTRIBUTES_HEADER: "expected=9"})
        good = [pool.submit(post, endpoint, data, {"Content-Type": "image/jpeg"})
                for _ in range(3)]
        refused = bad.result()
        assert refused.status_code == 400
        assert refused.json()["message"].startswith("expected: 9 is not a count this model")
        assert all(same_answer(g.result().json(), expected[SAMPLE_IDS[0]]) for g in good)


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"three", {"Content-Type": "text/plain"}, 415, "text/plain"),
        (b"", {"Content-Type": "image/jpeg"}, 400, "empty"),
        (b"\xff\xd8\xff\xe0 garbage", {"Content-Type": "image/jpeg"}, 400, "not a decodable"),
        (bytes(MAX_BYTES + 1), {"Content-Type": "image/jpeg"}, 413, f"limit is {MAX_BYTES}"),
        (bomb_png(), {"Content-Type": "image/png"}, 400, "decompression bomb"),
        (huge_png(), {"Content-Type": "image/png"}, 400, "8000x8000"),
        (strip_png(), {"Content-Type": "image/png"}, 400, "1x39000000"),
        (b"", {"Content-Type": "image/jpeg", "Accept": "text/csv"}, 406, "text/csv"),
    ],
    ids=["content-type", "empty", "undecodable", "too-large", "bomb", "too-many-pixels",
         "1x39M-strip", "accept"],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(
    endpoint: str,
    jpegs: dict[str, bytes],
    body: bytes,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    answer = post(endpoint, body, headers)
    assert answer.status_code == status
    error = answer.json()
    assert error["status"] == status
    assert words in error["message"]
    assert error["error"]  # the reason phrase, e.g. "Unsupported Media Type"
    assert post(endpoint, jpegs[SAMPLE_IDS[0]], {"Content-Type": "image/jpeg"}).status_code == 200


def test_a_truncated_jpeg_is_a_400(endpoint: str, jpegs: dict[str, bytes]) -> None:
    data = jpegs[SAMPLE_IDS[1]]
    answer = post(endpoint, data[: len(data) // 2], {"Content-Type": "image/jpeg"})
    assert answer.status_code == 400
    assert "truncated" in answer.json()["message"]


def test_concurrent_requests_all_get_their_own_answer(
    endpoint: str, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    order = [SAMPLE_IDS[i % len(SAMPLE_IDS)] for i in range(24)]

    def call(image_id: str) -> dict:
        answer = post(endpoint, jpegs[image_id], {"Content-Type": "image/jpeg"})
        assert answer.status_code == 200
        return answer.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, order))
    for image_id, answer in zip(order, answers, strict=True):
        assert same_answer(answer, expected[image_id])


def test_one_log_line_per_request_with_status_and_latency(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bincount.serving"):
        requests.get(f"{endpoint}/ping", timeout=10)
        post(endpoint, b"nope", {"Content-Type": "text/plain"})
    lines = [r.getMessage() for r in caplog.records if r.name == "bincount.serving"]
    assert any(line.startswith("GET /ping 200 ") for line in lines), lines
    (line,) = [line for line in lines if line.startswith("POST /invocations 415 ")]
    assert line.endswith("ms")


@pytest.fixture(scope="module")
def strict(model_dir: Path) -> Iterator[str]:
    """An endpoint with tight bounds: 2 requests admitted, 0.5 s for the headers and the body,
    1.5 s per request, Retry-After 3, one forward pass per request."""
    with served(serve_settings(
        f"model_dir={model_dir}", "serve.torch_threads=1", "serve.batching.enabled=false",
        "serve.queue.max_requests=2", "serve.queue.retry_after_s=3", "serve.timeouts.header_s=0.5",
        "serve.timeouts.body_s=0.5", "serve.timeouts.request_s=1.5",
    )) as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_api_docs_are_off_by_default(endpoint: str) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert requests.get(f"{endpoint}{path}", timeout=10).status_code == 404, path


def test_api_docs_are_served_with_serve_docs_true(model_dir: Path) -> None:
    with served(serve_settings(f"model_dir={model_dir}", "serve.docs=true",
                               "serve.torch_threads=1")) as url:
        assert requests.get(f"{url}/openapi.json", timeout=10).json()["paths"]
        assert requests.get(f"{url}/docs", timeout=10).status_code == 200


def test_a_stalled_body_is_a_408_in_time_and_others_are_served_meanwhile(
    strict: str, jpegs: dict[str, bytes]
) -> None:
    data = jpegs[SAMPLE_IDS[0]]
    start = time.perf_counter()
    with raw_request(port_of(strict), length=len(data), sent=data[:100]) as stalled:
        assert post(strict, data, {"Content-Type": "image/jpeg"}).status_code == 200
        status, _, body = read_response(stalled)
    assert status == 408
    assert "did not arrive within 0.5 s" in json.loads(body)["message"]
    assert time.perf_counter() - start < 3


def test_a_full_queue_is_a_503_with_retry_after_at_once(
    strict: str, jpegs: dict[str, bytes]
) -> None:
    data = jpegs[SAMPLE_IDS[0]]
    port = port_of(strict)
    with raw_request(port, length=len(data)) as first, \
            raw_request(port, length=len(data)) as second:
        time.sleep(0.1)  # both admitted, waiting for their bodies
        start = time.perf_counter()
        answer = post(strict, data, {"Content-Type": "image/jpeg"})
        assert time.perf_counter() - start < 0.4
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "3"
        assert "2 requests in progress" in answer.json()["message"]
        assert read_response(first)[0] == read_response(second)[0] == 408
    assert post(strict, data, {"Content-Type": "image/jpeg"}).status_code == 200


def test_a_request_past_its_deadline_is_a_503_and_costs_no_inference(
    strict: str, jpegs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    predict_fn = handlers.predict_fn

    def slow(images: list, model: handlers.Model) -> list[dict]:
        calls.append(len(images))
        time.sleep(2.5)
        return predict_fn(images, model)

    monkeypatch.setattr(handlers, "predict_fn", slow)
    data = jpegs[SAMPLE_IDS[0]]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, strict, data, {"Content-Type": "image/jpeg"})
        time.sleep(0.2)
        start = time.perf_counter()
        second = post(strict, data, {"Content-Type": "image/jpeg"})
        elapsed = time.perf_counter() - start
        assert first.result().status_code == 503
    assert second.status_code == 503 and second.headers["Retry-After"] == "3"
    assert "not answered within 1.5 s" in second.json()["message"]
    assert 1.0 < elapsed < 2.5
    time.sleep(1)  # the first forward pass ends; the second request never ran
    assert calls == [1]


def test_a_client_that_hangs_up_mid_upload_is_one_499_line_not_a_fault(
    endpoint: str, jpegs: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    data = jpegs[SAMPLE_IDS[0]]
    with caplog.at_level(logging.INFO):
        with raw_request(port_of(endpoint), length=len(data), sent=data[:500]):
            time.sleep(0.3)
        time.sleep(0.5)
        assert post(endpoint, data, {"Content-Type": "image/jpeg"}).status_code == 200
    lines = [r.getMessage() for r in caplog.records]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    (line,) = [line for line in lines if " 499 " in line]
    assert line.startswith("POST /invocations 499 ") and "client closed" in line
