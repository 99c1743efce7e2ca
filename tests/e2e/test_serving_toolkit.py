"""The handlers under the real SageMaker serving stack: the SageMaker PyTorch inference toolkit
(``sagemaker-pytorch-inference``) driving TorchServe, started as the PyTorch inference image
starts it, on a model directory laid out as ``/opt/ml/model``.

The toolkit needs ``setuptools<81`` (it imports ``pkg_resources``), which the project's
environment does not have, so it lives in a separate virtualenv that this file creates (once,
under ``~/.cache/bincount``) and that borrows torch, torchvision and Pillow from the project's
environment through a ``.pth`` file instead of installing them again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bincount.serving import handlers
from bincount.serving.package import stage_model_tree
from tests.support.net import free_port
from tests.support.servers import running_server
from tests.support.serving import SAMPLE_IDS, VERDICTS, bomb_png, huge_png, make_model_dir

TOOLKIT = (
    "setuptools<81",
    "sagemaker-inference==1.10.1",
    "sagemaker-pytorch-inference==2.0.25",
    "torchserve==0.12.0",
)
TS_CONFIG = Path("/etc/sagemaker-ts.properties")  # where the toolkit writes TorchServe's config
MAX_BYTES = 1_000_000

# pip-installs the toolkit into a cached virtualenv (first run), starts TorchServe and a server.
pytestmark = pytest.mark.slow


def toolkit_venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bincount"
    tag = hashlib.sha256("\n".join((sys.executable, *TOOLKIT)).encode()).hexdigest()[:12]
    return cache / f"sagemaker-inference-toolkit-{tag}"


def _purelib(python: Path) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    done = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def toolkit_venv() -> Path:
    """A virtualenv with the toolkit and TorchServe, made once and reused (``ready`` marks a
    finished one; an unfinished one is made again)."""
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java (17), and `java` is not on PATH")
    if not os.access(TS_CONFIG.parent, os.W_OK):
        pytest.skip(f"the toolkit writes {TS_CONFIG}, which this user cannot write")
    venv = toolkit_venv_dir()
    if (venv / "ready").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TOOLKIT], check=True, timeout=900)
    # Appended to sys.path after the venv's own packages: torch & co. from the project's env.
    Path(_purelib(python), "bincount_project_site.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    (venv / "ready").write_text("\n".join(TOOLKIT) + "\n")
    return venv


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def toolkit_server(
    toolkit_venv: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``serving.main()`` of the toolkit (the PyTorch inference image's entry point) on
    ``$SAGEMAKER_BASE_DIR/model`` = the artifact ``deploy.py`` uploads."""
    base = tmp_path_factory.mktemp("sagemaker")
    stage_model_tree(model_dir, base / "model")
    work = base / "work"  # TorchServe's model store and logs go under the working dir
    work.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(base),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        handlers.MAX_REQUEST_BYTES_ENV: str(MAX_BYTES),
        "PATH": f"{toolkit_venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    log_path = base / "toolkit.log"
    start = "from sagemaker_pytorch_serving_container import serving; serving.main()"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(toolkit_venv / "bin" / "python"), "-c", start],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log_path.read_text()[-4000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(1)
        yield url
    finally:
        subprocess.run(
            [str(toolkit_venv / "bin" / "torchserve"), "--stop"], env=env, cwd=work,
            capture_output=True, timeout=60,
        )
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def local_answers(
    model_dir: Path, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """What the local endpoint (scripts/serve.py) answers for the sample photos."""
    answers = {}
    with running_server(model_dir, tmp_path_factory.mktemp("serve-logs")) as server:
        for image_id in SAMPLE_IDS:
            answer = requests.post(
                f"{server.url}/invocations",
                data=(sample_dir / "images" / f"{image_id}.jpg").read_bytes(),
                headers={"Content-Type": "image/jpeg"},
                timeout=60,
            )
            assert answer.status_code == 200
            answers[image_id] = answer.json()
    return answers


def test_toolkit_answers_as_the_local_server_does(
    toolkit_server: str, sample_dir: Path, local_answers: dict[str, dict]
) -> None:
    assert requests.get(f"{toolkit_server}/ping", timeout=10).status_code == 200
    for image_id in SAMPLE_IDS:
        answer = requests.post(
            f"{toolkit_server}/invocations",
            data=(sample_dir / "images" / f"{image_id}.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        got, want = answer.json(), local_answers[image_id]
        assert (got["count"], got["model"]) == (want["count"], want["model"])
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)


def test_toolkit_reconciles_an_expected_count(
    toolkit_server: str, sample_dir: Path, local_answers: dict[str, dict]
) -> None:
    """The toolkit hands input_fn its context, whose headers carry CustomAttributes; a JSON
    body arrives decoded as text."""
    image_id = SAMPLE_IDS[0]
    jpeg = (sample_dir / "images" / f"{image_id}.jpg").read_bytes()
    want = local_answers[image_id]
    by_header = requests.post(
        f"{toolkit_server}/invocations", data=jpeg, timeout=60, headers={
            "Content-Type": "image/jpeg", handlers.CUSTOM_ATTRIBUTES_HEADER: "expected=5"})
    by_json = requests.post(
        f"{toolkit_server}/invocations", timeout=60, headers={"Content-Type": "application/json"},
        data=json.dumps({"image": base64.b64encode(jpeg).decode(), "expected": 1}))
    for answer, count in ((by_header, 5), (by_json, 1)):
        assert answer.status_code == 200, answer.text[:500]
        got = answer.json()
        assert (got["count"], got["expected"], got["verdict"]) == (
            want["count"], count, VERDICTS[count])
        assert got["p_expected"] == pytest.approx(want["probabilities"][str(count)], abs=2e-6)


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"{}", {"Content-Type": "application/json"}, 400, "image: the JSON body"),
        (None, {"Content-Type": "image/jpeg", handlers.CUSTOM_ATTRIBUTES_HEADER: "expected=x"},
         400, "CustomAttributes: expected='x'"),
        (None, {"Content-Type": "image/jpeg", handlers.CUSTOM_ATTRIBUTES_HEADER: "expected=8"},
         400, "expected: 8 is not a count"),
        (b"three", {"Content-Type": "text/plain"}, 415, "is not supported"),
        (b"not an image", {"Content-Type": "image/jpeg"}, 400, "not an image"),
        (b"", {"Content-Type": "image/jpeg"}, 400, "empty"),
        (bytes(MAX_BYTES + 1), {"Content-Type": "image/jpeg"}, 413, f"limit is {MAX_BYTES}"),
        (bomb_png(), {"Content-Type": "image/png"}, 400, "decompression bomb"),
        (huge_png(), {"Content-Type": "image/png"}, 400, "8000x8000"),
        # The toolkit decodes before it serializes: a good image, then the wrong Accept.
        (None, {"Content-Type": "image/jpeg", "Accept": "text/csv"}, 406, "text/csv"),
    ],
    ids=["json", "attributes", "expected-count", "text", "undecodable", "empty", "too-large",
         "bomb", "too-many-pixels", "accept"],
)
def test_bad_requests_are_4xx_under_the_toolkit_too(
    toolkit_server: str,
    sample_dir: Path,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    jpeg = (sample_dir / "images" / f"{SAMPLE_IDS[0]}.jpg").read_bytes()
    answer = requests.post(
        f"{toolkit_server}/invocations", data=jpeg if body is None else body, headers=headers,
        timeout=60,
    )
    assert answer.status_code == status, answer.text[:500]
    assert words in answer.text  # the toolkit's body: our message, then its traceback
    good = requests.post(
        f"{toolkit_server}/invocations", data=jpeg, headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert good.status_code == 200
    assert json.loads(good.text)["model"] == "tiny/1"
