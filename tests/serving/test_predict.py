"""``scripts/predict.py``'s work in this process: a local model directory, the local endpoint by
URL, a SageMaker endpoint by name, and the errors a user can cause.
The script itself (exit status, a broken photo): tests/e2e/test_serving_scripts.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.serving.predict import PREDICTIONS_FILE, collect_images, predict
from tests.support.serving import SAMPLE_IDS


@pytest.fixture
def images(sample_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for image_id in SAMPLE_IDS:
        shutil.copy(sample_dir / "images" / f"{image_id}.jpg", folder)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def assert_rows(rows: list[dict], expected: dict[str, dict]) -> None:
    assert [Path(row["image"]).stem for row in rows] == list(SAMPLE_IDS)
    for row in rows:
        want = expected[Path(row["image"]).stem]
        assert (row["count"], row["model"]) == (want["count"], want["model"])
        assert row["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)


def test_a_folder_of_photos_gets_a_table_and_predictions_json(
    model_dir: Path,
    images: Path,
    expected: dict[str, dict],
    make_cfg: Callable[..., DictConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = make_cfg(f"images={images}", f"model_dir={model_dir}", name="predict", tiny=False)
    rows = predict(cfg)

    assert_rows(rows, expected)
    saved = json.loads((Path(cfg.paths.output_dir) / PREDICTIONS_FILE).read_text())
    assert saved == rows
    out = capsys.readouterr().out
    assert "bin counts" in out and "confidence" in out
    assert all(image_id in out for image_id in SAMPLE_IDS)


def test_the_local_endpoint_by_url(
    endpoint: str, images: Path, expected: dict[str, dict], make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"images=[{images}]", f"predict.url={endpoint}", name="predict", tiny=False)
    assert_rows(predict(cfg), expected)


def test_a_sagemaker_endpoint_by_name(
    endpoint: str,
    images: Path,
    expected: dict[str, dict],
    make_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The SageMaker runtime's URL (botocore's per-service endpoint variable) is the local
    endpoint, which answers the runtime path ``/endpoints/<name>/invocations`` as SageMaker does."""
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint)
    cfg = make_cfg(f"images={images}", "predict.endpoint=bins-prod", "predict.region=eu-west-1",
                   name="predict", tiny=False)
    assert_rows(predict(cfg), expected)
    assert "bin counts (endpoint bins-prod)" in capsys.readouterr().out


def test_missing_images_are_named(tmp_path: Path) -> None:
    with pytest.raises(BincountError, match=f"{tmp_path / 'nope.jpg'} does not exist"):
        collect_images([str(tmp_path / "nope.jpg")])
    with pytest.raises(BincountError, match="holds no .jpg"):
        collect_images([str(tmp_path)])


def test_nothing_listening_at_the_url_is_one_clear_error(
    images: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"images={images}", "predict.url=http://127.0.0.1:9", name="predict", tiny=False)
    with pytest.raises(BincountError, match="could not call http://127.0.0.1:9"):
        predict(cfg)
