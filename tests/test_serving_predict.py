"""``scripts/predict.py`` with a local model directory (the endpoint modes are in
test_serving_server.py, against the running local server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.serving import handlers
from bincount.serving.predict import PREDICTIONS_FILE, collect_images, predict
from tests.serving_support import SAMPLE_IDS, make_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture
def images(sample_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for image_id in SAMPLE_IDS:
        shutil.copy(sample_dir / "images" / f"{image_id}.jpg", folder)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def test_a_folder_of_photos_gets_a_table_and_predictions_json(
    model_dir: Path,
    images: Path,
    make_cfg: Callable[..., DictConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = make_cfg(f"images={images}", f"model_dir={model_dir}", name="predict", tiny=False)
    rows = predict(cfg)

    model = handlers.model_fn(str(model_dir))
    assert [Path(row["image"]).stem for row in rows] == list(SAMPLE_IDS)
    for row in rows:
        image = handlers.input_fn(Path(row["image"]).read_bytes(), "image/jpeg")
        want = handlers.predict_fn(image, model)[0]
        assert row["count"] == want["count"]
        assert row["probabilities"] == pytest.approx(want["probabilities"], abs=2e-6)
    saved = json.loads((Path(cfg.paths.output_dir) / PREDICTIONS_FILE).read_text())
    assert saved == rows
    out = capsys.readouterr().out
    assert "bin counts" in out and "confidence" in out
    assert all(image_id in out for image_id in SAMPLE_IDS)


def test_an_unreadable_photo_is_reported_and_fails_the_script(
    model_dir: Path, images: Path, tmp_path: Path
) -> None:
    broken = images / "broken.jpg"
    broken.write_bytes((images / f"{SAMPLE_IDS[0]}.jpg").read_bytes()[:500])
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "predict.py"), f"images=[{images}]",
            f"model_dir={model_dir}", f"paths.log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "1 of 5 images could not be read" in done.stderr
    assert "broken.jpg" in done.stdout and "error:" in done.stdout
    assert "Traceback" not in done.stderr
    (saved,) = (tmp_path / "logs").rglob(PREDICTIONS_FILE)
    rows = json.loads(saved.read_text())
    assert len(rows) == 5
    (failed,) = [row for row in rows if "error" in row]
    assert failed["image"] == str(broken)
    assert "not a decodable image" in failed["error"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ([], "got none"),
        (["predict.url=http://127.0.0.1:9", "predict.endpoint=x"], "predict.endpoint, predict.url"),
    ],
)
def test_exactly_one_source(
    overrides: list[str], words: str, images: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"images={images}", *overrides, name="predict", tiny=False)
    with pytest.raises(BincountError, match=words):
        predict(cfg)


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
