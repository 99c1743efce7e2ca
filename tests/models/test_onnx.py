"""The ONNX export: dynamic batch, checked against PyTorch on real photos, the check recorded in
model.json (which still loads as a spec), a stale int8 model removed, a failed export harmless."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bincount.data.transforms import eval_transform
from bincount.models import onnx
from bincount.models.backbone import build_resnet
from bincount.models.export import ModelSpec, export_model, load_spec
from bincount.serving.handlers import Limits, decode_image
from tests.support.serving import IMAGE_SIZE, SAMPLE_IDS


def photos(sample_dir: Path, spec: ModelSpec, ids: tuple[str, ...] = SAMPLE_IDS) -> torch.Tensor:
    """Real ABID photos, preprocessed as the endpoint does."""
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    limits = Limits.from_env()
    return torch.stack([
        transform(decode_image((sample_dir / "images" / f"{i}.jpg").read_bytes(), limits))
        for i in ids
    ])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """The tiny model exported with real photos as the check's inputs, over a model dir that
    holds an int8 model of other weights."""
    model_dir = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = build_resnet("resnet18", num_classes=5, pretrained=False).eval()
    spec = ModelSpec(arch="resnet18", image_size=IMAGE_SIZE, mean=[0.485, 0.456, 0.406],
                     std=[0.229, 0.224, 0.225], counts=[1, 2, 3, 4, 5], name="tiny", version="1")
    (model_dir / onnx.INT8_FILE).write_bytes(b"quantized from older weights")
    return export_model(net, spec, model_dir, samples=photos(sample_dir, spec))


@pytest.mark.slow  # an ONNX export (seconds)
def test_the_export_matches_torch_on_real_photos_at_any_batch_size(
    exported: Path, sample_dir: Path
) -> None:
    record = json.loads((exported / "model.json").read_text())["onnx"]
    assert record["passed"] is True and record["inputs"] == f"{len(SAMPLE_IDS)} images"
    assert 0 <= record["max_abs_diff"] <= onnx.TOLERANCE == 1e-4
    spec = load_spec(exported)  # the records beside the spec do not stop it loading
    assert spec.image_size == IMAGE_SIZE and spec.name == "tiny"
    net = build_resnet("resnet18", num_classes=5, pretrained=False)
    net.load_state_dict(torch.load(exported / "model.pt", weights_only=True))
    session = onnx.ort_session(exported / onnx.ONNX_FILE, threads=1)
    images = photos(sample_dir, spec)
    for batch in (images[:1], images[:3]):  # not the export's batch size of 1 only
        assert onnx.max_probability_diff(session, net, batch) <= onnx.TOLERANCE


@pytest.mark.slow  # the same export
def test_a_new_export_removes_the_int8_model_of_the_old_weights(exported: Path) -> None:
    assert not (exported / onnx.INT8_FILE).exists()
    assert "int8" not in json.loads((exported / "model.json").read_text())


def test_records_are_added_and_removed_without_touching_the_spec(tmp_path: Path) -> None:
    spec = ModelSpec(arch="resnet18", image_size=8, mean=[0.0] * 3, std=[1.0] * 3,
                     counts=[1, 2], name="n", version="3")
    (tmp_path / "model.json").write_text(json.dumps(spec.__dict__))
    onnx.update_spec_json(tmp_path, int8={"serve": True}, onnx={"passed": False})
    onnx.update_spec_json(tmp_path, onnx=None)
    assert onnx.read_spec_json(tmp_path)["int8"] == {"serve": True}
    assert "onnx" not in onnx.read_spec_json(tmp_path)
    assert load_spec(tmp_path) == spec


def test_a_nan_check_is_recorded_as_failed_not_as_invalid_json() -> None:
    record = onnx.check_record(float("nan"), "images", 4)
    assert record["passed"] is False and record["max_abs_diff"] is None
    json.dumps(record, allow_nan=False)


def test_a_failed_onnx_export_still_leaves_a_torch_model_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr("bincount.models.export.export_onnx", broken)
    net = build_resnet("resnet18", num_classes=2, pretrained=False)
    spec = ModelSpec(arch="resnet18", image_size=8, mean=[0.0] * 3, std=[1.0] * 3,
                     counts=[1, 2])
    export_model(net, spec, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]
    assert "no ONNX model exported (RuntimeError: exporter unavailable)" in caplog.text


def test_softmax_is_the_probabilities_torch_gives() -> None:
    logits = np.array([[1.0, 2.0, -3.0], [100.0, 0.0, 0.0]], dtype=np.float32)
    expected = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    assert np.allclose(onnx.softmax(logits), expected, atol=1e-12)
