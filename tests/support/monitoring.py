"""Monitoring tests' material: a small exported model with its baseline (written from the
validation split of a synthetic set, seed 0, by ``write_baseline``), synthetic photos of the same
renderer with another seed (the training distribution), and captures as the server writes them."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from bincount.config import build
from bincount.data.synthetic import render_synthetic
from bincount.models.export import load_model
from bincount.monitoring.baseline import write_baseline
from bincount.serving import handlers
from bincount.serving.capture import CaptureWriter
from tests.support.paths import CONF
from tests.support.serving import IMAGE_SIZE, make_model_dir

COUNTS = [1, 2, 3, 4, 5]


def baseline_model_dir(root: Path) -> Path:
    """An untrained resnet18 model dir (the real format) with a baseline of 60 val images."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={root}", f"paths.cache_dir={root / 'cache'}", "data=synthetic",
            "data.synthetic.per_class=16", f"data.synthetic.image_size={IMAGE_SIZE}",
            f"data.image_size={IMAGE_SIZE}", "data.splits=[0.2,0.75,0.05]",
            "data.num_workers=0",
        ])
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    model_dir = make_model_dir(root / "model")
    net, _ = load_model(model_dir)
    write_baseline(net, datamodule, model_dir)
    return model_dir


def synthetic_photos(out: Path, seed: int = 7, per_class: int = 8) -> Path:
    """Bins of the training renderer with another seed: the dir of their JPEGs."""
    render_synthetic(out, per_class=per_class, image_size=IMAGE_SIZE, seed=seed, counts=COUNTS,
                     save_size=IMAGE_SIZE)
    return out / "images"


def captured(model_dir: Path, photos: list[bytes], root: Path) -> Path:
    """``photos`` answered by the handlers and captured as the local endpoint does."""
    model = handlers.load_served_model(model_dir, "torch", 1, "none")
    writer = CaptureWriter(root, sampling=1.0, max_queue=len(photos))
    writer.start()
    for photo in photos:
        image = handlers.input_fn(photo, "image/jpeg")
        body, kind = handlers.output_fn(handlers.predict_fn(image, model), "application/json")
        writer.offer(photo, "image/jpeg", body, kind)
    writer.stop()
    return root
