"""Runtimes: which one a model dir can serve and which one auto picks (int8 > onnx > torch, only
those that passed their check; torch on a GPU), the same probabilities from each, the server
naming its runtime, and the same 4xx answers whichever runtime runs."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from bincount.data.abid import DataError
from bincount.data.transforms import eval_transform
from bincount.models import onnx
from bincount.serving import handlers, runtimes
from bincount.serving.quantize import CalibrationReader, quantize_onnx
from bincount.serving.server import create_app
from bincount.serving.settings import ServeSettings
from tests.serving.conftest import serve_settings
from tests.support.servers import app_server
from tests.support.serving import MAX_BYTES


def fake_model_dir(path: Path, files: tuple[str, ...], **records: object) -> Path:
    """A model dir with stand-in files: choosing reads only the files' presence and the records."""
    path.mkdir(parents=True, exist_ok=True)
    spec = {"arch": "resnet18", "image_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1],
            "counts": [1, 2], **records}
    (path / "model.json").write_text(json.dumps(spec))
    for name in files:
        (path / runtimes.FILES[name]).write_bytes(b"stand-in")
    return path


ALL = ("torch", "onnx", "int8")
PASSED = {"onnx": {"passed": True}, "int8": {"passed": True, "serve": True}}


@pytest.mark.parametrize(
    ("files", "records", "picked"),
    [
        (ALL, PASSED, "int8"),
        (ALL, {**PASSED, "int8": {"passed": False, "serve": False}}, "onnx"),
        (ALL, {**PASSED, "int8": {"passed": False, "forced": True, "serve": True}}, "int8"),
        (ALL, {"onnx": {"passed": False}, "int8": {"serve": True}}, "int8"),
        (("torch", "onnx"), PASSED, "onnx"),
        (("torch", "onnx"), {}, "torch"),  # an onnx file without its check is not trusted
        (("torch",), {}, "torch"),  # a model dir from before ONNX still serves
        (("onnx",), PASSED, "onnx"),  # a packed artifact carries one runtime
    ],
    ids=["all", "int8-refused", "int8-forced", "onnx-failed", "no-int8", "unchecked-onnx",
         "torch-only", "onnx-only"],
)
def test_auto_picks_the_fastest_runtime_that_passed_its_check(
    tmp_path: Path, files: tuple[str, ...], records: dict, picked: str
) -> None:
    model_dir = fake_model_dir(tmp_path / "m", files, **records)
    assert runtimes.choose_runtime(model_dir, "auto", gpu=False) == picked
    on_gpu = "torch" if "torch" in files else picked
    assert runtimes.choose_runtime(model_dir, "auto", gpu=True) == on_gpu


def test_an_int8_model_that_lost_accuracy_is_refused_unless_forced(tmp_path: Path) -> None:
    record = {"passed": False, "serve": False, "accuracy_drop": 0.05, "max_accuracy_drop": 0.01}
    model_dir = fake_model_dir(tmp_path / "m", ALL, onnx={"passed": True}, int8=record)
    with pytest.raises(runtimes.RuntimeUnavailable) as refused:
        runtimes.choose_runtime(model_dir, "int8")
    message = str(refused.value)
    assert message.startswith(f"serve.runtime=int8 cannot serve {model_dir}: ")
    assert "lost 0.05 accuracy" in message and "quantize.force=true" in message


@pytest.mark.parametrize(
    ("files", "requested", "words"),
    [
        (("torch",), "onnx", "model.onnx is missing (train again"),
        (("torch",), "int8", "model.int8.onnx is missing (run scripts/quantize.py"),
        (("torch", "onnx"), "onnx", "has no 'onnx' check"),
    ],
)
def test_asking_for_a_runtime_the_dir_lacks_says_what_to_do(
    tmp_path: Path, files: tuple[str, ...], requested: str, words: str
) -> None:
    model_dir = fake_model_dir(tmp_path / "m", files)
    with pytest.raises(DataError, match=re.escape(words)):
        runtimes.choose_runtime(model_dir, requested, key="predict.runtime")


def test_a_runtime_name_not_known_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"serve.runtime: expected one of auto, int8, onnx, torch"):
        runtimes.choose_runtime(fake_model_dir(tmp_path / "m", ALL), "openvino")
    with pytest.raises(Exception, match=r"serve.runtime: expected one of auto, int8, onnx, torch"):
        serve_settings("model_dir=/m", "serve.runtime=tensorrt")


