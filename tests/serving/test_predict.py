"""``scripts/predict.py``'s work in this process: a local model directory, the local endpoint by
URL, a SageMaker endpoint by name, and the errors a user can cause.
The script itself (exit status, a broken photo): tests/e2e/test_serving_scripts.py."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.serving.predict import PREDICTIONS_FILE, predict
from bincount.serving.predict_files import collect_photos
from tests.support.serving import SAMPLE_IDS, VERDICTS


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
        collect_photos([str(tmp_path / "nope.jpg")])
    with pytest.raises(BincountError, match="holds no .jpg"):
        collect_photos([str(tmp_path)])


def test_nothing_listening_at_the_url_is_one_clear_error(
    images: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    cfg = make_cfg(f"images={images}", "predict.url=http://127.0.0.1:9", name="predict", tiny=False)
    with pytest.raises(BincountError, match="could not call http://127.0.0.1:9"):
        predict(cfg)


def reconcile_table(images: Path, sample_dir: Path, name: str) -> tuple[Path, dict[str, int]]:
    """A table of the photos (paths relative to it) with expected counts 1, 3 and 5, and one
    photo that is not an image."""
    wanted = dict(zip(SAMPLE_IDS, [1, 3, 5, 1], strict=True))
    (images / "torn.jpg").write_bytes((sample_dir / "images" / "00001.jpg").read_bytes()[:300])
    rows = [{"path": f"{i}.jpg", "expected": e} for i, e in wanted.items()]
    rows.append({"path": "torn.jpg", "expected": 2})
    table = images / name
    if name.endswith(".jsonl"):
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        table.write_text("path,expected\n" + "".join(f"{r['path']},{r['expected']}\n"
                                                     for r in rows))
    return table, wanted


def check_reconciled(rows: list[dict], images: Path, wanted: dict[str, int],
                     expected: dict[str, dict]) -> None:
    by_image = {Path(r["image"]).name: r for r in rows}
    assert sorted(by_image) == sorted([f"{i}.jpg" for i in SAMPLE_IDS] + ["torn.jpg"])
    assert "not a decodable image" in by_image["torn.jpg"]["error"]
    for image_id, want in wanted.items():
        row = by_image[f"{image_id}.jpg"]
        probabilities = json.loads(row["probabilities"]) if isinstance(
            row["probabilities"], str) else row["probabilities"]
        assert int(row["count"]) == expected[image_id]["count"]
        assert float(row["confidence"]) == probabilities[str(row["count"])]
        assert int(row["expected"]) == want and row["verdict"] == VERDICTS[want]
        assert float(row["p_expected"]) == pytest.approx(probabilities[str(want)], abs=1e-6)


def test_a_table_with_expected_counts_streams_verdicts_to_csv_and_resumes(
    model_dir: Path, images: Path, sample_dir: Path, expected: dict[str, dict],
    make_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    table, wanted = reconcile_table(images, sample_dir, "bins.csv")
    output = tmp_path / "out" / "predictions.csv"
    cfg = make_cfg(f"images={table}", f"model_dir={model_dir}", f"predict.output={output}",
                   "predict.batch_size=2", name="predict", tiny=False)
    with pytest.raises(BincountError, match="1 of 5 images could not be read"):
        predict(cfg)
    assert "could not read" in capsys.readouterr().err
    rows = list(csv.DictReader(output.open()))
    check_reconciled(rows, images, wanted, expected)

    # A killed run tore the last line: the re-run cuts it and predicts only what is missing.
    text = output.read_text()
    lines = text.splitlines(keepends=True)
    output.write_text("".join(lines[:3]) + lines[3][:20])
    with pytest.raises(BincountError, match="1 of 3 images"):
        predict(cfg)
    assert "2 of 5 photos already predicted" in capsys.readouterr().out
    again = list(csv.DictReader(output.open()))
    assert len(again) == 5
    check_reconciled(again, images, wanted, expected)


def test_the_endpoint_gets_the_expected_count_as_custom_attributes(
    endpoint: str, images: Path, sample_dir: Path, expected: dict[str, dict],
    make_cfg: Callable[..., DictConfig], tmp_path: Path,
) -> None:
    table, wanted = reconcile_table(images, sample_dir, "bins.jsonl")
    output = tmp_path / "predictions.jsonl"
    cfg = make_cfg(f"images={table}", f"predict.url={endpoint}", f"predict.output={output}",
                   name="predict", tiny=False)
    with pytest.raises(BincountError, match="1 of 5 images"):
        predict(cfg)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    check_reconciled(rows, images, wanted, expected)
    with pytest.raises(BincountError, match="predict.output: .*must end in .csv or .jsonl"):
        predict(make_cfg(f"images={table}", f"predict.url={endpoint}",
                         f"predict.output={tmp_path / 'p.txt'}", name="predict", tiny=False))
