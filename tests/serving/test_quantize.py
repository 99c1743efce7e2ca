"""The int8 accuracy check: an int8 model that loses accuracy is written but marked not for
serving (the command exits 1, auto falls back to fp32, asking for int8 is refused) unless
``quantize.force=true``; settings are checked with their keys."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from bincount.errors import BincountError
from bincount.models.export import load_spec
from bincount.serving import runtimes
from bincount.serving.quantize import QuantizationRefused, quantize
from tests.support.quantize import labelled_data_dir, rarest_class, write_wrong_model


@pytest.fixture
def prepared(model_dir: Path, sample_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(model dir with a checked model.onnx, data dir labelled by the fp32 model)."""
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    return model, labelled_data_dir(model, sample_dir, tmp_path / "data")


@pytest.fixture
def wrong_int8(prepared: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantization that yields a model answering the rarest label for every image."""
    model, data = prepared
    favoured = rarest_class(data, load_spec(model).counts)

    def quantize_badly(source: Path, dest: Path, reader: object, per_channel: bool) -> None:
        write_wrong_model(source, dest, favoured)

    monkeypatch.setattr("bincount.serving.quantize.quantize_onnx", quantize_badly)


def quantize_cfg(make_cfg: Callable[..., DictConfig], model: Path, data: Path,
                 *overrides: str) -> DictConfig:
    return make_cfg(f"model_dir={model}", f"quantize.data_dir={data}",
                    "quantize.calibration_images=4", "quantize.threads=1", *overrides,
                    name="quantize", tiny=False)


def test_an_int8_model_that_loses_accuracy_is_refused_for_serving(
    prepared: tuple[Path, Path], wrong_int8: None, make_cfg: Callable[..., DictConfig]
) -> None:
    model, data = prepared
    with pytest.raises(QuantizationRefused, match="marked not for serving") as refused:
        quantize(quantize_cfg(make_cfg, model, data, "quantize.max_accuracy_drop=0.01"))
    assert refused.value.exit_code == 1
    record = json.loads((model / "model.json").read_text())["int8"]
    assert (record["passed"], record["serve"], record["forced"]) == (False, False, False)
    assert record["accuracy_drop"] > 0.01 and record["max_accuracy_drop"] == 0.01
    for split in ("val", "test"):  # the labels are the fp32 predictions
        assert record["splits"][split]["onnx"]["accuracy"] == 1.0
        assert record["splits"][split]["torch"]["agreement"] == 1.0
        assert record["splits"][split]["int8"]["accuracy"] < 1.0
    assert (model / "model.int8.onnx").is_file()  # kept, to inspect
    assert runtimes.choose_runtime(model, "auto", gpu=False) == "onnx"
    with pytest.raises(runtimes.RuntimeUnavailable, match="quantize.force=true"):
        runtimes.choose_runtime(model, "int8")


def test_force_serves_it_anyway_and_says_so(
    prepared: tuple[Path, Path], wrong_int8: None, make_cfg: Callable[..., DictConfig]
) -> None:
    model, data = prepared
    record = quantize(quantize_cfg(make_cfg, model, data, "quantize.force=true"))
    assert (record["passed"], record["serve"], record["forced"]) == (False, True, True)
    assert runtimes.choose_runtime(model, "auto", gpu=False) == "int8"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("quantize.calibration_images=0", "quantize.calibration_images: expected an integer >= 1"),
        ("quantize.max_accuracy_drop=-0.5", "quantize.max_accuracy_drop: expected a number >= 0"),
        ("quantize.force=maybe", "quantize.force: expected true or false"),
    ],
)
def test_bad_settings_name_their_key(
    prepared: tuple[Path, Path], make_cfg: Callable[..., DictConfig], override: str, words: str
) -> None:
    model, data = prepared
    with pytest.raises(BincountError, match=words):
        quantize(quantize_cfg(make_cfg, model, data, override))


def test_without_a_run_config_the_data_dir_must_be_given(
    prepared: tuple[Path, Path], make_cfg: Callable[..., DictConfig]
) -> None:
    model, _ = prepared
    cfg = make_cfg(f"model_dir={model}", name="quantize", tiny=False)
    with pytest.raises(BincountError, match=r"give quantize.data_dir="):
        quantize(cfg)
