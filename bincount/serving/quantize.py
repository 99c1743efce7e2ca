"""``scripts/quantize.py``: static post-training int8 quantization of ``model.onnx`` (QDQ), with
its accuracy checked before anything serves it.

Calibration runs ``quantize.calibration_images`` images of the run's training split through the
fp32 model; then PyTorch, ONNX Runtime fp32 and int8 predict the validation and test splits
through the serving preprocessing (the handlers' decoding, the evaluation transform of
``model.json``). ``model.json`` gets an ``"int8"`` record (accuracy, RMSE, agreement with fp32,
sizes, img/s per split) and the ONNX check on these real images. When int8 accuracy drops by more
than ``quantize.max_accuracy_drop`` on either split, the int8 model is marked not for serving
(``serve: false``) unless ``quantize.force=true``, and the command exits 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from bincount.data.abid import IMAGES
from bincount.data.splits import MANIFEST, load_manifest, split_ids
from bincount.data.transforms import eval_transform
from bincount.errors import BincountError, expect_bool, expect_int
from bincount.models.export import ModelSpec, load_model, load_spec
from bincount.models.onnx import (
    INPUT_NAME,
    INT8_FILE,
    ONNX_FILE,
    TOLERANCE,
    export_onnx,
    ort_session,
    read_spec_json,
    update_spec_json,
)
from bincount.serving.handlers import Limits, decode_image
from bincount.serving.runtimes import OrtRuntime, Runtime, TorchRuntime, usable_cpus
from bincount.serving.settings import expect_number, optional_text, required

log = logging.getLogger(__name__)
RUN_CONFIG = Path("..") / ".hydra" / "config.yaml"  # beside <run>/model: the training run's


class QuantizationRefused(BincountError):
    """The int8 model lost too much accuracy; it is written but marked not for serving."""

    exit_code = 1


@dataclass(frozen=True)
class QuantizeSettings:
    """``cfg.model_dir`` and ``cfg.quantize`` (conf/quantize.yaml), checked."""

    model_dir: Path
    data_dir: Path | None  # None: the training run's data.data_dir
    calibration_images: int
    max_accuracy_drop: float  # a fraction: 0.01 is one point of accuracy
    force: bool
    per_channel: bool
    batch_size: int
    seed: int
    threads: int | None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> QuantizeSettings:
        q = cfg.quantize
        data_dir = optional_text(q.data_dir)
        return cls(
            model_dir=Path(required("model_dir", cfg.get("model_dir"),
                                    "the exported model directory, e.g. <run>/model")),
            data_dir=None if data_dir is None else Path(data_dir),
            calibration_images=expect_int(
                "quantize.calibration_images", q.calibration_images, 1),
            max_accuracy_drop=expect_number(
                "quantize.max_accuracy_drop", q.max_accuracy_drop, 0),
            force=expect_bool("quantize.force", q.force),
            per_channel=expect_bool("quantize.per_channel", q.per_channel),
            batch_size=expect_int("quantize.batch_size", q.batch_size, 1),
            seed=expect_int("quantize.seed", q.seed, 0),
            threads=None if q.threads is None else expect_int("quantize.threads", q.threads, 1),
        )


def run_data_dir(model_dir: Path) -> Path:
    """``data.data_dir`` of the training run that exported ``model_dir`` (its .hydra config)."""
    path = (Path(model_dir) / RUN_CONFIG).resolve()
    if not path.is_file():
        raise BincountError(f"{path} is missing, so the training data is unknown: give "
                            "quantize.data_dir=<the data directory the model was trained on>")
    data_dir = OmegaConf.select(OmegaConf.load(path), "data.data_dir")
    if not data_dir:
        raise BincountError(f"{path} names no data.data_dir: give quantize.data_dir=<dir>")
    return Path(str(data_dir))


def split_items(data_dir: Path, split: str, counts: Sequence[int]) -> list[tuple[Path, int]]:
    """(image path, class index) of one split, for the counts the model knows."""
    manifest_path = Path(data_dir) / MANIFEST
    if not manifest_path.is_file():
        raise BincountError(f"{manifest_path} is missing: expected the split manifest of the "
                            "data the model was trained on (quantize.data_dir)")
    items = [(Path(data_dir) / IMAGES / f"{image_id}.jpg", counts.index(count))
             for image_id, count in split_ids(load_manifest(manifest_path), split)
             if count in counts]
    if not items:
        raise BincountError(f"the {split} split of {manifest_path} has no images")
    return items


def batches(paths: Sequence[Path], spec: ModelSpec, size: int) -> Iterator[torch.Tensor]:
    """Normalized batches of the images, preprocessed as the endpoint does."""
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    limits = Limits.from_env()  # the endpoint's decoding (and its fallback limits)
    for start in range(0, len(paths), size):
        images = [decode_image(path.read_bytes(), limits) for path in paths[start:start + size]]
        yield torch.stack([transform(image) for image in images])


class CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over preprocessed batches."""

    def __init__(self, input_name: str, batches: Iterator[torch.Tensor]) -> None:
        self.input_name = input_name
        self._batches = batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch.numpy()}


