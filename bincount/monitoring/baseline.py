"""The monitoring baseline a training run writes into its model dir, from its validation split.

``baseline.json`` holds, per validation image, the predicted count, its confidence and the image
statistics of :mod:`bincount.monitoring.stats`; ``baseline_embeddings.npy`` a seeded sample of
their penultimate-layer embeddings. A drift report compares captured traffic against both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bincount.data.abid import DataError
from bincount.data.splits import MANIFEST, load_manifest, split_files
from bincount.files import atomic_path, write_json_atomic
from bincount.models.export import load_spec
from bincount.monitoring.stats import IMAGE_STATS, Profile, decode, profile_images

log = logging.getLogger(__name__)

BASELINE_FILE = "baseline.json"
EMBEDDINGS_FILE = "baseline_embeddings.npy"
MAX_IMAGES = 1000  # validation images profiled at most (a seeded sample of a larger split)
EMBEDDING_SAMPLE = 256  # embeddings kept: enough for a two-sample test, small on disk
FORMAT = 1


@dataclass(frozen=True)
class Baseline:
    profile: Profile
    source: str
    counts: list[int]  # the model's counts, in order


def _sample(items: list[Any], size: int, seed: int) -> list[Any]:
    if len(items) <= size:
        return items
    keep = np.random.default_rng(seed).choice(len(items), size, replace=False)
    return [items[i] for i in sorted(keep)]


def _val_images(data_dir: Path, seed: int) -> Iterator[Any]:
    manifest = load_manifest(data_dir / MANIFEST)
    items = _sample(split_files(data_dir, manifest, "val"), MAX_IMAGES, seed)
    if not items:
        raise DataError(f"the val split of {data_dir / MANIFEST} has no images for a baseline")
    for _, _, path in items:
        yield decode(path.read_bytes())


def write_baseline(model: nn.Module, datamodule: Any, model_dir: Path, seed: int = 0) -> Path:
    """Profile the validation split of ``datamodule`` (its ``data_dir``) with ``model`` (a
    :class:`~bincount.models.module.CountModule` or its ``net``) and write the baseline files
    into ``model_dir`` (an exported model dir: its ``model.json`` says how to feed the net).
    Returns the path of ``baseline.json``."""
    model_dir = Path(model_dir)
    spec = load_spec(model_dir)
    net = getattr(model, "net", model)
    data_dir = Path(datamodule.data_dir)
    profile = profile_images(_val_images(data_dir, seed), net, spec)
    rows = _sample(list(range(len(profile.embeddings))), EMBEDDING_SAMPLE, seed)
    with atomic_path(model_dir / EMBEDDINGS_FILE) as tmp, tmp.open("wb") as f:
        np.save(f, profile.embeddings[rows])
    path = model_dir / BASELINE_FILE
    write_json_atomic(path, {
        "format": FORMAT,
        "source": f"val split of {data_dir}",
        "model_counts": list(spec.counts),
        "images": len(profile),
        "counts": profile.counts,
        "confidences": [round(c, 6) for c in profile.confidences],
        "image_stats": {k: [round(v, 6) for v in profile.images[k]] for k in IMAGE_STATS},
    })
    log.info("monitoring baseline of %d val images written to %s", len(profile), path)
    return path


def load_baseline(model_dir: Path) -> Baseline:
    """The baseline in ``model_dir``; a missing or unreadable one is a :class:`DataError` that
    says how to make it."""
    path = Path(model_dir) / BASELINE_FILE
    embeddings = Path(model_dir) / EMBEDDINGS_FILE
    if not path.is_file() or not embeddings.is_file():
        raise DataError(f"{path} or {embeddings.name} is missing: a training run writes the "
                        "monitoring baseline beside the model (bincount.monitoring.baseline."
                        "write_baseline)")
    try:
        data = json.loads(path.read_text())
        profile = Profile(
            counts=[int(c) for c in data["counts"]],
            confidences=[float(c) for c in data["confidences"]],
            images={k: [float(v) for v in data["image_stats"][k]] for k in IMAGE_STATS},
            embeddings=np.load(embeddings, allow_pickle=False).astype(np.float32),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a monitoring baseline ({type(err).__name__}: {err})") from err
    return Baseline(profile=profile, source=str(data.get("source", path)),
                    counts=[int(c) for c in data["model_counts"]])
