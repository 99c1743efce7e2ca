"""Quantization tests' material: a data dir of real photos whose labels are what the fp32 model
predicts (fp32 accuracy 1.0, so an int8 model's loss shows), and an "int8" model that is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from bincount.data.transforms import eval_transform
from bincount.models.export import load_spec
from bincount.serving.handlers import Limits, decode_image
from bincount.serving.runtimes import load_runtime

PER_SPLIT = 8


def labelled_data_dir(model_dir: Path, sample_dir: Path, dest: Path) -> Path:
    """``dest`` with images/ (24 sample photos) and splits.json: 8 per split, each labelled
    with the count the fp32 model predicts for it."""
    spec = load_spec(model_dir)
    ids = [f"{n:05d}" for n in range(1, 3 * PER_SPLIT + 1)]
    (dest / "images").mkdir(parents=True)
    transform = eval_transform(spec.image_size, spec.mean, spec.std)
    limits = Limits.from_env()
    batch = []
    for image_id in ids:
        source = sample_dir / "images" / f"{image_id}.jpg"
        shutil.copyfile(source, dest / "images" / source.name)
        batch.append(transform(decode_image(source.read_bytes(), limits)))
    predicted = load_runtime(model_dir, "torch", 1).probabilities(torch.stack(batch)).argmax(1)
    splits = ["train"] * PER_SPLIT + ["val"] * PER_SPLIT + ["test"] * PER_SPLIT
    images = [{"id": i, "count": spec.counts[int(p)], "split": s}
              for i, p, s in zip(ids, predicted, splits, strict=True)]
    (dest / "splits.json").write_text(json.dumps({"images": images}))
    return dest


def rarest_class(data_dir: Path, counts: list[int]) -> int:
    """The class index least often the label in the val and test splits."""
    images = json.loads((data_dir / "splits.json").read_text())["images"]
    labels = [counts.index(e["count"]) for e in images if e["split"] != "train"]
    return int(np.argmin(np.bincount(labels, minlength=len(counts))))


def write_wrong_model(source: Path, dest: Path, favoured: int) -> None:
    """``source`` (an fp32 ONNX ResNet) whose last bias makes it answer class ``favoured``
    whatever the image: a model that answers, but mostly wrongly."""
    model = onnx.load(str(source))
    bias = next(t for t in model.graph.initializer if t.name == "fc.bias")
    values = np.zeros_like(numpy_helper.to_array(bias))
    values[favoured] = 1e4
    bias.CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias.name))
    onnx.save(model, str(dest))