def quantize_onnx(source: Path, dest: Path, reader: CalibrationReader, per_channel: bool) -> None:
    """Static QDQ quantization (uint8 activations, int8 weights, MinMax calibration)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dest.with_name(f".{dest.name}.pre.onnx")
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(tmp), reader, quant_format=QuantFormat.QDQ,
            per_channel=per_channel, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
        tmp.replace(dest)
    finally:
        prepared.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def predict_split(
    runtimes: dict[str, Runtime], paths: Sequence[Path], spec: ModelSpec, size: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each runtime's probabilities for the images, and its img/s (preprocessing excluded).

    One runtime at a time: interleaved, each one's idle thread pool would spin against the
    other's."""
    probabilities: dict[str, np.ndarray] = {}
    speed: dict[str, float] = {}
    for name, runtime in runtimes.items():
        rows, seconds = [], 0.0
        for batch in batches(paths, spec, size):
            start = time.perf_counter()
            rows.append(runtime.probabilities(batch))
            seconds += time.perf_counter() - start
        probabilities[name] = np.concatenate(rows)
        speed[name] = len(paths) / max(seconds, 1e-9)
    return probabilities, speed


def split_metrics(
    probabilities: np.ndarray, labels: np.ndarray, counts: Sequence[int], reference: np.ndarray
) -> dict[str, float]:
    """Accuracy, RMSE of the predicted count, agreement with the reference's predictions."""
    predicted = probabilities.argmax(axis=1)
    values = np.asarray(counts, dtype=np.float64)
    return {
        "accuracy": float((predicted == labels).mean()),
        "rmse": float(np.sqrt(((values[predicted] - values[labels]) ** 2).mean())),
        "agreement": float((predicted == reference.argmax(axis=1)).mean()),
    }


def render(record: dict[str, Any], model_dir: Path, console: Console) -> None:
    table = Table(title=f"int8 vs fp32: {model_dir}")
    for column in ("split", "runtime", "accuracy", "RMSE", "agreement", "size MB", "img/s"):
        table.add_column(column, justify="right")
    for split, rows in record["splits"].items():
        for name, row in rows.items():
            table.add_row(split, name, f"{row['accuracy']:.4f}", f"{row['rmse']:.3f}",
                          f"{row['agreement']:.4f}", f"{record['size_mb'][name]:.1f}",
                          f"{row['img_per_s']:.1f}")
    console.print(table)