def test_the_container_reads_its_runtime_and_threads_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = fake_model_dir(tmp_path / "m", ALL, **PASSED)
    monkeypatch.setenv(runtimes.RUNTIME_ENV, "ONNX")
    monkeypatch.setenv(runtimes.THREADS_ENV, "3")
    assert runtimes.runtime_from_env(model_dir) == ("onnx", 3)
    monkeypatch.setenv(runtimes.THREADS_ENV, "0")
    with pytest.raises(ValueError, match="BINCOUNT_THREADS must be a positive integer"):
        runtimes.runtime_from_env(model_dir)


def test_torch_and_onnx_give_the_same_probabilities_on_real_photos(
    model_dir: Path, jpegs: dict[str, bytes]
) -> None:
    """The tiny model of the serving tests carries model.onnx (every export writes it)."""
    assert runtimes.choose_runtime(model_dir, "auto", gpu=False) == "onnx"
    spec = json.loads((model_dir / "model.json").read_text())
    transform = eval_transform(spec["image_size"], spec["mean"], spec["std"])
    limits = handlers.Limits.from_env()
    batch = torch.stack([transform(handlers.decode_image(data, limits)) for data in jpegs.values()])
    torch_probs = runtimes.load_runtime(model_dir, "torch", 1).probabilities(batch)
    onnx_probs = runtimes.load_runtime(model_dir, "onnx", 1).probabilities(batch)
    assert torch_probs.shape == (len(jpegs), 5) and np.allclose(torch_probs.sum(axis=1), 1)
    assert np.abs(torch_probs - onnx_probs).max() <= onnx.TOLERANCE


def photo_batch(model_dir: Path, jpegs: dict[str, bytes]) -> torch.Tensor:
    spec = json.loads((model_dir / "model.json").read_text())
    transform = eval_transform(spec["image_size"], spec["mean"], spec["std"])
    limits = handlers.Limits.from_env()
    return torch.stack([transform(handlers.decode_image(d, limits)) for d in jpegs.values()])


