"""``scripts/serve.py`` as its own process on 127.0.0.1, as a user runs it: it answers the
endpoint contract with the handlers' answers, takes its settings from the command line, keeps
serving after a bad request, refuses a 1x39M strip in time and memory while serving others,
logs one line per request, drains on SIGTERM and exits 0, and a bad setting or a broken model
stops it (and predict) with exit 2 and one line. The app's full HTTP contract:
tests/serving/test_server.py."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from bincount.serving import handlers
from tests.support.net import free_port
from tests.support.paths import SCRIPTS
from tests.support.servers import SERVE_SCRIPT, ServerProcess, running_server
from tests.support.serving import (
    MAX_BYTES,
    SAMPLE_IDS,
    VERDICTS,
    make_model_dir,
    nan_model_dir,
    strip_png,
    wrong_arch_model_dir,
)

pytestmark = pytest.mark.slow  # each test here starts Python processes that import torch
CUSTOM_ATTRIBUTES = handlers.CUSTOM_ATTRIBUTES_HEADER


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        model_dir,
        tmp_path_factory.mktemp("serve-logs"),
        overrides=[f"limits.max_request_bytes={MAX_BYTES}", "serve.torch_threads=1"],
    ) as process:
        yield process


@pytest.fixture(scope="module")
def jpegs(sample_dir: Path) -> dict[str, bytes]:
    return {i: (sample_dir / "images" / f"{i}.jpg").read_bytes() for i in SAMPLE_IDS}


def post(server: ServerProcess, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{server.url}/invocations", data=body, headers=headers, timeout=30)


def test_the_script_answers_as_the_handlers_do(
    server: ServerProcess, model_dir: Path, jpegs: dict[str, bytes]
) -> None:
    assert requests.get(f"{server.url}/ping", timeout=10).json() == {
        "status": "ok", "model": "tiny/1"}
    model = handlers.model_fn(str(model_dir))
    for data in jpegs.values():
        answer = post(server, data, {"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        want = handlers.predict_fn(handlers.input_fn(data, "image/jpeg"), model)[0]
        got = answer.json()
        assert (got["count"], got["model"]) == (want["count"], want["model"])
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)


def test_the_script_reconciles_an_expected_count_however_it_is_sent(
    server: ServerProcess, jpegs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain HTTP with the CustomAttributes header, a JSON body, and boto3's invoke_endpoint
    with CustomAttributes: the same verdicts; a bad expected value is a 400 naming it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=server.url)
    data = jpegs[SAMPLE_IDS[0]]
    plain = post(server, data, {"Content-Type": "image/jpeg"}).json()
    assert set(plain) == {"count", "probabilities", "model"}
    encoded = base64.b64encode(data).decode()
    for count, verdict in VERDICTS.items():
        answers = [
            post(server, data, {"Content-Type": "image/jpeg",
                                CUSTOM_ATTRIBUTES: f"trace=a1, expected={count}"}).json(),
            post(server, json.dumps({"image": encoded, "expected": count}).encode(),
                 {"Content-Type": "application/json"}).json(),
            json.loads(runtime.invoke_endpoint(
                EndpointName="bincount-local", Body=data, ContentType="image/jpeg",
                CustomAttributes=f"expected={count}")["Body"].read()),
        ]
        for answer in answers:
            assert answer["verdict"] == verdict, answer
            assert answer["expected"] == count and answer["count"] == plain["count"]
            assert answer["p_expected"] == pytest.approx(plain["probabilities"][str(count)],
                                                         abs=2e-6)
    for body, headers, field in [
        (data, {"Content-Type": "image/jpeg", CUSTOM_ATTRIBUTES: "expected=three"},
         "CustomAttributes: expected"),
        (data, {"Content-Type": "image/jpeg", CUSTOM_ATTRIBUTES: "expected=7"}, "expected: 7"),
        (json.dumps({"image": encoded, "expected": "3"}).encode(),
         {"Content-Type": "application/json"}, "expected: expected an integer"),
        (b'{"expected": 3}', {"Content-Type": "application/json"}, "image:"),
    ]:
        answer = post(server, body, headers)
        assert answer.status_code == 400 and answer.json()["message"].startswith(field)
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="bincount-local", Body=data,
                                ContentType="image/jpeg", CustomAttributes="expected=2.5")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "CustomAttributes: expected='2.5'" in err.value.response["Error"]["Message"]


def test_a_request_over_the_configured_limit_is_a_413_and_the_server_keeps_serving(
    server: ServerProcess, jpegs: dict[str, bytes]
) -> None:
    answer = post(server, bytes(MAX_BYTES + 1), {"Content-Type": "image/jpeg"})
    assert answer.status_code == 413
    assert f"limit is {MAX_BYTES}" in answer.json()["message"]
    assert post(server, jpegs[SAMPLE_IDS[0]], {"Content-Type": "image/jpeg"}).status_code == 200


def test_one_log_line_per_request_with_status_and_latency(server: ServerProcess) -> None:
    requests.get(f"{server.url}/ping", timeout=10)
    post(server, b"nope", {"Content-Type": "text/plain"})
    time.sleep(0.3)
    log = server.log()
    assert " GET /ping 200 " in log
    line = next(line for line in log.splitlines() if " POST /invocations 415 " in line)
    assert line.rstrip().endswith("ms")


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
        assert server.process.wait(30) == 0  # a clean drain

    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["model"] == "tiny/1"
    assert "Finished server process" in server.log()


def test_a_bad_setting_stops_the_script_with_its_key(model_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SERVE_SCRIPT), f"model_dir={model_dir}", "serve.port=http",
         f"paths.log_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert "error: serve.port: expected an integer >= 0, got 'http'" in done.stderr
    assert "Traceback" not in done.stderr


def test_predict_script_against_the_server_url(
    server: ServerProcess, sample_dir: Path, tmp_path: Path
) -> None:
    files = [sample_dir / "images" / f"{image_id}.jpg" for image_id in SAMPLE_IDS]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "predict.py"), f"images=[{','.join(map(str, files))}]",
         f"predict.url={server.url}", f"paths.output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"bin counts ({server.url})" in done.stdout
    rows = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert [Path(row["image"]).stem for row in rows] == list(SAMPLE_IDS)
    assert all(row["model"] == "tiny/1" for row in rows)


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def test_1x39m_strips_are_refused_in_time_without_memory_and_hold_nobody_up(
    server: ServerProcess, jpegs: dict[str, bytes]
) -> None:
    strip, photo = strip_png(), jpegs[SAMPLE_IDS[0]]
    assert len(strip) < 80_000
    assert post(server, photo, {"Content-Type": "image/jpeg"}).status_code == 200  # warm
    before = peak = rss_mb(server.process.pid)
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(server.process.pid))
            time.sleep(0.01)

    def timed(body: bytes, content_type: str) -> tuple[int, float]:
        start = time.perf_counter()
        answer = post(server, body, {"Content-Type": content_type})
        return answer.status_code, time.perf_counter() - start

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            strips = [pool.submit(timed, strip, "image/png") for _ in range(3)]
            time.sleep(0.05)
            normal = pool.submit(timed, photo, "image/jpeg")
            results = [future.result() for future in strips]
            normal_status, normal_s = normal.result()
    finally:
        done.set()
        watcher.join()
    assert [status for status, _ in results] == [400, 400, 400]
    assert max(seconds for _, seconds in results) < 2, results
    assert normal_status == 200 and normal_s < 2, normal_s
    assert peak - before < 300, (before, peak)


def test_sigterm_when_idle_exits_0(model_dir: Path, tmp_path: Path) -> None:
    with running_server(model_dir, tmp_path) as server:
        assert server.stop() == 0, server.log()[-2000:]
    assert "Finished server process" in server.log()


@pytest.mark.parametrize("script", ["serve.py", "predict.py"])
@pytest.mark.parametrize("damage", ["nan", "wrong-arch"])
def test_a_broken_model_stops_the_script_with_one_line_naming_the_file(
    script: str, damage: str, sample_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    nan_model_dir(model) if damage == "nan" else wrong_arch_model_dir(model)
    args = [f"serve.port={free_port()}"] if script == "serve.py" else [
        f"images=[{sample_dir / 'images' / (SAMPLE_IDS[0] + '.jpg')}]"]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), f"model_dir={model}",
         f"paths.log_dir={tmp_path / 'logs'}", *args],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {model / 'model.pt'}")
    assert ("NaN or infinite" if damage == "nan" else "arch resnet50") in line