def quantize(cfg: DictConfig) -> dict[str, Any]:
    """Quantize ``cfg.model_dir``; returns the ``"int8"`` record written to ``model.json``."""
    settings = QuantizeSettings.from_cfg(cfg)
    model_dir = settings.model_dir
    spec = load_spec(model_dir)
    data_dir = settings.data_dir or run_data_dir(model_dir)
    threads = settings.threads or usable_cpus()
    torch.set_num_threads(threads)
    net, _ = load_model(model_dir)
    splits = {split: split_items(data_dir, split, spec.counts) for split in ("val", "test")}
    if "onnx" not in read_spec_json(model_dir) or not (model_dir / ONNX_FILE).is_file():
        samples = next(batches([p for p, _ in splits["val"]][:16], spec, 16))
        export_onnx(net, spec.image_size, model_dir, samples)

    train = split_items(data_dir, "train", spec.counts)
    rng = np.random.default_rng(settings.seed)
    chosen = rng.choice(len(train), min(settings.calibration_images, len(train)), replace=False)
    calibration = [train[int(i)][0] for i in sorted(chosen)]
    log.info("calibrating on %d training images of %s", len(calibration), data_dir)
    reader = CalibrationReader(INPUT_NAME, batches(calibration, spec, settings.batch_size))
    quantize_onnx(model_dir / ONNX_FILE, model_dir / INT8_FILE, reader, settings.per_channel)

    t = spec.temperature  # calibrated probabilities, as the served runtimes give
    runtimes: dict[str, Runtime] = {
        "torch": TorchRuntime(net=net, device=torch.device("cpu"), temperature=t),
        "onnx": OrtRuntime(ort_session(model_dir / ONNX_FILE, threads), "onnx", t),
        "int8": OrtRuntime(ort_session(model_dir / INT8_FILE, threads), "int8", t),
    }
    record: dict[str, Any] = {
        "file": INT8_FILE, "format": "QDQ (uint8 activations, int8 weights, MinMax)",
        "per_channel": settings.per_channel, "calibration_images": len(calibration),
        "size_mb": {name: (model_dir / file).stat().st_size / 1e6 for name, file in
                    (("torch", "model.pt"), ("onnx", ONNX_FILE), ("int8", INT8_FILE))},
        "splits": {},
    }
    onnx_diff, drop = 0.0, 0.0
    for split, items in splits.items():
        labels = np.array([label for _, label in items])
        probabilities, speed = predict_split(runtimes, [p for p, _ in items], spec,
                                             settings.batch_size)
        reference = probabilities["torch"]
        onnx_diff = max(onnx_diff, float(np.abs(probabilities["onnx"] - reference).max()))
        rows = {name: {**split_metrics(p, labels, spec.counts, reference),
                       "img_per_s": speed[name]} for name, p in probabilities.items()}
        record["splits"][split] = rows
        drop = max(drop, rows["onnx"]["accuracy"] - rows["int8"]["accuracy"])
    passed = drop <= settings.max_accuracy_drop
    record.update(accuracy_drop=round(drop, 6), max_accuracy_drop=settings.max_accuracy_drop,
                  passed=passed, forced=settings.force and not passed,
                  serve=passed or settings.force)
    onnx = read_spec_json(model_dir)["onnx"]
    onnx.update(real_images=sum(len(items) for items in splits.values()),
                real_max_abs_diff=onnx_diff,
                passed=bool(onnx["passed"]) and onnx_diff <= TOLERANCE)
    update_spec_json(model_dir, onnx=onnx, int8=record)
    console = Console()
    render(record, model_dir, console)
    verdict = _verdict(record, model_dir)
    console.print(verdict)
    if not record["serve"]:
        raise QuantizationRefused(verdict)
    return record


def _verdict(record: dict[str, Any], model_dir: Path) -> str:
    drop, limit = record["accuracy_drop"], record["max_accuracy_drop"]
    where = model_dir / INT8_FILE
    if record["passed"]:
        return f"{where}: accuracy drop {drop:.4f} <= {limit}: ready to serve (serve.runtime=int8)"
    if record["serve"]:
        return (f"{where}: accuracy drop {drop:.4f} > {limit}, served anyway "
                "(quantize.force=true)")
    return (f"{where}: accuracy drop {drop:.4f} > quantize.max_accuracy_drop={limit}: marked "
            "not for serving (serve.runtime=int8 refuses it; quantize.force=true overrides)")

