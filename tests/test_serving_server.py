"""The local endpoint as a real process on 127.0.0.1: plain HTTP, boto3's sagemaker-runtime
client, ImagePredictor, every bad request, concurrency and a clean SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from omegaconf import DictConfig

from bincount.data.dataset import load_rgb
from bincount.errors import BincountError
from bincount.serving import ImagePredictor, handlers
from bincount.serving.local import ServerProcess, free_port, running_server
from bincount.serving.predict import predict
from bincount.serving.server import ServeSettings
from tests.serving_support import SAMPLE_IDS, bomb_png, huge_png, make_model_dir, png_bytes

MAX_BYTES = 1_000_000  # the test server's request limit


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        model_dir,
        tmp_path_factory.mktemp("serve-logs"),
        overrides=[f"limits.max_request_bytes={MAX_BYTES}"],
    ) as process:
        yield process


@pytest.fixture(scope="module")
def jpegs(sample_dir: Path) -> dict[str, bytes]:
    return {i: (sample_dir / "images" / f"{i}.jpg").read_bytes() for i in SAMPLE_IDS}


@pytest.fixture(scope="module")
def expected(model_dir: Path, jpegs: dict[str, bytes]) -> dict[str, dict]:
    """What the handlers answer in this process, image by image."""
    model = handlers.model_fn(str(model_dir))
    return {
        i: handlers.predict_fn(handlers.input_fn(data, "image/jpeg"), model)[0]
        for i, data in jpegs.items()
    }


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


def test_ping_answers_once_the_model_is_loaded(server: ServerProcess) -> None:
    answer = requests.get(f"{server.url}/ping", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "model": "tiny/1"}


def test_http_invocations_answer_the_count_json(
    server: ServerProcess, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    for image_id, data in jpegs.items():
        for content_type in ("image/jpeg", "application/x-image"):
            answer = requests.post(
                f"{server.url}/invocations",
                data=data,
                headers={"Content-Type": content_type},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/json"
            assert same_answer(answer.json(), expected[image_id])


def test_png_gives_the_same_count_as_the_jpeg(
    server: ServerProcess, sample_dir: Path, expected: dict[str, dict]
) -> None:
    image_id = SAMPLE_IDS[0]
    png = png_bytes(load_rgb(sample_dir / "images" / f"{image_id}.jpg"))
    answer = requests.post(
        f"{server.url}/invocations", data=png, headers={"Content-Type": "image/png"}, timeout=30
    )
    assert answer.status_code == 200
    assert same_answer(answer.json(), expected[image_id])


def test_boto3_sagemaker_runtime_client_works_unchanged(
    server: ServerProcess,
    jpegs: dict[str, bytes],
    expected: dict[str, dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=server.url)
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
    server: ServerProcess, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    predictor = ImagePredictor.for_url(server.url)
    runtime = predictor.sagemaker_session.sagemaker_runtime_client
    assert runtime.meta.endpoint_url == server.url
    for image_id, data in jpegs.items():
        assert same_answer(predictor.predict(data), expected[image_id])


def test_predict_cli_against_the_server_url(
    server: ServerProcess,
    sample_dir: Path,
    expected: dict[str, dict],
    make_cfg: Callable[..., DictConfig],
) -> None:
    files = [sample_dir / "images" / f"{image_id}.jpg" for image_id in SAMPLE_IDS]
    cfg = make_cfg(
        f"images=[{','.join(map(str, files))}]", f"predict.url={server.url}",
        name="predict", tiny=False,
    )
    rows = predict(cfg)
    assert [Path(row["image"]).stem for row in rows] == list(SAMPLE_IDS)
    for row in rows:
        assert same_answer(row, expected[Path(row["image"]).stem])


def _post(server: ServerProcess, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{}", {"Content-Type": "application/json"}, 415, "application/json"),
        (b"", {"Content-Type": "image/jpeg"}, 400, "empty"),
        (b"\xff\xd8\xff\xe0 garbage", {"Content-Type": "image/jpeg"}, 400, "not a decodable"),
        (bytes(MAX_BYTES + 1), {"Content-Type": "image/jpeg"}, 413, f"limit is {MAX_BYTES}"),
        (bomb_png(), {"Content-Type": "image/png"}, 400, "decompression bomb"),
        (huge_png(), {"Content-Type": "image/png"}, 400, "8000x8000"),
        (b"", {"Content-Type": "image/jpeg", "Accept": "text/csv"}, 406, "text/csv"),
    ],
    ids=["content-type", "empty", "undecodable", "too-large", "bomb", "too-many-pixels", "accept"],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(
    server: ServerProcess,
    jpegs: dict[str, bytes],
    body: bytes,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    answer = _post(server, body, headers)
    assert answer.status_code == status
    error = answer.json()
    assert error["status"] == status
    assert words in error["message"]
    assert error["error"]  # the reason phrase, e.g. "Unsupported Media Type"
    good = _post(server, jpegs[SAMPLE_IDS[0]], {"Content-Type": "image/jpeg"})
    assert good.status_code == 200


def test_a_truncated_jpeg_is_a_400(server: ServerProcess, jpegs: dict[str, bytes]) -> None:
    data = jpegs[SAMPLE_IDS[1]]
    answer = _post(server, data[: len(data) // 2], {"Content-Type": "image/jpeg"})
    assert answer.status_code == 400
    assert "truncated" in answer.json()["message"]


def test_concurrent_requests_all_get_their_own_answer(
    server: ServerProcess, jpegs: dict[str, bytes], expected: dict[str, dict]
) -> None:
    order = [SAMPLE_IDS[i % len(SAMPLE_IDS)] for i in range(24)]

    def call(image_id: str) -> dict:
        answer = _post(server, jpegs[image_id], {"Content-Type": "image/jpeg"})
        assert answer.status_code == 200
        return answer.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(call, order))
    for image_id, answer in zip(order, answers, strict=True):
        assert same_answer(answer, expected[image_id])


def test_one_log_line_per_request_with_status_and_latency(server: ServerProcess) -> None:
    requests.get(f"{server.url}/ping", timeout=10)
    _post(server, b"nope", {"Content-Type": "text/plain"})
    time.sleep(0.3)
    log = server.log()
    assert " GET /ping 200 " in log
    assert " POST /invocations 415 " in log
    line = next(line for line in log.splitlines() if " POST /invocations 415 " in line)
    assert line.rstrip().endswith("ms")


@pytest.mark.slow  # starts a second server
def test_sigterm_finishes_the_request_in_flight(
    model_dir: Path, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    data = jpegs[SAMPLE_IDS[0]]
    port = free_port()
    with running_server(model_dir, tmp_path, port=port) as server, socket.create_connection(
        ("127.0.0.1", port), timeout=30
    ) as sock:
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        sock.sendall(head + data[:1000])  # the request is in flight: half its body is here
        time.sleep(0.5)
        server.process.terminate()  # SIGTERM
        time.sleep(0.5)
        assert server.process.poll() is None, "the server quit with a request in flight"
        sock.sendall(data[1000:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        # uvicorn re-raises the signal once it has shut down, as a process manager expects.
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["model"] == "tiny/1"
    assert "Finished server process" in server.log()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("serve.port=http", "serve.port: expected an integer >= 0, got 'http'"),
        ("serve.batching.max_batch_size=0",
         "serve.batching.max_batch_size: expected an integer >= 1, got 0"),
        ("serve.torch_threads=-2", "serve.torch_threads: expected an integer >= 1, got -2"),
    ],
)
def test_bad_serve_settings_name_their_key(
    make_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    cfg = make_cfg(override, name="serve", tiny=False)
    with pytest.raises(BincountError, match=re.escape(message)):
        ServeSettings.from_cfg(cfg)
