"""Monitoring tests' shared material: a small exported model with its baseline, written from the
validation split of a synthetic set (seed 0) by ``write_baseline``, and synthetic photos of the
same renderer drawn with another seed (traffic from the training distribution)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bincount.config import build
from bincount.data.synthetic import render_synthetic
from bincount.models.export import load_model
from bincount.monitoring.baseline import write_baseline
from tests.support.paths import CONF
from tests.support.serving import make_model_dir

COUNTS = [1, 2, 3, 4, 5]
SIZE = 64  # drawn and saved at the model's input size (tests.support.serving.IMAGE_SIZE)


@pytest.fixture(scope="session")
def baseline_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 model dir (the real format) with a baseline of 60 val images."""
    root = tmp_path_factory.mktemp("monitored")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={root}", f"paths.cache_dir={root / 'cache'}", "data=synthetic",
            "data.synthetic.per_class=16", f"data.synthetic.image_size={SIZE}",
            f"data.image_size={SIZE}", "data.splits=[0.2,0.75,0.05]", "data.num_workers=0",
        ])
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    model_dir = make_model_dir(root / "model")
    net, _ = load_model(model_dir)
    write_baseline(net, datamodule, model_dir)
    return model_dir


@pytest.fixture(scope="session")
def same_renderer(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """40 synthetic bins of the training renderer, another seed: the JPEG bytes."""
    out = render_synthetic(tmp_path_factory.mktemp("seed7") / "set", per_class=8,
                           image_size=SIZE, seed=7, counts=COUNTS, save_size=SIZE)
    return [p.read_bytes() for p in sorted((out / "images").glob("*.jpg"))]


@pytest.fixture(scope="session")
def abid_photos(sample_dir: Path) -> list[bytes]:
    """60 real ABID photos (CC BY-NC-SA 3.0 US, Amazon): another distribution."""
    return [p.read_bytes() for p in sorted((sample_dir / "images").glob("*.jpg"))[:60]]