def test_every_runtime_applies_the_temperature_of_model_json(
    model_dir: Path, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """softmax(scores / 2): flatter, the same order, and the same from torch and ONNX."""
    warm = shutil.copytree(model_dir, tmp_path / "model")
    onnx.update_spec_json(warm, temperature=2.0)
    batch = photo_batch(model_dir, jpegs)
    plain = runtimes.load_runtime(model_dir, "torch", 1).probabilities(batch)
    hot = {name: runtimes.load_runtime(warm, name, 1).probabilities(batch)
           for name in ("torch", "onnx")}
    assert np.abs(hot["torch"] - hot["onnx"]).max() <= onnx.TOLERANCE
    flatter = np.sqrt(plain) / np.sqrt(plain).sum(axis=1, keepdims=True)  # p ** (1 / T)
    assert np.allclose(hot["torch"], flatter, atol=1e-6)
    assert (hot["torch"].max(axis=1) < plain.max(axis=1)).all()
    assert (hot["torch"].argmax(axis=1) == plain.argmax(axis=1)).all()


def test_an_onnx_model_giving_nan_is_refused_at_load_naming_the_file(
    model_dir: Path, tmp_path: Path
) -> None:
    import onnx as onnx_format

    broken = shutil.copytree(model_dir, tmp_path / "model")
    graph = onnx_format.load(broken / onnx.ONNX_FILE)
    weights = max(graph.graph.initializer, key=lambda t: t.dims[0] if t.dims else 0)
    array = onnx_format.numpy_helper.to_array(weights).copy()
    array.flat[0] = np.nan
    weights.CopyFrom(onnx_format.numpy_helper.from_array(array, weights.name))
    onnx_format.save(graph, broken / onnx.ONNX_FILE)
    with pytest.raises(DataError) as err:
        runtimes.load_runtime(broken, "onnx", 1)
    (line,) = str(err.value).splitlines()
    assert line.startswith(f"{broken / onnx.ONNX_FILE} gives NaN or infinite probabilities")
    onnx.update_spec_json(broken, temperature=0)
    with pytest.raises(DataError, match="model.json: temperature must be a positive number"):
        runtimes.load_runtime(broken, "torch", 1)


@pytest.fixture(scope="module")
def int8_model_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with an int8 model quantized on a few random batches, recorded as
    checked (the accuracy check itself is tested in test_quantize)."""
    out = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(model_dir, out)
    size = json.loads((out / "model.json").read_text())["image_size"]
    batches = iter([onnx.random_inputs(size, n=2, seed=seed) for seed in range(2)])
    quantize_onnx(out / onnx.ONNX_FILE, out / onnx.INT8_FILE,
                  CalibrationReader(onnx.INPUT_NAME, batches), per_channel=True)
    onnx.update_spec_json(out, int8={"passed": True, "serve": True})
    return out


@pytest.fixture
def restored_env() -> Iterator[None]:
    """create_app exports its limits, runtime and threads to the environment: put them back."""
    saved = dict(os.environ)
    threads = torch.get_num_threads()
    yield
    os.environ.clear()
    os.environ.update(saved)
    torch.set_num_threads(threads)


def settings_for(model_dir: Path, runtime: str) -> ServeSettings:
    return serve_settings(f"model_dir={model_dir}", f"serve.runtime={runtime}",
                          "serve.torch_threads=1", f"limits.max_request_bytes={MAX_BYTES}")


def test_the_server_names_the_runtime_it_picked(
    model_dir: Path, restored_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bincount.serving"), \
            app_server(create_app(settings_for(model_dir, "auto"))) as url:
        assert requests.get(f"{url}/ping", timeout=10).status_code == 200
    started = [r.getMessage() for r in caplog.records if "loaded from" in r.getMessage()]
    assert len(started) == 1
    assert "runtime onnx (auto: the fastest that passed its check), 1 threads" in started[0]


def test_a_model_dir_without_onnx_serves_with_torch(
    model_dir: Path, tmp_path: Path, restored_env: None, jpegs: dict[str, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = tmp_path / "model"
    old.mkdir()
    for name in ("model.pt", "model.json"):
        shutil.copyfile(model_dir / name, old / name)
    with caplog.at_level(logging.INFO, logger="bincount.serving"), \
            app_server(create_app(settings_for(old, "auto"))) as url:
        answer = requests.post(f"{url}/invocations", data=next(iter(jpegs.values())),
                               headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert answer.status_code == 200 and answer.json()["model"] == "tiny/1"
    assert "runtime torch (auto" in caplog.text


def test_asking_the_server_for_a_missing_runtime_stops_it_naming_the_key(
    model_dir: Path, tmp_path: Path, restored_env: None
) -> None:
    old = tmp_path / "model"
    old.mkdir()
    for name in ("model.pt", "model.json"):
        shutil.copyfile(model_dir / name, old / name)
    with pytest.raises(DataError, match=r"serve.runtime=int8 cannot serve .*model.int8.onnx is"):
        create_app(settings_for(old, "int8"))


BAD = [
    (b"three", {"Content-Type": "text/plain"}, 415),
    (b"not an image", {"Content-Type": "image/jpeg"}, 400),
    (b"", {"Content-Type": "image/jpeg"}, 400),
    (bytes(MAX_BYTES + 1), {"Content-Type": "image/jpeg"}, 413),
    (None, {"Content-Type": "image/jpeg", "Accept": "text/csv"}, 406),
]


@pytest.mark.slow  # quantizes the tiny model and starts three endpoints
def test_every_runtime_answers_the_same_json_and_the_same_4xx(
    int8_model_dir: Path, restored_env: None, jpegs: dict[str, bytes]
) -> None:
    jpeg = next(iter(jpegs.values()))
    answers = {}
    for runtime in ("torch", "onnx", "int8"):
        with app_server(create_app(settings_for(int8_model_dir, runtime))) as url:
            for body, headers, status in BAD:
                answer = requests.post(f"{url}/invocations", data=jpeg if body is None else body,
                                       headers=headers, timeout=30)
                assert answer.status_code == status, (runtime, answer.text)
                assert answer.json()["status"] == status
            good = requests.post(f"{url}/invocations", data=jpeg,
                                 headers={"Content-Type": "image/jpeg"}, timeout=30)
            assert good.status_code == 200, (runtime, good.text)
            answers[runtime] = good.json()
    assert {tuple(a) for a in answers.values()} == {("count", "probabilities", "model")}
    for runtime in ("onnx", "int8"):
        got, want = answers[runtime]["probabilities"], answers["torch"]["probabilities"]
        assert got.keys() == want.keys()
    assert answers["onnx"]["probabilities"] == pytest.approx(
        answers["torch"]["probabilities"], abs=1e-4)
